"""One signed webhook request (Standard Webhooks), sent so that a slow or huge answer cannot hold us.

The request goes to the address the URL check accepted (Host header and TLS server name kept), with no
redirects, under one deadline for the whole exchange, and reads at most RESPONSE_BYTES of the answer.
"""

import asyncio
import email.utils
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
from standardwebhooks import Webhook

from core.webhook_urls import WebhookTarget

# What we read of a receiver's answer; the rest is dropped with the connection.
RESPONSE_BYTES = 64 * 1024
USER_AGENT = "returns-desk-webhooks/1.0"


@dataclass(frozen=True)
class SendOutcome:
    """What one request got: a status code, or an error; how long it took; a Retry-After, if given."""

    status: int | None
    error: str | None
    duration_ms: int
    retry_after_seconds: float | None = None

    @property
    def succeeded(self) -> bool:
        """A 2xx answer; anything else (3xx included) is a failure."""
        return self.status is not None and 200 <= self.status < 300


def new_http_client(timeout_seconds: float) -> httpx.AsyncClient:
    """A client for deliveries: no redirects, no proxies from the environment (they would resolve the host
    themselves), per-phase timeouts under the overall deadline."""
    return httpx.AsyncClient(
        follow_redirects=False,
        trust_env=False,
        timeout=httpx.Timeout(timeout_seconds),
        limits=httpx.Limits(max_connections=4, max_keepalive_connections=2),
    )


def sign_headers(*, secret: str, msg_id: str, payload: str, at: datetime) -> dict[str, str]:
    """The three Standard Webhooks headers for `payload` sent at `at`."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id=msg_id, timestamp=at, data=payload),
    }


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


async def send_signed(
    client: httpx.AsyncClient,
    target: WebhookTarget,
    *,
    secret: str,
    msg_id: str,
    payload: str,
    timeout_seconds: float,
) -> SendOutcome:
    """POST `payload` to the target, signed; never raises for the receiver's faults."""
    now = datetime.now(UTC)
    headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "host": target.host_header,
        **sign_headers(secret=secret, msg_id=msg_id, payload=payload, at=now),
    }
    started = time.monotonic()
    answered: httpx.Response | None = None

    def outcome(error: str | None = None) -> SendOutcome:
        duration_ms = int((time.monotonic() - started) * 1000)
        if answered is None:
            return SendOutcome(status=None, error=error, duration_ms=duration_ms)
        code = answered.status_code
        return SendOutcome(
            status=code,
            error=None if 200 <= code < 300 else f"answered {code}",
            duration_ms=duration_ms,
            retry_after_seconds=parse_retry_after(answered.headers.get("retry-after"), now),
        )

    try:
        async with asyncio.timeout(timeout_seconds):
            async with client.stream(
                "POST",
                target.pinned_url(),
                content=payload.encode(),
                headers=headers,
                extensions={"sni_hostname": target.host},
            ) as response:
                answered = response
                read = 0
                # The status is the answer; the body is read (and capped) only so the connection ends cleanly.
                async for chunk in response.aiter_raw():
                    read += len(chunk)
                    if read >= RESPONSE_BYTES:
                        break
        return outcome()
    except TimeoutError:
        return outcome(f"no answer within {timeout_seconds:g}s")
    except httpx.HTTPError as err:
        return outcome(f"{type(err).__name__}: {err}"[:500])
