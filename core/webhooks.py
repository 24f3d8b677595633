"""Webhook endpoints and their deliveries. Functions take the session as a keyword and never commit."""

from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from core.clock import db_now
from core.crypto import encrypt_secret, new_signing_secret
from core.errors import Invalid, UnknownEventType, WebhookNotFound
from core.events import EVENT_TYPES, WEBHOOK_DISABLED, unknown_types
from core.ids import new_id
from core.models import SystemEvent, WebhookDelivery, WebhookEndpoint
from core.outbox import buffer_event, last_event_id
from core.schemas import WebhookDeliveryPublic, WebhookPublic


def check_event_types(types: list[str]) -> list[str]:
    """The types, deduplicated in the order given, or UnknownEventType naming the wrong ones."""
    wrong = unknown_types(types)
    if wrong:
        raise UnknownEventType(f"unknown event types {wrong}; known: {', '.join(EVENT_TYPES)}")
    return list(dict.fromkeys(types))


def webhook_public(endpoint: WebhookEndpoint) -> WebhookPublic:
    """The API view of an endpoint (never its secret)."""
    return WebhookPublic(
        id=endpoint.id,
        url=endpoint.url,
        events=list(endpoint.events),
        enabled=endpoint.enabled,
        disabled_reason=endpoint.disabled_reason,
        failing_since=endpoint.failing_since,
        last_event_id=str(endpoint.cursor),
        created_at=endpoint.created_at,
        updated_at=endpoint.updated_at,
    )


def delivery_public(row: WebhookDelivery) -> WebhookDeliveryPublic:
    """The API view of one delivery attempt."""
    return WebhookDeliveryPublic(
        id=row.id,
        event_id=None if row.event_id is None else str(row.event_id),
        event_type=row.event_type,
        attempt=row.attempt,
        status="succeeded" if row.succeeded else "failed",
        response_code=row.response_code,
        error=row.error,
        at=row.at,
        duration_ms=row.duration_ms,
    )


def create_endpoint(*, session: Session, url: str, events: list[str], secret_key: str) -> tuple[WebhookEndpoint, str]:
    """Register an endpoint (its URL already checked); it gets the events committed from now on.

    Returns the endpoint and its signing secret in clear, to be shown once.
    """
    secret = new_signing_secret()
    endpoint = WebhookEndpoint(
        id=new_id("wh"),
        url=url,
        events=check_event_types(events),
        enabled=True,
        secret_encrypted=encrypt_secret(secret, secret_key=secret_key),
        cursor=last_event_id(session=session),
        cursor_epoch=0,
    )
    session.add(endpoint)
    session.flush()
    return endpoint, secret


def get_endpoint(*, session: Session, endpoint_id: str, for_update: bool = False) -> WebhookEndpoint:
    """The endpoint, or WebhookNotFound."""
    stmt = select(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id)
    if for_update:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    endpoint = session.scalars(stmt).first()
    if endpoint is None:
        raise WebhookNotFound(f"webhook {endpoint_id} not found")
    return endpoint


def list_endpoints(*, session: Session, cursor: str | None, limit: int) -> tuple[list[WebhookEndpoint], str | None]:
    """Endpoints by id (ids grow with creation time); returns the page and the next cursor."""
    stmt = select(WebhookEndpoint)
    if cursor is not None:
        stmt = stmt.where(WebhookEndpoint.id > cursor)
    rows = list(session.scalars(stmt.order_by(WebhookEndpoint.id).limit(limit + 1)))
    if len(rows) <= limit:
        return rows, None
    return rows[:limit], rows[limit - 1].id


def update_endpoint(
    *, session: Session, endpoint_id: str, url: str | None, events: list[str] | None, enabled: bool | None
) -> tuple[WebhookEndpoint, bool]:
    """Change the URL (already checked), the event types or `enabled`; returns the endpoint and whether it
    was enabled by this change (its delivery workflow must start). Re-enabling clears the failure record;
    deliveries resume after the last event it was given."""
    endpoint = get_endpoint(session=session, endpoint_id=endpoint_id, for_update=True)
    if url is not None:
        endpoint.url = url
    if events is not None:
        endpoint.events = check_event_types(events)
    turned_on = False
    if enabled is not None and enabled != endpoint.enabled:
        endpoint.enabled = enabled
        if enabled:
            endpoint.failing_since = None
            endpoint.disabled_reason = None
            turned_on = True
        else:
            endpoint.disabled_reason = "disabled by an admin"
    endpoint.updated_at = db_now(session)
    session.flush()
    return endpoint, turned_on


