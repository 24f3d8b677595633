"""The HTTP API's request and response models. (What workflows carry is in workflows/messages.py.)"""

from datetime import datetime
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from core.models import AgentStatus, CasePriority, CaseStatus
from core.security import PASSWORD_MAX_LENGTH, PASSWORD_MIN_LENGTH

# Text fields are checked as sent, then trimmed (and emails lowercased), so that the OpenAPI document
# promises exactly what validation accepts: a length or pattern checked after trimming cannot be written
# down in the document. Whitespace is spelled out because `\s` differs between pydantic's regex engine
# and the document's (ECMA) one, for U+0085 and U+FEFF.
SPACE_CHARS = (
    "\t\n\v\f\r \x1c\x1d\x1e\x1f\x85\xa0\u1680"
    + "".join(map(chr, range(0x2000, 0x200B)))
    + "\u2028\u2029\u202f\u205f\u3000\ufeff"
)
SPACE = r"\t\n\v\f\r \x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
NOT_BLANK = rf"[^{SPACE}]"
EMAIL_MAX = 320


def _trim(value: str) -> str:
    return value.strip(SPACE_CHARS)


def _trim_lower(value: str) -> str:
    lowered = value.strip(SPACE_CHARS).lower()
    if len(lowered) > EMAIL_MAX:  # a few characters lowercase into two
        raise ValueError(f"longer than {EMAIL_MAX} characters once lowercased")
    return lowered


Trim = AfterValidator(_trim)
TrimLower = AfterValidator(_trim_lower)
Text200 = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=NOT_BLANK), Trim]
Text100 = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=NOT_BLANK), Trim]
Text500 = Annotated[str, StringConstraints(min_length=1, max_length=500, pattern=NOT_BLANK), Trim]
TeamName = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=rf"^[{SPACE}]*[a-z0-9][a-z0-9_-]*[{SPACE}]*$"), Trim
]
Email = Annotated[
    str,
    StringConstraints(max_length=EMAIL_MAX, pattern=rf"^[{SPACE}]*[^@{SPACE}]+@[^@{SPACE}]+\.[^@{SPACE}]+[{SPACE}]*$"),
    TrimLower,
]
Note = Annotated[str, StringConstraints(max_length=5000), Trim]
# Taken as typed: no trimming, no composition rules (NIST SP 800-63-4); never echoed, logged or stored in clear.
Password = Annotated[
    str,
    StringConstraints(min_length=PASSWORD_MIN_LENGTH, max_length=PASSWORD_MAX_LENGTH),
    Field(
        json_schema_extra={"format": "password", "writeOnly": True},
        description=f"{PASSWORD_MIN_LENGTH} to {PASSWORD_MAX_LENGTH} characters; a passphrase works well",
    ),
]

T = TypeVar("T")


