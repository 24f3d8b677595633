"""The durable lifecycle of one return case."""

from dataclasses import dataclass
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.cases import CaseActivities
    from core.errors import DomainError
    from core.logging import case_context
    from core.metrics import record_case_transition
    from core.models import TERMINAL_STATUSES, CaseStatus
    from core.rules import cancel_refusal, resolve_refusal, routing_timer
    from workflows.case_ui import current_details, search_attribute_updates
    from workflows.delivery import (
        AGENT_RESERVED,
        CASE_MOVED,
        CASE_REQUEUED,
        TEAM_TIMERS,
        deliveries,
        signal_from_workflow,
    )
    from workflows.messages import (
        AgentReservedInput,
        CancelCaseInput,
        CancelInput,
        CaseRecord,
        CaseRequeuedInput,
        CloseResult,
        ConfirmAssignmentInput,
        FileCaseInput,
        FileCaseResult,
        OfferReplyInput,
        OpenCaseInput,
        OpenCaseResult,
        ReopenInput,
        Reservation,
        ResolveCaseInput,
        ResolveInput,
        ReturnCaseInput,
        RoutingStepInput,
        TeamTimers,
    )
    from workflows.policies import db_step


# Runs that record this marker keep the routing timers (wait SLA, resolve SLA); histories from before replay
# without them.
ROUTING_PATCH = "routing-timers"


@dataclass(frozen=True)
class Timer:
    """The next routing timer of the case: what fires (`escalate`, `overdue`, `offer_missed`), when, and why."""

    step: str
    delay: timedelta
    summary: str
    agent_id: str | None = None


def as_application_error(error: DomainError | None) -> ApplicationError | None:
    """A domain refusal in the form an update handler or validator raises."""
    return None if error is None else ApplicationError(error.message, type=error.type, non_retryable=True)


