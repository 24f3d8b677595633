"""Who may call what: every route of the app against every kind of principal, and the deny-by-default check.

The matrix sends each route's request as: nobody, a customer's tracking token (as a bearer credential), the
agent who holds the case, an agent of another team, a service key without the route's scope, one with it,
and an admin. Each refusal (401, 403, 404) is checked to change nothing in the database; the allowed calls
then run against targets of their own.
"""

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from api.main import create_app
from api.security import SESSION_COOKIE, Public, api_routes, check_route_rules, route_rule_problems
from core.config import Settings
from core.models import (
    Agent,
    AgentEvent,
    ApiKey,
    AppUser,
    CaseEvent,
    LoginFailure,
    ReturnCase,
    Team,
    UserRole,
    WebhookDelivery,
    WebhookEndpoint,
    utcnow,
)
from core.return_links import LinkProduct, ReturnLinkCreate, issue_return_link
from tests.conftest import Stack
from tests.helpers import API, TEST_PASSWORD, add_agent, agent_token, bearer, case_body, file_case, new_team
from tests.live_server import serving

PRINCIPALS = ("anonymous", "customer", "agent", "other_agent", "key_without", "key_with", "admin")
REFUSALS = (401, 403, 404)


# --- deny by default ------------------------------------------------------------------------------------------


def test_every_route_declares_exactly_one_rule() -> None:
    app = create_app(Settings())
    assert route_rule_problems(app) == []
    declared = {(method, path) for method, path, _ in api_routes(app)}
    assert ("POST", "/api/v1/cases/{case_id}/resolve") in declared and ("*", "/docs") in declared


def test_a_route_without_a_rule_stops_the_app() -> None:
    app = create_app(Settings())

    @app.get("/api/v1/forgotten")
    def forgotten() -> dict[str, str]:
        return {}

    @app.get("/api/v1/twice", dependencies=[Public("one"), Public("two")])
    def twice() -> dict[str, str]:
        return {}

    problems = route_rule_problems(app)
    assert len(problems) == 2
    assert "GET /api/v1/forgotten: 0 rules" in problems[0] and "GET /api/v1/twice: 2 rules" in problems[1]
    with pytest.raises(RuntimeError, match="/api/v1/forgotten"):
        check_route_rules(app)


def test_a_mounted_app_cannot_declare_a_rule() -> None:
    app = FastAPI()
    app.mount("/static", FastAPI())
    assert route_rule_problems(app) == ["/static: not an API route, so it cannot declare a rule"]


# --- the world the matrix runs in ---------------------------------------------------------------------------


@dataclass
class World:
    stack: Stack
    home: str  # the agent's team
    away: str  # the other agent's team
    spare: str  # where allowed calls file their own cases (no agents: they wait)
    agent: dict[str, Any]
    other_agent: dict[str, Any]
    case: dict[str, Any]  # filed in `home`, held by `agent`
    credentials: dict[str, dict[str, str]] = field(default_factory=dict)
    keys: dict[str, dict[str, str]] = field(default_factory=dict)  # scope (or "all") -> header
    keys_without: dict[str, dict[str, str]] = field(default_factory=dict)  # scope -> a key with every other scope
    key_ids: list[str] = field(default_factory=list)
    webhook_id: str = ""  # a disabled endpoint on a local port nobody listens on
    live: str = ""  # the app behind a real HTTP server, for the event streams

    def headers(self, principal: str, scope: str | None) -> dict[str, str]:
        if principal == "key_with":
            return self.keys[scope or "all"]
        if principal == "key_without" and scope is not None:
            return self.keys_without[scope]
        return self.credentials[principal]

    def cookie(self, principal: str, scope: str | None) -> dict[str, str]:
        """The principal's credential as the console's session cookie (a page reads no Authorization header)."""
        header = self.headers(principal, scope).get("Authorization")
        return {} if header is None else {"Cookie": f"{SESSION_COOKIE}={header.removeprefix('Bearer ')}"}


async def _key(api: httpx.AsyncClient, scopes: list[str]) -> tuple[str, str]:
    r = await api.post(f"{API}/api-keys", json={"name": f"matrix-{uuid.uuid4().hex[:6]}", "scopes": scopes})
    assert r.status_code == 201, r.text
    return r.json()["id"], r.json()["key"]


