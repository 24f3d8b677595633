"""Webhook delivery: an async activity that long-polls the outbox after an endpoint's cursor and delivers,
one event at a time, in id order (so each case's events arrive in order).

Each attempt is recorded in `webhook_delivery`; the cursor moves in the database after each 2xx. A failure
raises a retryable error, so Temporal retries the activity with exponential backoff and the next attempt
starts again at the same event (same `webhook-id`). `429`/`503` with `Retry-After` set the next delay; `410`
disables the endpoint at once; an endpoint still failing after WEBHOOK_RETRY_WINDOW_SECONDS is disabled, and
either is announced as a `webhook.disabled` event. The signing secret is decrypted here, per attempt, and
never leaves this process. Database work runs in threads; the HTTP request is awaited (no thread held).
"""

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import TypeVar

import httpx
from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from core import webhooks as webhook_service
from core.config import Settings
from core.crypto import decrypt_secret
from core.events import encode_body, event_body, matches_endpoint, public_type
from core.ids import workflow_id_for_webhook
from core.metrics import record_webhook_attempt, record_webhook_lag
from core.models import WebhookEndpoint, utcnow
from core.outbox import StoredEvent, read_events
from core.webhook_runs import start_webhook_delivery
from core.webhook_sender import SendOutcome, new_http_client, send_signed
from core.webhook_urls import UnsafeWebhookUrl, resolve_webhook_url_async
from workflows.messages import DeliverInput, DeliverResult

# A round ends after this long without a new event (the workflow starts the next one), or after
# ACTIVE_SECONDS of delivering, so one activity never runs for long.
IDLE_SECONDS = 30.0
ACTIVE_SECONDS = 60.0
BATCH = 100
T = TypeVar("T")


@dataclass(frozen=True)
class EndpointState:
    """What one polling turn needs of the endpoint row (read fresh each turn)."""

    id: str
    url: str
    events: list[str]
    enabled: bool
    cursor: int
    epoch: int
    secret_encrypted: str


def _read_after(session: Session, *, after: int) -> list[StoredEvent]:
    return read_events(session=session, after=after, limit=BATCH)


def _advance(session: Session, *, endpoint_id: str, epoch: int, to: int) -> bool:
    return webhook_service.advance_cursor(session=session, endpoint_id=endpoint_id, epoch=epoch, to=to)


