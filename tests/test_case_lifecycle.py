"""The case lifecycle through the HTTP API, on the real worker, Temporal and database."""

import asyncio

from sqlalchemy import select

from core.models import Agent, CaseEvent, ReturnCase
from tests.conftest import Stack
from tests.helpers import API, add_agent, case_body, eventually, file_case, get_case, new_team, resolve
from tests.invariants import assert_holding_invariants
from workflows.messages import Reservation


async def test_file_case_assigned_when_agent_free(any_stack: Stack) -> None:
    team = await new_team(any_stack.api)
    agent = await add_agent(any_stack.api, team)
    case = await file_case(any_stack.api, team)
    assert case["status"] == "assigned"
    assert case["agent_id"] == agent["id"]
    assert case["workflow_id"] == f"case-{case['id']}"
    r = await any_stack.api.get(f"{API}/agents/{agent['id']}")
    assert r.json()["current_case_id"] == case["id"]


async def test_file_case_queued_when_no_agent_free(any_stack: Stack) -> None:
    team = await new_team(any_stack.api)
    case = await file_case(any_stack.api, team)
    assert case["status"] == "queued"
    assert case["agent_id"] is None


async def test_resolve_hands_agent_to_oldest_waiting_case(any_stack: Stack) -> None:
    api = any_stack.api
    team = await new_team(api)
    agent = await add_agent(api, team)
    first = await file_case(api, team)
    second = await file_case(api, team)
    third = await file_case(api, team)
    assert [second["status"], third["status"]] == ["queued", "queued"]

    r = await resolve(api, first["id"], agent["id"])
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "resolved"
    assert r.json()["resolution"] == "refunded"

    handed = await eventually(lambda: get_case(api, second["id"]), lambda c: c["status"] == "assigned")
    assert handed["agent_id"] == agent["id"]
    assert (await get_case(api, third["id"]))["status"] == "queued"
    assert_holding_invariants(any_stack.session_factory, team)


async def test_high_priority_case_served_before_older_normal_case(stack: Stack) -> None:
    api = stack.api
    team = await new_team(api)
    agent = await add_agent(api, team)
    holding = await file_case(api, team)
    older_normal = await file_case(api, team)
    urgent = await file_case(api, team, priority="high")

    assert (await resolve(api, holding["id"], agent["id"])).status_code == 200
    await eventually(lambda: get_case(api, urgent["id"]), lambda c: c["status"] == "assigned")
    assert (await get_case(api, older_normal["id"]))["status"] == "queued"


async def test_longest_idle_agent_gets_next_case(stack: Stack) -> None:
    api = stack.api
    team = await new_team(api)
    first_agent = await add_agent(api, team)
    second_agent = await add_agent(api, team)
    case_a = await file_case(api, team)
    case_b = await file_case(api, team)
    assert {case_a["agent_id"], case_b["agent_id"]} == {first_agent["id"], second_agent["id"]}
    # The second agent is freed first, so they have been idle longest.
    holder_of = {case_a["agent_id"]: case_a, case_b["agent_id"]: case_b}
    assert (await resolve(api, holder_of[second_agent["id"]]["id"], second_agent["id"])).status_code == 200
    assert (await resolve(api, holder_of[first_agent["id"]]["id"], first_agent["id"])).status_code == 200

    next_case = await file_case(api, team)
    assert next_case["agent_id"] == second_agent["id"]


async def test_fifty_concurrent_filings_never_give_an_agent_two_cases(any_stack: Stack) -> None:
    api = any_stack.api
    team = await new_team(api)
    agents = [await add_agent(api, team) for _ in range(5)]
    responses = await asyncio.gather(*(api.post(f"{API}/cases", json=case_body(team)) for _ in range(50)))
    assert [r.status_code for r in responses] == [201] * 50, [r.text for r in responses if r.status_code != 201]
    cases = [r.json() for r in responses]
    assigned = [c for c in cases if c["status"] == "assigned"]
    assert len(assigned) == 5
    assert sorted(c["agent_id"] for c in assigned) == sorted(a["id"] for a in agents)
    assert sum(c["status"] == "queued" for c in cases) == 45
    assert_holding_invariants(any_stack.session_factory, team)