async def make_world(stack: Stack) -> World:
    api = stack.api
    home, away, spare = await new_team(api), await new_team(api), await new_team(api)
    agent, other_agent = await add_agent(api, home), await add_agent(api, away)
    case = await file_case(api, home)
    assert case["agent_id"] == agent["id"]
    world = World(stack, home, away, spare, agent, other_agent, case)
    world.credentials = {
        "anonymous": {},
        "customer": bearer(case["tracking_token"]),
        "agent": bearer(await agent_token(api, agent["id"])),
        "other_agent": bearer(await agent_token(api, other_agent["id"])),
        "admin": bearer(stack.admin_token),
    }
    scopes = ["cases:file", "cases:read", "cases:cancel", "events:read", "return-links:create"]
    # For a route no scope opens: a key holding every scope; for one a scope opens: every other scope.
    key_id, key = await _key(api, scopes)
    world.credentials["key_without"] = bearer(key)
    world.key_ids.append(key_id)
    for scope in scopes:
        key_id, key = await _key(api, [s for s in scopes if s != scope])
        world.keys_without[scope] = bearer(key)
        world.key_ids.append(key_id)
    for scope in [*scopes, "all"]:
        key_id, key = await _key(api, scopes if scope == "all" else [scope])
        world.keys[scope] = bearer(key)
        world.key_ids.append(key_id)
    world.webhook_id = await _local_webhook(api)
    return world


async def _local_webhook(api: httpx.AsyncClient) -> str:
    """A webhook endpoint that is disabled at once: nothing is ever delivered to it."""
    r = await api.post(f"{API}/webhooks", json={"url": "http://127.0.0.1:9/hook", "events": ["webhook.disabled"]})
    assert r.status_code == 201, r.text
    assert (await api.patch(f"{API}/webhooks/{r.json()['id']}", json={"enabled": False})).status_code == 200
    return str(r.json()["id"])


def snapshot(world: World) -> dict[str, list[tuple[Any, ...]]]:
    """Every row a refusal could have touched: the world's teams, agents, logins, cases, events and keys."""
    teams = [world.home, world.away, world.spare]

    def rows(session: Session, model: type, *where: Any) -> list[tuple[Any, ...]]:
        columns = model.__table__.columns  # type: ignore[attr-defined]
        found: list[Any] = list(session.scalars(select(model).where(*where)))
        return sorted(tuple(str(getattr(row, c.key)) for c in columns) for row in found)

    with world.stack.session_factory() as session:
        agent_ids = select(Agent.id).where(Agent.team.in_(teams))
        case_ids = select(ReturnCase.id).where(ReturnCase.team.in_(teams))
        return {
            "team": [(session.scalar(select(func.count()).select_from(Team)),)],
            "agent": rows(session, Agent, Agent.team.in_(teams)),
            "app_user": rows(session, AppUser, or_(AppUser.agent_id.in_(agent_ids), AppUser.role == UserRole.ADMIN)),
            "api_key": rows(session, ApiKey, ApiKey.id.in_(world.key_ids)),
            "api_keys": [(session.scalar(select(func.count()).select_from(ApiKey)),)],
            "return_case": rows(session, ReturnCase, ReturnCase.team.in_(teams)),
            "case_event": rows(session, CaseEvent, CaseEvent.case_id.in_(case_ids)),
            "agent_event": rows(session, AgentEvent, AgentEvent.agent_id.in_(agent_ids)),
            "login_failure": [(session.scalar(select(func.count()).select_from(LoginFailure)),)],
            "webhook_endpoint": rows(session, WebhookEndpoint, WebhookEndpoint.id == world.webhook_id),
            "webhook_endpoints": [(session.scalar(select(func.count()).select_from(WebhookEndpoint)),)],
            "webhook_delivery": [(session.scalar(select(func.count()).select_from(WebhookDelivery)),)],
        }


# --- the routes: what each principal gets -------------------------------------------------------------------

Request = tuple[str, dict[str, Any]]  # url, and httpx keyword arguments


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    expect: dict[str, int]
    # The scope a key needs (`key_with` holds it); None: no scope opens the route (`key_with` holds them all).
    scope: str | None = None
    # The request for a principal; `fresh` is True for an allowed call, which gets targets of its own.
    request: Callable[[World, bool], Awaitable[Request]] | None = None
    # An endless event stream: sent over a real connection, the status read, then the client leaves.
    streams: bool = False
    # A console page: the credential goes in the session cookie.
    cookie: bool = False


def expect(*statuses: int) -> dict[str, int]:
    return dict(zip(PRINCIPALS, statuses, strict=True))


def fixed(url: str, **kwargs: Any) -> Callable[[World, bool], Awaitable[Request]]:
    async def build(world: World, fresh: bool) -> Request:
        return (
            url.format(case=world.case["id"], agent=world.agent["id"], key=world.key_ids[0], webhook=world.webhook_id),
            kwargs,
        )

    return build


async def _fresh_case(world: World) -> dict[str, Any]:
    return await file_case(world.stack.api, world.spare)


async def _file(world: World, fresh: bool) -> Request:
    return f"{API}/cases", {"json": case_body(world.spare)}


async def _team(world: World, fresh: bool) -> Request:
    return f"{API}/teams", {"json": {"name": f"t-{uuid.uuid4().hex[:12]}"}}


async def _new_agent(world: World, fresh: bool) -> Request:
    body = {"name": "New", "email": f"{uuid.uuid4().hex[:10]}@desk.example", "team": world.spare}
    return f"{API}/agents", {"json": body}


async def _remove_agent(world: World, fresh: bool) -> Request:
    target = (await add_agent(world.stack.api, world.spare, password=None))["id"] if fresh else world.agent["id"]
    return f"{API}/agents/{target}", {}


async def _cancel(world: World, fresh: bool) -> Request:
    target = (await _fresh_case(world))["id"] if fresh else world.case["id"]
    return f"{API}/cases/{target}/cancel", {"json": {"reason": "matrix"}}


async def _new_key(world: World, fresh: bool) -> Request:
    return f"{API}/api-keys", {"json": {"name": "matrix-new", "scopes": ["cases:read"]}}


async def _revoke_key(world: World, fresh: bool) -> Request:
    target = (await _key(world.stack.api, ["cases:read"]))[0] if fresh else world.key_ids[0]
    return f"{API}/api-keys/{target}", {}


async def _track_cancel(world: World, fresh: bool) -> Request:
    return f"{API}/track/{(await _fresh_case(world))['tracking_token']}/cancel", {"json": {}}


async def _track(world: World, fresh: bool) -> Request:
    return f"{API}/track/{world.case['tracking_token']}", {}


async def _track_events(world: World, fresh: bool) -> Request:
    return f"{API}/track/{world.case['tracking_token']}/events", {}


async def _new_webhook(world: World, fresh: bool) -> Request:
    return f"{API}/webhooks", {"json": {"url": "http://127.0.0.1:9/hook", "events": ["webhook.disabled"]}}


async def _remove_webhook(world: World, fresh: bool) -> Request:
    target = await _local_webhook(world.stack.api) if fresh else world.webhook_id
    return f"{API}/webhooks/{target}", {}


def _link(world: World) -> str:
    order = ReturnLinkCreate(
        order_id=f"ord-{uuid.uuid4().hex[:10]}",
        customer_name="Dana Customer",
        customer_email="dana@shop.example",
        products=[LinkProduct(sku="SKU-1", name="Kettle")],
        team=world.spare,
    )
    return issue_return_link(secret_key=world.stack.settings.SECRET_KEY, data=order, now=utcnow())[0]


async def _return_link_page(world: World, fresh: bool) -> Request:
    return f"/returns/{_link(world)}", {}


async def _start_return(world: World, fresh: bool) -> Request:
    return f"/returns/{_link(world)}", {"data": {"product": "SKU-1", "reason": "matrix"}}


async def _new_return_link(world: World, fresh: bool) -> Request:
    body = {
        "order_id": "ord-1",
        "customer_name": "Dana",
        "customer_email": "dana@shop.example",
        "products": [{"sku": "SKU-1", "name": "Kettle"}],
    }
    return f"{API}/return-links", {"json": body}


async def _console_sign_in(world: World, fresh: bool) -> Request:
    return "/login", {"data": {"email": world.agent["email"], "password": TEST_PASSWORD}}


async def _tracking_page(world: World, fresh: bool) -> Request:
    return f"/track/{world.case['tracking_token']}", {}


async def _patch_team(world: World, fresh: bool) -> Request:
    return f"{API}/teams/{world.spare}", {"json": {"wait_sla_seconds": 3600}}


async def _transfer(world: World, fresh: bool) -> Request:
    # The held case: allowed calls come after its resolve, so the rule answers 409 (tests/test_routing.py transfers).
    return f"{API}/cases/{world.case['id']}/transfer", {"json": {"team": world.spare, "note": "matrix"}}


