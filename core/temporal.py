"""Temporal client and the reconciler's start, shared by the API, the worker, the dev runner and tests."""

from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import Runtime
from temporalio.service import RPCError, RPCStatusCode

from core.config import Settings


def reconciler_id(settings: Settings) -> str:
    """One reconciler per task queue (`returns-reconciler` by default), so deployments sharing a namespace
    never steer each other's."""
    return f"{settings.TASK_QUEUE}-reconciler"


async def connect(settings: Settings, runtime: Runtime | None = None) -> Client:
    """A client that speaks pydantic, as every client of ours must; `runtime` carries the metrics setup, if any."""
    return await Client.connect(
        settings.TEMPORAL_ADDRESS,
        namespace=settings.TEMPORAL_NAMESPACE,
        data_converter=pydantic_data_converter,
        runtime=runtime,
    )


async def ensure_reconciler(client: Client, settings: Settings) -> None:
    """Start the reconciler of this task queue unless it runs, bring it up to these settings, and delete the
    Schedule that ran it before (one id, `<TASK_QUEUE>-reconciler`, for both)."""
    from workflows.messages import ReconcilerInput, ReconcilerSettings
    from workflows.reconcile import ReconcileWorkflow

    wanted = ReconcilerSettings(
        interval_seconds=settings.RECONCILE_INTERVAL_SECONDS,
        resignal_after_seconds=settings.RESERVATION_RESIGNAL_SECONDS,
    )
    # Signal-with-start: starts it if it is not running; either way `configure` brings it up to date.
    await client.start_workflow(
        ReconcileWorkflow.run,
        ReconcilerInput(**wanted.model_dump()),
        id=reconciler_id(settings),
        task_queue=settings.TASK_QUEUE,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        start_signal="configure",
        start_signal_args=[wanted],
        static_summary=f"reconciler of task queue {settings.TASK_QUEUE}",
        static_details=(
            "Dispatches every team and re-signals unconfirmed reservations every few seconds. "
            "Signals: `pause`, `resume`, `run_now`. Query: `state`."
        ),
    )
    try:
        await client.get_schedule_handle(reconciler_id(settings)).delete()
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise
