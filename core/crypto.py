"""Webhook signing secrets: generated here, stored encrypted with a key derived from SECRET_KEY.

AES-256-GCM with a fresh 96-bit nonce per secret; the key is HKDF-SHA256 of SECRET_KEY with a purpose label,
so the webhook key differs from anything else derived from SECRET_KEY. Only the code that signs a delivery
decrypts a secret; it never enters a log line, an event or a Temporal payload.
"""

import base64
import os
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SECRET_PREFIX = "whsec_"
_PURPOSE = b"returns-desk webhook signing secrets v1"
_NONCE_BYTES = 12


class SecretKeyMissing(RuntimeError):
    """SECRET_KEY is not set, so webhook secrets can be neither stored nor read."""


class SecretUnreadable(RuntimeError):
    """A stored secret does not decrypt with this SECRET_KEY (it was changed, or the row was altered)."""


def new_signing_secret() -> str:
    """A Standard Webhooks signing secret: `whsec_` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _key(secret_key: str) -> bytes:
    if not secret_key:
        raise SecretKeyMissing("SECRET_KEY is not set: webhook secrets cannot be stored or read")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_PURPOSE).derive(secret_key.encode())


def encrypt_secret(secret: str, *, secret_key: str) -> str:
    """The secret sealed for storage: base64 of nonce + ciphertext + tag."""
    nonce = os.urandom(_NONCE_BYTES)
    sealed = AESGCM(_key(secret_key)).encrypt(nonce, secret.encode(), _PURPOSE)
    return base64.b64encode(nonce + sealed).decode()


def decrypt_secret(stored: str, *, secret_key: str) -> str:
    """The secret a stored value seals, or SecretUnreadable."""
    raw = base64.b64decode(stored)
    try:
        return AESGCM(_key(secret_key)).decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _PURPOSE).decode()
    except InvalidTag:
        raise SecretUnreadable("a webhook secret does not decrypt with this SECRET_KEY") from None