async def _reopen(world: World, fresh: bool) -> Request:
    # Allowed: a fresh case is not resolved, so the rule then answers 409 (tests/test_routing.py reopens for real).
    target = (await _fresh_case(world))["id"] if fresh else world.case["id"]
    return f"{API}/cases/{target}/reopen", {"json": {"reason": "matrix"}}


async def _track_reopen(world: World, fresh: bool) -> Request:
    return f"{API}/track/{(await _fresh_case(world))['tracking_token']}/reopen", {"json": {}}


async def _sign_in(world: World, fresh: bool) -> Request:
    return f"{API}/auth/token", {"data": {"username": world.agent["email"], "password": TEST_PASSWORD}}


EVERYONE = expect(200, 200, 200, 200, 200, 200, 200)
ADMIN_ONLY = expect(401, 401, 403, 403, 403, 403, 200)
ROUTES = [
    Route("POST", "/api/v1/auth/token", EVERYONE, request=_sign_in),
    Route("GET", "/api/v1/me", expect(401, 401, 200, 200, 403, 403, 200), request=fixed(f"{API}/me")),
    Route(
        "POST",
        "/api/v1/me/password",
        expect(401, 401, 422, 422, 403, 403, 422),  # 422: allowed, then validated
        request=fixed(f"{API}/me/password", json={"current_password": "x", "new_password": "too short"}),
    ),  # fmt: skip
    Route("POST", "/api/v1/teams", expect(401, 401, 403, 403, 403, 403, 201), request=_team),
    Route("GET", "/api/v1/teams", ADMIN_ONLY, request=fixed(f"{API}/teams")),
    Route("PATCH", "/api/v1/teams/{name}", ADMIN_ONLY, request=_patch_team),
    Route("GET", "/api/v1/queue", expect(401, 401, 200, 200, 403, 403, 200), request=fixed(f"{API}/queue")),
    Route("POST", "/api/v1/agents", expect(401, 401, 403, 403, 403, 403, 201), request=_new_agent),
    Route("GET", "/api/v1/agents", ADMIN_ONLY, request=fixed(f"{API}/agents")),
    Route("GET", "/api/v1/agents/{agent_id}", ADMIN_ONLY, request=fixed(f"{API}/agents/{{agent}}")),
    Route(
        "PATCH",
        "/api/v1/agents/{agent_id}",
        expect(401, 401, 200, 403, 403, 403, 200),
        request=fixed(f"{API}/agents/{{agent}}", json={"status": "available"}),
    ),  # fmt: skip
    Route("DELETE", "/api/v1/agents/{agent_id}", expect(401, 401, 403, 403, 403, 403, 204), request=_remove_agent),
    Route("POST", "/api/v1/cases", expect(401, 401, 403, 403, 403, 201, 201), "cases:file", _file),
    Route("GET", "/api/v1/cases", expect(401, 401, 200, 200, 403, 200, 200), "cases:read", fixed(f"{API}/cases")),
    Route(
        "GET",
        "/api/v1/cases/{case_id}",
        expect(401, 401, 200, 404, 403, 200, 200),
        "cases:read",
        fixed(f"{API}/cases/{{case}}"),
    ),  # fmt: skip
    Route(
        "GET",
        "/api/v1/cases/{case_id}/history",
        expect(401, 401, 200, 404, 403, 200, 200),
        "cases:read",
        fixed(f"{API}/cases/{{case}}/history"),
    ),  # fmt: skip
    Route(
        "POST",
        "/api/v1/cases/{case_id}/resolve",
        expect(401, 401, 200, 404, 403, 403, 403),
        request=fixed(f"{API}/cases/{{case}}/resolve", json={"resolution": "matrix"}),
    ),  # fmt: skip
    Route("POST", "/api/v1/cases/{case_id}/cancel", expect(401, 401, 403, 403, 403, 200, 200), "cases:cancel", _cancel),
    # The offered agent only; the matrix's case is assigned, not offered: allowed for its agent, then a 409.
    Route(
        "POST",
        "/api/v1/cases/{case_id}/accept",
        expect(401, 401, 409, 404, 403, 403, 403),
        request=fixed(f"{API}/cases/{{case}}/accept"),
    ),  # fmt: skip
    Route(
        "POST",
        "/api/v1/cases/{case_id}/decline",
        expect(401, 401, 409, 404, 403, 403, 403),
        request=fixed(f"{API}/cases/{{case}}/decline"),
    ),  # fmt: skip
    # The assignee or an admin; after the resolve above, a transfer of the resolved case is a 409.
    Route("POST", "/api/v1/cases/{case_id}/transfer", expect(401, 401, 409, 404, 403, 403, 409), request=_transfer),
    Route("POST", "/api/v1/cases/{case_id}/reopen", expect(401, 401, 403, 403, 403, 403, 409), request=_reopen),
    Route("POST", "/api/v1/api-keys", expect(401, 401, 403, 403, 403, 403, 201), request=_new_key),
    Route("GET", "/api/v1/api-keys", ADMIN_ONLY, request=fixed(f"{API}/api-keys")),
    Route("DELETE", "/api/v1/api-keys/{key_id}", expect(401, 401, 403, 403, 403, 403, 204), request=_revoke_key),
    Route("GET", "/api/v1/track/{token}", EVERYONE, request=_track),
    Route(
        "GET",
        "/api/v1/events",
        expect(401, 401, 200, 200, 403, 200, 200),
        "events:read",
        fixed(f"{API}/events"),
        streams=True,
    ),  # fmt: skip
    Route("GET", "/api/v1/track/{token}/events", EVERYONE, request=_track_events, streams=True),
    Route("POST", "/api/v1/webhooks", expect(401, 401, 403, 403, 403, 403, 201), request=_new_webhook),
    Route("GET", "/api/v1/webhooks", ADMIN_ONLY, request=fixed(f"{API}/webhooks")),
    Route("GET", "/api/v1/webhooks/{webhook_id}", ADMIN_ONLY, request=fixed(f"{API}/webhooks/{{webhook}}")),
    Route(
        "PATCH",
        "/api/v1/webhooks/{webhook_id}",
        ADMIN_ONLY,
        request=fixed(f"{API}/webhooks/{{webhook}}", json={"events": ["webhook.disabled"]}),
    ),  # fmt: skip
    Route(
        "DELETE", "/api/v1/webhooks/{webhook_id}", expect(401, 401, 403, 403, 403, 403, 204), request=_remove_webhook
    ),
    Route(
        "GET",
        "/api/v1/webhooks/{webhook_id}/deliveries",
        ADMIN_ONLY,
        request=fixed(f"{API}/webhooks/{{webhook}}/deliveries"),
    ),  # fmt: skip
    Route("POST", "/api/v1/webhooks/{webhook_id}/test", ADMIN_ONLY, request=fixed(f"{API}/webhooks/{{webhook}}/test")),
    Route(
        "POST",
        "/api/v1/webhooks/{webhook_id}/replay",
        ADMIN_ONLY,
        request=fixed(f"{API}/webhooks/{{webhook}}/replay", params={"since": 0}),
    ),  # fmt: skip
    Route("POST", "/api/v1/track/{token}/cancel", EVERYONE, request=_track_cancel),
    # Allowed for the token's holder; the fresh case is not resolved, so the rule answers 409.
    Route("POST", "/api/v1/track/{token}/reopen", expect(*(409,) * 7), request=_track_reopen),
    Route(
        "POST",
        "/api/v1/return-links",
        expect(401, 401, 403, 403, 403, 201, 201),
        "return-links:create",
        _new_return_link,
    ),  # fmt: skip
    # The console: pages read the session cookie only; without a valid one the browser is sent to /login (303).
    Route("GET", "/", expect(303, 303, 303, 303, 303, 303, 303), request=fixed("/"), cookie=True),
    Route("GET", "/login", EVERYONE, request=fixed("/login"), cookie=True),
    Route("POST", "/login", expect(303, 303, 303, 303, 303, 303, 303), request=_console_sign_in, cookie=True),
    Route("POST", "/logout", expect(303, 303, 303, 303, 303, 303, 303), request=fixed("/logout"), cookie=True),
    Route("GET", "/console", expect(303, 303, 303, 303, 303, 303, 303), request=fixed("/console"), cookie=True),
    *(
        Route("GET", path, expect(303, 303, 200, 200, 303, 303, 403), request=fixed(path), cookie=True)
        for path in ("/console/agent", "/console/agent/parts")
    ),
    *(
        Route("GET", path, expect(303, 303, 403, 403, 303, 303, 200), request=fixed(url), cookie=True)
        for path, url in (
            ("/console/admin", "/console/admin"),
            ("/console/admin/queue", "/console/admin/queue"),
            ("/console/admin/agents", "/console/admin/agents"),
            ("/console/admin/teams", "/console/admin/teams"),
            ("/console/admin/cases", "/console/admin/cases?q=dana@shop.example"),
            ("/console/admin/cases/{case_id}", "/console/admin/cases/{case}"),
            ("/console/admin/api-keys", "/console/admin/api-keys"),
            ("/console/admin/webhooks", "/console/admin/webhooks"),
        )
    ),
    Route("GET", "/console/static/{name}", EVERYONE, request=fixed("/console/static/console.css"), cookie=True),
    Route("GET", "/returns/{link}", EVERYONE, request=_return_link_page),
    Route("POST", "/returns/{link}", expect(303, 303, 303, 303, 303, 303, 303), request=_start_return),
    Route("GET", "/track/{token}", EVERYONE, request=_tracking_page),
    Route("GET", "/healthz", EVERYONE, request=fixed("/healthz")),
    Route("GET", "/readyz", EVERYONE, request=fixed("/readyz")),
    Route("GET", "/metrics", EVERYONE, request=fixed("/metrics")),
    *(Route("*", path, EVERYONE, request=fixed(path)) for path in ("/openapi.json", "/docs", "/redoc")),
    Route("*", "/docs/oauth2-redirect", EVERYONE, request=fixed("/docs/oauth2-redirect")),
]


