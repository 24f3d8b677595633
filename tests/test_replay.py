"""The workflows replay every recorded history (tests/histories/*.json) without a nondeterminism error.

A change to workflow code that would break a case already running fails here. How to make such a change
safely (`workflow.patched`) and how to record the histories again: docs/workflows.md.
"""

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from worker import WORKFLOWS

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))
# One per path a case takes, and the reconciler's (tests/histories/record.py records them).
PATHS = {
    "assigned-at-once",
    "queued-then-handed-off",
    "requeued-after-agent-removal",
    "cancelled",
    "resolved-after-worker-crash",
    "resolve-waits-out-a-database-outage",
    "reconciler",
    # Routing (DESIGN section 13).
    "offer-accepted",
    "offer-declined-then-missed",
    "escalated-then-overdue",
    "timers-changed-while-waiting",
    "transferred",
    "reopened",
}


def test_every_path_has_a_recorded_history() -> None:
    assert {p.stem for p in HISTORIES} >= PATHS


# The worker runs workflows unsandboxed (worker.py); the sandbox here catches a nondeterministic call.
RUNNERS: dict[str, WorkflowRunner] = {
    "sandboxed": SandboxedWorkflowRunner(),
    "as-production": UnsandboxedWorkflowRunner(),
}


@pytest.mark.parametrize("runner", RUNNERS.values(), ids=list(RUNNERS))
@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_workflows_replay_the_recorded_history(path: Path, runner: WorkflowRunner) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    replayer = Replayer(workflows=list(WORKFLOWS), data_converter=pydantic_data_converter, workflow_runner=runner)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure!r}"
