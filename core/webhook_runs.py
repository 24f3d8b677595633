"""Starting the delivery workflow of a webhook endpoint (the API on create/enable/replay, the worker at startup,
the reconciler's repair). By name, so this module imports no workflow code."""

from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy

from core.config import Settings
from core.ids import workflow_id_for_webhook
from workflows.messages import WebhookDeliveryInput

WORKFLOW_TYPE = "WebhookDeliveryWorkflow"
WAKE_SIGNAL = "wake"


async def start_webhook_delivery(client: Client, settings: Settings, endpoint_id: str) -> None:
    """Wake the endpoint's delivery workflow, starting it if it is not running (signal-with-start: a run that
    is just ending because it saw the endpoint disabled takes the signal and goes on)."""
    await client.start_workflow(
        WORKFLOW_TYPE,
        WebhookDeliveryInput(
            endpoint_id=endpoint_id,
            retry_initial_seconds=settings.WEBHOOK_RETRY_INITIAL_SECONDS,
            retry_max_interval_seconds=settings.WEBHOOK_RETRY_MAX_INTERVAL_SECONDS,
        ),
        id=workflow_id_for_webhook(endpoint_id),
        task_queue=settings.TASK_QUEUE,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        start_signal=WAKE_SIGNAL,
        static_summary=f"webhook deliveries to endpoint {endpoint_id}",
    )


async def ensure_webhook_deliveries(client: Client, settings: Settings, endpoint_ids: list[str]) -> None:
    """Wake (or start) the delivery workflow of each of these enabled endpoints."""
    for endpoint_id in endpoint_ids:
        await start_webhook_delivery(client, settings, endpoint_id)
