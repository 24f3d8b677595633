"""Every type a workflow or an activity receives, returns or stores: the payloads Temporal keeps in history.

They live apart from the HTTP request and response schemas (`core/schemas.py`) on purpose: a running case
replays its recorded history through these models, so a change in what the API validates or shows can
never break that replay. Change them only compatibly (add optional fields; never rename, retype or
remove one a recorded history carries); docs/workflows.md says how.
"""

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from core.models import CasePriority, CaseStatus


class Message(BaseModel):
    # Fields a newer or older payload carries beyond ours are ignored, so histories stay readable.
    model_config = ConfigDict(from_attributes=True, extra="ignore")


# --- the case, as workflows see it -------------------------------------------------------------


class CaseDraft(Message):
    """What was filed, as the API validated it: the case workflow's own copy of the filing."""

    customer_name: str
    customer_email: str
    order_id: str
    product_sku: str
    product_name: str
    reason: str
    description: str | None = None
    priority: CasePriority = CasePriority.NORMAL
    team: str = "returns"


class TeamTimers(Message):
    """A team's routing timers in seconds (None: off); sent as signal `team_timers` when an admin changes them."""

    wait_sla_seconds: int | None = None
    resolve_sla_seconds: int | None = None
    offer_timeout_seconds: int | None = None


class CaseRecord(Message):
    """The case as the database returned it to a workflow step (the routing fields are absent from histories
    recorded before them, hence their defaults)."""

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
    # The case's team's timers when the record was read.
    timers: TeamTimers | None = None


class Reservation(Message):
    """Dispatch paired this case with this agent; the case workflow must confirm it."""

    case_id: str
    agent_id: str


class Requeue(Message):
    """A case went back to the queue because `agent_id` (who held it) was removed."""

    case_id: str
    agent_id: str
    actor: str


# --- ReturnCaseWorkflow: input, updates, signals -----------------------------------------------


class ReopenRequest(Message):
    """Why and by whom a resolved case is reopened (a new run of its workflow starts with it)."""

    reason: str | None = None
    actor: str
    window_days: float


class ReturnCaseInput(Message):
    """Input of `ReturnCaseWorkflow.run`. (Histories recorded before 0003 also carry `filed_at`, ignored:
    the database's clock now stamps `queued_at`.) With `reopen`, the run reopens the resolved case instead of
    filing it."""

    case_id: str
    case: CaseDraft
    actor: str
    idempotency_key: str | None = None
    reopen: ReopenRequest | None = None


class FileCaseInput(Message):
    """Input of the `file` update sent with the workflow start; the request must match the case."""

    case: CaseDraft
    idempotency_key: str | None = None


class FileCaseResult(Message):
    case: CaseRecord
    # False when this request was a repeat of one that already filed the case.
    created: bool


class AgentReservedInput(Message):
    """Signal: dispatch reserved `agent_id` for this case."""

    agent_id: str


class CaseRequeuedInput(Message):
    """Signal: the holding agent was removed or changed, the case is back in the queue."""

    agent_id: str
    actor: str


class ResolveCaseInput(Message):
    """Update/signal: the assignee resolves the case."""

    agent_id: str
    resolution: str | None = None


class CancelCaseInput(Message):
    """Update/signal: cancel the case wherever it is."""

    reason: str | None = None
    actor: str = "system"


class OfferReplyInput(Message):
    """Update `accept` or `decline`: the offered agent answers the offer."""

    agent_id: str


# --- case activities ---------------------------------------------------------------------------


class OpenCaseInput(Message):
    case_id: str
    case: CaseDraft
    actor: str
    idempotency_key: str | None = None


class OpenCaseResult(Message):
    case: CaseRecord
    reservations: list[Reservation]


class ConfirmAssignmentInput(Message):
    case_id: str
    # None only reads the case back (after a refused transition).
    agent_id: str | None
    # True: the agent accepted an offer (an offer is never confirmed otherwise).
    accept_offer: bool = False


class ReopenInput(Message):
    case_id: str
    request: ReopenRequest


class RoutingStepInput(Message):
    """A routing timer fired (`escalate`, `overdue`, `offer_missed`) or an agent declined an offer (`decline`)."""

    case_id: str
    step: str
    # The offered agent, for `decline` and `offer_missed`.
    agent_id: str | None = None


class ResolveInput(Message):
    case_id: str
    agent_id: str
    resolution: str | None
    actor: str


class CancelInput(Message):
    case_id: str
    reason: str | None
    actor: str


class CloseResult(Message):
    case: CaseRecord
    reservations: list[Reservation]


# --- the reconciler ----------------------------------------------------------------------------


class ReconcileInput(Message):
    """Input of the reconcile activity: re-signal reservations unconfirmed for this long."""

    resignal_after_seconds: float


class ReconcileResult(Message):
    dispatched: list[Reservation]
    resignalled: list[Reservation]
    repaired: list[str]


class ReconcilerInput(Message):
    """Input of `ReconcileWorkflow.run`, carried across continue-as-new."""

    interval_seconds: float
    resignal_after_seconds: float
    paused: bool = False
    # Passes run by earlier runs of this workflow id (continue-as-new), for the details panel.
    passes_before: int = 0
    last_pass: "ReconcilePass | None" = None
    # About 6 history events a pass (timer, workflow task, marker), more when it repairs: a run stays near
    # 1,000 events, far below the 10,240 at which Temporal starts warning.
    passes_per_run: int = 150
    # Every this many passes, start the delivery workflow of any enabled webhook endpoint that has none
    # running (a start lost to an outage); 0: never.
    webhook_repair_every: int = 12


class ReconcilePass(Message):
    """What one reconcile pass did, and when (the workflow's clock)."""

    at: datetime
    dispatched: int
    resignalled: int
    # True when the pass waited out the database in a regular activity.
    slow: bool = False


class ReconcilerSettings(Message):
    """Signal `configure`: the worker brings the running reconciler up to its settings."""

    interval_seconds: float
    resignal_after_seconds: float


class ReconcilerState(Message):
    """Query `state` of the reconciler."""

    interval_seconds: float
    resignal_after_seconds: float
    paused: bool
    passes: int
    last_pass: ReconcilePass | None


ReconcilerInput.model_rebuild()


# --- webhook delivery --------------------------------------------------------------------------


class WebhookDeliveryInput(Message):
    """Input of `WebhookDeliveryWorkflow.run`, carried across continue-as-new; the retry schedule comes from the
    settings of whoever started it."""

    endpoint_id: str
    retry_initial_seconds: float
    retry_max_interval_seconds: float


class WebhookDeliveryResult(Message):
    """Why the delivery workflow ended: the endpoint was disabled or deleted."""

    endpoint_id: str
    reason: str | None


class DeliverInput(Message):
    """Input of the delivery activity: the endpoint (never its URL or secret, which it reads itself)."""

    endpoint_id: str


class DeliverResult(Message):
    """What one delivery round did."""

    delivered: int
    # True when the endpoint is disabled or gone: the workflow ends (unless woken meanwhile).
    stopped: bool = False
    reason: str | None = None
