"""Sign-in, and who you are: the only routes that pay for Argon2."""

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from api.deps import Database, DatabaseDep, SettingsDep
from api.errors import error_responses
from api.schemas import AccessToken, Me, PasswordChange
from api.security import Allow, CurrentPrincipal, Public, RuledRoute, client_address, forbidden, unauthorized
from core.agents import get_agent
from core.config import Settings
from core.models import AppUser, utcnow
from core.schemas import AgentPublic
from core.security import hash_password, issue_access_token, verify_password
from core.users import (
    clear_account_failures,
    find_login,
    login_retry_after,
    normalize_email,
    record_login_failure,
    set_password,
)

router = APIRouter(tags=["auth"], route_class=RuledRoute)
log = logging.getLogger("returns.api.auth")

# One answer for an unknown email, a wrong password and an account that cannot sign in: nothing to enumerate.
WRONG_CREDENTIALS = "wrong email or password"


class SignInForm:
    """The OAuth2 password form (`grant_type=password`, `username`, `password`), as the /docs Authorize button
    sends it; other OAuth2 fields (scope, client_id) are ignored."""

    def __init__(
        self,
        username: Annotated[str, Form(min_length=1, max_length=320, description="your email")],
        password: Annotated[str, Form(min_length=1, max_length=1024, json_schema_extra={"format": "password"})],
        grant_type: Annotated[str, Form(pattern="^password$")] = "password",
    ) -> None:
        self.username, self.password = username, password


def _access_token(settings: Settings, user: AppUser) -> AccessToken:
    token = issue_access_token(
        secret_key=settings.SECRET_KEY,
        user_id=user.id,
        role=user.role,
        version=user.token_version,
        minutes=settings.ACCESS_TOKEN_MINUTES,
    )
    return AccessToken(access_token=token, expires_in=settings.ACCESS_TOKEN_MINUTES * 60)


def _too_many(retry_after: int) -> HTTPException:
    return HTTPException(
        status_code=429,
        detail=f"too many failed sign-ins; try again in {retry_after} seconds",
        headers={"Retry-After": str(retry_after)},
    )


async def _wait_before_trying(db: Database, settings: Settings, email: str, address: str) -> None:
    wait = await db.read(
        lambda session: login_retry_after(
            session=session,
            email=email,
            address=address,
            per_account=settings.LOGIN_FAILURES_PER_ACCOUNT,
            per_address=settings.LOGIN_FAILURES_PER_ADDRESS,
            now=utcnow(),
        )
    )
    if wait is not None:
        log.warning("sign-in throttled for %ds (client %s)", wait, address)
        raise _too_many(wait)


async def _note_failure(db: Database, email: str, address: str) -> None:
    await db.write(lambda session: record_login_failure(session=session, email=email, address=address, now=utcnow()))


@router.post(
    "/auth/token",
    response_model=AccessToken,
    dependencies=[Public("signing in is how a person gets a credential")],
    responses=error_responses(400, 401, 422, 429, 503),
)
async def sign_in(
    form: Annotated[SignInForm, Depends()],
    request: Request,
    settings: SettingsDep,
    db: DatabaseDep,
) -> AccessToken:
    """Sign in with your email as `username` and your password; send the answer's `access_token` as
    `Authorization: Bearer <access_token>`."""
    email, address = normalize_email(form.username), client_address(request)
    await _wait_before_trying(db, settings, email, address)
    user = await db.read(lambda session: find_login(session=session, email=email))
    # Argon2 runs outside the database deadline: it is slow on purpose, and the same for every answer.
    verified = await run_in_threadpool(verify_password, form.password, user.password_hash if user else None)
    if not verified or user is None:
        await _note_failure(db, email, address)
        log.info("failed sign-in (client %s)", address)
        raise unauthorized(WRONG_CREDENTIALS)
    await db.write(lambda session: clear_account_failures(session=session, email=email))
    return _access_token(settings, user)


@router.get("/me", response_model=Me, dependencies=[Allow(admin=True, agent=True)], responses=error_responses(503))
async def read_me(principal: CurrentPrincipal, db: DatabaseDep) -> Me:
    """Who you are: your role, and for an agent their agent id, team and record."""

    def read(session: Session) -> Me:
        user = session.get(AppUser, principal.user_id)
        assert user is not None  # the principal was read from this row a moment ago
        agent = get_agent(session=session, agent_id=principal.agent_id) if principal.agent_id else None
        return Me(
            role=user.role,
            user_id=user.id,
            email=user.email,
            agent_id=principal.agent_id,
            team=agent.team if agent else None,
            agent=AgentPublic.model_validate(agent) if agent else None,
        )

    return await db.read(read)


@router.post(
    "/me/password",
    response_model=AccessToken,
    dependencies=[Allow(admin=True, agent=True)],
    responses=error_responses(400, 422, 429, 503),
)
async def change_password(
    body: PasswordChange,
    principal: CurrentPrincipal,
    request: Request,
    settings: SettingsDep,
    db: DatabaseDep,
) -> AccessToken:
    """Change your own password (give the current one). Every token you hold stops working; the answer is a new
    one."""
    user = await db.read(lambda session: session.get(AppUser, principal.user_id))
    assert user is not None
    address = client_address(request)
    await _wait_before_trying(db, settings, user.email, address)
    if not await run_in_threadpool(verify_password, body.current_password, user.password_hash):
        await _note_failure(db, user.email, address)
        raise forbidden("current_password is wrong")
    new_hash = await run_in_threadpool(hash_password, body.new_password)  # before the transaction: Argon2 is slow

    def change(session: Session) -> AccessToken:
        user = session.get(AppUser, principal.user_id, with_for_update=True)
        if user is None or user.deleted_at is not None:
            raise unauthorized("the access token is no longer valid; sign in again")
        set_password(session=session, user=user, password_hash=new_hash)
        clear_account_failures(session=session, email=user.email)
        return _access_token(settings, user)

    return await db.write(change)
