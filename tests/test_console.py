"""The console over HTTP (no browser): the session cookie's flags, CSRF, sign-in from another site, a removed
agent's session, return links, and the weight of our own assets. The browser stories: test_console_browser.py."""

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.errors import ServiceUnavailable
from api.main import create_app
from api.security import CSRF_HEADER, SESSION_COOKIE, Public, csrf_token
from core.models import utcnow
from core.return_links import LinkProduct, LinkRefused, ReturnLinkCreate, issue_return_link, read_return_link
from tests.conftest import Stack
from tests.helpers import API, TEST_PASSWORD, add_agent, eventually, file_case, get_case, new_team

STATIC = Path(__file__).resolve().parent.parent / "api" / "console" / "static"
TEMPLATES = STATIC.parent / "templates"
PAGE_BUDGET = 100_000  # bytes of our own CSS and JS per page


async def send(stack: Stack, method: str, url: str, headers: dict[str, str] | None = None, **kw: Any) -> httpx.Response:
    """A request without the client's admin token (only what is given here)."""
    request = stack.api.build_request(method, url, **kw)
    del request.headers["Authorization"]
    request.headers.update(headers or {})
    return await stack.api.send(request)


async def console_session(stack: Stack, email: str, host: str = "test") -> str:
    r = await send(stack, "POST", f"http://{host}/login", data={"email": email, "password": TEST_PASSWORD})
    assert r.status_code == 303, r.text
    token = r.cookies.get(SESSION_COOKIE)
    assert token
    return token


def cookie(token: str) -> dict[str, str]:
    return {"Cookie": f"{SESSION_COOKIE}={token}"}


async def test_the_session_cookie_is_httponly_samesite_and_secure_off_localhost(stack: Stack) -> None:
    agent = await add_agent(stack.api, await new_team(stack.api))
    for host, secure in (("console.example", True), ("localhost", False), ("127.0.0.1", False)):
        r = await send(stack, "POST", f"http://{host}/login", data={"email": agent["email"], "password": TEST_PASSWORD})
        assert r.status_code == 303 and r.headers["location"] == "/console/agent"
        flags = r.headers["set-cookie"].lower()
        assert "httponly" in flags and "samesite=lax" in flags and "path=/" in flags
        assert ("; secure" in flags) is secure, flags


async def test_a_wrong_password_or_another_site_gets_no_session(stack: Stack) -> None:
    agent = await add_agent(stack.api, await new_team(stack.api))
    r = await send(stack, "POST", "/login", data={"email": agent["email"], "password": "wrong password here"})
    assert r.status_code == 401 and "wrong email or password" in r.text and SESSION_COOKIE not in r.cookies
    r = await send(
        stack,
        "POST",
        "/login",
        data={"email": agent["email"], "password": TEST_PASSWORD},
        headers={"Origin": "https://elsewhere.example"},
    )
    assert r.status_code == 403 and SESSION_COOKIE not in r.cookies


async def test_a_change_made_with_the_session_needs_its_csrf_token(stack: Stack) -> None:
    team = await new_team(stack.api)
    agent = await add_agent(stack.api, team)
    case = await file_case(stack.api, team)
    token = await console_session(stack, agent["email"])
    r = await send(stack, "GET", f"{API}/me", headers=cookie(token))
    assert r.status_code == 200 and r.json()["agent_id"] == agent["id"]
    url = f"{API}/cases/{case['id']}/resolve"
    r = await send(stack, "POST", url, headers=cookie(token), json={"resolution": "forged"})
    assert r.status_code == 403 and CSRF_HEADER in r.json()["detail"]
    wrong = {**cookie(token), CSRF_HEADER: "0" * 40}
    assert (await send(stack, "POST", url, headers=wrong, json={"resolution": "forged"})).status_code == 403
    assert (await stack.api.get(f"{API}/cases/{case['id']}")).json()["status"] == "assigned"
    right = {**cookie(token), CSRF_HEADER: csrf_token(stack.settings.SECRET_KEY, token)}
    r = await send(stack, "POST", url, headers=right, json={"resolution": "with the token"})
    assert r.status_code == 200 and r.json()["resolution"] == "with the token"