def test_the_matrix_covers_every_route() -> None:
    declared = {(method, path) for method, path, _ in api_routes(create_app(Settings()))}
    assert {(r.method, r.path) for r in ROUTES} == declared


async def _send(world: World, route: Route, principal: str, fresh: bool) -> httpx.Response:
    assert route.request is not None
    url, kwargs = await route.request(world, fresh)
    api = world.stack.api
    method = "GET" if route.method == "*" else route.method
    if route.streams:
        return await _open_stream(world, url, world.headers(principal, route.scope))
    request = api.build_request(method, url, **kwargs)
    del request.headers["Authorization"]  # the client's own admin token
    if route.cookie:
        request.headers.update(world.cookie(principal, route.scope))
    else:
        request.headers.update(world.headers(principal, route.scope))
    return await api.send(request)


async def _open_stream(world: World, url: str, headers: dict[str, str]) -> httpx.Response:
    """GET an event stream over a real connection: its status and headers, and the body unless it is a stream."""
    async with (
        httpx.AsyncClient(base_url=world.live, timeout=30) as client,
        client.stream("GET", url, headers=headers) as response,
    ):
        if response.status_code == 200:
            assert response.headers["content-type"].startswith("text/event-stream")
            return httpx.Response(200, headers=response.headers)
        return httpx.Response(response.status_code, headers=response.headers, content=await response.aread())


