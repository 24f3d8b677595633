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


async def start_webhook_delivery(client: Client, settings: Settings, endpoint_id: str) -> None:
    """Wake the endpoint's delivery workflow, starting it if it is not running (signal-with-start: a run that
    is just ending because it saw the endpoint disabled takes the signal and goes on)."""
    from temporalio.common import WorkflowIDReusePolicy

    from workflows.webhook_delivery import WebhookDeliveryInput, WebhookDeliveryWorkflow, workflow_id_for_webhook

    await client.start_workflow(
        WebhookDeliveryWorkflow.run,
        WebhookDeliveryInput(
            endpoint_id=endpoint_id,
            retry_initial_seconds=settings.WEBHOOK_RETRY_INITIAL_SECONDS,
            retry_max_interval_seconds=settings.WEBHOOK_RETRY_MAX_INTERVAL_SECONDS,
        ),
        id=workflow_id_for_webhook(endpoint_id),
        task_queue=settings.TASK_QUEUE,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        start_signal=WebhookDeliveryWorkflow.wake.__name__,
        static_summary=f"webhook deliveries to endpoint {endpoint_id}",
    )


async def ensure_webhook_deliveries(client: Client, settings: Settings, endpoint_ids: list[str]) -> None:
    """Start the delivery workflow of every enabled endpoint that has none running (after a lost start)."""
    for endpoint_id in endpoint_ids:
        await start_webhook_delivery(client, settings, endpoint_id)
