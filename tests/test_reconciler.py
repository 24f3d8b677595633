"""The reconciler repairs drift that a crash between commit and signal would leave behind."""

import uuid
from datetime import timedelta

from core.config import Settings
from core.ids import new_id
from core.models import Agent, AgentStatus, CaseStatus, ReturnCase, utcnow
from core.temporal import ensure_reconciler_schedule, reconciler_schedule_id
from tests.conftest import Stack
from tests.helpers import eventually, file_case, get_case, new_team
from tests.invariants import assert_holding_invariants
from workflows.reconcile import ReconcileWorkflow, ReconcileWorkflowInput


def _insert_agent_without_dispatch(stack: Stack, team: str) -> str:
    """An agent who became free with no dispatch run: what a crash after the commit looks like."""
    agent_id = new_id("a")
    with stack.session_factory.begin() as session:
        session.add(
            Agent(id=agent_id, name="Drift", email=f"{agent_id}@desk.example", active_email=f"{agent_id}@desk.example",
                  team=team, status=AgentStatus.AVAILABLE, available_since=utcnow())
        )  # fmt: skip
    return agent_id


async def _run_reconciler(stack: Stack, resignal_after_seconds: float = 0) -> None:
    await stack.client.execute_workflow(
        ReconcileWorkflow.run,
        ReconcileWorkflowInput(resignal_after_seconds=resignal_after_seconds),
        id=f"reconcile-test-{uuid.uuid4()}",
        task_queue=stack.settings.TASK_QUEUE,
    )


async def test_reconciler_gives_idle_agent_the_waiting_case(stack: Stack) -> None:
    team = await new_team(stack.api)
    case = await file_case(stack.api, team)
    agent_id = _insert_agent_without_dispatch(stack, team)
    assert (await get_case(stack.api, case["id"]))["status"] == "queued"

    await _run_reconciler(stack)
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

    await _run_reconciler(stack, resignal_after_seconds=30)
    assigned = await eventually(lambda: get_case(stack.api, case["id"]), lambda c: c["status"] == "assigned")
    assert assigned["agent_id"] == agent_id


async def test_reconciler_schedule_is_created_and_updated(stack: Stack) -> None:
    settings = Settings(
        DATABASE_URL=stack.settings.DATABASE_URL,
        TEMPORAL_ADDRESS=stack.settings.TEMPORAL_ADDRESS,
        TASK_QUEUE=stack.settings.TASK_QUEUE,
        RECONCILE_INTERVAL_SECONDS=7,
    )
    await ensure_reconciler_schedule(stack.client, settings)
    await ensure_reconciler_schedule(stack.client, settings.model_copy(update={"RECONCILE_INTERVAL_SECONDS": 3}))
    assert reconciler_schedule_id(settings) == f"{settings.TASK_QUEUE}-reconciler"
    handle = stack.client.get_schedule_handle(reconciler_schedule_id(settings))
    described = await handle.describe()
    assert described.schedule.spec.intervals[0].every == timedelta(seconds=3)
    await handle.delete()
