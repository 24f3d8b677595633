"""Events as they leave the system: their public types, their body, and who may see which.

One place builds the body `{"id", "type", "at", "data"}` for the live stream and the webhooks alike;
`data` is the snapshot the outbox row stored at record time, as the reader may see it.
"""

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from core.outbox import StoredEvent

# Case event types the service records (case_event.type); the routing ones are DESIGN section 13's.
CASE_EVENT_TYPES = (
    "filed",
    "reserved",
    "assigned",
    "resolved",
    "cancelled",
    "requeued",
    "offered",
    "declined",
    "offer_missed",
    "escalated",
    "overdue",
    "transferred",
    "reopened",
)
AGENT_EVENT_TYPES = ("created", "updated", "removed")
WEBHOOK_DISABLED = "webhook.disabled"
# A ping sent by `POST /webhooks/{id}/test`; not an outbox event, never subscribed to.
WEBHOOK_TEST = "webhook.test"

CASE_TYPES = tuple(f"case.{t}" for t in CASE_EVENT_TYPES)
AGENT_TYPES = tuple(f"agent.{t}" for t in AGENT_EVENT_TYPES)
# Every type a subscriber or a webhook can ask for.
EVENT_TYPES = (*CASE_TYPES, *AGENT_TYPES, WEBHOOK_DISABLED)


def public_type(event: StoredEvent) -> str | None:
    """The event's public type (`case.assigned`, `agent.removed`, ...); None for rows that are not announced."""
    if event.snapshot is None:
        return None  # recorded before the outbox existed
    if event.kind == "case" and event.type in CASE_EVENT_TYPES:
        return f"case.{event.type}"
    if event.kind == "agent" and event.type in AGENT_EVENT_TYPES:
        return f"agent.{event.type}"
    if event.kind == "system" and event.type == WEBHOOK_DISABLED:
        return event.type
    return None


def unknown_types(types: Iterable[str]) -> list[str]:
    """The names in `types` that are not event types, in the order given."""
    return [t for t in types if t not in EVENT_TYPES]


def event_body(event: StoredEvent, type: str, data: dict[str, Any]) -> dict[str, Any]:
    """The public body of an event: `{"id": "<id>", "type", "at", "data"}`."""
    return {"id": str(event.id), "type": type, "at": event.at.isoformat(), "data": data}


def encode_body(body: dict[str, Any]) -> str:
    """The body as sent: compact JSON (webhooks sign exactly these characters)."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


@dataclass
class Audience:
    """Who reads a stream: decides, event by event, whether they see it and what `data` they get.

    - `admin`: everything, as stored;
    - `service` (an API key with `events:read`): every case event;
    - `agent`: events of the cases they hold or are named on, their team's queued cases, and their own
      agent events; never a teammate's held case nor another team's (from the event's snapshot alone);
    - `customer`: the events of one case, through `case_view` (the tracking view).
    """

    kind: str
    agent_id: str | None = None
    team: str | None = None
    case_id: str | None = None
    # Turns a case snapshot into what this reader may see of it (default: as stored).
    case_view: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    types: frozenset[str] = field(default_factory=frozenset)

    def may_care(self, event: StoredEvent, type: str) -> bool:
        """A quick first cut, on what cannot change while the stream is open (the team can: `sees` decides)."""
        if self.types and type not in self.types:
            return False
        if self.kind == "customer":
            return event.subject_id == self.case_id
        if self.kind in ("service", "agent"):
            return event.kind in ("case", "agent") if self.kind == "agent" else event.kind == "case"
        return True

    def sees(self, event: StoredEvent, type: str) -> bool:
        """True when this reader may see the event (before the `types` filter)."""
        snapshot = event.snapshot or {}
        if self.kind == "admin":
            return True
        if self.kind == "service":
            return event.kind == "case"
        if self.kind == "customer":
            return event.kind == "case" and event.subject_id == self.case_id
        if self.kind == "agent":
            if event.kind == "agent":
                return event.agent_id == self.agent_id
            if event.kind != "case":
                return False
            if self.agent_id is not None and self.agent_id in (snapshot.get("agent_id"), event.agent_id):
                return True
            return snapshot.get("status") == "queued" and snapshot.get("team") == self.team
        return False

    def view(self, event: StoredEvent, type: str) -> dict[str, Any] | None:
        """The event's body for this reader, or None when they do not get it."""
        if self.types and type not in self.types:
            return None
        if not self.sees(event, type):
            return None
        data = dict(event.snapshot or {})
        if event.kind == "case" and self.case_view is not None:
            data = self.case_view(data)
        return event_body(event, type, data)

    def follow(self, event: StoredEvent) -> None:
        """Keep the reader's own state current: an agent who moves team sees their new team's queue."""
        if self.kind == "agent" and event.kind == "agent" and event.agent_id == self.agent_id and event.snapshot:
            self.team = event.snapshot.get("team", self.team)

    def ends_with(self, event: StoredEvent) -> bool:
        """True when this reader's stream must close after this event (the agent was removed)."""
        return (
            self.kind == "agent"
            and event.kind == "agent"
            and event.agent_id == self.agent_id
            and event.type == "removed"
        )


def matches_endpoint(types: Iterable[str], type: str) -> bool:
    """True when a webhook endpoint that asked for `types` wants an event of `type`."""
    return type in set(types)
