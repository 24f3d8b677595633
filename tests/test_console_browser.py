"""The console in a real browser: Debian's Chromium driven by Playwright, against the real app behind uvicorn,
a real Temporal dev server and MariaDB. Each actor (agent, admin, customer) has a browser context of its own;
live changes are awaited with Playwright's retrying `expect`, never with sleeps.

Also: an accessibility check (axe-core, via axe-playwright-python) of every page, and the screenshots of the
three homes that the README shows (docs/screenshots/)."""

import os
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from axe_playwright_python.async_playwright import Axe
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect
from temporalio.testing import WorkflowEnvironment

from core.models import utcnow
from core.return_links import LinkProduct, ReturnLinkCreate, issue_return_link
from core.security import case_id_of_tracking_token
from tests.conftest import Stack, start_stack
from tests.helpers import (
    API,
    TEST_ADMIN_EMAIL,
    TEST_PASSWORD,
    add_agent,
    bearer,
    eventually,
    file_case,
    get_case,
    resolve,
)
from tests.live_server import serving
from tests.support import drop_database, own_database

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# Without the background-networking flags Chromium reaches for Google's services, which this network refuses.
CHROMIUM_ARGS = [
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
    "--disable-gpu",
    "--no-sandbox",
]
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
DESKTOP = {"width": 1280, "height": 860}

expect.set_options(timeout=10_000)

# The elements that stick out of the viewport on the right (outside any box that scrolls on its own).
TOO_WIDE = """() => [...document.querySelectorAll("body *")]
  .filter((e) => !e.closest(".scroll") && e.getBoundingClientRect().right > window.innerWidth + 1)
  .map((e) => e.tagName + (e.id ? "#" + e.id : "") + (e.className ? "." + e.className : ""))
  .slice(0, 5)"""


@dataclass
class Console:
    """The stack (API client as admin, database) and the address the browser uses."""

    stack: Stack
    base: str


@pytest.fixture(scope="module")
async def console(mysql_url: str, temporal_env: WorkflowEnvironment) -> AsyncIterator[Console]:
    # A database of its own: the admin's pages (and their screenshots) show only this module's teams.
    url = own_database(mysql_url, "console")
    async for stack in start_stack("mysql", url, temporal_env):
        async with serving(stack.settings) as base:
            yield Console(stack, base)
    drop_database(url)


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `apt-get install chromium` (.ci/run does it)")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        await launched.close()


Opener = Callable[..., Awaitable[Page]]


@pytest.fixture
async def open_page(browser: Browser, console: Console) -> AsyncIterator[Opener]:
    """A page in a browser context of its own (one per actor); closed after the test."""
    contexts: list[BrowserContext] = []

    async def opener(path: str = "/login", **options: Any) -> Page:
        context = await browser.new_context(base_url=console.base, viewport=options.pop("viewport", DESKTOP))
        contexts.append(context)
        page = await context.new_page()
        await page.goto(path)
        return page

    yield opener
    for context in contexts:
        await context.close()


async def sign_in(page: Page, email: str, password: str = TEST_PASSWORD) -> None:
    """Fill the sign-in form as a person would."""
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()


async def live(page: Page) -> None:
    """Wait until the page's event stream is connected."""
    await expect(page.locator("body")).to_have_attribute("data-live", "on")


async def team_named(console: Console, purpose: str) -> str:
    name = f"{purpose}-{uuid.uuid4().hex[:4]}"
    r = await console.stack.api.post(f"{API}/teams", json={"name": name})
    assert r.status_code == 201, r.text
    return name


async def assert_accessible(page: Page) -> None:
    """axe-core finds nothing serious or critical on the page."""
    results = await Axe().run(page)
    bad = [v for v in results.response["violations"] if v["impact"] in ("serious", "critical")]
    assert bad == [], results.generate_report()


def your_case(page: Page) -> Any:
    return page.get_by_role("region", name="Your case")


# --- sign-in and refusals ------------------------------------------------------------------------------------


async def test_a_wrong_password_shows_an_error_and_stays_on_the_page(open_page: Opener) -> None:
    page = await open_page("/login")
    await sign_in(page, TEST_ADMIN_EMAIL, "not the password at all")
    await expect(page.get_by_role("alert")).to_contain_text("wrong email or password")
    await expect(page).to_have_url(re.compile(r"/login$"))
    await expect(page.get_by_label("Email")).to_have_value(TEST_ADMIN_EMAIL)