@workflow.defn
class ReturnCaseWorkflow:
    """One return case, from filing to resolved or cancelled. Workflow id `case-<case id>`.

    Updates: `file` (sent with the start; answers once the case is assigned or queued),
    `resolve` (assignee only), `cancel`.
    Signals: `agent_reserved` (dispatch chose an agent), `case_requeued` (the agent was removed),
    `request_resolve` and `request_cancel` (fire-and-forget forms of the updates, for ops).
    Query: `get_case`.
    """

    @workflow.init
    def __init__(self, input: ReturnCaseInput) -> None:
        self._input = input
        self._case: CaseRecord | None = None
        self._rejection: ApplicationError | None = None
        self._first_file_update: str | None = None
        self._reserved_agent: str | None = None
        # The agent whose reservation is being confirmed right now (the activity may have committed already).
        self._confirming: str | None = None
        self._resolve: ResolveCaseInput | None = None
        self._resolve_attempts = 0
        self._resolve_error: ApplicationError | None = None
        self._cancel: CancelCaseInput | None = None
        self._cancel_attempts = 0
        self._cancel_error: ApplicationError | None = None
        # Routing (DESIGN section 13): the team's timers, an offer answer waiting to run, and a wake-up when the
        # timers change.
        self._timers: TeamTimers | None = None
        self._offer_reply: tuple[str, str] | None = None
        self._offer_replies = 0
        self._offer_error: ApplicationError | None = None
        self._requeued = False
        self._reread = False
        self._wake = False

    @workflow.run
    async def run(self, input: ReturnCaseInput) -> CaseRecord | None:
        try:
            # Every database step goes through db_step: a local activity (one short transaction, run inside the
            # workflow task, which saves the activity task round trips; see docs/performance.md), and a
            # regular activity only if the database stays down. Steps are idempotent, so a re-run is harmless.
            opened: OpenCaseResult
            if input.reopen is not None:
                opened = await db_step(
                    CaseActivities.reopen_case,
                    ReopenInput(case_id=input.case_id, request=input.reopen),
                    summary="reopen the case (priority high) and look for a free agent",
                )
            else:
                opened = await db_step(
                    CaseActivities.open_case,
                    OpenCaseInput(
                        case_id=input.case_id,
                        case=input.case,
                        actor=input.actor,
                        idempotency_key=input.idempotency_key,
                    ),
                    summary="file the case and look for a free agent",
                )
        except ApplicationError as refusal:
            # The filing was refused (e.g. the order line already has an open case): no case exists.
            self._rejection = refusal
            await workflow.wait_condition(workflow.all_handlers_finished)
            return None
        self._apply(opened.case)
        await self._deliver(opened.reservations)

        routing = workflow.patched(ROUTING_PATCH)
        while not self._is_terminal():
            timer = self._next_timer() if routing else None
            if timer is not None and timer.delay <= timedelta(0):
                await self._fire(timer)
                continue
            try:
                await workflow.wait_condition(
                    self._has_work,
                    timeout=timer.delay if timer else None,
                    timeout_summary=timer.summary if timer else None,
                )
            except TimeoutError:
                assert timer is not None
                await self._fire(timer)
                continue
            if self._cancel is not None:
                await self._run_cancel(self._cancel)
            elif self._resolve is not None:
                await self._run_resolve(self._resolve)
            elif self._reserved_agent is not None:
                agent_id = self._reserved_agent
                if self._is_open_offer(agent_id) and not self._requeued:
                    # Our own offer: it waits for the agent's answer (or its timer).
                    self._reserved_agent = None
                    if not routing and self._case is not None and self._case.offer_expires_at is not None:
                        if workflow.now() >= self._case.offer_expires_at:
                            await self._fire(Timer("offer_missed", timedelta(0), "offer expired", agent_id))
                else:
                    self._requeued = False
                    await self._confirm(agent_id)
            elif self._offer_reply is not None:
                await self._run_offer_reply(*self._offer_reply)
            elif self._reread:
                self._reread = False
                await self._confirm(None)
            else:
                self._wake = False

        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._case

    # --- steps ----------------------------------------------------------------------------------

    def _has_work(self) -> bool:
        return (
            self._cancel is not None
            or self._resolve is not None
            or self._reserved_agent is not None
            or self._offer_reply is not None
            or self._reread
            or self._wake
        )

    def _is_open_offer(self, agent_id: str | None) -> bool:
        case = self._case
        return (
            case is not None
            and case.status == CaseStatus.RESERVED
            and case.offer_expires_at is not None
            and agent_id is not None
            and case.agent_id == agent_id
        )

    def _next_timer(self) -> Timer | None:
        """The routing timer the case runs now, if any (core/rules.py `routing_timer`, which the history endpoint
        shows too), measured from the database's `offer_expires_at`, `queued_at`, `assigned_at`."""
        if self._case is None:
            return None
        timer = routing_timer(self._case, self._timers)
        if timer is None:
            return None
        return Timer(timer.step, timer.due_at - workflow.now(), timer.summary, timer.agent_id)

    async def _fire(self, timer: Timer) -> None:
        """A routing timer ran out: escalate, mark overdue, or take back a missed offer (the database decides)."""
        summaries = {
            "escalate": "escalate: waited past the wait SLA",
            "overdue": "mark overdue: assigned past the resolve SLA",
            "offer_missed": f"offer missed: set agent {timer.agent_id} away and requeue the case",
        }
        try:
            result: CloseResult = await db_step(
                CaseActivities.routing_step,
                RoutingStepInput(case_id=self._input.case_id, step=timer.step, agent_id=timer.agent_id),
                summary=summaries[timer.step],
            )
        except ApplicationError:
            await self._confirm(None)
        else:
            self._apply(result.case)
            await self._deliver(result.reservations)

    async def _run_offer_reply(self, kind: str, agent_id: str) -> None:
        try:
            if kind == "accept":
                case = await db_step(
                    CaseActivities.confirm_assignment,
                    ConfirmAssignmentInput(case_id=self._input.case_id, agent_id=agent_id, accept_offer=True),
                    summary=f"agent {agent_id} accepts the offer",
                )
                self._apply(case)
            else:
                result: CloseResult = await db_step(
                    CaseActivities.routing_step,
                    RoutingStepInput(case_id=self._input.case_id, step="decline", agent_id=agent_id),
                    summary=f"agent {agent_id} declines: offer the case to the next agent",
                )
                self._apply(result.case)
                await self._deliver(result.reservations)
            self._offer_error = None
        except ApplicationError as refusal:
            self._offer_error = refusal
            await self._confirm(None)
        finally:
            self._offer_reply = None
            self._offer_replies += 1

    async def _confirm(self, agent_id: str | None) -> None:
        self._reserved_agent = None
        self._confirming = agent_id
        try:
            case = await db_step(
                CaseActivities.confirm_assignment,
                ConfirmAssignmentInput(case_id=self._input.case_id, agent_id=agent_id),
                summary=f"assign agent {agent_id}" if agent_id else "read the case back",
            )
        finally:
            self._confirming = None
        self._apply(case)

    async def _run_resolve(self, request: ResolveCaseInput) -> None:
        try:
            closed: CloseResult = await db_step(
                CaseActivities.resolve_case,
                ResolveInput(
                    case_id=self._input.case_id,
                    agent_id=request.agent_id,
                    resolution=request.resolution,
                    actor=f"agent:{request.agent_id}",
                ),
                summary=f"resolve for agent {request.agent_id} and hand them the next case",
            )
        except ApplicationError as refusal:
            # The database refused (our view was stale, e.g. the agent was removed): learn the truth.
            self._resolve_error = refusal
            await self._confirm(None)
        else:
            self._resolve_error = None
            self._apply(closed.case)
            await self._deliver(closed.reservations)
        finally:
            self._resolve = None
            self._resolve_attempts += 1

    async def _run_cancel(self, request: CancelCaseInput) -> None:
        try:
            closed: CloseResult = await db_step(
                CaseActivities.cancel_case,
                CancelInput(case_id=self._input.case_id, reason=request.reason, actor=request.actor),
                summary="cancel, free the agent and hand them the next case",
            )
        except ApplicationError as refusal:
            self._cancel_error = refusal
            await self._confirm(None)
        else:
            self._cancel_error = None
            self._apply(closed.case)
            await self._deliver(closed.reservations)
        finally:
            self._cancel = None
            self._cancel_attempts += 1

    async def _deliver(self, reservations: list[Reservation]) -> None:
        """Tell every case that dispatch just reserved an agent for; our own reservation we take directly."""
        for reservation in reservations:
            if reservation.case_id == self._input.case_id:
                self._reserved_agent = reservation.agent_id
        await signal_from_workflow(deliveries(r for r in reservations if r.case_id != self._input.case_id))

    def _is_terminal(self) -> bool:
        return self._case is not None and self._case.status in TERMINAL_STATUSES

    def _apply(self, case: CaseRecord) -> None:
        """Adopt the database's view of the case, and tell the UI and the metrics."""
        before, self._case = self._case, case
        if case.timers is not None:
            self._timers = case.timers
        if case.status == CaseStatus.RESERVED and case.agent_id and case.offer_expires_at is None:
            self._reserved_agent = case.agent_id
        workflow.upsert_search_attributes(search_attribute_updates(case))
        workflow.set_current_details(current_details(case))
        record_case_transition(workflow.metric_meter(), before, case)

    # --- messages -------------------------------------------------------------------------------

    @workflow.update
    async def file(self, input: FileCaseInput) -> FileCaseResult:
        """Answer once the case is assigned, queued, or refused."""
        update = workflow.current_update_info()
        update_id = update.id if update else ""
        if self._first_file_update is None:
            self._first_file_update = update_id
        await workflow.wait_condition(
            lambda: (
                self._rejection is not None
                or (
                    self._case is not None
                    and self._reserved_agent is None
                    # An offer is an outcome too: the case waits for its agent's answer.
                    and (self._case.status != CaseStatus.RESERVED or self._case.offer_expires_at is not None)
                )
            )
        )
        if self._rejection is not None:
            raise self._rejection
        assert self._case is not None
        return FileCaseResult(case=self._case, created=update_id == self._first_file_update)

    @file.validator
    def validate_file(self, input: FileCaseInput) -> None:
        if self._is_terminal():
            return  # a reopen that reached this run as it ends: answered with the closed case, and sent again
        if self._input.reopen is None and input.case != self._input.case:
            raise ApplicationError(
                "this Idempotency-Key was already used for a different case", type="IdempotencyKeyReused"
            )

    @workflow.update
    async def resolve(self, input: ResolveCaseInput) -> CaseRecord:
        """Resolve the case for its assignee; repeated by the same agent it answers the same."""
        if not self._is_terminal():
            if self._reserved_agent == input.agent_id and self._confirming is None:
                # The workflow has yet to confirm this agent's assignment (e.g. it replayed after a restart).
                await workflow.wait_condition(lambda: self._reserved_agent != input.agent_id)
            if self._resolve is None:
                self._resolve = input
            attempts = self._resolve_attempts
            # A cancel may close the case first; then this resolve is answered without an attempt.
            await workflow.wait_condition(lambda: self._resolve_attempts > attempts or self._is_terminal())
        case = self._case
        assert case is not None
        if case.status == CaseStatus.RESOLVED and case.agent_id == input.agent_id:
            return case
        # Prefer the reason the fresh state gives; the database's own refusal otherwise.
        raise (
            self._refusal_for_resolve(input)
            or self._resolve_error
            or ApplicationError(f"case {case.id} could not be resolved", type="CaseNotAssigned")
        )

    @resolve.validator
    def validate_resolve(self, input: ResolveCaseInput) -> None:
        refusal = self._refusal_for_resolve(input)
        if refusal is not None:
            raise refusal

    def _refusal_for_resolve(self, input: ResolveCaseInput) -> ApplicationError | None:
        if input.agent_id in (self._confirming, self._reserved_agent):
            # This agent's assignment is being (or about to be) confirmed: our view of the case may be stale (a
            # replay after a restart); the database decides once it is.
            return None
        return as_application_error(resolve_refusal(self._case, input.agent_id))

    @workflow.update
    async def cancel(self, input: CancelCaseInput) -> CaseRecord:
        """Cancel the case wherever it stands."""
        assert self._case is not None
        if self._cancel is None and not self._is_terminal():
            self._cancel = input
        attempts = self._cancel_attempts
        await workflow.wait_condition(lambda: self._cancel_attempts > attempts or self._is_terminal())
        if self._case.status == CaseStatus.CANCELLED:
            return self._case
        raise (None if self._is_terminal() else self._cancel_error) or ApplicationError(
            f"case {self._case.id} is already {self._case.status.value}", type="CaseClosed"
        )

    @cancel.validator
    def validate_cancel(self, input: CancelCaseInput) -> None:
        refusal = as_application_error(cancel_refusal(self._case))
        if refusal is not None:
            raise refusal

    @workflow.update
    async def accept(self, input: OfferReplyInput) -> CaseRecord:
        """The offered agent accepts: the case becomes assigned to them."""
        return await self._answer_offer("accept", input.agent_id)

    @accept.validator
    def validate_accept(self, input: OfferReplyInput) -> None:
        refusal = self._refusal_for_offer_reply(input.agent_id, accepting=True)
        if refusal is not None:
            raise refusal

    @workflow.update
    async def decline(self, input: OfferReplyInput) -> CaseRecord:
        """The offered agent declines: the case goes to the next agent, the decliner to the back of the idle order."""
        return await self._answer_offer("decline", input.agent_id)

    @decline.validator
    def validate_decline(self, input: OfferReplyInput) -> None:
        refusal = self._refusal_for_offer_reply(input.agent_id, accepting=False)
        if refusal is not None:
            raise refusal

    def _refusal_for_offer_reply(self, agent_id: str, *, accepting: bool) -> ApplicationError | None:
        case = self._case
        if accepting and case is not None and case.status == CaseStatus.ASSIGNED and case.agent_id == agent_id:
            return None  # a repeat of an accepted offer
        if agent_id in (self._confirming, self._reserved_agent) or self._is_open_offer(agent_id):
            return None
        state = case.status.value if case is not None else "being filed"
        return ApplicationError(f"case is {state}, not offered to agent {agent_id}", type="NotAnOffer")

    async def _answer_offer(self, kind: str, agent_id: str) -> CaseRecord:
        case = self._case
        if kind == "accept" and case is not None and case.status == CaseStatus.ASSIGNED and case.agent_id == agent_id:
            return case
        if not self._is_terminal():
            if self._offer_reply is None:
                self._offer_reply = (kind, agent_id)
            replies = self._offer_replies
            await workflow.wait_condition(lambda: self._offer_replies > replies or self._is_terminal())
        case = self._case
        assert case is not None
        if kind == "accept" and case.status == CaseStatus.ASSIGNED and case.agent_id == agent_id:
            return case
        if kind == "decline" and self._offer_error is None and case.agent_id != agent_id:
            return case
        raise self._offer_error or ApplicationError(
            f"case {case.id} is {case.status.value}, no longer offered to agent {agent_id}", type="NotAnOffer"
        )

    @workflow.signal(name=TEAM_TIMERS)
    def team_timers(self, input: TeamTimers) -> None:
        """An admin changed the team's routing timers: the running timer is recomputed from them."""
        self._timers = input
        self._wake = True

    @workflow.signal(name=CASE_MOVED)
    def case_moved(self, input: CaseRequeuedInput) -> None:
        """The case was transferred to another team: read it back from the database."""
        if not self._is_terminal():
            self._reread = True

    @workflow.signal(name=AGENT_RESERVED)
    def agent_reserved(self, input: AgentReservedInput) -> None:
        """Dispatch reserved an agent for this case; confirm it (duplicates are harmless)."""
        if not self._is_terminal():
            self._reserved_agent = input.agent_id

    @workflow.signal(name=CASE_REQUEUED)
    def case_requeued(self, input: CaseRequeuedInput) -> None:
        """The holding agent is gone; read the case back from the database."""
        if self._case is not None and self._case.agent_id == input.agent_id and not self._is_terminal():
            # Confirming as that agent fails harmlessly and returns the case as it now is.
            self._reserved_agent = input.agent_id
            self._requeued = True

    @workflow.signal
    def request_resolve(self, input: ResolveCaseInput) -> None:
        """Fire-and-forget resolve (ops, CLI); ignored unless the sender is the assignee."""
        if self._refusal_for_resolve(input) is None and self._resolve is None and not self._is_terminal():
            self._resolve = input
        else:
            workflow.logger.warning(
                "ignored resolve signal from agent %s",
                input.agent_id,
                extra=case_context(self._input.case_id, self._case.agent_id if self._case else None),
            )

    @workflow.signal
    def request_cancel(self, input: CancelCaseInput) -> None:
        """Fire-and-forget cancel (ops, CLI)."""
        if self._cancel is None and not self._is_terminal():
            self._cancel = input

    @workflow.query
    def get_case(self) -> CaseRecord | None:
        """The case as the workflow last saw it in the database."""
        return self._case