async def test_removing_an_agent_ends_their_console_session(stack: Stack) -> None:
    agent = await add_agent(stack.api, await new_team(stack.api))
    token = await console_session(stack, agent["email"])
    assert (await send(stack, "GET", "/console/agent", headers=cookie(token))).status_code == 200
    assert (await stack.api.delete(f"{API}/agents/{agent['id']}")).status_code == 204
    r = await send(stack, "GET", "/console/agent", headers=cookie(token))
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    r = await send(stack, "GET", f"{API}/me", headers=cookie(token))
    assert r.status_code == 401


async def test_signing_out_forgets_the_session(stack: Stack) -> None:
    agent = await add_agent(stack.api, await new_team(stack.api))
    token = await console_session(stack, agent["email"])
    r = await send(stack, "POST", "/logout", headers=cookie(token), data={"csrf": "not it"})
    assert r.status_code == 303 and r.headers["location"] == "/console" and "set-cookie" not in r.headers
    csrf = csrf_token(stack.settings.SECRET_KEY, token)
    r = await send(stack, "POST", "/logout", headers=cookie(token), data={"csrf": csrf})
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert f'{SESSION_COOKIE}=""' in r.headers["set-cookie"] and "max-age=0" in r.headers["set-cookie"].lower()


def _order(**fields: Any) -> ReturnLinkCreate:
    base: dict[str, Any] = {
        "order_id": "ord-7",
        "customer_name": "Grace",
        "customer_email": "Grace@Shop.example",
        "products": [LinkProduct(sku="KET-1", name="Kettle")],
    }
    return ReturnLinkCreate(**{**base, **fields})


def test_a_return_link_is_signed_single_order_and_expires() -> None:
    key, now = "k" * 64, utcnow()
    token, expires_at = issue_return_link(secret_key=key, data=_order(), now=now)
    link = read_return_link(secret_key=key, token=token, now=now)
    assert link.order_id == "ord-7" and link.customer_email == "grace@shop.example" and link.team == "returns"
    assert [p.sku for p in link.products] == ["KET-1"]
    body, mac = token.split(".")
    other, _ = issue_return_link(secret_key=key, data=_order(order_id="ord-8"), now=now)
    # The MAC's last character changed to one it is not (a fixed "A" was the MAC itself in 1 run of 16).
    damaged = mac[:-1] + ("B" if mac[-1] != "B" else "C")
    for forged in (f"{other.split('.')[0]}.{mac}", f"{body}.{damaged}", body, "", "x.y", token + "x"):
        with pytest.raises(LinkRefused, match="not valid"):
            read_return_link(secret_key=key, token=forged, now=now)
    with pytest.raises(LinkRefused, match="not valid"):
        read_return_link(secret_key="j" * 64, token=token, now=now)
    with pytest.raises(LinkRefused, match="expired"):
        read_return_link(secret_key=key, token=token, now=expires_at + timedelta(seconds=1))


async def test_the_storefront_creates_a_return_link_and_the_customer_opens_it(stack: Stack) -> None:
    r = await stack.api.post(f"{API}/api-keys", json={"name": "storefront", "scopes": ["return-links:create"]})
    key = {"Authorization": f"Bearer {r.json()['key']}"}
    body = {
        "order_id": "ord-42",
        "customer_name": "Grace",
        "customer_email": "grace@shop.example",
        "products": [{"sku": "KET-1", "name": "Kettle"}, {"sku": "ESP-9", "name": "Espresso <machine>"}],
        "expires_in_days": 7,
    }
    r = await send(stack, "POST", f"{API}/return-links", headers=key, json=body)
    assert r.status_code == 201, r.text
    assert r.json()["url"] == f"{stack.settings.PUBLIC_URL}/returns/{r.json()['token']}"
    page = await send(stack, "GET", f"/returns/{r.json()['token']}")
    assert page.status_code == 200 and "Kettle" in page.text and "Espresso &lt;machine&gt;" in page.text
    for wrong in ({**body, "products": []}, {**body, "expires_in_days": 365}, {**body, "customer_email": "nope"}):
        assert (await send(stack, "POST", f"{API}/return-links", headers=key, json=wrong)).status_code == 422
    refused = await send(stack, "GET", f"/returns/{r.json()['token'][:-3]}abc")
    assert refused.status_code == 404 and "not valid" in refused.text


async def test_starting_a_return_twice_lands_on_the_open_case(stack: Stack) -> None:
    team = await new_team(stack.api)
    token, _ = issue_return_link(
        secret_key=stack.settings.SECRET_KEY, data=_order(order_id=f"ord-{team}", team=team), now=utcnow()
    )
    r = await send(stack, "POST", f"/returns/{token}", data={"product": "KET-1", "reason": ""})
    assert r.status_code == 422 and "reason" in r.text
    r = await send(stack, "POST", f"/returns/{token}", data={"product": "NOT-IN-ORDER", "reason": "broken"})
    assert r.status_code == 422 and "Choose the product" in r.text
    first = await send(stack, "POST", f"/returns/{token}", data={"product": "KET-1", "reason": "broken"})
    again = await send(stack, "POST", f"/returns/{token}", data={"product": "KET-1", "reason": "broken"})
    assert first.status_code == again.status_code == 303
    assert first.headers["location"] == again.headers["location"] and first.headers["location"].startswith("/track/")
    tracking = await send(stack, "GET", first.headers["location"])
    assert tracking.status_code == 200 and "waiting for a support agent" in tracking.text


def test_each_page_loads_under_100_kb_of_our_own_assets_and_nothing_from_elsewhere() -> None:
    sizes = {p.name: p.stat().st_size for p in STATIC.iterdir()}
    for template in TEMPLATES.glob("*.html"):
        text = template.read_text()
        assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=\"(https?:)?//", text), template.name
        own = set(re.findall(r"/console/static/([\w.-]+)", text))
        if "{% extends" in text:
            own |= set(re.findall(r"/console/static/([\w.-]+)", (TEMPLATES / "base.html").read_text()))
        if any(name.endswith(".js") for name in own):
            own.add("console.js")  # the modules' shared import
        assert sum(sizes[name] for name in own) < PAGE_BUDGET, template.name
    for script in STATIC.glob("*.js"):
        assert not re.search(r"\bfrom\s+[\"'](https?:)?//", script.read_text()), script.name


async def test_the_apis_errors_are_pages_in_words_on_the_consoles_paths(stack: Stack) -> None:
    app = create_app(stack.settings)
    app.state.settings, app.state.session_factory = stack.settings, stack.session_factory  # no lifespan needed

    @app.get("/console/test-outage", dependencies=[Public("test")])
    async def outage() -> None:
        raise ServiceUnavailable("the database did not answer within 5s; retry later")

    @app.get("/api/v1/test-outage", dependencies=[Public("test")])
    async def api_outage() -> None:
        raise ServiceUnavailable("the database did not answer within 5s; retry later")

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        r = await client.get("/console/test-outage")
        assert r.status_code == 503 and r.headers["content-type"].startswith("text/html")
        assert "the database did not answer within 5s" in r.text
        r = await client.get("/api/v1/test-outage")
        assert r.status_code == 503 and r.json()["detail"].startswith("the database did not answer")
        r = await client.post("/login", data={"email": "x" * 400, "password": "p"})
        assert r.status_code == 422 and r.headers["content-type"].startswith("text/html") and "email" in r.text
        r = await client.get("/console/no-such-page")
        assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")


async def test_the_agents_live_parts_show_an_offer_with_accept_and_decline(stack: Stack) -> None:
    team = await new_team(stack.api)
    r = await stack.api.patch(f"{API}/teams/{team}", json={"offer_timeout_seconds": 600})
    assert r.status_code == 200, r.text
    agent = await add_agent(stack.api, team)
    case = await file_case(stack.api, team)
    await eventually(lambda: get_case(stack.api, case["id"]), lambda c: c["status"] == "reserved")
    token = await console_session(stack, agent["email"])
    r = await send(stack, "GET", "http://test/console/agent/parts", headers=cookie(token))
    assert r.status_code == 200, r.text
    parts = r.json()
    assert parts["offer"] is True and parts["case_state"] == f"{case['id']}:offer" and parts["overdue"] is False
    assert parts["announce"].startswith(f"New offer: order {case['order_id']}")
    assert ">Accept</button>" in parts["case_html"] and ">Decline</button>" in parts["case_html"]
    assert "Resolve" not in parts["case_html"] and "Transfer" not in parts["case_html"]
    tracking = await send(stack, "GET", f"http://test/track/{case['tracking_token']}")
    assert tracking.status_code == 200 and re.search(r'<form id="reopen"\s+hidden', tracking.text)
