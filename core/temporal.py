"""Temporal client and reconciler schedule, shared by the API, the worker, the dev runner and tests."""

from datetime import timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import Runtime

from core.config import Settings


def reconciler_schedule_id(settings: Settings) -> str:
    """One reconciler per task queue (`returns-reconciler` by default), so deployments sharing a namespace
    never steer each other's schedule."""
    return f"{settings.TASK_QUEUE}-reconciler"


async def connect(settings: Settings, runtime: Runtime | None = None) -> Client:
    """A client that speaks pydantic, as every client of ours must; `runtime` carries the metrics setup, if any."""
    return await Client.connect(
        settings.TEMPORAL_ADDRESS,
        namespace=settings.TEMPORAL_NAMESPACE,
        data_converter=pydantic_data_converter,
        runtime=runtime,
    )


def reconciler_schedule(settings: Settings) -> Schedule:
    """The Schedule that runs the reconciler every RECONCILE_INTERVAL_SECONDS."""
    from workflows.reconcile import ReconcileWorkflow, ReconcileWorkflowInput

    return Schedule(
        action=ScheduleActionStartWorkflow(
            ReconcileWorkflow.run,
            ReconcileWorkflowInput(resignal_after_seconds=settings.RESERVATION_RESIGNAL_SECONDS),
            id=f"{settings.TASK_QUEUE}-reconcile",
            task_queue=settings.TASK_QUEUE,
            # A pass takes well under a second; a run stranded on a dead worker must not block the
            # schedule (overlap SKIP) for long.
            execution_timeout=timedelta(minutes=1),
        ),
        spec=ScheduleSpec(
            intervals=[ScheduleIntervalSpec(every=timedelta(seconds=settings.RECONCILE_INTERVAL_SECONDS))]
        ),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )


async def ensure_reconciler_schedule(client: Client, settings: Settings) -> None:
    """Create the reconciler schedule, or bring an existing one up to the current settings."""
    schedule = reconciler_schedule(settings)
    try:
        await client.create_schedule(reconciler_schedule_id(settings), schedule)
    except ScheduleAlreadyRunningError:

        async def _replace(_: ScheduleUpdateInput) -> ScheduleUpdate:
            return ScheduleUpdate(schedule=schedule)

        await client.get_schedule_handle(reconciler_schedule_id(settings)).update(_replace)
