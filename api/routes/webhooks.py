"""Webhook endpoints (admins): register, list, change, remove, test, replay; their delivery attempts."""

import logging
import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from fastapi.concurrency import run_in_threadpool
from temporalio.service import RPCError

from api.deps import DatabaseDep, SettingsDep, TemporalClientDep
from api.errors import error_responses
from api.security import Allow, RuledRoute
from core import webhooks as webhook_service
from core.config import Settings
from core.crypto import decrypt_secret
from core.events import WEBHOOK_TEST, encode_body
from core.models import utcnow
from core.schemas import (
    Page,
    WebhookCreate,
    WebhookCreated,
    WebhookDeliveryPublic,
    WebhookPublic,
    WebhookTestResult,
    WebhookUpdate,
)
from core.webhook_runs import start_webhook_delivery
from core.webhook_sender import SendOutcome, new_http_client, send_signed
from core.webhook_urls import UnsafeWebhookUrl, resolve_webhook_url, resolve_webhook_url_async

log = logging.getLogger("returns.api.webhooks")

router = APIRouter(prefix="/webhooks", tags=["webhooks"], route_class=RuledRoute)
# Every webhook route: admins only.
ADMINS = [Allow(admin=True)]
Limit = Annotated[int, Query(ge=1, le=200)]


def _checked_url(url: str, settings: Settings) -> str:
    return resolve_webhook_url(url, allow_private=settings.WEBHOOK_ALLOW_PRIVATE_URLS).url


async def _start(client: TemporalClientDep, settings: Settings, endpoint_id: str) -> None:
    """Start the endpoint's delivery workflow; if Temporal is down now, the worker's start-up repairs it."""
    try:
        await start_webhook_delivery(client, settings, endpoint_id)
    except (RPCError, RuntimeError) as err:
        log.warning("webhook %s saved, its delivery workflow not started yet: %s", endpoint_id, err)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=WebhookCreated,
    dependencies=ADMINS,
    responses=error_responses(400, 422, 503),
)
async def create_webhook(
    body: WebhookCreate, db: DatabaseDep, client: TemporalClientDep, settings: SettingsDep
) -> WebhookCreated:
    """Register a receiver for the given event types; the answer shows its signing secret, this once."""
    url = await run_in_threadpool(_checked_url, body.url, settings)
    endpoint, secret = await db.write(
        lambda s: webhook_service.create_endpoint(
            session=s, url=url, events=body.events, secret_key=settings.SECRET_KEY
        )
    )
    await _start(client, settings, endpoint.id)
    return WebhookCreated(**webhook_service.webhook_public(endpoint).model_dump(), secret=secret)


@router.get("", response_model=Page[WebhookPublic], dependencies=ADMINS, responses=error_responses(422, 503))
async def read_webhooks(
    db: DatabaseDep, cursor: Annotated[str | None, Query(max_length=32)] = None, limit: Limit = 50
) -> Page[WebhookPublic]:
    """List webhook endpoints, oldest first (secrets are never shown again)."""
    rows, next_cursor = await db.read(lambda s: webhook_service.list_endpoints(session=s, cursor=cursor, limit=limit))
    return Page[WebhookPublic](items=[webhook_service.webhook_public(r) for r in rows], next_cursor=next_cursor)


@router.get(
    "/{webhook_id}", response_model=WebhookPublic, dependencies=ADMINS, responses=error_responses(404, 422, 503)
)
async def read_webhook(webhook_id: str, db: DatabaseDep) -> WebhookPublic:
    """One webhook endpoint."""
    endpoint = await db.read(lambda s: webhook_service.get_endpoint(session=s, endpoint_id=webhook_id))
    return webhook_service.webhook_public(endpoint)


@router.patch(
    "/{webhook_id}", response_model=WebhookPublic, dependencies=ADMINS, responses=error_responses(400, 404, 422, 503)
)
async def update_webhook(
    webhook_id: str,
    body: WebhookUpdate,
    db: DatabaseDep,
    client: TemporalClientDep,
    settings: SettingsDep,
) -> WebhookPublic:
    """Change the URL, the event types, or `enabled` (re-enabling resumes after the last event it was given)."""
    url = None if body.url is None else await run_in_threadpool(_checked_url, body.url, settings)
    endpoint, turned_on = await db.write(
        lambda s: webhook_service.update_endpoint(
            session=s, endpoint_id=webhook_id, url=url, events=body.events, enabled=body.enabled
        )
    )
    # A disabled endpoint's workflow ends by itself at its next look (before its next send).
    if turned_on:
        await _start(client, settings, endpoint.id)
    return webhook_service.webhook_public(endpoint)


