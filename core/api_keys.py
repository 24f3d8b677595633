"""Service API keys (the storefront's backend): created by an admin, shown once, stored hashed, scoped,
revocable. Functions take the session as a keyword and never commit."""

from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core.clock import db_now
from core.errors import ApiKeyNotFound
from core.ids import new_id
from core.models import ApiKey
from core.security import api_key_display_prefix, api_key_hash, new_api_key

# What a key may be allowed to do (DESIGN section 10).
SCOPES = ("cases:file", "cases:read", "cases:cancel", "events:read", "return-links:create")
# A key's last use is written at most this often, so a busy key does not write on every request.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def create_api_key(*, session: Session, name: str, scopes: list[str], created_by: str) -> tuple[ApiKey, str]:
    """A new key and its plain text, which exists only in this answer."""
    plain = new_api_key()
    key = ApiKey(
        id=new_id("ak"),
        name=name,
        prefix=api_key_display_prefix(plain),
        key_hash=api_key_hash(plain),
        scopes=sorted(set(scopes), key=SCOPES.index),
        created_by=created_by,
        created_at=db_now(session),
    )
    session.add(key)
    session.flush()
    return key, plain


def list_api_keys(*, session: Session) -> list[ApiKey]:
    """Every key, revoked ones included, oldest first."""
    return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)))


def revoke_api_key(*, session: Session, key_id: str) -> ApiKey:
    """Revoke a key (again is harmless); it is refused from the next request on."""
    key = session.get(ApiKey, key_id, with_for_update=True)
    if key is None:
        raise ApiKeyNotFound(f"API key {key_id} not found")
    if key.revoked_at is None:
        key.revoked_at = db_now(session)
    return key


def find_api_key(*, session: Session, plain: str) -> ApiKey | None:
    """The key whose plain text this is (revoked or not), by its hash."""
    return session.scalars(select(ApiKey).where(ApiKey.key_hash == api_key_hash(plain))).first()


def note_api_key_use(*, session: Session, key_id: str, now: datetime) -> None:
    """Record that the key was just used, unless that was recorded less than a minute ago."""
    session.execute(
        update(ApiKey)
        .where(
            ApiKey.id == key_id,
            (ApiKey.last_used_at.is_(None)) | (ApiKey.last_used_at < now - LAST_USED_RESOLUTION),
        )
        .values(last_used_at=now)
    )