class Schema(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class Page[T](Schema):
    """One page of a list; pass `next_cursor` back as `cursor` for the next page."""

    items: list[T]
    next_cursor: str | None = None


class TeamCreate(Schema):
    model_config = ConfigDict(extra="forbid")
    name: TeamName


# A routing timer: whole seconds, from one second to a year; null switches it off.
TimerSeconds = Annotated[int, Field(ge=1, le=366 * 24 * 3600)]


class TeamPublic(Schema):
    name: str
    created_at: datetime
    wait_sla_seconds: int | None = None
    resolve_sla_seconds: int | None = None
    offer_timeout_seconds: int | None = None


class TeamUpdate(Schema):
    """A team's routing timers (DESIGN section 13); a field left out is unchanged, `null` switches it off."""

    model_config = ConfigDict(extra="forbid")
    wait_sla_seconds: TimerSeconds | None = Field(
        None, description="escalate a case (priority high) still queued this long after it joined the queue"
    )
    resolve_sla_seconds: TimerSeconds | None = Field(
        None, description="mark a case overdue when it is still assigned this long after it was assigned"
    )
    offer_timeout_seconds: TimerSeconds | None = Field(
        None, description="offer each case to its agent, who must accept within this time or is set away"
    )


class TeamQueue(Schema):
    """A team's queue figures."""

    team: str
    waiting: int
    # The case the next free agent of this team will get.
    next_case_id: str | None
    oldest_wait_seconds: float | None
    agents_available: int
    agents_busy: int
    agents_away: int
    # Assigned cases past the team's resolve SLA, and how many of the waiting cases were escalated.
    overdue: int = 0
    escalated_waiting: int = 0
    overdue_case_ids: list[str] = Field(default_factory=list)


class TeamWithQueue(TeamPublic):
    queue: TeamQueue


class AgentCreate(Schema):
    model_config = ConfigDict(extra="forbid")
    name: Text200
    email: Email
    team: TeamName = "returns"
    status: AgentStatus = AgentStatus.AVAILABLE
    # The agent signs in with `email` and this; without one they cannot sign in until an admin sets it.
    password: Password | None = None


class AgentUpdate(Schema):
    model_config = ConfigDict(extra="forbid")
    name: Text200 | None = None
    email: Email | None = None
    team: TeamName | None = None
    status: AgentStatus | None = None
    # A new password ends every token the agent holds.
    password: Password | None = None


class AgentPublic(Schema):
    id: str
    name: str
    email: str
    team: str
    status: AgentStatus
    available_since: datetime
    current_case_id: str | None
    created_at: datetime
    updated_at: datetime


class CaseCreate(Schema):
    """What a customer files."""

    model_config = ConfigDict(extra="forbid")
    customer_name: Text200
    customer_email: Email
    order_id: Text100
    product_sku: Text100
    product_name: Text200
    reason: Text500
    description: Note | None = None
    priority: CasePriority = CasePriority.NORMAL
    team: TeamName = "returns"


class CasePublic(Schema):
    id: str
    workflow_id: str
    team: str
    priority: CasePriority
    status: CaseStatus
    agent_id: str | None
    customer_name: str
    customer_email: str
    order_id: str
    product_sku: str
    product_name: str
    reason: str
    description: str | None
    queued_at: datetime
    reserved_at: datetime | None
    assigned_at: datetime | None
    resolved_at: datetime | None
    cancelled_at: datetime | None
    resolution: str | None
    cancel_reason: str | None
    escalated_at: datetime | None = None
    overdue_at: datetime | None = None
    offer_expires_at: datetime | None = None
    reopened_at: datetime | None = None


class CaseResolve(Schema):
    """The signed-in agent resolves the case they hold; who they are comes from their token."""

    model_config = ConfigDict(extra="forbid")
    resolution: Note | None = None


class CaseCancel(Schema):
    model_config = ConfigDict(extra="forbid")
    reason: Note | None = None


class CaseTransfer(Schema):
    """Move a case to another team's queue (it keeps its place: its original `queued_at`)."""

    model_config = ConfigDict(extra="forbid")
    team: TeamName
    note: Note | None = None


class CaseReopen(Schema):
    model_config = ConfigDict(extra="forbid")
    reason: Note | None = None


class CaseEventPublic(Schema):
    """One transition of a case: when, what, who made it (`actor`) and why (`reason`)."""

    id: int
    at: datetime
    type: str
    actor: str
    from_status: str | None
    to_status: str | None
    agent_id: str | None
    reason: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _reason_from_data(self) -> "CaseEventPublic":
        # The reason is stored with the event's data; the API shows it as a field of its own.
        if "reason" in self.data:
            self.reason = self.reason or str(self.data["reason"])
            self.data = {k: v for k, v in self.data.items() if k != "reason"}
        return self


class CaseTimer(Schema):
    """A routing timer the case's workflow runs now; its outcome, once it fires, is an event of the history."""

    step: str = Field(description="what it does when it fires: `escalate`, `overdue` or `offer_missed`")
    due_at: datetime
    summary: str


class CaseHistory(Schema):
    case_id: str
    workflow_id: str
    temporal_ui_url: str
    events: list[CaseEventPublic]
    running_timer: CaseTimer | None = None


class QueueOverview(Schema):
    teams: list[TeamQueue]


WebhookUrl = Annotated[str, StringConstraints(min_length=1, max_length=2048, pattern=NOT_BLANK), Trim]
EventTypeList = Annotated[list[str], Field(min_length=1, max_length=50)]


class WebhookCreate(Schema):
    """A receiver to register: where, and which event types it wants."""

    model_config = ConfigDict(extra="forbid")
    url: WebhookUrl
    events: EventTypeList


class WebhookUpdate(Schema):
    model_config = ConfigDict(extra="forbid")
    url: WebhookUrl | None = None
    events: EventTypeList | None = None
    enabled: bool | None = None


class WebhookPublic(Schema):
    """A webhook endpoint (its signing secret is shown once, when it is created)."""

    id: str
    url: str
    events: list[str]
    enabled: bool
    disabled_reason: str | None
    failing_since: datetime | None
    # The last event the endpoint was given (or passed over as not wanted).
    last_event_id: str
    created_at: datetime
    updated_at: datetime


class WebhookCreated(WebhookPublic):
    secret: str = Field(description="The signing secret (Standard Webhooks, `whsec_...`); shown this once only")


class WebhookDeliveryPublic(Schema):
    """One attempt to deliver an event (or a test ping) to an endpoint."""

    id: int
    event_id: str | None
    event_type: str
    attempt: int
    status: str = Field(description="`succeeded` (a 2xx answer) or `failed`")
    response_code: int | None
    error: str | None
    at: datetime
    duration_ms: int


class WebhookTestResult(WebhookDeliveryPublic):
    """The test ping's attempt, as recorded."""
