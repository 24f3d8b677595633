"""Agent changes and how they move cases: removal, availability, team moves, validation."""

from sqlalchemy import select

from core.models import CaseEvent
from tests.conftest import Stack
from tests.helpers import (
    API,
    TEST_PASSWORD,
    add_agent,
    agent_token,
    bearer,
    eventually,
    file_case,
    get_case,
    new_team,
    resolve,
)
from tests.invariants import assert_holding_invariants


async def test_remove_agent_holding_case_puts_it_first_in_line(any_stack: Stack) -> None:
    api = any_stack.api
    team = await new_team(api)
    leaving = await add_agent(api, team)
    held = await file_case(api, team)
    later = await file_case(api, team)
    assert held["agent_id"] == leaving["id"] and later["status"] == "queued"

    r = await api.delete(f"{API}/agents/{leaving['id']}")
    assert r.status_code == 204
    requeued = await eventually(lambda: get_case(api, held["id"]), lambda c: c["status"] == "queued")
    assert requeued["agent_id"] is None
    assert requeued["queued_at"] == held["queued_at"]
    queue = next(t for t in (await api.get(f"{API}/queue")).json()["teams"] if t["team"] == team)
    assert queue["next_case_id"] == held["id"]
    assert (await api.get(f"{API}/agents/{leaving['id']}")).status_code == 404

    newcomer = await add_agent(api, team)
    taken = await eventually(lambda: get_case(api, held["id"]), lambda c: c["status"] == "assigned")
    assert taken["agent_id"] == newcomer["id"]
    assert (await get_case(api, later["id"]))["status"] == "queued"
    history = (await api.get(f"{API}/cases/{held['id']}/history")).json()["events"]
    requeue_event = next(e for e in history if e["type"] == "requeued")
    admin_id = (await api.get(f"{API}/me")).json()["user_id"]
    assert requeue_event["actor"] == f"admin:{admin_id}" and requeue_event["agent_id"] == leaving["id"]
    assert_holding_invariants(any_stack.session_factory, team)


async def test_removed_agents_case_goes_to_a_free_agent_at_once(stack: Stack) -> None:
    api = stack.api
    team = await new_team(api)
    leaving = await add_agent(api, team)
    held = await file_case(api, team)
    spare = await add_agent(api, team)
    leaving_token = await agent_token(api, leaving["id"])
    assert (await api.get(f"{API}/me", headers=bearer(leaving_token))).status_code == 200
    assert (await api.delete(f"{API}/agents/{leaving['id']}")).status_code == 204
    # Their token stops working at once, and they cannot sign in again.
    r = await api.get(f"{API}/me", headers=bearer(leaving_token))
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    taken = await eventually(lambda: get_case(api, held["id"]), lambda c: c["status"] == "assigned")
    assert taken["agent_id"] == spare["id"]
    # The old assignee can no longer resolve it; the new one can.
    assert (await resolve(api, held["id"], leaving["id"])).status_code == 401
    r = await api.post(f"{API}/auth/token", data={"username": leaving["email"], "password": TEST_PASSWORD})
    assert r.status_code == 401
    assert (await resolve(api, held["id"], spare["id"])).status_code == 200


async def test_away_agent_gets_no_new_case(stack: Stack) -> None:
    api = stack.api
    team = await new_team(api)
    away = await add_agent(api, team, status="away")
    case = await file_case(api, team)
    assert case["status"] == "queued"
    assert (await api.get(f"{API}/agents/{away['id']}")).json()["current_case_id"] is None

    r = await api.patch(f"{API}/agents/{away['id']}", json={"status": "available"})
    assert r.status_code == 200
    taken = await eventually(lambda: get_case(api, case["id"]), lambda c: c["status"] == "assigned")
    assert taken["agent_id"] == away["id"]


async def test_agent_going_away_keeps_current_case_but_gets_no_next(stack: Stack) -> None:
    api = stack.api
    team = await new_team(api)
    agent = await add_agent(api, team)
    held = await file_case(api, team)
    waiting = await file_case(api, team)
    assert (await api.patch(f"{API}/agents/{agent['id']}", json={"status": "away"})).status_code == 200
    assert (await resolve(api, held["id"], agent["id"])).status_code == 200
    assert (await get_case(api, waiting["id"]))["status"] == "queued"
    assert (await api.get(f"{API}/agents/{agent['id']}")).json()["current_case_id"] is None


async def test_agent_moved_to_team_takes_its_waiting_case(stack: Stack) -> None:
    api = stack.api
    home, other = await new_team(api), await new_team(api)
    agent = await add_agent(api, home)
    waiting = await file_case(api, other)
    r = await api.patch(f"{API}/agents/{agent['id']}", json={"team": other})
    assert r.status_code == 200 and r.json()["team"] == other
    taken = await eventually(lambda: get_case(api, waiting["id"]), lambda c: c["status"] == "assigned")
    assert taken["agent_id"] == agent["id"]


async def test_agent_only_serves_own_team(stack: Stack) -> None:
    api = stack.api
    home, other = await new_team(api), await new_team(api)
    await add_agent(api, home)
    case = await file_case(api, other)
    assert case["status"] == "queued"


async def test_list_agents_filters(stack: Stack) -> None:
    api = stack.api
    team = await new_team(api)
    available = await add_agent(api, team)
    away = await add_agent(api, team, status="away")
    listed = (await api.get(f"{API}/agents", params={"team": team})).json()["items"]
    assert {a["id"] for a in listed} == {available["id"], away["id"]}
    only_away = (await api.get(f"{API}/agents", params={"team": team, "status": "away"})).json()["items"]
    assert [a["id"] for a in only_away] == [away["id"]]


async def test_create_agent_duplicate_email(stack: Stack) -> None:
    api = stack.api
    team = await new_team(api)
    first = await add_agent(api, team)
    r = await api.post(f"{API}/agents", json={"name": "Twin", "email": first["email"].upper(), "team": team})
    assert r.status_code == 409
    assert first["email"] in r.json()["detail"]
    # Once the first is removed, the email is free again.
    assert (await api.delete(f"{API}/agents/{first['id']}")).status_code == 204
    assert (
        await api.post(f"{API}/agents", json={"name": "Twin", "email": first["email"], "team": team})
    ).status_code == 201


async def test_update_agent_email_taken(stack: Stack) -> None:
    api = stack.api
    team = await new_team(api)
    first, second = await add_agent(api, team), await add_agent(api, team)
    r = await api.patch(f"{API}/agents/{second['id']}", json={"email": first["email"]})
    assert r.status_code == 409
    assert (await api.get(f"{API}/agents/{second['id']}")).json()["email"] == second["email"]


async def test_create_agent_unknown_team(stack: Stack) -> None:
    r = await stack.api.post(
        f"{API}/agents", json={"name": "Lost", "email": "lost@desk.example", "team": "no-such-team"}
    )
    assert r.status_code == 422
    assert "no-such-team" in r.json()["detail"]


async def test_update_agent_unknown_team_changes_nothing(stack: Stack) -> None:
    api = stack.api
    team = await new_team(api)
    agent = await add_agent(api, team)
    r = await api.patch(f"{API}/agents/{agent['id']}", json={"team": "no-such-team", "name": "Renamed"})
    assert r.status_code == 422
    after = (await api.get(f"{API}/agents/{agent['id']}")).json()
    assert (after["team"], after["name"]) == (team, agent["name"])


async def test_unknown_agent_is_404(stack: Stack) -> None:
    api = stack.api
    for r in (
        await api.get(f"{API}/agents/a-missing"),
        await api.patch(f"{API}/agents/a-missing", json={"name": "x"}),
        await api.delete(f"{API}/agents/a-missing"),
    ):
        assert r.status_code == 404
        assert "a-missing" in r.json()["detail"]


async def test_create_team_twice_is_409(stack: Stack) -> None:
    team = await new_team(stack.api)
    r = await stack.api.post(f"{API}/teams", json={"name": team})
    assert r.status_code == 409
    teams = (await stack.api.get(f"{API}/teams")).json()["items"]
    assert "returns" in {t["name"] for t in teams}


async def test_requeue_is_recorded_once_with_reason(stack: Stack) -> None:
    api = stack.api
    team = await new_team(api)
    agent = await add_agent(api, team)
    held = await file_case(api, team)
    assert (await api.delete(f"{API}/agents/{agent['id']}")).status_code == 204
    with stack.session_factory() as session:
        events = session.scalars(
            select(CaseEvent).where(CaseEvent.case_id == held["id"], CaseEvent.type == "requeued")
        ).all()
    assert len(events) == 1
    assert events[0].data["reason"] == f"agent {agent['id']} removed"
