"""The live event stream (Server-Sent Events): `GET /events` for admins, agents and service keys, and a
customer's own case at `GET /track/{token}/events`."""

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent

from api.errors import ServiceUnavailable, error_responses
from api.event_hub import EventHub, Subscriber
from api.schemas import TrackedCase
from api.security import Allow, CurrentPrincipal, Principal, RuledRoute, TrackedCaseId
from core.errors import Invalid, UnknownEventType
from core.events import CASE_TYPES, EVENT_TYPES, Audience, unknown_types
from core.models import CaseStatus
from core.tracking import STATUS_WORDS

router = APIRouter(tags=["events"], route_class=RuledRoute)

# How long a new stream waits for this process's reader to reach the database before answering 503.
READY_TIMEOUT_SECONDS = 5.0

TypesQuery = Annotated[
    list[str] | None,
    Query(
        description="Only these event types (repeat the parameter or separate with commas)",
        max_length=len(EVENT_TYPES),
    ),
]
LastEventId = Annotated[
    str | None,
    Header(alias="Last-Event-ID", max_length=20, description="Resume after this event (what the browser sends back)"),
]
STREAM_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "`text/event-stream`: `id:` event id, `event:` type, `data:` the event's JSON body"},
    **error_responses(422, 503),
}


def _types(types: list[str] | None) -> frozenset[str]:
    names = [t.strip() for value in types or [] for t in value.split(",") if t.strip()]
    wrong = unknown_types(names)
    if wrong:
        raise UnknownEventType(f"unknown event types {wrong}; known: {', '.join(EVENT_TYPES)}")
    return frozenset(names)


def _after(last_event_id: str | None) -> int | None:
    if last_event_id is None or not last_event_id.strip():
        return None
    try:
        after = int(last_event_id.strip())
    except ValueError:
        raise Invalid("Last-Event-ID must be the id of an event this stream sent") from None
    if after < 0:
        raise Invalid("Last-Event-ID must be the id of an event this stream sent")
    return after


def audience_of(principal: Principal, types: frozenset[str]) -> Audience:
    """What a principal may see on the stream (admins all; agents their own cases and team queue; keys cases)."""
    if principal.role == "admin":
        return Audience(kind="admin", types=types)
    if principal.role == "agent":
        return Audience(kind="agent", agent_id=principal.agent_id, team=principal.team, types=types)
    return Audience(kind="service", types=types)


def tracking_view(snapshot: dict[str, Any]) -> dict[str, Any]:
    """A case snapshot as its customer sees it (no agent, no email). The place in line is not kept with
    events (it moves with other customers' cases): it is null here, and `GET /track/{token}` tells it."""
    status = CaseStatus(snapshot["status"])
    return TrackedCase(
        id=snapshot["id"],
        order_id=snapshot["order_id"],
        product_sku=snapshot["product_sku"],
        product_name=snapshot["product_name"],
        status=status,
        status_text=STATUS_WORDS[status],
        place_in_line=None,
        resolution=snapshot.get("resolution") if status == CaseStatus.RESOLVED else None,
        filed_at=snapshot["queued_at"],
        resolved_at=snapshot.get("resolved_at"),
        cancelled_at=snapshot.get("cancelled_at"),
    ).model_dump(mode="json")


@dataclass
class OpenStream:
    """A subscription registered with this process's hub, and where its backlog ends."""

    hub: EventHub
    sub: Subscriber
    position: int


async def _open(request: Request, audience: Audience, last_event_id: str | None) -> AsyncIterator[OpenStream]:
    after = _after(last_event_id)
    hub: EventHub = request.app.state.event_hub
    if not await hub.wait_ready(READY_TIMEOUT_SECONDS):
        raise ServiceUnavailable("the event stream cannot read the database yet; retry later")
    sub, position = hub.subscribe(audience, after)
    try:
        yield OpenStream(hub, sub, position)
    finally:
        hub.unsubscribe(sub)


async def open_stream(
    request: Request, principal: CurrentPrincipal, types: TypesQuery = None, last_event_id: LastEventId = None
) -> AsyncIterator[OpenStream]:
    """Check the request and register the stream before the response starts (errors are still HTTP errors)."""
    async for opened in _open(request, audience_of(principal, _types(types)), last_event_id):
        yield opened


async def open_case_stream(
    request: Request, case_id: TrackedCaseId, types: TypesQuery = None, last_event_id: LastEventId = None
) -> AsyncIterator[OpenStream]:
    """A customer's stream: their case's events only, in the tracking view."""
    wanted = _types(types)
    not_case = sorted(wanted - set(CASE_TYPES))
    if not_case:
        raise UnknownEventType(f"a case's stream carries case events only, not {not_case}")
    audience = Audience(kind="customer", case_id=case_id, case_view=tracking_view, types=wanted)
    async for opened in _open(request, audience, last_event_id):
        yield opened


@router.get(
    "/events",
    response_class=EventSourceResponse,
    dependencies=[Allow(admin=True, agent=True, scopes={"events:read"})],
    responses=STREAM_RESPONSES,
)
async def stream_events(opened: Annotated[OpenStream, Depends(open_stream)]) -> AsyncIterable[ServerSentEvent]:
    """Live events as Server-Sent Events, as you may see them; resume with Last-Event-ID, filter with `types`."""
    async for event in opened.hub.stream(opened.sub, opened.position):
        yield event


@router.get("/track/{token}/events", response_class=EventSourceResponse, responses=STREAM_RESPONSES)
async def stream_case_events(
    opened: Annotated[OpenStream, Depends(open_case_stream)],
) -> AsyncIterable[ServerSentEvent]:
    """Your case's events, live, as Server-Sent Events (resume with Last-Event-ID)."""
    async for event in opened.hub.stream(opened.sub, opened.position):
        yield event
