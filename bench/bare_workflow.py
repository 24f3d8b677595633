"""The bare baseline: a workflow of a case's shape (start, two activities, one signal), no database, no HTTP.

Kept free of module-level side effects: the workflow sandbox re-imports this module for every run.
"""

from datetime import timedelta

from temporalio import activity, workflow
from temporalio.common import RetryPolicy

BARE_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=10))


@activity.defn
def bare_open(case_id: str) -> str:
    """Stands in for `open_case`: returns at once."""
    return case_id


@activity.defn
def bare_close(case_id: str) -> str:
    """Stands in for `resolve_case`: returns at once."""
    return case_id


@workflow.defn
class BareCaseWorkflow:
    """start -> activity -> wait for the `resolve` signal -> activity -> done."""

    def __init__(self) -> None:
        self._resolved = False

    @workflow.run
    async def run(self, case_id: str) -> str:
        await workflow.execute_activity(
            bare_open, case_id, start_to_close_timeout=timedelta(seconds=30), retry_policy=BARE_RETRY
        )
        await workflow.wait_condition(lambda: self._resolved)
        return await workflow.execute_activity(
            bare_close, case_id, start_to_close_timeout=timedelta(seconds=30), retry_policy=BARE_RETRY
        )

    @workflow.signal
    def resolve(self) -> None:
        """The agent is done."""
        self._resolved = True
