"""A refusal from the database (the workflow's view of its case was stale) is a refusal, and the case's
workflow lives on. The stress test found case workflows FAILED by such a refusal once the case steps ran
as local activities, whose failures reach workflow code as a bare ApplicationError."""

import pytest
from sqlalchemy import select
from temporalio.client import WorkflowExecutionStatus, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError

from core.cases import requeue, resolve_case
from core.models import Agent, AgentStatus, ReturnCase
from ops.invariants import find_workflow_violations
from tests.conftest import Stack
from tests.helpers import API, add_agent, file_case, new_team, resolve
from workflows.messages import ResolveCaseInput
from workflows.return_case import ReturnCaseWorkflow


def _requeue_behind_the_workflows_back(stack: Stack, case_id: str, agent_id: str) -> None:
    """What a removal looks like before its signal reaches the workflow: the database moved on."""
    with stack.session_factory.begin() as session:
        case = session.scalars(select(ReturnCase).where(ReturnCase.id == case_id).with_for_update()).one()
        agent = session.get(Agent, agent_id)
        assert agent is not None and case.agent_id == agent_id
        requeue(session=session, case=case, actor="test", reason="agent left, signal not delivered yet")
        agent.current_case_id, agent.status = None, AgentStatus.AWAY


async def test_stale_resolve_is_refused_and_the_case_lives_on(stack: Stack) -> None:
    api = stack.api
    team = await new_team(api)
    agent = await add_agent(api, team)
    case = await file_case(api, team)
    assert case["agent_id"] == agent["id"]
    _requeue_behind_the_workflows_back(stack, case["id"], agent["id"])

    # The API reads the record first: the case is no longer the agent's.
    r = await resolve(api, case["id"], agent["id"])
    assert r.status_code == 403, r.text
    # The same resolve racing past that read reaches the workflow, which still believes the agent holds the case,
    # so it asks the database, which refuses.
    handle = stack.client.get_workflow_handle_for(ReturnCaseWorkflow.run, case["workflow_id"])
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update(ReturnCaseWorkflow.resolve, ResolveCaseInput(agent_id=agent["id"]))
    cause = refused.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "CaseNotAssigned", cause
    assert "queued, not assigned" in cause.message
    assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
    seen = await handle.query(ReturnCaseWorkflow.get_case)
    assert seen is not None and (seen.status, seen.agent_id) == ("queued", None)

    # It is still a working case: it can be cancelled, and then both sides agree.
    r = await api.post(f"{API}/cases/{case['id']}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
    assert (await handle.result()) is not None
    assert (
        await find_workflow_violations(client=stack.client, session_factory=stack.session_factory, teams=[team]) == []
    )


async def test_stale_cancel_is_refused_and_the_workflow_completes(stack: Stack) -> None:
    api = stack.api
    team = await new_team(api)
    agent = await add_agent(api, team)
    case = await file_case(api, team)
    # Resolved in the database behind the workflow's back (as if its own activity's result were lost).
    with stack.session_factory.begin() as session:
        resolve_case(session=session, case_id=case["id"], agent_id=agent["id"], resolution=None, actor="test")

    # The workflow still believes the case is assigned, so it lets the database decide, which refuses.
    r = await api.post(f"{API}/cases/{case['id']}/cancel")
    assert r.status_code == 409, r.text
    assert "already resolved" in r.json()["detail"]
    handle = stack.client.get_workflow_handle_for(ReturnCaseWorkflow.run, case["workflow_id"])
    result = await handle.result()
    assert result is not None and result.status == "resolved"
    assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED
    assert (
        await find_workflow_violations(client=stack.client, session_factory=stack.session_factory, teams=[team]) == []
    )
