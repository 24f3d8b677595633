"""Routing a contact center expects (DESIGN section 13): team timers, escalation, overdue, offers, transfer, reopen.

The timers run in real time on the session's Temporal dev server: the teams here set them to 1-3 seconds. (The
SDK's Java time-skipping server cannot be downloaded here; these timers are short enough not to need it.)
"""

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select, update

from core import search_attributes as sa
from core.models import AgentEvent, ReturnCase
from tests.conftest import Stack
from tests.helpers import API, add_agent, agent_token, bearer, file_case, get_case, new_team, resolve
from tests.invariants import assert_holding_invariants
from tests.support import eventually
from workflows.messages import CaseDraft, CaseRecord, ResolveCaseInput, ReturnCaseInput
from workflows.return_case import ReturnCaseWorkflow


async def _set_timers(api: httpx.AsyncClient, team: str, **timers: int | None) -> dict[str, Any]:
    r = await api.patch(f"{API}/teams/{team}", json=timers)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def _history(api: httpx.AsyncClient, case_id: str) -> list[dict[str, Any]]:
    r = await api.get(f"{API}/cases/{case_id}/history")
    assert r.status_code == 200, r.text
    return r.json()["events"]  # type: ignore[no-any-return]


async def _as_agent(api: httpx.AsyncClient, agent_id: str, path: str, **kwargs: Any) -> httpx.Response:
    return await api.post(f"{API}{path}", headers=bearer(await agent_token(api, agent_id)), **kwargs)


async def _case_when(api: httpx.AsyncClient, case_id: str, done: Any, timeout: float = 20) -> dict[str, Any]:
    return await eventually(lambda: get_case(api, case_id), done, timeout=timeout)


async def _queue_of(api: httpx.AsyncClient, team: str) -> dict[str, Any]:
    r = await api.get(f"{API}/queue")
    assert r.status_code == 200, r.text
    return next(t for t in r.json()["teams"] if t["team"] == team)


# --- team settings ----------------------------------------------------------------------------------------------


async def test_team_timers_are_off_by_default_and_set_by_patch(stack: Stack) -> None:
    api = stack.api
    team = await new_team(api)

    def listed(body: dict[str, Any]) -> dict[str, Any]:
        return next(t for t in body["items"] if t["name"] == team)

    shown = listed((await api.get(f"{API}/teams")).json())
    assert (shown["wait_sla_seconds"], shown["resolve_sla_seconds"], shown["offer_timeout_seconds"]) == (None,) * 3

    patched = await _set_timers(api, team, wait_sla_seconds=600, offer_timeout_seconds=30)
    assert (patched["wait_sla_seconds"], patched["resolve_sla_seconds"], patched["offer_timeout_seconds"]) == (
        600,
        None,
        30,
    )
    # A field left out is unchanged; null switches it off.
    patched = await _set_timers(api, team, offer_timeout_seconds=None, resolve_sla_seconds=3600)
    assert (patched["wait_sla_seconds"], patched["resolve_sla_seconds"], patched["offer_timeout_seconds"]) == (
        600,
        3600,
        None,
    )
    shown = listed((await api.get(f"{API}/teams")).json())
    assert shown["wait_sla_seconds"] == 600 and shown["resolve_sla_seconds"] == 3600 and "queue" in shown

    for bad in ({"wait_sla_seconds": 0}, {"resolve_sla_seconds": -5}, {"offer_timeout_seconds": "soon"}, {"x": 1}):
        r = await api.patch(f"{API}/teams/{team}", json=bad)
        assert r.status_code == 422, (bad, r.text)
    r = await api.patch(f"{API}/teams/no-such-team", json={"wait_sla_seconds": 5})
    assert r.status_code == 404 and "no-such-team" in r.json()["detail"]


# --- wait SLA ---------------------------------------------------------------------------------------------------


async def test_escalation_reorders_the_queue_as_invariant_5_says(stack: Stack) -> None:
    api = stack.api
    team = await new_team(api)
    await _set_timers(api, team, wait_sla_seconds=3)
    old_normal = await file_case(api, team)
    high = await file_case(api, team, priority="high")
    # The history shows the timer running, and (below) its outcome once it fires.
    running = (await api.get(f"{API}/cases/{old_normal['id']}/history")).json()["running_timer"]
    assert running["step"] == "escalate" and "wait SLA 3s" in running["summary"]
    # Before the SLA: high first, then normal by age.
    assert (await _queue_of(api, team))["next_case_id"] == high["id"]

    escalated = await _case_when(api, old_normal["id"], lambda c: c["escalated_at"] is not None)
    assert escalated["priority"] == "high" and escalated["status"] == "queued"
    assert escalated["queued_at"] == old_normal["queued_at"]  # its place is kept
    # The high case filed later waits; escalation passed it only because the escalated case is older.
    await _case_when(api, high["id"], lambda c: c["escalated_at"] is not None)  # it waited past the SLA too
    assert (await _queue_of(api, team))["next_case_id"] == old_normal["id"]
    assert (await _queue_of(api, team))["escalated_waiting"] == 2
    new_normal = await file_case(api, team)

    events = await _history(api, old_normal["id"])
    assert [e["type"] for e in events] == ["filed", "escalated"]
    assert (await api.get(f"{API}/cases/{old_normal['id']}/history")).json()["running_timer"] is None
    assert events[1]["actor"] == "workflow" and events[1]["data"]["priority"] == ["normal", "high"]
    description = await stack.client.get_workflow_handle(old_normal["workflow_id"]).describe()
    assert description.typed_search_attributes.get(sa.CASE_ESCALATED) is True

    # Agents are served in invariant 5's order: escalated old case, the high case, then the new normal one.
    agent = await add_agent(api, team)
    served = []
    for expected in (old_normal, high, new_normal):
        held = await _case_when(
            api, expected["id"], lambda c: c["status"] == "assigned" and c["agent_id"] == agent["id"]
        )
        served.append(held["id"])
        assert (await resolve(api, held["id"], agent["id"])).status_code == 200
    assert served == [old_normal["id"], high["id"], new_normal["id"]]
    assert_holding_invariants(stack.session_factory, team)


async def test_a_changed_wait_sla_reaches_cases_already_waiting(stack: Stack) -> None:
    api = stack.api
    team = await new_team(api)
    waiting = await file_case(api, team)
    assert waiting["status"] == "queued" and waiting["escalated_at"] is None
    await _set_timers(api, team, wait_sla_seconds=1)
    escalated = await _case_when(api, waiting["id"], lambda c: c["escalated_at"] is not None)
    assert escalated["priority"] == "high"
    assert [e["type"] for e in await _history(api, waiting["id"])] == ["filed", "escalated"]


# --- resolve SLA ------------------------------------------------------------------------------------------------


async def test_an_overdue_case_shows_in_the_queue(stack: Stack) -> None:
    api = stack.api
    team = await new_team(api)
    await _set_timers(api, team, resolve_sla_seconds=1)
    agent = await add_agent(api, team)
    case = await file_case(api, team)
    assert case["status"] == "assigned"
    overdue = await _case_when(api, case["id"], lambda c: c["overdue_at"] is not None)
    assert overdue["status"] == "assigned" and overdue["agent_id"] == agent["id"]
    figures = await _queue_of(api, team)
    assert figures["overdue"] == 1 and figures["overdue_case_ids"] == [case["id"]]
    assert [e["type"] for e in await _history(api, case["id"])][-1] == "overdue"
    description = await stack.client.get_workflow_handle(case["workflow_id"]).describe()
    assert description.typed_search_attributes.get(sa.CASE_OVERDUE) is True

    assert (await resolve(api, case["id"], agent["id"])).status_code == 200
    assert (await _queue_of(api, team))["overdue"] == 0


# --- offers -----------------------------------------------------------------------------------------------------


async def test_an_offer_accepted(stack: Stack) -> None:
    api = stack.api
    team = await new_team(api)
    await _set_timers(api, team, offer_timeout_seconds=30)
    agent = await add_agent(api, team)
    other = await add_agent(api, team)
    case = await file_case(api, team)
    assert case["status"] == "reserved" and case["agent_id"] == agent["id"] and case["offer_expires_at"]

    # Only the offered agent answers: another agent of the team is refused, an admin too.
    assert (await _as_agent(api, other["id"], f"/cases/{case['id']}/accept")).status_code == 403
    assert (await api.post(f"{API}/cases/{case['id']}/accept")).status_code == 403
    # Resolving an offer that is not accepted yet is a conflict.
    assert (await resolve(api, case["id"], agent["id"])).status_code == 409

    r = await _as_agent(api, agent["id"], f"/cases/{case['id']}/accept")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "assigned" and r.json()["offer_expires_at"] is None
    again = await _as_agent(api, agent["id"], f"/cases/{case['id']}/accept")
    assert again.status_code == 200 and again.json()["status"] == "assigned"
    declined_late = await _as_agent(api, agent["id"], f"/cases/{case['id']}/decline")
    assert declined_late.status_code == 409, declined_late.text

    types = [e["type"] for e in await _history(api, case["id"])]
    assert types == ["filed", "offered", "assigned"]
    assert (await resolve(api, case["id"], agent["id"])).status_code == 200
    assert_holding_invariants(stack.session_factory, team)


async def test_an_offer_declined_goes_to_the_next_agent_and_the_decliner_to_the_back(stack: Stack) -> None:
    api = stack.api
    team = await new_team(api)
    await _set_timers(api, team, offer_timeout_seconds=30)
    first = await add_agent(api, team)
    second = await add_agent(api, team)
    case = await file_case(api, team)
    assert case["agent_id"] == first["id"]

    r = await _as_agent(api, first["id"], f"/cases/{case['id']}/decline")
    assert r.status_code == 200, r.text
    offered = await _case_when(api, case["id"], lambda c: c["status"] == "reserved" and c["agent_id"] == second["id"])
    assert offered["offer_expires_at"] is not None
    # The decliner is free, at the back of the idle order: the next case is offered to them (only one free).
    decliner = (await api.get(f"{API}/agents/{first['id']}")).json()
    assert decliner["current_case_id"] is None and decliner["status"] == "available"
    assert decliner["available_since"] > first["available_since"]

    # The second declines too, while the first is free: the first (not the decliner) gets it again.
    assert (await _as_agent(api, second["id"], f"/cases/{case['id']}/decline")).status_code == 200
    await _case_when(api, case["id"], lambda c: c["status"] == "reserved" and c["agent_id"] == first["id"])

    # Declined again with nobody else free (the second agent takes a new case): the case waits at its place, not
    # offered to its decliner.
    busy = await file_case(api, team)
    assert busy["status"] == "reserved" and busy["agent_id"] == second["id"]
    assert (await _as_agent(api, first["id"], f"/cases/{case['id']}/decline")).status_code == 200
    waiting = await _case_when(api, case["id"], lambda c: c["status"] == "queued")
    assert waiting["queued_at"] == case["queued_at"]
    # ... while the decliner takes the next case filed.
    nxt = await file_case(api, team)
    assert nxt["status"] == "reserved" and nxt["agent_id"] == first["id"]
    types = [e["type"] for e in await _history(api, case["id"])]
    assert types == ["filed", "offered", "declined", "offered", "declined", "offered", "declined"]
    assert_holding_invariants(stack.session_factory, team)


async def test_a_missed_offer_sets_the_agent_away_and_puts_the_case_back_at_the_front(stack: Stack) -> None:
    api = stack.api
    team = await new_team(api)
    await _set_timers(api, team, offer_timeout_seconds=2)
    absent = await add_agent(api, team)
    case = await file_case(api, team)
    assert case["status"] == "reserved" and case["agent_id"] == absent["id"]
    later = await file_case(api, team)
    assert later["status"] == "queued"

    back = await _case_when(api, case["id"], lambda c: c["status"] == "queued")
    assert back["queued_at"] == case["queued_at"] and back["agent_id"] is None
    agent = (await api.get(f"{API}/agents/{absent['id']}")).json()
    assert agent["status"] == "away" and agent["current_case_id"] is None
    # The case is first in line again, ahead of the one filed after it.
    assert (await _queue_of(api, team))["next_case_id"] == case["id"]
    with stack.session_factory() as session:
        last = session.scalars(
            select(AgentEvent).where(AgentEvent.agent_id == absent["id"]).order_by(AgentEvent.id.desc())
        ).first()
        assert last is not None and last.status == "away" and "missed the offer" in last.data["reason"]
    types = [e["type"] for e in await _history(api, case["id"])]
    assert types == ["filed", "offered", "offer_missed"]
    # An agent who arrives gets the case at the front (and nobody holds two).
    present = await add_agent(api, team)
    await _case_when(api, case["id"], lambda c: c["agent_id"] == present["id"])
    assert_holding_invariants(stack.session_factory, team)