async def test_every_route_answers_each_principal_as_declared(stack: Stack) -> None:
    async with serving(stack.settings) as live:
        await _check_every_cell(stack, live)


async def _check_every_cell(stack: Stack, live: str) -> None:
    world = await make_world(stack)
    world.live = live
    wrong: list[str] = []
    cells = [(route, principal) for route in ROUTES for principal in PRINCIPALS]

    # Refusals first, against the shared targets: each must leave every row as it was.
    for route, principal in cells:
        expected = route.expect[principal]
        if expected not in REFUSALS:
            continue
        before = snapshot(world)
        r = await _send(world, route, principal, fresh=False)
        if r.status_code != expected:
            wrong.append(f"{route.method} {route.path} as {principal}: {r.status_code} {r.text[:200]}, not {expected}")
        elif expected == 401 and r.headers.get("www-authenticate") != "Bearer":
            wrong.append(f"{route.method} {route.path} as {principal}: 401 without WWW-Authenticate: Bearer")
        changed = [table for table, rows in snapshot(world).items() if rows != before[table]]
        if changed:
            wrong.append(f"{route.method} {route.path} as {principal} ({r.status_code}) changed {changed}")

    # Then the allowed calls, each on targets of its own where it changes something.
    for route, principal in cells:
        expected = route.expect[principal]
        if expected in REFUSALS:
            continue
        r = await _send(world, route, principal, fresh=True)
        if r.status_code != expected:
            wrong.append(f"{route.method} {route.path} as {principal}: {r.status_code} {r.text[:200]}, not {expected}")
    assert wrong == [], "\n".join(wrong)

    # The allowed calls acted as their principals.
    history = (await stack.api.get(f"{API}/cases/{world.case['id']}/history")).json()["events"]
    assert history[-1]["type"] == "resolved" and history[-1]["actor"] == f"agent:{world.agent['id']}"