async def test_an_agent_is_refused_an_admin_page_and_a_stranger_is_sent_to_sign_in(
    console: Console, open_page: Opener
) -> None:
    team = await team_named(console, "refusals")
    agent = await add_agent(console.stack.api, team)
    page = await open_page("/console/admin/agents")
    await expect(page).to_have_url(re.compile(r"/login\?next="))
    await sign_in(page, agent["email"])  # back to the page asked for, which is not theirs
    await expect(page.get_by_role("heading", name="You cannot open this page")).to_be_visible()
    await expect(page.get_by_role("alert")).to_contain_text("admins only")
    await assert_accessible(page)


# --- the agent -----------------------------------------------------------------------------------------------


async def test_an_agent_gets_cases_live_resolves_one_and_the_next_appears_at_once(
    console: Console, open_page: Opener
) -> None:
    api = console.stack.api
    team = await team_named(console, "returns-eu")
    agent = await add_agent(api, team, name="Ada Agent")
    page = await open_page()
    await sign_in(page, agent["email"])
    await expect(page).to_have_url(re.compile(r"/console/agent$"))
    await expect(your_case(page)).to_contain_text("No case: you will get the next one")
    await assert_accessible(page)
    await live(page)

    first = await file_case(api, team, customer_name="Grace Customer", product_name="Espresso machine")
    await expect(your_case(page)).to_contain_text(first["order_id"])
    await expect(page.get_by_role("status").first).to_contain_text("New case")
    await expect(page).to_have_title(re.compile("New case"))
    second = await file_case(api, team, customer_name="Alan Customer", product_name="Kettle", reason="wrong colour")
    await expect(page.get_by_role("region", name=re.compile("active cases"))).to_contain_text(second["order_id"])
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / "agent-home.png"), full_page=True)
    await assert_accessible(page)

    await page.get_by_label("Resolution").fill("Refund issued")
    await page.get_by_role("button", name="Resolve").click()
    await expect(your_case(page)).to_contain_text(second["order_id"])
    resolved = await get_case(api, first["id"])
    assert resolved["status"] == "resolved" and resolved["resolution"] == "Refund issued"

    await page.get_by_role("button", name="Away").click()
    await expect(page.get_by_role("button", name="Away")).to_have_attribute("aria-pressed", "true")
    assert (await api.get(f"{API}/agents/{agent['id']}")).json()["status"] == "away"


async def test_an_agent_resolves_with_the_keyboard_only(console: Console, open_page: Opener) -> None:
    api = console.stack.api
    team = await team_named(console, "keyboard")
    agent = await add_agent(api, team)
    case = await file_case(api, team)
    page = await open_page()
    await page.keyboard.press("Tab")  # the skip link first
    await expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    await page.keyboard.press("Tab")
    await page.keyboard.type(agent["email"])
    await page.keyboard.press("Tab")
    await page.keyboard.type(TEST_PASSWORD)
    await page.keyboard.press("Enter")
    await expect(your_case(page)).to_contain_text(case["order_id"])
    resolution = page.get_by_label("Resolution")
    for _ in range(30):
        if await resolution.evaluate("e => e === document.activeElement"):
            break
        await page.keyboard.press("Tab")
    await expect(resolution).to_be_focused()
    await page.keyboard.type("Replacement sent")
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("button", name="Resolve")).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(your_case(page)).to_contain_text("No case")
    await expect(page.get_by_role("heading", name="Your case")).to_be_focused()
    assert (await get_case(api, case["id"]))["resolution"] == "Replacement sent"


# --- the admin -----------------------------------------------------------------------------------------------


