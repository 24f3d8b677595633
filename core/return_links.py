"""Return links: the storefront vouches for an order (id, customer, products) and the customer starts a return
from it. A link is signed with SECRET_KEY (nothing stored), names one order, and expires."""

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

from core.schemas import Email, TeamName, Text100, Text200
from core.security import derive_key

# A link's token is at most this long (an order of many products makes a long link; the API caps them).
MAX_TOKEN_LENGTH = 4000
DEFAULT_DAYS = 30
NOT_VALID = "This return link is not valid. Please use the link from your email, or ask the shop."


class LinkProduct(BaseModel):
    """One product of the order, as the storefront names it."""

    model_config = ConfigDict(extra="forbid")
    sku: Text100
    name: Text200


class ReturnLinkCreate(BaseModel):
    """What the storefront vouches for: one order, its customer, its products."""

    model_config = ConfigDict(extra="forbid")
    order_id: Text100
    customer_name: Text200
    customer_email: Email
    products: list[LinkProduct] = Field(min_length=1, max_length=20)
    team: TeamName = "returns"
    expires_in_days: int = Field(default=DEFAULT_DAYS, ge=1, le=90)


class ReturnLink(BaseModel):
    """What a link's token says (checked: it was signed by us and has not expired)."""

    order_id: str
    customer_name: str
    customer_email: str
    products: list[LinkProduct]
    team: str
    expires_at: datetime


class LinkRefused(Exception):
    """Not a return link of ours, or one that has expired; `reason` says which, in words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret_key: str, body: str) -> str:
    return _b64(hmac.new(derive_key(secret_key, "return-link"), body.encode(), hashlib.sha256).digest())


def issue_return_link(*, secret_key: str, data: ReturnLinkCreate, now: datetime) -> tuple[str, datetime]:
    """The link's token and when it expires."""
    expires_at = (now + timedelta(days=data.expires_in_days)).replace(microsecond=0)
    payload = {
        "o": data.order_id,
        "n": data.customer_name,
        "e": data.customer_email,
        "p": [[p.sku, p.name] for p in data.products],
        "t": data.team,
        "x": int(expires_at.timestamp()),
    }
    body = _b64(json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode())
    return f"{body}.{_mac(secret_key, body)}", expires_at


def read_return_link(*, secret_key: str, token: str, now: datetime) -> ReturnLink:
    """The link a token stands for, or LinkRefused (forged, damaged, or expired)."""
    body, _, mac = token.partition(".")
    if (
        len(token) > MAX_TOKEN_LENGTH
        or not body
        or not hmac.compare_digest(mac.encode(), _mac(secret_key, body).encode())
    ):
        raise LinkRefused("This return link is not valid. Please use the link from your email, or ask the shop.")
    try:
        payload = json.loads(_unb64(body))
        link = ReturnLink(
            order_id=payload["o"],
            customer_name=payload["n"],
            customer_email=payload["e"],
            products=[LinkProduct(sku=sku, name=name) for sku, name in payload["p"]],
            team=payload["t"],
            expires_at=datetime.fromtimestamp(payload["x"], UTC),
        )
    except (ValueError, KeyError, TypeError):
        raise LinkRefused(
            "This return link is not valid. Please use the link from your email, or ask the shop."
        ) from None
    if link.expires_at <= now:
        raise LinkRefused("This return link has expired. Please ask the shop for a new one.")
    return link
