"""Small helpers to drive the API in tests, with credentials: an admin's token on the client, each agent's own
token to resolve."""

import uuid
from functools import cache
from typing import Any, TypeVar

import httpx
from sqlalchemy.orm import Session, sessionmaker

from core.errors import EmailInUse
from core.security import hash_password
from core.users import create_admin, find_login
from tests.support import eventually as eventually  # tests import it from here too

API = "/api/v1"
T = TypeVar("T")

# Every person the tests create signs in with this (long enough for the password rules).
TEST_PASSWORD = "correct horse battery staple"
TEST_ADMIN_EMAIL = "admin@tests.example"

# Tokens and emails of the agents made by `add_agent`, by agent id (ids are unique across databases).
_agent_emails: dict[str, str] = {}
_agent_tokens: dict[str, str] = {}


@cache
def _test_password_hash() -> str:
    return hash_password(TEST_PASSWORD)


def ensure_test_admin(session_factory: sessionmaker[Session]) -> None:
    """The tests' admin in this database (made directly, as the bootstrap command would)."""
    with session_factory() as session:
        if find_login(session=session, email=TEST_ADMIN_EMAIL) is not None:
            return
    try:
        with session_factory.begin() as session:
            create_admin(session=session, email=TEST_ADMIN_EMAIL, password_hash=_test_password_hash())
    except EmailInUse:
        pass  # another stack on the same database made it first


def bearer(token: str) -> dict[str, str]:
    """The header that carries a credential."""
    return {"Authorization": f"Bearer {token}"}


async def sign_in(api: httpx.AsyncClient, email: str, password: str = TEST_PASSWORD) -> str:
    """Sign in through the API; the access token."""
    r = await api.post(f"{API}/auth/token", data={"username": email, "password": password})
    assert r.status_code == 200, r.text
    return r.json()["access_token"]  # type: ignore[no-any-return]


async def authorize_as_admin(api: httpx.AsyncClient, session_factory: sessionmaker[Session]) -> str:
    """Sign the client in as the tests' admin: every request it sends from now on carries the admin's token."""
    ensure_test_admin(session_factory)
    token = await sign_in(api, TEST_ADMIN_EMAIL)
    api.headers.update(bearer(token))
    return token


def authorize_as_admin_sync(api: httpx.Client, session_factory: sessionmaker[Session]) -> str:
    """`authorize_as_admin` for a synchronous client (Starlette's TestClient)."""
    ensure_test_admin(session_factory)
    r = api.post(f"{API}/auth/token", data={"username": TEST_ADMIN_EMAIL, "password": TEST_PASSWORD})
    assert r.status_code == 200, r.text
    token: str = r.json()["access_token"]
    api.headers.update(bearer(token))
    return token


async def agent_token(api: httpx.AsyncClient, agent_id: str) -> str:
    """The agent's own access token (signed in on first use; agents from `add_agent` have TEST_PASSWORD)."""
    if agent_id not in _agent_tokens:
        email = _agent_emails.get(agent_id)
        if email is None:
            r = await api.get(f"{API}/agents/{agent_id}")
            assert r.status_code == 200, r.text
            email = r.json()["email"]
        _agent_tokens[agent_id] = await sign_in(api, email)
    return _agent_tokens[agent_id]


def forget_agent_token(agent_id: str) -> None:
    """Drop the cached token (after the agent's password changed)."""
    _agent_tokens.pop(agent_id, None)


async def new_team(api: httpx.AsyncClient) -> str:
    """Create a team of this test's own."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    r = await api.post(f"{API}/teams", json={"name": name})
    assert r.status_code == 201, r.text
    return name


async def add_agent(api: httpx.AsyncClient, team: str, **fields: Any) -> dict[str, Any]:
    """Create an agent in `team` (as the client's admin), with TEST_PASSWORD unless `password=None`."""
    body = {"name": "Agent", "email": f"{uuid.uuid4().hex[:10]}@desk.example", "team": team, "password": TEST_PASSWORD}
    body.update(fields)
    r = await api.post(f"{API}/agents", json={k: v for k, v in body.items() if v is not None})
    assert r.status_code == 201, r.text
    agent: dict[str, Any] = r.json()
    _agent_emails[agent["id"]] = agent["email"]
    return agent


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


async def resolve(api: httpx.AsyncClient, case_id: str, agent_id: str, resolution: str = "refunded") -> httpx.Response:
    """Resolve the case as the agent `agent_id`, with their own token."""
    token = await agent_token(api, agent_id)
    return await api.post(f"{API}/cases/{case_id}/resolve", json={"resolution": resolution}, headers=bearer(token))