def delete_endpoint(*, session: Session, endpoint_id: str) -> None:
    """Remove the endpoint and its delivery records; its workflow stops at its next look."""
    endpoint = get_endpoint(session=session, endpoint_id=endpoint_id, for_update=True)
    session.execute(delete(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint.id))
    session.delete(endpoint)
    session.flush()


def replay_from(*, session: Session, endpoint_id: str, since: int) -> WebhookEndpoint:
    """Deliver again every wanted event after `since` (never skips one not yet delivered)."""
    if since < 0:
        raise Invalid("since must be an event id (0 or more)")
    endpoint = get_endpoint(session=session, endpoint_id=endpoint_id, for_update=True)
    endpoint.cursor = min(endpoint.cursor, since)
    # A delivery in flight holds the old epoch: its cursor update is refused, it re-reads from here.
    endpoint.cursor_epoch += 1
    endpoint.updated_at = db_now(session)
    session.flush()
    return endpoint


def list_deliveries(
    *, session: Session, endpoint_id: str, cursor: str | None, limit: int
) -> tuple[list[WebhookDelivery], str | None]:
    """An endpoint's attempts, newest first; returns the page and the next cursor."""
    get_endpoint(session=session, endpoint_id=endpoint_id)
    stmt = select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id)
    if cursor is not None:
        try:
            before = int(cursor)
        except ValueError:
            raise Invalid("cursor is not valid; pass back a next_cursor from a previous page") from None
        stmt = stmt.where(WebhookDelivery.id < before)
    rows = list(session.scalars(stmt.order_by(WebhookDelivery.id.desc()).limit(limit + 1)))
    if len(rows) <= limit:
        return rows, None
    return rows[:limit], str(rows[limit - 1].id)


# --- used by the delivery activity ----------------------------------------------------------------


def record_attempt(
    *,
    session: Session,
    endpoint_id: str,
    event_id: int | None,
    event_type: str,
    succeeded: bool,
    response_code: int | None,
    error: str | None,
    at: datetime,
    duration_ms: int,
) -> WebhookDelivery:
    """Write one attempt; its number counts the earlier attempts of the same event."""
    attempt = 1
    if event_id is not None:
        attempt += (
            session.scalar(
                select(func.count())
                .select_from(WebhookDelivery)
                .where(WebhookDelivery.endpoint_id == endpoint_id, WebhookDelivery.event_id == event_id)
            )
            or 0
        )
    row = WebhookDelivery(
        endpoint_id=endpoint_id,
        event_id=event_id,
        event_type=event_type,
        attempt=attempt,
        succeeded=succeeded,
        response_code=response_code,
        error=error[:500] if error else None,
        at=at,
        duration_ms=duration_ms,
    )
    session.add(row)
    session.flush()
    return row


def advance_cursor(*, session: Session, endpoint_id: str, epoch: int, to: int) -> bool:
    """Move the endpoint's cursor forward to `to` and clear its failure record, unless a replay came in
    since `epoch` was read or the endpoint was disabled or deleted; returns False then (the caller re-reads)."""
    result = session.execute(
        update(WebhookEndpoint)
        .where(
            WebhookEndpoint.id == endpoint_id,
            WebhookEndpoint.enabled.is_(True),
            WebhookEndpoint.cursor_epoch == epoch,
            WebhookEndpoint.cursor <= to,
        )
        .values(cursor=to, failing_since=None)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def note_failure(*, session: Session, endpoint_id: str, at: datetime) -> datetime | None:
    """Start the endpoint's failure record if it has none; returns when its failures began."""
    endpoint = session.get(WebhookEndpoint, endpoint_id, with_for_update=True, populate_existing=True)
    if endpoint is None:
        return None
    if endpoint.failing_since is None:
        endpoint.failing_since = at
    session.flush()
    return endpoint.failing_since


def disable_endpoint(*, session: Session, endpoint_id: str, reason: str) -> WebhookEndpoint | None:
    """Disable the endpoint and announce it (`webhook.disabled`, through the outbox); None if it is gone."""
    endpoint = session.get(WebhookEndpoint, endpoint_id, with_for_update=True, populate_existing=True)
    if endpoint is None or not endpoint.enabled:
        return endpoint
    endpoint.enabled = False
    endpoint.disabled_reason = reason[:500]
    endpoint.updated_at = db_now(session)
    session.flush()
    snapshot: dict[str, Any] = webhook_public(endpoint).model_dump(mode="json")
    buffer_event(session=session, row=SystemEvent(at=db_now(session), type=WEBHOOK_DISABLED, snapshot=snapshot))
    return endpoint


def enabled_endpoint_ids(*, session: Session) -> list[str]:
    """Every enabled endpoint (each must have its delivery workflow running)."""
    return list(session.scalars(select(WebhookEndpoint.id).where(WebhookEndpoint.enabled.is_(True))))