@router.delete(
    "/{webhook_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=ADMINS,
    responses=error_responses(404, 422, 503),
)
async def delete_webhook(webhook_id: str, db: DatabaseDep) -> Response:
    """Remove an endpoint and its delivery records; nothing more is sent to it."""
    await db.write(lambda s: webhook_service.delete_endpoint(session=s, endpoint_id=webhook_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{webhook_id}/deliveries",
    response_model=Page[WebhookDeliveryPublic],
    dependencies=ADMINS,
    responses=error_responses(404, 422, 503),
)
async def read_deliveries(
    webhook_id: str,
    db: DatabaseDep,
    cursor: Annotated[str | None, Query(max_length=32)] = None,
    limit: Limit = 50,
) -> Page[WebhookDeliveryPublic]:
    """The endpoint's delivery attempts, newest first: event, attempt, status, response code, error, time."""
    rows, next_cursor = await db.read(
        lambda s: webhook_service.list_deliveries(session=s, endpoint_id=webhook_id, cursor=cursor, limit=limit)
    )
    return Page[WebhookDeliveryPublic](
        items=[webhook_service.delivery_public(r) for r in rows], next_cursor=next_cursor
    )


@router.post(
    "/{webhook_id}/test",
    response_model=WebhookTestResult,
    dependencies=ADMINS,
    responses=error_responses(404, 422, 503),
)
async def test_webhook(webhook_id: str, db: DatabaseDep, settings: SettingsDep) -> WebhookTestResult:
    """Send a signed `webhook.test` ping now, record the attempt and return it."""
    endpoint = await db.read(lambda s: webhook_service.get_endpoint(session=s, endpoint_id=webhook_id))
    url, sealed = endpoint.url, endpoint.secret_encrypted
    msg_id = f"test_{uuid.uuid4().hex}"
    at = utcnow()
    payload = encode_body(
        {"id": msg_id, "type": WEBHOOK_TEST, "at": at.isoformat(), "data": {"webhook_id": webhook_id}}
    )
    try:
        target = await resolve_webhook_url_async(url, allow_private=settings.WEBHOOK_ALLOW_PRIVATE_URLS)
    except UnsafeWebhookUrl as err:
        outcome = SendOutcome(status=None, error=err.message, duration_ms=0)
    else:
        async with new_http_client(settings.WEBHOOK_TIMEOUT_SECONDS) as http:
            outcome = await send_signed(
                http,
                target,
                secret=decrypt_secret(sealed, secret_key=settings.SECRET_KEY),
                msg_id=msg_id,
                payload=payload,
                timeout_seconds=settings.WEBHOOK_TIMEOUT_SECONDS,
            )
    row = await db.write(
        lambda s: webhook_service.delivery_public(
            webhook_service.record_attempt(
                session=s,
                endpoint_id=webhook_id,
                event_id=None,
                event_type=WEBHOOK_TEST,
                succeeded=outcome.succeeded,
                response_code=outcome.status,
                error=outcome.error,
                at=at,
                duration_ms=outcome.duration_ms,
            )
        ),
    )
    return WebhookTestResult(**row.model_dump())


@router.post(
    "/{webhook_id}/replay", response_model=WebhookPublic, dependencies=ADMINS, responses=error_responses(404, 422, 503)
)
async def replay_webhook(
    webhook_id: str,
    since: Annotated[int, Query(ge=0, description="Re-send every wanted event after this event id")],
    db: DatabaseDep,
    client: TemporalClientDep,
    settings: SettingsDep,
) -> WebhookPublic:
    """Send again, in id order, every event the endpoint wants after `since`."""
    endpoint = await db.write(lambda s: webhook_service.replay_from(session=s, endpoint_id=webhook_id, since=since))
    if endpoint.enabled:
        await _start(client, settings, endpoint.id)
    return webhook_service.webhook_public(endpoint)
