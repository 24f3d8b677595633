"""Small helpers to drive the API in tests."""

import uuid
from typing import Any, TypeVar

import httpx

from tests.support import eventually as eventually  # tests import it from here too

API = "/api/v1"
T = TypeVar("T")


async def new_team(api: httpx.AsyncClient) -> str:
    """Create a team of this test's own."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    r = await api.post(f"{API}/teams", json={"name": name})
    assert r.status_code == 201, r.text
    return name


async def add_agent(api: httpx.AsyncClient, team: str, **fields: Any) -> dict[str, Any]:
    """Create an agent in `team`."""
    body = {"name": "Agent", "email": f"{uuid.uuid4().hex[:10]}@desk.example", "team": team, **fields}
    r = await api.post(f"{API}/agents", json=body)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def case_body(team: str, **fields: Any) -> dict[str, Any]:
    """A valid filing for `team`, with a fresh order line."""
    return {
        "customer_name": "Dana Customer",
        "customer_email": "dana@shop.example",
        "order_id": f"ord-{uuid.uuid4().hex[:10]}",
        "product_sku": "SKU-1",
        "product_name": "Espresso machine",
        "reason": "arrived broken",
        "team": team,
        **fields,
    }


async def file_case(
    api: httpx.AsyncClient, team: str, headers: dict[str, str] | None = None, **fields: Any
) -> dict[str, Any]:
    """File a case and return it; fails the test on anything but 201."""
    r = await api.post(f"{API}/cases", json=case_body(team, **fields), headers=headers or {})
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


async def get_case(api: httpx.AsyncClient, case_id: str) -> dict[str, Any]:
    r = await api.get(f"{API}/cases/{case_id}")
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def resolve(api: httpx.AsyncClient, case_id: str, agent_id: str) -> httpx.Response:
    return await api.post(f"{API}/cases/{case_id}/resolve", json={"agent_id": agent_id, "resolution": "refunded"})