class WebhookActivities:
    """The delivery activity, and what it needs: the database, the settings (SECRET_KEY, timeouts)."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        settings: Settings,
        client: Client,
        http_client: Callable[[float], httpx.AsyncClient] = new_http_client,
    ) -> None:
        self._session_factory = session_factory
        self._settings = settings
        self._client = client
        self._http_client = http_client

    async def _db(self, work: Callable[[Session], T], *, write: bool = False) -> T:
        def run() -> T:
            if write:
                with self._session_factory.begin() as session:
                    return work(session)
            with self._session_factory() as session:
                return work(session)

        return await asyncio.to_thread(run)

    def _load(self, session: Session, endpoint_id: str) -> EndpointState | None:
        row = session.get(WebhookEndpoint, endpoint_id)
        if row is None:
            return None
        return EndpointState(
            id=row.id,
            url=row.url,
            events=list(row.events),
            enabled=row.enabled,
            cursor=row.cursor,
            epoch=row.cursor_epoch,
            secret_encrypted=row.secret_encrypted,
        )

    @activity.defn
    async def deliver(self, input: DeliverInput) -> DeliverResult:
        """Deliver the endpoint's pending events in id order; return after a quiet spell or a busy minute."""
        delivered = 0
        started = time.monotonic()
        idle_since = started
        async with self._http_client(self._settings.WEBHOOK_TIMEOUT_SECONDS) as client:
            while True:
                activity.heartbeat(delivered)
                state = await self._db(lambda s: self._load(s, input.endpoint_id))
                if state is None:
                    return DeliverResult(delivered=delivered, stopped=True, reason="the endpoint was deleted")
                if not state.enabled:
                    return DeliverResult(delivered=delivered, stopped=True, reason="the endpoint is disabled")
                events = await self._db(partial(_read_after, after=state.cursor))
                wanted = [
                    (e, t) for e in events if (t := public_type(e)) is not None and matches_endpoint(state.events, t)
                ]
                record_webhook_lag(activity.metric_meter(), state.id, wanted[0][0].at if wanted else None, utcnow())
                if not events:
                    now = time.monotonic()
                    if now - idle_since >= IDLE_SECONDS or (delivered and now - started >= ACTIVE_SECONDS):
                        return DeliverResult(delivered=delivered)
                    await asyncio.sleep(self._settings.EVENT_POLL_INTERVAL_SECONDS)
                    continue
                idle_since = time.monotonic()
                outcome = await self._deliver_batch(client, state, events, wanted)
                delivered += outcome.delivered
                if outcome.stopped:
                    return DeliverResult(delivered=delivered, stopped=True, reason=outcome.reason)
                if time.monotonic() - started >= ACTIVE_SECONDS:
                    return DeliverResult(delivered=delivered)

    async def _deliver_batch(
        self,
        client: httpx.AsyncClient,
        state: EndpointState,
        events: list[StoredEvent],
        wanted: list[tuple[StoredEvent, str]],
    ) -> DeliverResult:
        """Send the wanted events of a batch in order, moving the cursor after each; then past the batch."""
        delivered = 0
        for event, type in wanted:
            activity.heartbeat(delivered)
            stop = await self._send_one(client, state, event, type)
            if stop is not None:
                return DeliverResult(delivered=delivered, stopped=True, reason=stop)
            moved = await self._db(partial(_advance, endpoint_id=state.id, epoch=state.epoch, to=event.id), write=True)
            delivered += 1
            if not moved:
                return DeliverResult(delivered=delivered)  # a replay moved the cursor: read again from there
        await self._db(partial(_advance, endpoint_id=state.id, epoch=state.epoch, to=events[-1].id), write=True)
        return DeliverResult(delivered=delivered)

    async def _send_one(
        self, client: httpx.AsyncClient, state: EndpointState, event: StoredEvent, type: str
    ) -> str | None:
        """Deliver one event; returns why the endpoint stopped (410, window over), or raises to be retried."""
        payload = encode_body(event_body(event, type, dict(event.snapshot or {})))
        try:
            target = await resolve_webhook_url_async(state.url, allow_private=self._settings.WEBHOOK_ALLOW_PRIVATE_URLS)
        except UnsafeWebhookUrl as err:
            outcome = SendOutcome(status=None, error=err.message, duration_ms=0)
        else:
            secret = decrypt_secret(state.secret_encrypted, secret_key=self._settings.SECRET_KEY)
            outcome = await send_signed(
                client,
                target,
                secret=secret,
                msg_id=str(event.id),
                payload=payload,
                timeout_seconds=self._settings.WEBHOOK_TIMEOUT_SECONDS,
            )
        at = utcnow()
        await self._db(
            lambda s: webhook_service.record_attempt(
                session=s,
                endpoint_id=state.id,
                event_id=event.id,
                event_type=type,
                succeeded=outcome.succeeded,
                response_code=outcome.status,
                error=outcome.error,
                at=at,
                duration_ms=outcome.duration_ms,
            ),
            write=True,
        )
        record_webhook_attempt(activity.metric_meter(), state.id, outcome.succeeded)
        if outcome.succeeded:
            return None
        return await self._failed(state, event, outcome, at)

    async def _failed(self, state: EndpointState, event: StoredEvent, outcome: SendOutcome, at: datetime) -> str:
        if outcome.status == 410:
            reason = f"the receiver answered 410 Gone to event {event.id}"
            await self._db(
                lambda s: webhook_service.disable_endpoint(session=s, endpoint_id=state.id, reason=reason), write=True
            )
            activity.logger.warning("webhook %s disabled: %s", state.id, reason)
            return reason
        failing_since = await self._db(
            lambda s: webhook_service.note_failure(session=s, endpoint_id=state.id, at=at), write=True
        )
        window = timedelta(seconds=self._settings.WEBHOOK_RETRY_WINDOW_SECONDS)
        if failing_since is not None and at - failing_since >= window:
            reason = (
                f"deliveries failed for more than {window.total_seconds():g}s (since {failing_since.isoformat()});"
                f" last: {outcome.error}"
            )
            await self._db(
                lambda s: webhook_service.disable_endpoint(session=s, endpoint_id=state.id, reason=reason), write=True
            )
            activity.logger.warning("webhook %s disabled: %s", state.id, reason)
            return reason
        delay = None
        if outcome.status in (429, 503) and outcome.retry_after_seconds is not None:
            delay = timedelta(seconds=max(1.0, outcome.retry_after_seconds))
        raise ApplicationError(
            f"delivery of event {event.id} to webhook {state.id} failed: {outcome.error}",
            type="WebhookDeliveryFailed",
            next_retry_delay=delay,
        )

    @activity.defn
    async def repair_deliveries(self) -> int:
        """Start the delivery workflow of every enabled endpoint that has none running; returns how many."""
        endpoint_ids = await self._db(lambda s: webhook_service.enabled_endpoint_ids(session=s))
        started = 0
        for endpoint_id in endpoint_ids:
            try:
                description = await self._client.get_workflow_handle(workflow_id_for_webhook(endpoint_id)).describe()
                running = description.status == WorkflowExecutionStatus.RUNNING
            except RPCError as err:
                if err.status != RPCStatusCode.NOT_FOUND:
                    raise
                running = False
            if not running:
                await start_webhook_delivery(self._client, self._settings, endpoint_id)
                activity.logger.warning("webhook %s had no delivery workflow running: started", endpoint_id)
                started += 1
        return started

    def all(self) -> list[Callable[..., object]]:
        """Every activity, for worker registration."""
        return [self.deliver, self.repair_deliveries]
