"""Bad input gets a clear 4xx naming what is wrong, and changes nothing."""

import pytest

from tests.conftest import Stack
from tests.helpers import API, add_agent, agent_token, bearer, case_body, new_team, resolve


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"customer_email": "not-an-email"}, "customer_email"),
        ({"customer_name": ""}, "customer_name"),
        ({"order_id": "x" * 101}, "order_id"),
        ({"priority": "urgent"}, "priority"),
        ({"team": "Bad Team!"}, "team"),
        ({"unexpected": 1}, "unexpected"),
        ({"product_sku": None}, "product_sku"),
    ],
)
async def test_create_case_malformed_field(stack: Stack, change: dict[str, object], field: str) -> None:
    team = await new_team(stack.api)
    r = await stack.api.post(f"{API}/cases", json={**case_body(team), **change})
    assert r.status_code == 422
    assert field in r.json()["detail"]
    assert (await stack.api.get(f"{API}/cases", params={"team": team})).json()["items"] == []


async def test_create_case_missing_field(stack: Stack) -> None:
    team = await new_team(stack.api)
    body = case_body(team)
    del body["reason"]
    r = await stack.api.post(f"{API}/cases", json=body)
    assert r.status_code == 422
    assert "reason: Field required" in r.json()["detail"]


async def test_create_case_not_json(stack: Stack) -> None:
    r = await stack.api.post(f"{API}/cases", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert "JSON" in r.json()["detail"]


async def test_create_case_unknown_team(stack: Stack) -> None:
    r = await stack.api.post(f"{API}/cases", json=case_body("no-such-team"))
    assert r.status_code == 422
    assert "no-such-team" in r.json()["detail"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "A", "email": "bad"}, "email"),
        ({"name": "", "email": "a@b.example"}, "name"),
        ({"name": "A", "email": "a@b.example", "status": "sleeping"}, "status"),
    ],
)
async def test_create_agent_malformed(stack: Stack, body: dict[str, object], field: str) -> None:
    r = await stack.api.post(f"{API}/agents", json=body)
    assert r.status_code == 422
    assert field in r.json()["detail"]


async def test_resolve_body_cannot_name_the_agent(stack: Stack) -> None:
    agent = await add_agent(stack.api, await new_team(stack.api))
    token = await agent_token(stack.api, agent["id"])
    r = await stack.api.post(f"{API}/cases/c-anything/resolve", json={"agent_id": "a-1"}, headers=bearer(token))
    assert r.status_code == 422
    assert "agent_id" in r.json()["detail"]


async def test_unknown_case_is_404(stack: Stack) -> None:
    api = stack.api
    agent = await add_agent(api, await new_team(api))
    for r in (
        await api.get(f"{API}/cases/c-missing"),
        await api.get(f"{API}/cases/c-missing/history"),
        await resolve(api, "c-missing", agent["id"]),
        await api.post(f"{API}/cases/c-missing/cancel", json={}),
    ):
        assert r.status_code == 404, r.text
        assert "c-missing" in r.json()["detail"]


@pytest.mark.parametrize(
    ("params", "field"),
    [({"status": "lost"}, "status"), ({"limit": 0}, "limit"), ({"limit": 1000}, "limit")],
)
async def test_list_cases_bad_query(stack: Stack, params: dict[str, str | int], field: str) -> None:
    r = await stack.api.get(f"{API}/cases", params=params)
    assert r.status_code == 422
    assert field in r.json()["detail"]


async def test_list_cases_bad_cursor(stack: Stack) -> None:
    r = await stack.api.get(f"{API}/cases", params={"cursor": "garbage!!"})
    assert r.status_code == 422
    assert "cursor" in r.json()["detail"]


async def test_health_and_readiness(stack: Stack) -> None:
    assert (await stack.api.get("/healthz")).json() == {"status": "ok"}
    r = await stack.api.get("/readyz")
    assert r.status_code == 200 and r.json() == {"status": "ready"}
