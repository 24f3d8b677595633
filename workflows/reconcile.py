"""The reconciler: a safety net run by a Temporal Schedule every few seconds."""

import asyncio

from temporalio import workflow
from temporalio.exceptions import FailureError

with workflow.unsafe.imports_passed_through():
    from activities.cases import CaseActivities, ReconcileInput
    from core.logging import case_context
    from core.schemas import AgentReservedInput, ReconcileResult, Reservation
    from workflows.policies import DB_RETRY, DB_TIMEOUT


class ReconcileWorkflowInput(ReconcileInput):
    """Input of `ReconcileWorkflow.run`."""


@workflow.defn
class ReconcileWorkflow:
    """Dispatches every team (no agent idles while a case waits) and re-signals reservations
    whose case workflow never confirmed them (a signal lost to a crash between commit and send).
    No signals, updates or queries; its result lists what it did.
    """

    @workflow.run
    async def run(self, input: ReconcileWorkflowInput) -> ReconcileResult:
        result = await workflow.execute_activity_method(
            CaseActivities.reconcile,
            ReconcileInput(resignal_after_seconds=input.resignal_after_seconds),
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
            summary="dispatch every team, find unconfirmed reservations",
        )
        await asyncio.gather(*(self._signal(r) for r in result.dispatched + result.resignalled))
        if result.dispatched or result.resignalled:
            workflow.logger.info(
                "reconciler dispatched %d and re-signalled %d", len(result.dispatched), len(result.resignalled)
            )
        return result

    async def _signal(self, reservation: Reservation) -> None:
        handle = workflow.get_external_workflow_handle(f"case-{reservation.case_id}")
        try:
            await handle.signal("agent_reserved", AgentReservedInput(agent_id=reservation.agent_id))
        except FailureError as err:
            workflow.logger.warning(
                "case %s has no running workflow: %s",
                reservation.case_id,
                err,
                extra=case_context(reservation.case_id, reservation.agent_id),
            )