async def test_an_admin_adds_an_agent_who_gets_the_next_case_then_removes_them(
    console: Console, open_page: Opener
) -> None:
    api = console.stack.api
    team = await team_named(console, "exchanges")
    admin = await open_page()
    await sign_in(admin, TEST_ADMIN_EMAIL)
    await expect(admin).to_have_url(re.compile(r"/console/admin$"))
    await expect(admin.get_by_role("region", name=f"Team {team}")).to_contain_text("Waiting")
    await live(admin)
    waiting = await file_case(api, team)
    await expect(admin.get_by_role("region", name=f"Team {team}").locator("dd").first).to_have_text("1")
    await admin.screenshot(path=str(SCREENSHOTS / "admin-home.png"), full_page=True)
    await assert_accessible(admin)

    await admin.get_by_role("link", name="Agents").click()
    form = admin.get_by_role("region", name="Add an agent")
    email = f"lin-{uuid.uuid4().hex[:6]}@desk.example"
    await form.get_by_label("Name").fill("Lin Agent")
    await form.get_by_label("Email").fill(email)
    await form.get_by_label("Team").select_option(team)
    await form.get_by_label("Password").fill(TEST_PASSWORD)
    await form.get_by_role("button", name="Add agent").click()
    row = admin.get_by_role("row").filter(has_text=email)
    await expect(row).to_contain_text(team)
    await expect(admin.get_by_role("status")).to_contain_text("Agent added")
    await assert_accessible(admin)
    await row.get_by_text("Edit").click()
    await row.get_by_label("Name").fill("Lin Q. Agent")
    await row.get_by_role("button", name="Save").click()
    await expect(admin.get_by_role("row").filter(has_text=email)).to_contain_text("Lin Q. Agent")

    agent_page = await open_page()
    await sign_in(agent_page, email)
    # An available agent takes the oldest waiting case of their team as soon as they are added.
    await expect(your_case(agent_page)).to_contain_text(waiting["order_id"])
    await live(agent_page)
    behind = await file_case(api, team)  # waits behind the held case

    await admin.reload()
    await expect(admin.get_by_text("a case they hold goes back to the front")).to_be_visible()
    await admin.get_by_role("row").filter(has_text=email).get_by_role("button", name="Remove").click()
    await expect(admin.get_by_role("status")).to_contain_text("went back to the front of the queue")
    await expect(admin.get_by_role("row").filter(has_text=email)).to_have_count(0)

    async def queue() -> dict[str, Any]:
        r = await api.get(f"{API}/queue")
        found: dict[str, Any] = next(t for t in r.json()["teams"] if t["team"] == team)
        return found

    front = await eventually(queue, lambda q: q["waiting"] == 2)
    assert front["next_case_id"] == waiting["id"], "the held case goes back to the front, ahead of the newer one"
    assert (await get_case(api, behind["id"]))["status"] == "queued"
    # Removal ended their session: a new page with the same cookie is sent to sign in. (Reloading the old
    # page raced its own script, which also leaves for /login once its event stream is refused.)
    again = await agent_page.context.new_page()
    await again.goto("/console/agent")
    await expect(again).to_have_url(re.compile(r"/login"))


async def test_the_admins_other_pages(console: Console, open_page: Opener) -> None:
    api = console.stack.api
    team = await team_named(console, "search")
    case = await file_case(api, team, customer_email="olga@shop.example")
    admin = await open_page()
    await sign_in(admin, TEST_ADMIN_EMAIL)
    await admin.get_by_label("Find a case by order number or customer email").fill(case["order_id"])
    await admin.get_by_role("button", name="Search").click()
    await admin.get_by_role("link", name=case["id"]).click()
    await expect(admin.get_by_role("heading", name=f"Case {case['id']}")).to_be_visible()
    link = admin.get_by_role("link", name="Open in Temporal UI")
    assert (await link.get_attribute("href") or "").endswith(f"/workflows/{case['workflow_id']}")
    await expect(admin.get_by_role("table")).to_contain_text("filed")
    await assert_accessible(admin)
    await admin.get_by_label("Reason (optional)").fill("customer phoned to withdraw")
    await admin.get_by_role("button", name="Cancel case").click()
    await expect(admin.get_by_role("table")).to_contain_text("customer phoned to withdraw")
    await expect(admin.get_by_role("button", name="Cancel case")).to_have_count(0)

    await admin.get_by_role("link", name="Cases").click()
    await admin.get_by_label("Order number or customer email").fill("olga@shop.example")
    await admin.get_by_role("button", name="Search").click()
    await expect(admin.get_by_role("table")).to_contain_text(case["order_id"])
    await assert_accessible(admin)

    await admin.get_by_role("link", name="Teams").click()
    add_team = admin.get_by_role("region", name="Add a team")
    await add_team.get_by_label("Name").fill("bad name!")
    await add_team.get_by_role("button", name="Add team").click()
    await expect(add_team.get_by_role("alert")).to_contain_text("Not saved")  # the API's 422, in words
    await assert_accessible(admin)

    await admin.get_by_role("link", name="API keys").click()
    await admin.get_by_label("Name").fill("storefront")
    await admin.get_by_label("return-links:create").check()
    await admin.get_by_role("button", name="Create key").click()
    await expect(admin.locator("[data-secret] output")).to_contain_text("rdk_")
    row = admin.get_by_role("row").filter(has_text="storefront")
    await expect(row).to_contain_text("active")
    await assert_accessible(admin)
    await row.get_by_role("button", name="Revoke").click()
    await expect(admin.get_by_role("row").filter(has_text="storefront")).to_contain_text("revoked")

    await admin.get_by_role("link", name="Webhooks").click()
    await admin.get_by_label("URL").fill("http://127.0.0.1:9/hook")
    await admin.get_by_label("case.resolved").check()
    await admin.get_by_role("button", name="Add endpoint").click()
    await expect(admin.locator("[data-secret] output")).to_contain_text("whsec_")
    await expect(admin.get_by_role("heading", name="http://127.0.0.1:9/hook")).to_be_visible()
    await assert_accessible(admin)
    await admin.get_by_role("button", name="Remove endpoint http://127.0.0.1:9/hook").click()
    await expect(admin.get_by_role("heading", name="http://127.0.0.1:9/hook")).to_have_count(0)