async def test_resolve_case_wrong_agent(stack: Stack) -> None:
    api = stack.api
    team = await new_team(api)
    holder = await add_agent(api, team)
    other = await add_agent(api, team, status="away")
    case = await file_case(api, team)
    before = _case_and_agents(stack, case["id"])

    r = await resolve(api, case["id"], other["id"])
    assert r.status_code == 403
    assert f"case {case['id']} is not yours" in r.json()["detail"]
    after = await get_case(api, case["id"])
    assert after["status"] == "assigned" and after["agent_id"] == holder["id"]
    assert _case_and_agents(stack, case["id"]) == before


async def test_resolve_queued_case_of_own_team_is_refused(stack: Stack) -> None:
    api = stack.api
    team = await new_team(api)
    case = await file_case(api, team)
    agent = await add_agent(api, team, status="away")
    before = _case_and_agents(stack, case["id"])

    r = await resolve(api, case["id"], agent["id"])
    assert r.status_code == 403
    assert "not yours" in r.json()["detail"]
    assert (await get_case(api, case["id"]))["status"] == "queued"
    assert _case_and_agents(stack, case["id"]) == before


async def test_resolve_own_case_once_cancelled_is_a_conflict(stack: Stack) -> None:
    api = stack.api
    team = await new_team(api)
    agent = await add_agent(api, team)
    case = await file_case(api, team)
    assert (await api.post(f"{API}/cases/{case['id']}/cancel")).status_code == 200
    before = _case_and_agents(stack, case["id"])

    r = await resolve(api, case["id"], agent["id"])
    assert r.status_code == 409
    assert "already cancelled" in r.json()["detail"]
    assert _case_and_agents(stack, case["id"]) == before


async def test_resolve_case_repeated_by_same_agent_is_idempotent(stack: Stack) -> None:
    api = stack.api
    team = await new_team(api)
    agent = await add_agent(api, team)
    case = await file_case(api, team)
    first, second = await asyncio.gather(resolve(api, case["id"], agent["id"]), resolve(api, case["id"], agent["id"]))
    assert (first.status_code, second.status_code) == (200, 200)
    # Again after the workflow has closed: answered from the record.
    third = await resolve(api, case["id"], agent["id"])
    assert third.status_code == 200 and third.json()["status"] == "resolved"
    assert _event_types(stack, case["id"]).count("resolved") == 1


async def test_resolve_closed_case_by_another_agent(stack: Stack) -> None:
    api = stack.api
    team = await new_team(api)
    agent = await add_agent(api, team)
    case = await file_case(api, team)
    someone_else = await add_agent(api, team, status="away")
    assert (await resolve(api, case["id"], agent["id"])).status_code == 200
    r = await resolve(api, case["id"], someone_else["id"])
    assert r.status_code == 403
    assert "not yours" in r.json()["detail"]


async def test_repeated_idempotency_key_returns_same_case(any_stack: Stack) -> None:
    api = any_stack.api
    team = await new_team(api)
    body = case_body(team)
    headers = {"Idempotency-Key": f"key-{body['order_id']}"}
    first = await api.post(f"{API}/cases", json=body, headers=headers)
    assert first.status_code == 201
    again = await api.post(f"{API}/cases", json=body, headers=headers)
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    listed = await api.get(f"{API}/cases", params={"team": team})
    assert [c["id"] for c in listed.json()["items"]] == [first.json()["id"]]


async def test_parallel_repeats_of_one_idempotency_key_file_one_case(stack: Stack) -> None:
    api = stack.api
    team = await new_team(api)
    await add_agent(api, team)
    body = case_body(team)
    headers = {"Idempotency-Key": f"burst-{body['order_id']}"}
    responses = await asyncio.gather(*(api.post(f"{API}/cases", json=body, headers=headers) for _ in range(10)))
    assert sorted(r.status_code for r in responses) == [200] * 9 + [201]
    assert len({r.json()["id"] for r in responses}) == 1
    listed = await api.get(f"{API}/cases", params={"team": team})
    assert len(listed.json()["items"]) == 1


async def test_idempotency_key_reused_with_different_case(stack: Stack) -> None:
    api = stack.api
    team = await new_team(api)
    headers = {"Idempotency-Key": f"reuse-{team}"}
    assert (await api.post(f"{API}/cases", json=case_body(team), headers=headers)).status_code == 201
    r = await api.post(f"{API}/cases", json=case_body(team), headers=headers)
    assert r.status_code == 409
    assert "Idempotency-Key" in r.json()["detail"]


