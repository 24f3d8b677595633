"""People who sign in (admins, and each agent's login) and the sign-in throttle. Functions take the session as
a keyword and never commit; none of them hashes a password (the caller does, outside any transaction)."""

import hashlib
import math
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import InstrumentedAttribute, Session

from core.clock import db_now
from core.errors import EmailInUse
from core.ids import new_id
from core.models import Agent, AppUser, LoginFailure, UserRole

# Failed sign-ins count against an account and a client address for this long.
LOGIN_WINDOW = timedelta(minutes=15)


def normalize_email(email: str) -> str:
    """Emails are stored trimmed and lowercased; sign-in matches them the same way."""
    return email.strip().lower()


def get_user_with_agent(*, session: Session, user_id: str) -> tuple[AppUser, Agent | None] | None:
    """A user and, for an agent's login, their agent record, in one primary-key read (removed ones too)."""
    row = session.execute(
        select(AppUser, Agent).outerjoin(Agent, AppUser.agent_id == Agent.id).where(AppUser.id == user_id)
    ).first()
    return None if row is None else (row[0], row[1])


def find_login(*, session: Session, email: str) -> AppUser | None:
    """The live user who signs in with `email`, if any."""
    return session.scalars(select(AppUser).where(AppUser.active_email == normalize_email(email))).first()


def ensure_login_email_free(*, session: Session, email: str, agent_id: str | None) -> None:
    """EmailInUse when a live user other than this agent's login signs in with `email`."""
    holder = find_login(session=session, email=email)
    if holder is not None and (agent_id is None or holder.agent_id != agent_id):
        raise EmailInUse(f"email {email} is already used by another user")


def _flush(*, session: Session, email: str) -> None:
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        raise EmailInUse(f"email {email} is already used by another user") from None


def create_admin(*, session: Session, email: str, password_hash: str) -> AppUser:
    """Add an admin who signs in with `email`."""
    email = normalize_email(email)
    ensure_login_email_free(session=session, email=email, agent_id=None)
    user = AppUser(
        id=new_id("u"),
        email=email,
        active_email=email,
        role=UserRole.ADMIN,
        password_hash=password_hash,
        token_version=0,
    )
    session.add(user)
    _flush(session=session, email=email)
    return user


def create_agent_login(*, session: Session, agent: Agent, password_hash: str | None) -> AppUser:
    """The login of a new agent (without a password it cannot sign in yet)."""
    user = AppUser(
        id=new_id("u"),
        email=agent.email,
        active_email=agent.email,
        role=UserRole.AGENT,
        agent_id=agent.id,
        password_hash=password_hash,
        token_version=0,
    )
    session.add(user)
    _flush(session=session, email=agent.email)
    return user


def agent_login(*, session: Session, agent_id: str) -> AppUser | None:
    """The live login of an agent (every agent made through `create_agent` has one), locked for an update."""
    return session.scalars(
        select(AppUser).where(AppUser.agent_id == agent_id, AppUser.deleted_at.is_(None)).with_for_update()
    ).first()


def sync_agent_login(*, session: Session, agent: Agent, password_hash: str | None) -> None:
    """Keep the agent's login in step with an edit: same email; a new password ends every earlier token."""
    user = agent_login(session=session, agent_id=agent.id)
    if user is None:
        create_agent_login(session=session, agent=agent, password_hash=password_hash)
        return
    if user.email != agent.email:
        user.email = user.active_email = agent.email
    if password_hash is not None:
        set_password(session=session, user=user, password_hash=password_hash)
    _flush(session=session, email=agent.email)


def remove_agent_login(*, session: Session, agent_id: str) -> None:
    """End the login of a removed agent: their tokens stop working on their next request."""
    user = agent_login(session=session, agent_id=agent_id)
    if user is None:
        return
    user.deleted_at = db_now(session)
    user.active_email = None
    user.password_hash = None
    user.token_version += 1


def set_password(*, session: Session, user: AppUser, password_hash: str) -> None:
    """Set a new password; tokens issued before stop working."""
    user.password_hash = password_hash
    user.token_version += 1
    user.updated_at = db_now(session)


# --- the sign-in throttle ----------------------------------------------------------------------------------


def account_key(email: str) -> str:
    """How the throttle names an account: a hash of what was typed, which may be a mistyped password."""
    return hashlib.sha256(normalize_email(email).encode()).hexdigest()


def _retry_after(
    *, session: Session, column: InstrumentedAttribute[str], value: str, limit: int, now: datetime
) -> int | None:
    """Seconds until fewer than `limit` failures remain in the window for this key, or None if fewer already do."""
    since = now - LOGIN_WINDOW
    recent = list(
        session.scalars(
            select(LoginFailure.at)
            .where(column == value, LoginFailure.at > since)
            .order_by(LoginFailure.at.desc())
            .limit(limit)
        )
    )
    if len(recent) < limit:
        return None
    # Once the limit-th most recent failure leaves the window, one more attempt is allowed.
    return max(1, math.ceil((recent[-1] + LOGIN_WINDOW - now).total_seconds()))


def login_retry_after(
    *, session: Session, email: str, address: str, per_account: int, per_address: int, now: datetime
) -> int | None:
    """Seconds the client must wait before trying to sign in again, or None when it may try now."""
    waits = [
        _retry_after(session=session, column=LoginFailure.account_key, value=account_key(email), limit=per_account,
                     now=now),
        _retry_after(session=session, column=LoginFailure.client_address, value=address, limit=per_address, now=now),
    ]  # fmt: skip
    found = [w for w in waits if w is not None]
    return max(found) if found else None


def record_login_failure(*, session: Session, email: str, address: str, now: datetime) -> None:
    """Count a failed sign-in against the account and the address, and drop failures older than the window."""
    session.execute(delete(LoginFailure).where(LoginFailure.at <= now - LOGIN_WINDOW))
    session.add(LoginFailure(account_key=account_key(email), client_address=address, at=now))


def clear_account_failures(*, session: Session, email: str) -> None:
    """A successful sign-in forgives the account's failures (not the address's)."""
    session.execute(delete(LoginFailure).where(LoginFailure.account_key == account_key(email)))