# --- the customer --------------------------------------------------------------------------------------------


async def _return_link(console: Console, team: str, order_id: str) -> str:
    api = console.stack.api
    r = await api.post(f"{API}/api-keys", json={"name": "storefront", "scopes": ["return-links:create"]})
    assert r.status_code == 201, r.text
    body = {
        "order_id": order_id,
        "customer_name": "Grace Customer",
        "customer_email": "grace@shop.example",
        "products": [{"sku": "KET-1", "name": "Kettle"}, {"sku": "ESP-9", "name": "Espresso machine"}],
        "team": team,
    }
    key = r.json()["key"]
    r = await api.post(f"{API}/return-links", json=body, headers=bearer(key))
    assert r.status_code == 201, r.text
    return f"/returns/{r.json()['token']}"


async def test_a_customer_starts_a_return_and_watches_it_live(console: Console, open_page: Opener) -> None:
    api = console.stack.api
    team = await team_named(console, "returns-uk")
    agent = await add_agent(api, team, status="away")
    order_id = f"ord-{uuid.uuid4().hex[:8]}"
    page = await open_page(await _return_link(console, team, order_id))
    await expect(page.get_by_role("heading", level=1)).to_contain_text(order_id)
    await expect(page.get_by_label("Kettle")).to_be_visible()
    await assert_accessible(page)
    await page.get_by_label("Espresso machine").check()
    await page.get_by_label("Reason").fill("It leaks")
    await page.get_by_role("button", name="Start return").click()

    await expect(page).to_have_url(re.compile(r"/track/"))
    status = page.get_by_role("status")
    await expect(status).to_contain_text("waiting for a support agent: you are next")
    await live(page)
    await page.screenshot(path=str(SCREENSHOTS / "customer-tracking.png"), full_page=True)
    await assert_accessible(page)
    token = page.url.rsplit("/", 1)[1]
    case_id = case_id_of_tracking_token(secret_key=console.stack.settings.SECRET_KEY, token=token)
    assert case_id is not None

    r = await api.patch(f"{API}/agents/{agent['id']}", json={"status": "available"})
    assert r.status_code == 200, r.text
    await expect(status).to_contain_text("a support agent is handling your case")
    await expect(page.get_by_role("button", name="Cancel return")).to_be_visible()
    r = await resolve(api, case_id, agent["id"], "Refund of 89 EUR issued")
    assert r.status_code == 200, r.text
    await expect(status).to_have_text("resolved")
    await expect(page.get_by_text("Resolution: Refund of 89 EUR issued")).to_be_visible()
    await expect(page.get_by_role("button", name="Cancel return")).to_be_hidden()