# --- transfer ---------------------------------------------------------------------------------------------------


async def test_transfer_frees_the_agent_and_hands_them_the_next_case(stack: Stack) -> None:
    api = stack.api
    team, other_team = await new_team(api), await new_team(api)
    agent = await add_agent(api, team)
    held = await file_case(api, team)
    waiting = await file_case(api, team)
    assert held["agent_id"] == agent["id"] and waiting["status"] == "queued"

    # Refused: another team's agent (404), a transfer to the same team (409), an unknown team (422).
    stranger = await add_agent(api, other_team)
    assert (
        await _as_agent(api, stranger["id"], f"/cases/{held['id']}/transfer", json={"team": other_team})
    ).status_code == 404
    same = await _as_agent(api, agent["id"], f"/cases/{held['id']}/transfer", json={"team": team})
    assert same.status_code == 409, same.text
    unknown = await _as_agent(api, agent["id"], f"/cases/{held['id']}/transfer", json={"team": "no-such-team"})
    assert unknown.status_code == 422, unknown.text
    # Nothing moved.
    assert (await get_case(api, held["id"]))["agent_id"] == agent["id"]

    r = await _as_agent(
        api, agent["id"], f"/cases/{held['id']}/transfer", json={"team": other_team, "note": "wrong department"}
    )
    assert r.status_code == 200, r.text
    moved = r.json()
    assert moved["team"] == other_team and moved["queued_at"] == held["queued_at"]
    # The stranger of the other team was free: the case went to them; the agent took their next case.
    await _case_when(api, held["id"], lambda c: c["status"] == "assigned" and c["agent_id"] == stranger["id"])
    await _case_when(api, waiting["id"], lambda c: c["status"] == "assigned" and c["agent_id"] == agent["id"])
    events = await _history(api, held["id"])
    transferred = next(e for e in events if e["type"] == "transferred")
    assert transferred["data"]["from_team"] == team and transferred["data"]["to_team"] == other_team
    assert transferred["actor"] == f"agent:{agent['id']}" and transferred["reason"] == "wrong department"
    # Both cases can be resolved by their new holders: their workflows learned the move.
    assert (await resolve(api, held["id"], stranger["id"])).status_code == 200
    assert (await resolve(api, waiting["id"], agent["id"])).status_code == 200
    assert_holding_invariants(stack.session_factory, team)
    assert_holding_invariants(stack.session_factory, other_team)


async def test_an_admin_transfers_a_waiting_case_keeping_its_place(stack: Stack) -> None:
    api = stack.api
    team, other_team = await new_team(api), await new_team(api)
    await _set_timers(api, other_team, wait_sla_seconds=1)
    case = await file_case(api, team)
    younger = await file_case(api, other_team)
    r = await api.post(f"{API}/cases/{case['id']}/transfer", json={"team": other_team})
    assert r.status_code == 200, r.text
    # It is older than the other team's case: first in line there; and it now runs the other team's wait SLA.
    assert (await _queue_of(api, other_team))["next_case_id"] in (case["id"], younger["id"])
    escalated = await _case_when(api, case["id"], lambda c: c["escalated_at"] is not None)
    assert escalated["team"] == other_team
    await _case_when(api, younger["id"], lambda c: c["escalated_at"] is not None)
    assert (await _queue_of(api, other_team))["next_case_id"] == case["id"]
    description = await stack.client.get_workflow_handle(case["workflow_id"]).describe()
    assert description.typed_search_attributes.get(sa.TEAM) == other_team


# --- reopen -----------------------------------------------------------------------------------------------------


