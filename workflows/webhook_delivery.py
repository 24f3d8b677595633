"""Delivery to one webhook endpoint, for as long as it is enabled."""

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.webhooks import WebhookActivities
    from workflows.messages import DeliverInput, WebhookDeliveryInput, WebhookDeliveryResult

# Rounds (one delivery activity each, ~30 s when idle) per run before continuing as new: about 6 history
# events a round, so a run stays near a thousand events.
ROUNDS_PER_RUN = 150


@workflow.defn
class WebhookDeliveryWorkflow:
    """Delivers an endpoint's events in id order, one at a time; workflow id `webhook-<endpoint id>`.

    Signal: `wake` (sent with every start: the endpoint was created, re-enabled or replayed). No updates or
    queries: the endpoint's row in the database is its real input (URL, event types, cursor, enabled), read by
    the delivery activity on every turn. It ends when the endpoint is disabled or deleted, unless a `wake`
    came in meanwhile; it continues as new every ROUNDS_PER_RUN rounds. A failing delivery is the activity's
    retry: its attempts show on the pending activity, each one also in `webhook_delivery`.
    """

    def __init__(self) -> None:
        self._woken = False

    @workflow.signal
    def wake(self) -> None:
        """Look at the endpoint again, even if the last look found it disabled."""
        self._woken = True

    @workflow.run
    async def run(self, input: WebhookDeliveryInput) -> WebhookDeliveryResult:
        retry = RetryPolicy(
            initial_interval=timedelta(seconds=input.retry_initial_seconds),
            backoff_coefficient=2.0,
            maximum_interval=timedelta(seconds=input.retry_max_interval_seconds),
            maximum_attempts=0,
        )
        for _ in range(ROUNDS_PER_RUN):
            self._woken = False
            result = await workflow.execute_activity_method(
                WebhookActivities.deliver,
                DeliverInput(endpoint_id=input.endpoint_id),
                # A round is at most ~60 s of sends (10 s each) plus a 30 s quiet spell.
                start_to_close_timeout=timedelta(minutes=3),
                # Heartbeats come before every send and every poll; a dead worker is noticed within this.
                heartbeat_timeout=timedelta(seconds=20),
                retry_policy=retry,
                summary="deliver pending events in id order",
            )
            if result.stopped and not self._woken:
                return WebhookDeliveryResult(endpoint_id=input.endpoint_id, reason=result.reason)
            if workflow.info().is_continue_as_new_suggested():
                break
        workflow.continue_as_new(input)