async def test_a_customer_cancels_a_return(console: Console, open_page: Opener) -> None:
    team = await team_named(console, "cancels")
    page = await open_page(await _return_link(console, team, f"ord-{uuid.uuid4().hex[:8]}"))
    await page.get_by_label("Kettle").check()
    await page.get_by_label("Reason").fill("Changed my mind")
    await page.get_by_role("button", name="Start return").click()
    await expect(page.get_by_role("status")).to_contain_text("waiting")
    await page.get_by_role("button", name="Cancel return").click()
    await expect(page.get_by_role("status")).to_have_text("cancelled")
    await expect(page.get_by_role("button", name="Cancel return")).to_be_hidden()


async def test_a_forged_or_expired_link_is_refused_with_a_page_that_says_so(
    console: Console, open_page: Opener
) -> None:
    genuine = await _return_link(console, "returns", "ord-genuine")
    body, mac = genuine.removeprefix("/returns/").split(".")
    forged = f"/returns/{body[:-2]}xx.{mac}"
    page = await open_page(forged)
    await expect(page.get_by_role("heading", name="This link cannot be used")).to_be_visible()
    await expect(page.get_by_role("alert")).to_contain_text("not valid")
    await assert_accessible(page)

    old = ReturnLinkCreate(
        order_id="ord-old",
        customer_name="Grace",
        customer_email="grace@shop.example",
        products=[LinkProduct(sku="KET-1", name="Kettle")],
        expires_in_days=1,
    )
    token, _ = issue_return_link(
        secret_key=console.stack.settings.SECRET_KEY, data=old, now=utcnow() - timedelta(days=2)
    )
    await page.goto(f"/returns/{token}")
    await expect(page.get_by_role("alert")).to_contain_text("expired")
    await page.goto("/track/not-a-token")
    await expect(page.get_by_role("alert")).to_contain_text("not valid")


async def test_the_pages_read_on_a_phone(console: Console, open_page: Opener) -> None:
    team = await team_named(console, "phone")
    agent = await add_agent(console.stack.api, team)
    await file_case(console.stack.api, team)
    phone = {"width": 390, "height": 844}
    for email, home in ((None, "/login"), (agent["email"], "/console/agent"), (TEST_ADMIN_EMAIL, "/console/admin")):
        page = await open_page("/login", viewport=phone)
        if email is not None:
            await sign_in(page, email)
        await expect(page).to_have_url(re.compile(f"{home}$"))
        await assert_accessible(page)
        # Nothing wider than the phone's screen (wide tables scroll inside their own box).
        wider = await page.evaluate(TOO_WIDE)
        assert wider == [], f"{home}: wider than the screen: {wider}"


# --- routing: offers, transfer, timers, reopen (last: the screenshots above show only the first teams) -------


async def set_timers(console: Console, team: str, **timers: int | None) -> None:
    r = await console.stack.api.patch(f"{API}/teams/{team}", json=timers)
    assert r.status_code == 200, r.text


async def test_an_agent_sees_an_offer_live_accepts_it_and_resolves(console: Console, open_page: Opener) -> None:
    api = console.stack.api
    team = await team_named(console, "offers")
    await set_timers(console, team, offer_timeout_seconds=600)
    agent = await add_agent(api, team, name="Olu Agent")
    page = await open_page()
    await sign_in(page, agent["email"])
    await expect(your_case(page)).to_contain_text("No case")
    await live(page)

    case = await file_case(api, team, customer_name="Mia Customer", product_name="Toaster")
    await expect(your_case(page)).to_contain_text(case["order_id"])
    await expect(your_case(page)).to_contain_text("This case is offered to you")
    await expect(page.locator("#announce")).to_contain_text("New offer")
    await expect(page).to_have_title(re.compile("New offer"))
    await expect(page.get_by_role("button", name="Resolve")).to_have_count(0)
    await assert_accessible(page)

    await page.get_by_role("button", name="Accept").click()
    await expect(page.get_by_role("status").first).to_contain_text("Offer accepted")
    await expect(page.get_by_role("button", name="Resolve")).to_be_visible()
    await expect(page.get_by_role("button", name="Accept")).to_have_count(0)
    assert (await get_case(api, case["id"]))["status"] == "assigned"
    await page.get_by_label("Resolution").fill("Refund issued")
    await page.get_by_role("button", name="Resolve").click()
    await expect(your_case(page)).to_contain_text("No case")
    resolved = await get_case(api, case["id"])
    assert resolved["status"] == "resolved" and resolved["resolution"] == "Refund issued"