async def test_second_open_case_for_same_order_line_names_existing(stack: Stack) -> None:
    api = stack.api
    team = await new_team(api)
    first = await file_case(api, team, order_id="ord-dup-" + team, product_sku="SKU-9")
    r = await api.post(f"{API}/cases", json=case_body(team, order_id="ord-dup-" + team, product_sku="SKU-9"))
    assert r.status_code == 409
    assert first["id"] in r.json()["detail"]
    assert r.json()["existing_case_id"] == first["id"]
    # Another product of the same order is a separate case.
    assert (await api.post(f"{API}/cases", json=case_body(team, order_id="ord-dup-" + team))).status_code == 201


async def test_order_line_can_be_filed_again_once_closed(stack: Stack) -> None:
    api = stack.api
    team = await new_team(api)
    first = await file_case(api, team, order_id="ord-again-" + team)
    assert (await api.post(f"{API}/cases/{first['id']}/cancel", json={})).status_code == 200
    again = await file_case(api, team, order_id="ord-again-" + team)
    assert again["id"] != first["id"]


async def test_cancel_frees_agent_for_next_case(any_stack: Stack) -> None:
    api = any_stack.api
    team = await new_team(api)
    agent = await add_agent(api, team)
    held = await file_case(api, team)
    waiting = await file_case(api, team)

    r = await api.post(f"{API}/cases/{held['id']}/cancel", json={"reason": "customer changed their mind"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled"
    assert r.json()["cancel_reason"] == "customer changed their mind"
    handed = await eventually(lambda: get_case(api, waiting["id"]), lambda c: c["status"] == "assigned")
    assert handed["agent_id"] == agent["id"]
    history = (await api.get(f"{API}/cases/{held['id']}/history")).json()["events"]
    admin_id = (await api.get(f"{API}/me")).json()["user_id"]
    assert history[-1]["type"] == "cancelled" and history[-1]["actor"] == f"admin:{admin_id}"


async def test_cancel_queued_case_twice(stack: Stack) -> None:
    api = stack.api
    team = await new_team(api)
    case = await file_case(api, team)
    r = await api.post(f"{API}/cases/{case['id']}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    again = await api.post(f"{API}/cases/{case['id']}/cancel")
    assert again.status_code == 200 and again.json()["status"] == "cancelled"


async def test_cancel_resolved_case_is_refused(stack: Stack) -> None:
    api = stack.api
    team = await new_team(api)
    agent = await add_agent(api, team)
    case = await file_case(api, team)
    assert (await resolve(api, case["id"], agent["id"])).status_code == 200
    r = await api.post(f"{API}/cases/{case['id']}/cancel")
    assert r.status_code == 409
    assert (await get_case(api, case["id"]))["status"] == "resolved"


async def test_history_records_every_transition_in_order(stack: Stack) -> None:
    api = stack.api
    team = await new_team(api)
    agent = await add_agent(api, team)
    case = await file_case(api, team)
    assert (await resolve(api, case["id"], agent["id"])).status_code == 200
    r = await api.get(f"{API}/cases/{case['id']}/history")
    assert r.status_code == 200
    body = r.json()
    assert [(e["type"], e["to_status"]) for e in body["events"]] == [
        ("filed", "queued"),
        ("reserved", "reserved"),
        ("assigned", "assigned"),
        ("resolved", "resolved"),
    ]
    assert body["events"][-1]["actor"] == f"agent:{agent['id']}"
    assert body["temporal_ui_url"].endswith(f"/workflows/case-{case['id']}")


async def test_list_cases_filters_and_paginates(stack: Stack) -> None:
    api = stack.api
    team = await new_team(api)
    await add_agent(api, team)
    filed = [await file_case(api, team) for _ in range(5)]
    page1 = (await api.get(f"{API}/cases", params={"team": team, "limit": 3})).json()
    page2 = (await api.get(f"{API}/cases", params={"team": team, "limit": 3, "cursor": page1["next_cursor"]})).json()
    assert [c["id"] for c in page1["items"] + page2["items"]] == [c["id"] for c in filed]
    assert page2["next_cursor"] is None
    active = (await api.get(f"{API}/cases", params={"team": team, "status": "active"})).json()["items"]
    assert len(active) == 5
    queued = (await api.get(f"{API}/cases", params={"team": team, "status": "queued"})).json()["items"]
    assert len(queued) == 4
    by_agent = (await api.get(f"{API}/cases", params={"agent_id": filed[0]["agent_id"]})).json()["items"]
    assert [c["id"] for c in by_agent] == [filed[0]["id"]]


async def test_queue_figures(stack: Stack) -> None:
    api = stack.api
    team = await new_team(api)
    await add_agent(api, team)
    await add_agent(api, team, status="away")
    await file_case(api, team)
    waiting = await file_case(api, team)
    teams = (await api.get(f"{API}/queue")).json()["teams"]
    mine = next(t for t in teams if t["team"] == team)
    assert mine["waiting"] == 1
    assert mine["next_case_id"] == waiting["id"]
    assert (mine["agents_available"], mine["agents_busy"], mine["agents_away"]) == (0, 1, 1)
    assert mine["oldest_wait_seconds"] >= 0


async def test_resolve_signal_from_ops_resolves_case(stack: Stack) -> None:
    from workflows.messages import ResolveCaseInput
    from workflows.return_case import ReturnCaseWorkflow

    api = stack.api
    team = await new_team(api)
    agent = await add_agent(api, team)
    case = await file_case(api, team)
    handle = stack.client.get_workflow_handle_for(ReturnCaseWorkflow.run, case["workflow_id"])
    await handle.signal(ReturnCaseWorkflow.request_resolve, ResolveCaseInput(agent_id="a-intruder"))
    await handle.signal(ReturnCaseWorkflow.request_resolve, ResolveCaseInput(agent_id=agent["id"]))
    result = await handle.result()
    assert result is not None and result.status == "resolved" and result.agent_id == agent["id"]
    assert _event_types(stack, case["id"]).count("resolved") == 1


def _event_types(stack: Stack, case_id: str) -> list[str]:
    with stack.session_factory() as session:
        return list(session.scalars(select(CaseEvent.type).where(CaseEvent.case_id == case_id).order_by(CaseEvent.id)))


def _case_and_agents(stack: Stack, case_id: str) -> tuple[object, ...]:
    """The case row, its events and its team's agents, to show that a refusal changed nothing."""
    with stack.session_factory() as session:
        case = session.get(ReturnCase, case_id)
        assert case is not None
        agents = session.scalars(select(Agent).where(Agent.team == case.team).order_by(Agent.id)).all()
        return (
            _row(case),
            tuple(_event_types(stack, case_id)),
            tuple(_row(a) for a in agents),
        )


def _row(obj: object) -> tuple[object, ...]:
    return tuple(getattr(obj, c.key) for c in obj.__table__.columns)  # type: ignore[attr-defined]


async def test_retried_resolve_delivers_the_hand_off_again(stack: Stack) -> None:
    """A resolve retried after its commit returns the freed agent's still-unconfirmed reservation again."""
    from core import agents, cases
    from core.schemas import AgentCreate
    from workflows.messages import CaseDraft

    team = await new_team(stack.api)
    with stack.session_factory.begin() as session:
        agent = agents.create_agent(session=session, data=AgentCreate(name="A", email=f"{team}@x.example", team=team))
        first, _ = cases.open_case(session=session, case_id=f"c-{team}-1", data=CaseDraft(**case_body(team)),
                                   actor="test", idempotency_key=None)  # fmt: skip
        second, _ = cases.open_case(session=session, case_id=f"c-{team}-2", data=CaseDraft(**case_body(team)),
                                    actor="test", idempotency_key=None)  # fmt: skip
        cases.confirm_assignment(session=session, case_id=first.id, agent_id=agent.agent.id, actor="test")

    def retry_resolve() -> list[Reservation]:
        with stack.session_factory.begin() as session:
            return cases.resolve_case(
                session=session, case_id=first.id, agent_id=agent.agent.id, resolution=None, actor="test"
            )[1]

    handed = retry_resolve()
    retried = retry_resolve()
    expected = [Reservation(case_id=second.id, agent_id=agent.agent.id)]
    assert handed == expected
    assert retried == expected
    with stack.session_factory.begin() as session:
        cases.confirm_assignment(session=session, case_id=second.id, agent_id=agent.agent.id, actor="test")
    assert retry_resolve() == []


async def test_idempotency_key_after_case_closed_returns_closed_case(stack: Stack) -> None:
    api = stack.api
    team = await new_team(api)
    body = case_body(team)
    headers = {"Idempotency-Key": f"closed-{body['order_id']}"}
    first = await api.post(f"{API}/cases", json=body, headers=headers)
    assert first.status_code == 201
    assert (await api.post(f"{API}/cases/{first.json()['id']}/cancel")).status_code == 200
    again = await api.post(f"{API}/cases", json=body, headers=headers)
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"] and again.json()["status"] == "cancelled"
