"""What the case activities tell ops once their transaction has committed: log lines and domain metrics.

Called after the commit, so a rolled-back attempt reports nothing. An attempt retried after its commit
(the worker died before Temporal heard the result) finds the work done; it logs again, and a close retried
while the freed agent's reservation is still unconfirmed counts that hand-off again: rare, and only ever
an over-count by one.
"""

from temporalio import activity

from core.logging import case_context
from core.metrics import record_handoffs, record_reconciler_repairs
from core.models import CaseStatus
from workflows.messages import CaseRecord, ReconcileResult, Reservation


def _log_reservations(reservations: list[Reservation], what: str) -> None:
    for r in reservations:
        activity.logger.info(
            "%s: agent %s reserved for case %s", what, r.agent_id, r.case_id, extra=case_context(r.case_id, r.agent_id)
        )


def report_opened(case: CaseRecord, reservations: list[Reservation]) -> None:
    """Log the filing and any reservation its dispatch made."""
    activity.logger.info(
        "case filed in team %s (priority %s): %s",
        case.team,
        case.priority.value,
        case.status.value,
        extra=case_context(case.id, case.agent_id),
    )
    _log_reservations([r for r in reservations if r.case_id != case.id], "dispatch on filing")


def report_confirmed(case: CaseRecord, agent_id: str | None) -> None:
    """Log whether the reservation for `agent_id` became an assignment."""
    if agent_id is None:
        return
    if case.status == CaseStatus.ASSIGNED and case.agent_id == agent_id:
        activity.logger.info("case assigned to agent %s", agent_id, extra=case_context(case.id, agent_id))
    else:
        activity.logger.info(
            "reservation for agent %s no longer stands; case is %s",
            agent_id,
            case.status.value,
            extra=case_context(case.id, case.agent_id),
        )


def report_closed(case: CaseRecord, reservations: list[Reservation]) -> None:
    """Log the close and each hand-off it made, and count the hand-offs."""
    activity.logger.info("case %s", case.status.value, extra=case_context(case.id, case.agent_id))
    _log_reservations(reservations, f"hand-off after case {case.id} {case.status.value}")
    record_handoffs(activity.metric_meter(), case.team, reservations)


def report_reconciled(result: ReconcileResult) -> None:
    """Log every repair the reconciler made, and count them by kind."""
    for r in result.dispatched:
        activity.logger.warning(
            "reconciler reserved agent %s for waiting case %s (a dispatch was missed)",
            r.agent_id,
            r.case_id,
            extra=case_context(r.case_id, r.agent_id),
        )
    for r in result.resignalled:
        activity.logger.warning(
            "reconciler re-signals the unconfirmed reservation of agent %s for case %s",
            r.agent_id,
            r.case_id,
            extra=case_context(r.case_id, r.agent_id),
        )
    record_reconciler_repairs(activity.metric_meter(), result)