async def test_a_missed_offer_is_announced_and_the_agent_is_away(console: Console, open_page: Opener) -> None:
    api = console.stack.api
    team = await team_named(console, "missed")
    await set_timers(console, team, offer_timeout_seconds=2)
    agent = await add_agent(api, team)
    page = await open_page()
    await sign_in(page, agent["email"])
    await live(page)
    case = await file_case(api, team)
    await expect(your_case(page)).to_contain_text("This case is offered to you")
    # Nobody answers: two seconds later the offer is taken back (awaited by expect, not slept).
    await expect(page.locator("#announce")).to_contain_text("The offer expired")
    await expect(your_case(page)).to_contain_text("No case")
    await expect(page.get_by_role("button", name="Away")).to_have_attribute("aria-pressed", "true")
    assert (await get_case(api, case["id"]))["status"] == "queued"


async def test_an_agent_declines_an_offer_and_it_goes_to_the_next_agent(console: Console, open_page: Opener) -> None:
    api = console.stack.api
    team = await team_named(console, "declines")
    await set_timers(console, team, offer_timeout_seconds=600)
    first = await add_agent(api, team, name="First Agent")  # free the longest: offered first
    second = await add_agent(api, team, name="Second Agent")
    page = await open_page()
    await sign_in(page, first["email"])
    await live(page)
    other = await open_page()
    await sign_in(other, second["email"])
    await live(other)

    case = await file_case(api, team)
    await expect(your_case(page)).to_contain_text("This case is offered to you")
    await expect(your_case(other)).to_contain_text("No case")
    await page.get_by_role("button", name="Decline").click()
    await expect(page.get_by_role("status").first).to_contain_text("Offer declined")
    await expect(your_case(page)).to_contain_text("No case")
    await expect(your_case(other)).to_contain_text(case["order_id"])
    await expect(your_case(other)).to_contain_text("This case is offered to you")
    offered = await get_case(api, case["id"])
    assert offered["status"] == "reserved" and offered["agent_id"] == second["id"]


async def test_an_agent_transfers_their_case_to_another_team(console: Console, open_page: Opener) -> None:
    api = console.stack.api
    team = await team_named(console, "transfer-from")
    target = await team_named(console, "transfer-to")
    await set_timers(console, team, resolve_sla_seconds=1)
    agent = await add_agent(api, team)
    case = await file_case(api, team)
    page = await open_page()
    await sign_in(page, agent["email"])
    await expect(your_case(page)).to_contain_text(case["order_id"])
    await expect(
        your_case(page).get_by_text("Overdue", exact=True)
    ).to_be_visible()  # past the team's time to resolve, live
    await page.get_by_label("Team", exact=True).select_option(target)
    await page.get_by_label("Note").fill("needs the exchanges desk")
    await assert_accessible(page)
    await page.get_by_role("button", name="Transfer").click()
    await expect(page.get_by_role("status").first).to_contain_text(f"transferred to team {target}")
    await expect(your_case(page)).to_contain_text("No case")
    moved = await get_case(api, case["id"])
    assert moved["team"] == target and moved["status"] == "queued"


async def test_an_admin_saves_routing_timers_on_the_teams_page(console: Console, open_page: Opener) -> None:
    api = console.stack.api
    team = await team_named(console, "timers")
    admin = await open_page()
    await sign_in(admin, TEST_ADMIN_EMAIL)
    await admin.get_by_role("link", name="Teams").click()
    timers = admin.get_by_role("region", name=f"Timers of team {team}")
    await timers.get_by_label("Wait time (seconds)").fill("600")
    await timers.get_by_label("Time to resolve (seconds)").fill("3600")
    await timers.get_by_label("Offer time (seconds)").fill("45")
    await timers.get_by_role("button", name="Save timers").click()
    await expect(admin.get_by_role("status")).to_contain_text(f"Timers of team {team} saved")
    await assert_accessible(admin)

    async def shown() -> dict[str, Any]:
        r = await api.get(f"{API}/teams")
        found: dict[str, Any] = next(t for t in r.json()["items"] if t["name"] == team)
        return found

    saved = await shown()
    assert (saved["wait_sla_seconds"], saved["resolve_sla_seconds"], saved["offer_timeout_seconds"]) == (600, 3600, 45)
    await timers.get_by_label("Wait time (seconds)").fill("")  # empty: off
    await timers.get_by_role("button", name="Save timers").click()
    saved = await eventually(shown, lambda t: t["wait_sla_seconds"] is None)
    assert (saved["resolve_sla_seconds"], saved["offer_timeout_seconds"]) == (3600, 45)
    await timers.get_by_label("Offer time (seconds)").fill("99999999")  # over a year: the API says no
    await timers.get_by_role("button", name="Save timers").click()
    await expect(timers.get_by_role("alert")).to_contain_text("Not saved")


