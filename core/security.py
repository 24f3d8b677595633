"""Credentials: Argon2 password hashes, access tokens (JWT), service API keys and customer tracking tokens.

Every secret derives from SECRET_KEY with its own purpose tag, so a token made for one purpose is never
valid for another. Nothing here touches the database.
"""

import base64
import hashlib
import hmac
import secrets
import string
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache

import jwt
from pwdlib import PasswordHash

# NIST SP 800-63-4 and OWASP: at least 15 characters for a password that is the only factor; a maximum of at
# least 64, no composition rules, no truncation.
PASSWORD_MIN_LENGTH = 15
PASSWORD_MAX_LENGTH = 128

JWT_ALGORITHM = "HS256"
API_KEY_PREFIX = "rdk_"
API_KEY_RANDOM_CHARS = 43  # base62: about 256 bits
API_KEY_DISPLAY_CHARS = 12  # "rdk_" and the first 8 random characters
TRACKING_MAC_BYTES = 16  # 128 bits

_BASE62 = string.ascii_letters + string.digits
_passwords = PasswordHash.recommended()


# --- passwords ----------------------------------------------------------------------------------------------


def hash_password(password: str) -> str:
    """An Argon2id hash of `password` (slow on purpose: tens to hundreds of milliseconds)."""
    return _passwords.hash(password)


def verify_password(password: str, password_hash: str | None) -> bool:
    """Whether `password` matches; with no hash (unknown user, no password set) a dummy one is checked, so
    the answer takes as long either way."""
    if password_hash is None or len(password) > PASSWORD_MAX_LENGTH:
        _passwords.verify(password[:PASSWORD_MAX_LENGTH], dummy_hash())
        return False
    return _passwords.verify(password, password_hash)


@cache
def dummy_hash() -> str:
    """A hash of a random password with the same parameters as real ones (computed once per process)."""
    return _passwords.hash(secrets.token_urlsafe(24))


# --- derived keys ----------------------------------------------------------------------------------------------


def derive_key(secret_key: str, purpose: str) -> bytes:
    """A 256-bit key for one purpose, from SECRET_KEY."""
    return hmac.new(secret_key.encode(), f"returns-desk/{purpose}".encode(), hashlib.sha256).digest()


# --- access tokens -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AccessClaims:
    """What an access token says: who (`user_id`), as what (`role`), and which token generation."""

    user_id: str
    role: str
    version: int


class TokenExpired(Exception):
    """The access token was valid once and has expired."""


class TokenInvalid(Exception):
    """Not an access token of ours: malformed, tampered with, or signed with another key."""


def issue_access_token(*, secret_key: str, user_id: str, role: str, version: int, minutes: int) -> str:
    """A signed JWT for the user, valid `minutes` from now."""
    now = datetime.now(UTC)
    claims = {"sub": user_id, "role": role, "ver": version, "iat": now, "exp": now + timedelta(minutes=minutes)}
    return jwt.encode(claims, derive_key(secret_key, "access-token"), algorithm=JWT_ALGORITHM)


def read_access_token(*, secret_key: str, token: str) -> AccessClaims:
    """The claims of a token we issued, or TokenExpired / TokenInvalid."""
    try:
        claims = jwt.decode(
            token,
            derive_key(secret_key, "access-token"),
            algorithms=[JWT_ALGORITHM],
            options={"require": ["sub", "role", "ver", "iat", "exp"]},
        )
    except jwt.ExpiredSignatureError:
        raise TokenExpired from None
    except jwt.PyJWTError:
        raise TokenInvalid from None
    user_id, role, version = claims["sub"], claims["role"], claims["ver"]
    if not isinstance(user_id, str) or not isinstance(role, str) or type(version) is not int:
        raise TokenInvalid
    return AccessClaims(user_id=user_id, role=role, version=version)


# --- service API keys ----------------------------------------------------------------------------------------


def new_api_key() -> str:
    """A fresh key: a recognizable prefix and about 256 random bits (base62, so a double-click selects it)."""
    return API_KEY_PREFIX + "".join(secrets.choice(_BASE62) for _ in range(API_KEY_RANDOM_CHARS))


def looks_like_api_key(credential: str) -> bool:
    """True when the bearer credential is meant as an API key rather than an access token."""
    return credential.startswith(API_KEY_PREFIX)


def api_key_hash(key: str) -> str:
    """The stored form of a key: it is long and random, so an unsalted SHA-256 is safe and can be looked up."""
    return hashlib.sha256(key.encode()).hexdigest()


def api_key_display_prefix(key: str) -> str:
    """The start of a key, shown in listings to tell keys apart."""
    return key[:API_KEY_DISPLAY_CHARS]


# --- customer tracking tokens --------------------------------------------------------------------------------


def _tracking_mac(secret_key: str, case_id: str) -> str:
    mac = hmac.new(derive_key(secret_key, "tracking-token"), case_id.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac[:TRACKING_MAC_BYTES]).decode().rstrip("=")


def tracking_token(*, secret_key: str, case_id: str) -> str:
    """The customer's private token for one case: the case id and a MAC of it, so nothing needs storing."""
    return f"{case_id}.{_tracking_mac(secret_key, case_id)}"


def case_id_of_tracking_token(*, secret_key: str, token: str) -> str | None:
    """The case a tracking token is for, or None when it is not one we made."""
    case_id, dot, mac = token.rpartition(".")
    if not dot or not case_id or len(case_id) > 32:
        return None
    if not hmac.compare_digest(mac.encode(), _tracking_mac(secret_key, case_id).encode()):
        return None
    return case_id
