"""The reconciler repairs drift that a crash between commit and signal would leave behind; it is one long-lived
workflow per task queue that ops can pause, resume and hurry."""

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import pytest
from temporalio.client import (
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleIntervalSpec,
    ScheduleSpec,
    ScheduleState,
    WorkflowHandle,
)
from temporalio.service import RPCError, RPCStatusCode

from core.config import Settings
from core.ids import new_id
from core.models import Agent, AgentStatus, CaseStatus, ReturnCase, utcnow
from core.temporal import ensure_reconciler, reconciler_id
from tests.conftest import Stack
from tests.helpers import eventually, file_case, get_case, new_team
from tests.invariants import assert_holding_invariants
from workflows.messages import ReconcilerInput, ReconcilerState
from workflows.reconcile import ReconcileWorkflow


def _insert_agent_without_dispatch(stack: Stack, team: str) -> str:
    """An agent who became free with no dispatch run: what a crash after the commit looks like."""
    agent_id = new_id("a")
    with stack.session_factory.begin() as session:
        session.add(
            Agent(id=agent_id, name="Drift", email=f"{agent_id}@desk.example", active_email=f"{agent_id}@desk.example",
                  team=team, status=AgentStatus.AVAILABLE, available_since=utcnow())
        )  # fmt: skip
    return agent_id


@asynccontextmanager
async def reconciler(
    stack: Stack, *, resignal_after_seconds: float = 0, interval_seconds: float = 3600, passes_per_run: int = 150
) -> AsyncIterator[WorkflowHandle[ReconcileWorkflow, None]]:
    """A reconciler of the test's own on the stack's task queue (its first pass runs at once); terminated after."""
    started = await stack.client.start_workflow(
        ReconcileWorkflow.run,
        ReconcilerInput(
            interval_seconds=interval_seconds,
            resignal_after_seconds=resignal_after_seconds,
            passes_per_run=passes_per_run,
        ),
        id=f"reconcile-test-{uuid.uuid4()}",
        task_queue=stack.settings.TASK_QUEUE,
    )
    # Not bound to the first run: queries and the final terminate follow continue-as-new.
    handle = stack.client.get_workflow_handle_for(ReconcileWorkflow.run, started.id)
    try:
        yield handle
    finally:
        await handle.terminate("test over")


async def _state(handle: WorkflowHandle[ReconcileWorkflow, None]) -> ReconcilerState:
    return await handle.query(ReconcileWorkflow.state)


async def test_reconciler_gives_idle_agent_the_waiting_case(stack: Stack) -> None:
    team = await new_team(stack.api)
    case = await file_case(stack.api, team)
    agent_id = _insert_agent_without_dispatch(stack, team)
    assert (await get_case(stack.api, case["id"]))["status"] == "queued"

    async with reconciler(stack):
        assigned = await eventually(lambda: get_case(stack.api, case["id"]), lambda c: c["status"] == "assigned")
    assert assigned["agent_id"] == agent_id
    assert_holding_invariants(stack.session_factory, team)


async def test_reconciler_resignals_unconfirmed_reservation(stack: Stack) -> None:
    team = await new_team(stack.api)
    case = await file_case(stack.api, team)
    agent_id = _insert_agent_without_dispatch(stack, team)
    # A reservation whose signal never reached the workflow.
    with stack.session_factory.begin() as session:
        row = session.get(ReturnCase, case["id"])
        agent = session.get(Agent, agent_id)
        assert row is not None and agent is not None
        row.status, row.agent_id, row.reserved_at = CaseStatus.RESERVED, agent_id, utcnow() - timedelta(minutes=1)
        agent.current_case_id = row.id

    async with reconciler(stack, resignal_after_seconds=30):
        assigned = await eventually(lambda: get_case(stack.api, case["id"]), lambda c: c["status"] == "assigned")
    assert assigned["agent_id"] == agent_id


async def test_pause_resume_and_run_now(stack: Stack) -> None:
    team = await new_team(stack.api)
    async with reconciler(stack) as handle:
        await eventually(lambda: _state(handle), lambda st: st.passes == 1)
        await handle.signal(ReconcileWorkflow.pause)
        await eventually(lambda: _state(handle), lambda st: st.paused)
        # Paused: drift stays until someone asks for a pass.
        case = await file_case(stack.api, team)
        agent_id = _insert_agent_without_dispatch(stack, team)
        assert (await get_case(stack.api, case["id"]))["status"] == "queued"
        await handle.signal(ReconcileWorkflow.run_now)
        assigned = await eventually(lambda: get_case(stack.api, case["id"]), lambda c: c["status"] == "assigned")
        assert assigned["agent_id"] == agent_id
        state = await _state(handle)
        assert state.paused and state.passes == 2
        assert state.last_pass is not None and state.last_pass.dispatched >= 1
        await handle.signal(ReconcileWorkflow.resume)
        await handle.signal(ReconcileWorkflow.run_now)
        await eventually(lambda: _state(handle), lambda st: not st.paused and st.passes >= 3)


async def test_continues_as_new_and_keeps_its_count(stack: Stack) -> None:
    async with reconciler(stack, interval_seconds=0.2, passes_per_run=3) as handle:
        first_run = (await handle.describe()).run_id
        await eventually(lambda: _state(handle), lambda st: st.passes >= 7, timeout=60)
        described = await handle.describe()
        assert described.run_id != first_run
        # A run carries at most passes_per_run passes: its history stays short.
        assert described.history_length < 60, described.history_length


async def test_ensure_reconciler_starts_one_workflow_updates_it_and_retires_the_schedule(stack: Stack) -> None:
    settings = Settings(
        DATABASE_URL=stack.settings.DATABASE_URL,
        TEMPORAL_ADDRESS=stack.settings.TEMPORAL_ADDRESS,
        TASK_QUEUE=f"tq-{uuid.uuid4()}",
        RECONCILE_INTERVAL_SECONDS=7,
    )
    workflow_id = reconciler_id(settings)
    assert workflow_id == f"{settings.TASK_QUEUE}-reconciler"
    # What an older version left behind: a Schedule under the same id.
    schedule = await stack.client.create_schedule(
        workflow_id,
        Schedule(
            action=ScheduleActionStartWorkflow("ReconcileWorkflow", id="old", task_queue=settings.TASK_QUEUE),
            spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(hours=1))]),
            state=ScheduleState(paused=True),
        ),
    )
    await ensure_reconciler(stack.client, settings)
    first = await stack.client.get_workflow_handle(workflow_id).describe()
    await ensure_reconciler(stack.client, settings.model_copy(update={"RECONCILE_INTERVAL_SECONDS": 3}))
    handle = stack.client.get_workflow_handle_for(ReconcileWorkflow.run, workflow_id)
    try:
        assert (await handle.describe()).run_id == first.run_id  # the same execution, not a second one
        with pytest.raises(RPCError) as gone:
            await schedule.describe()
        assert gone.value.status == RPCStatusCode.NOT_FOUND
        # Nobody polls this task queue, so the settings show in the execution's history, not in a query.
        signals = [
            e.workflow_execution_signaled_event_attributes.signal_name
            async for e in handle.fetch_history_events()
            if e.HasField("workflow_execution_signaled_event_attributes")
        ]
        assert signals == ["configure", "configure"]
    finally:
        await handle.terminate("test over")