async def test_an_admin_sees_escalation_and_transfers_a_case_from_its_page(console: Console, open_page: Opener) -> None:
    api = console.stack.api
    team = await team_named(console, "escalates")
    target = await team_named(console, "escalates-to")
    await set_timers(console, team, wait_sla_seconds=1)
    case = await file_case(api, team)  # nobody to take it: escalated after a second
    admin = await open_page()
    await sign_in(admin, TEST_ADMIN_EMAIL)
    figures = admin.get_by_role("region", name=f"Team {team}")
    await expect(figures.locator("div").filter(has_text="Escalated waiting").locator("dd")).to_have_text("1")

    await admin.goto(f"/console/admin/cases/{case['id']}")
    await expect(admin.locator("#case-detail")).to_contain_text("Escalated")
    await admin.get_by_label("Team", exact=True).select_option(target)
    await admin.get_by_label("Note").fill("wrong desk")
    await assert_accessible(admin)
    await admin.get_by_role("button", name="Transfer").click()
    await expect(admin.get_by_role("status")).to_contain_text("Case transferred")
    await expect(admin.locator("#case-detail")).to_contain_text(f"{target} (priority")
    assert (await get_case(api, case["id"]))["team"] == target


async def test_an_admin_reopens_a_resolved_case(console: Console, open_page: Opener) -> None:
    api = console.stack.api
    team = await team_named(console, "admin-reopen")
    agent = await add_agent(api, team)
    case = await file_case(api, team)
    await eventually(lambda: get_case(api, case["id"]), lambda c: c["status"] == "assigned")
    r = await resolve(api, case["id"], agent["id"], "Refund issued")
    assert r.status_code == 200, r.text
    await api.patch(f"{API}/agents/{agent['id']}", json={"status": "away"})
    admin = await open_page()
    await sign_in(admin, TEST_ADMIN_EMAIL)
    await admin.goto(f"/console/admin/cases/{case['id']}")
    await admin.get_by_label("Reason").fill("refund never arrived")
    await admin.get_by_role("button", name="Reopen").click()
    await expect(admin.get_by_role("status")).to_contain_text("Case reopened")
    await expect(admin.get_by_role("button", name="Reopen")).to_have_count(0)
    reopened = await eventually(lambda: get_case(api, case["id"]), lambda c: c["status"] == "queued")
    assert reopened["priority"] == "high"


async def test_a_customer_reopens_a_resolved_return_and_sees_it_waiting_again(
    console: Console, open_page: Opener
) -> None:
    api = console.stack.api
    team = await team_named(console, "reopens")
    agent = await add_agent(api, team)
    case = await file_case(api, team)
    await eventually(lambda: get_case(api, case["id"]), lambda c: c["status"] == "assigned")
    page = await open_page(f"/track/{case['tracking_token']}")
    await live(page)
    status = page.get_by_role("status")
    await expect(status).to_contain_text("a support agent is handling your case")
    await expect(page.get_by_role("button", name="Reopen return")).to_be_hidden()
    await api.patch(f"{API}/agents/{agent['id']}", json={"status": "away"})  # so the reopened case waits
    r = await resolve(api, case["id"], agent["id"], "Refund of 20 EUR issued")
    assert r.status_code == 200, r.text
    await expect(status).to_have_text("resolved")
    await expect(page.get_by_role("button", name="Reopen return")).to_be_visible()
    await assert_accessible(page)
    await page.get_by_label("Reason").fill("The refund never arrived")
    await page.get_by_role("button", name="Reopen return").click()
    await expect(status).to_contain_text("waiting for a support agent")
    await expect(page.get_by_role("button", name="Reopen return")).to_be_hidden()
    await expect(page.get_by_role("button", name="Cancel return")).to_be_visible()
    await assert_accessible(page)
    reopened = await get_case(api, case["id"])
    assert reopened["status"] == "queued" and reopened["priority"] == "high"
