"""The reconciler: one long-lived workflow per task queue (`<TASK_QUEUE>-reconciler`), the safety net.

A durable timer loop: every `interval_seconds` it dispatches every team (no agent idles while a case waits)
and re-signals reservations whose case workflow never confirmed them (a signal lost to a crash between
commit and send). It continues as new every PASSES_PER_RUN passes, so its history stays small.
"""

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.cases import CaseActivities
    from workflows.delivery import deliveries, signal_from_workflow
    from workflows.messages import (
        ReconcileInput,
        ReconcilePass,
        ReconcilerInput,
        ReconcilerSettings,
        ReconcilerState,
    )
    from workflows.policies import db_step


@workflow.defn
class ReconcileWorkflow:
    """Dispatches every team and re-signals unconfirmed reservations, every `interval_seconds`.

    Signals: `pause`, `resume`, `run_now` (a pass at once, even while paused), `configure` (new settings,
    sent by every worker at startup). Query: `state`.
    """

    @workflow.init
    def __init__(self, input: ReconcilerInput) -> None:
        self._interval = input.interval_seconds
        self._resignal_after = input.resignal_after_seconds
        self._paused = input.paused
        self._passes = input.passes_before
        self._last_pass = input.last_pass
        self._run_now = False
        self._webhook_repair_every = input.webhook_repair_every

    @workflow.run
    async def run(self, input: ReconcilerInput) -> None:
        passes_this_run = 0
        while True:
            if not self._paused or self._run_now:
                self._run_now = False
                await self._pass()
                passes_this_run += 1
            if passes_this_run >= input.passes_per_run or workflow.info().is_continue_as_new_suggested():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(
                    ReconcilerInput(
                        interval_seconds=self._interval,
                        resignal_after_seconds=self._resignal_after,
                        paused=self._paused,
                        passes_before=self._passes,
                        last_pass=self._last_pass,
                        passes_per_run=input.passes_per_run,
                        webhook_repair_every=self._webhook_repair_every,
                    )
                )
            self._show()
            if self._paused:
                await workflow.wait_condition(lambda: not self._paused or self._run_now)
            else:
                try:
                    await workflow.wait_condition(
                        lambda: self._paused or self._run_now,
                        timeout=timedelta(seconds=self._interval),
                        timeout_summary=f"next pass in {self._interval:g}s",
                    )
                except TimeoutError:
                    pass  # the interval is up: the next pass is due

    async def _pass(self) -> None:
        started = workflow.now()
        result = await db_step(
            CaseActivities.reconcile,
            ReconcileInput(resignal_after_seconds=self._resignal_after),
            summary="dispatch every team, find unconfirmed reservations",
        )
        await signal_from_workflow(deliveries(result.dispatched + result.resignalled))
        if result.dispatched or result.resignalled:
            workflow.logger.info(
                "reconciler dispatched %d and re-signalled %d", len(result.dispatched), len(result.resignalled)
            )
        every = self._webhook_repair_every
        # Histories recorded before this step existed replay without it (the patch marker).
        if every and (self._passes + 1) % every == 0 and workflow.patched("repair-webhook-deliveries"):
            await self._repair_webhook_deliveries()
        self._passes += 1
        self._last_pass = ReconcilePass(
            at=started,
            dispatched=len(result.dispatched),
            resignalled=len(result.resignalled),
            slow=workflow.now() - started > timedelta(seconds=self._interval),
        )

    async def _repair_webhook_deliveries(self) -> None:
        try:
            # By name: the activity lives with the webhook activities (activities/webhooks.py).
            started = await workflow.execute_activity(
                "repair_deliveries",
                result_type=int,
                start_to_close_timeout=timedelta(seconds=60),
                retry_policy=RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3),
                summary="start the delivery workflow of enabled webhooks that have none",
            )
        except ActivityError as err:
            # The next repair pass tries again; a reconcile pass never fails for it.
            workflow.logger.warning("webhook delivery repair failed: %s", err)
            return
        if started:
            workflow.logger.warning("reconciler started %d webhook delivery workflows that were missing", started)

    def _show(self) -> None:
        """The details panel: state, interval, and what the last pass did."""
        state = "**paused** (signal `resume` to go on, `run_now` for one pass)" if self._paused else "**running**"
        lines = [
            state,
            f"a pass every {self._interval:g}s; re-signals reservations unconfirmed for {self._resignal_after:g}s",
        ]
        if self._last_pass is None:
            lines.append("no pass yet")
        else:
            last = self._last_pass
            lines.append(
                f"pass {self._passes} at {last.at:%Y-%m-%d %H:%M:%S} UTC: dispatched {last.dispatched}, "
                f"re-signalled {last.resignalled}" + (" (waited for the database)" if last.slow else "")
            )
        workflow.set_current_details("\n\n".join(lines))

    @workflow.signal
    def pause(self) -> None:
        """Stop the passes until `resume`."""
        self._paused = True

    @workflow.signal
    def resume(self) -> None:
        """Run passes again."""
        self._paused = False

    @workflow.signal
    def run_now(self) -> None:
        """Run a pass at once (fast repair), even while paused."""
        self._run_now = True

    @workflow.signal
    def configure(self, settings: ReconcilerSettings) -> None:
        """Take new settings (every worker sends its own at startup; the next wait uses them)."""
        self._interval = settings.interval_seconds
        self._resignal_after = settings.resignal_after_seconds

    @workflow.query
    def state(self) -> ReconcilerState:
        """Paused or not, the settings, the passes run and the last one."""
        return ReconcilerState(
            interval_seconds=self._interval,
            resignal_after_seconds=self._resignal_after,
            paused=self._paused,
            passes=self._passes,
            last_pass=self._last_pass,
        )