async def test_reopen_within_the_window_and_not_after(stack: Stack) -> None:
    api = stack.api
    team = await new_team(api)
    agent = await add_agent(api, team)
    case = await file_case(api, team)
    assert (await api.post(f"{API}/cases/{case['id']}/reopen", json={})).status_code == 409  # not resolved
    assert (await resolve(api, case["id"], agent["id"])).status_code == 200
    first_run = (await stack.client.get_workflow_handle(case["workflow_id"]).describe()).run_id

    r = await api.post(f"{API}/cases/{case['id']}/reopen", json={"reason": "refund never arrived"})
    assert r.status_code == 200, r.text
    reopened = r.json()
    assert reopened["id"] == case["id"] and reopened["priority"] == "high" and reopened["reopened_at"]
    # The agent was free: the case is theirs again at once.
    assert reopened["status"] == "assigned" and reopened["agent_id"] == agent["id"]
    description = await stack.client.get_workflow_handle(case["workflow_id"]).describe()
    assert description.run_id != first_run
    types = [e["type"] for e in await _history(api, case["id"])]
    assert types == ["filed", "reserved", "assigned", "resolved", "reopened", "reserved", "assigned"]
    # A repeat answers with the case as it stands.
    assert (await api.post(f"{API}/cases/{case['id']}/reopen", json={})).json()["id"] == case["id"]
    assert (await resolve(api, case["id"], agent["id"])).status_code == 200

    # The customer reopens by their tracking token.
    token = case["tracking_token"]
    r = await api.post(f"{API}/track/{token}/reopen", json={"reason": "still broken"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] in ("queued", "assigned")
    assert (await resolve(api, case["id"], agent["id"])).status_code == 200

    # After the window: 409, nothing changes.
    with stack.session_factory.begin() as session:
        resolved_at = session.scalars(select(ReturnCase.resolved_at).where(ReturnCase.id == case["id"])).one()
        assert resolved_at is not None
        session.execute(
            update(ReturnCase).where(ReturnCase.id == case["id"]).values(resolved_at=resolved_at - timedelta(days=15))
        )
    late = await api.post(f"{API}/cases/{case['id']}/reopen", json={})
    assert late.status_code == 409 and "days" in late.json()["detail"]
    late = await api.post(f"{API}/track/{token}/reopen", json={})
    assert late.status_code == 409
    assert (await get_case(api, case["id"]))["status"] == "resolved"


async def test_reopen_keeps_one_open_case_per_order_line(stack: Stack) -> None:
    api = stack.api
    team = await new_team(api)
    agent = await add_agent(api, team)
    case = await file_case(api, team)
    assert (await resolve(api, case["id"], agent["id"])).status_code == 200
    again = await file_case(api, team, order_id=case["order_id"])  # the same order line, filed anew
    r = await api.post(f"{API}/cases/{case['id']}/reopen", json={})
    assert r.status_code == 409 and again["id"] in r.json()["detail"]
    assert (await get_case(api, case["id"]))["status"] == "resolved"


# --- the resolve validator after a restart ----------------------------------------------------------------------


def test_the_resolve_validator_lets_the_reserved_agent_through_while_its_view_is_stale() -> None:
    """After a worker or Temporal restart, a case workflow can hold a `queued` view of its case while it has yet to
    confirm the agent dispatch reserved (the signal is pending): the real assignee's resolve must not be refused
    by that stale view (the database transition stays the authority); anyone else still is."""
    draft = CaseDraft(
        customer_name="Dana",
        customer_email="dana@shop.example",
        order_id="o-1",
        product_sku="S-1",
        product_name="Kettle",
        reason="broken",
    )
    wf = ReturnCaseWorkflow(ReturnCaseInput(case_id="c-1", case=draft, actor="test"))
    wf._case = CaseRecord(
        id="c-1",
        workflow_id="case-c-1",
        team="returns",
        priority="normal",
        status="queued",
        agent_id=None,
        queued_at=datetime.now(UTC),
        reserved_at=None,
        assigned_at=None,
        resolved_at=None,
        cancelled_at=None,
        resolution=None,
        cancel_reason=None,
        **draft.model_dump(exclude={"priority", "team"}),
    )
    refused = wf._refusal_for_resolve(ResolveCaseInput(agent_id="a-1"))
    assert refused is not None and refused.type == "CaseNotAssigned"  # nothing tells the view is stale
    wf._reserved_agent = "a-1"  # the agent_reserved signal is in, not yet confirmed
    assert wf._refusal_for_resolve(ResolveCaseInput(agent_id="a-1")) is None
    other = wf._refusal_for_resolve(ResolveCaseInput(agent_id="a-2"))
    assert other is not None and other.type == "CaseNotAssigned"
