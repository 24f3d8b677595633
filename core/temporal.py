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


async def start_webhook_delivery(client: Client, settings: Settings, endpoint_id: str) -> None:
    """Wake the endpoint's delivery workflow, starting it if it is not running (signal-with-start: a run that
    is just ending because it saw the endpoint disabled takes the signal and goes on)."""
    from temporalio.common import WorkflowIDReusePolicy

    from workflows.messages import WebhookDeliveryInput
    from workflows.webhook_delivery import WebhookDeliveryWorkflow, workflow_id_for_webhook

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
