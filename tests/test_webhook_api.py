"""The webhook routes over HTTP: each answer, each refusal."""

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from standardwebhooks import Webhook

from api.main import create_app
from tests.conftest import Stack
from tests.helpers import API
from tests.test_webhooks import Traffic, until
from tests.webhook_receiver import Answer, Received, Receiver


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


async def create(api: httpx.AsyncClient, url: str, events: list[str]) -> dict[str, object]:
    r = await api.post(f"{API}/webhooks", json={"url": url, "events": events})
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


async def test_register_read_change_and_remove(stack: Stack, receiver: Receiver) -> None:
    created = await create(stack.api, receiver.url, ["case.assigned", "agent.created", "case.assigned"])
    secret = str(created["secret"])
    assert secret.startswith("whsec_") and len(Webhook(secret)._whsecret) == 32
    assert created["events"] == ["case.assigned", "agent.created"] and created["enabled"] is True
    webhook_id = created["id"]
    one = (await stack.api.get(f"{API}/webhooks/{webhook_id}")).json()
    assert "secret" not in one and one["url"] == receiver.url
    listed = (await stack.api.get(f"{API}/webhooks", params={"limit": 200})).json()
    assert webhook_id in [w["id"] for w in listed["items"]] and secret not in str(listed)
    r = await stack.api.patch(f"{API}/webhooks/{webhook_id}", json={"events": ["agent.updated"], "enabled": False})
    assert r.status_code == 200 and r.json()["events"] == ["agent.updated"] and r.json()["enabled"] is False
    assert r.json()["disabled_reason"] == "disabled by an admin"
    r = await stack.api.patch(f"{API}/webhooks/{webhook_id}", json={"enabled": True, "url": receiver.url + "/v2"})
    assert r.status_code == 200 and r.json()["enabled"] is True and r.json()["disabled_reason"] is None
    traffic = Traffic(stack)
    agent = traffic.agent()
    traffic.rename(agent)
    await until(lambda: len(receiver.delivered()) == 1, what="the update delivered after re-enabling")
    receiver.secret = secret
    assert receiver.requests[0].json["type"] == "agent.updated"
    assert Webhook(secret).verify(receiver.requests[0].body, receiver.requests[0].headers)
    assert (await stack.api.delete(f"{API}/webhooks/{webhook_id}")).status_code == 204
    assert (await stack.api.get(f"{API}/webhooks/{webhook_id}")).status_code == 404


async def test_test_ping_is_signed_recorded_and_returned(stack: Stack) -> None:
    async def teapot(_: Received) -> Answer:
        return 418, {}, b"no"

    receiver = await Receiver().start()
    try:
        created = await create(stack.api, receiver.url, ["case.filed"])
        receiver.secret = str(created["secret"])
        r = await stack.api.post(f"{API}/webhooks/{created['id']}/test")
        assert r.status_code == 200, r.text
        result = r.json()
        assert result["event_type"] == "webhook.test" and result["status"] == "succeeded"
        assert result["response_code"] == 200 and result["event_id"] is None and result["attempt"] == 1
        ping = receiver.requests[0]
        assert ping.verified and ping.json["type"] == "webhook.test" and ping.webhook_id.startswith("test_")
        receiver.answer = teapot
        failed = (await stack.api.post(f"{API}/webhooks/{created['id']}/test")).json()
        assert failed["status"] == "failed" and failed["response_code"] == 418 and failed["error"] == "answered 418"
        page = (await stack.api.get(f"{API}/webhooks/{created['id']}/deliveries", params={"limit": 1})).json()
        assert [d["id"] for d in page["items"]] == [failed["id"]] and page["next_cursor"]
        rest = await stack.api.get(
            f"{API}/webhooks/{created['id']}/deliveries", params={"limit": 1, "cursor": page["next_cursor"]}
        )
        assert [d["id"] for d in rest.json()["items"]] == [result["id"]] and rest.json()["next_cursor"] is None
    finally:
        await receiver.stop()
        await stack.api.delete(f"{API}/webhooks/{created['id']}")


async def test_replay_over_http(stack: Stack, receiver: Receiver) -> None:
    created = await create(stack.api, receiver.url, ["agent.created", "agent.updated"])
    traffic = Traffic(stack)
    agent = traffic.agent()
    traffic.rename(agent)
    await until(lambda: len(receiver.delivered()) == 2, what="two deliveries")
    first = int(receiver.delivered()[0].webhook_id)
    r = await stack.api.post(f"{API}/webhooks/{created['id']}/replay", params={"since": first - 1})
    assert r.status_code == 200 and r.json()["last_event_id"] == str(first - 1)
    await until(lambda: len(receiver.delivered()) == 4, what="both again")
    assert [int(d.webhook_id) for d in receiver.delivered()] == [first, first + 1, first, first + 1]
    await stack.api.delete(f"{API}/webhooks/{created['id']}")


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"url": "https://93.184.216.34/h", "events": ["case.exploded"]}, 422, "unknown event types ['case.exploded']"),
        ({"url": "http://93.184.216.34/h", "events": ["case.filed"]}, 422, "must use https"),
        ({"url": f"https://{'a' * 64}.example/h", "events": ["case.filed"]}, 422, "does not resolve"),
        ({"url": "https://93.184.216.34/h", "events": []}, 422, "events: List should have at least 1 item"),
        ({"url": "https://93.184.216.34/h"}, 422, "events: Field required"),
        ({"url": "https://93.184.216.34/h", "events": ["case.filed"], "secret": "x"}, 422, "secret: Extra inputs"),
    ],
)
async def test_registration_refusals(stack: Stack, body: dict[str, object], status: int, detail: str) -> None:
    r = await stack.api.post(f"{API}/webhooks", json=body)
    assert r.status_code == status and detail in r.json()["detail"], r.text


async def test_private_targets_are_refused_by_default_over_http(stack: Stack, receiver: Receiver) -> None:
    """An API that does not allow private addresses refuses them, at registration and on a URL change.
    (No test registers a public address: nothing may be sent outside this machine.)"""
    existing = await create(stack.api, receiver.url, ["webhook.disabled"])
    app = create_app(stack.settings.model_copy(update={"WEBHOOK_ALLOW_PRIVATE_URLS": False}))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test", headers=dict(stack.api.headers)
        ) as api,
    ):
        for url, why in [
            ("https://127.0.0.1/h", "127.0.0.1 is a loopback address"),
            ("https://localhost/h", "is a loopback address"),
            ("https://169.254.169.254/", "169.254.169.254 is a link-local address"),
            ("https://10.0.0.8/h", "10.0.0.8 is a private address"),
            (receiver.url, "127.0.0.1 is a loopback address"),
        ]:
            r = await api.post(f"{API}/webhooks", json={"url": url, "events": ["case.filed"]})
            assert r.status_code == 422 and why in r.json()["detail"], r.text
        r = await api.patch(f"{API}/webhooks/{existing['id']}", json={"url": "https://192.168.1.1/"})
        assert r.status_code == 422 and "192.168.1.1 is a private address" in r.json()["detail"]
    assert (await stack.api.get(f"{API}/webhooks/{existing['id']}")).json()["url"] == receiver.url
    await stack.api.delete(f"{API}/webhooks/{existing['id']}")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/webhooks/wh-nope"),
        ("PATCH", "/webhooks/wh-nope"),
        ("DELETE", "/webhooks/wh-nope"),
        ("GET", "/webhooks/wh-nope/deliveries"),
        ("POST", "/webhooks/wh-nope/test"),
        ("POST", "/webhooks/wh-nope/replay?since=1"),
    ],
)
async def test_unknown_webhook_is_404(stack: Stack, method: str, path: str) -> None:
    r = await stack.api.request(method, f"{API}{path}", json={} if method == "PATCH" else None)
    assert r.status_code == 404 and r.json()["detail"] == "webhook wh-nope not found"


async def test_paging_and_bad_cursors(stack: Stack, receiver: Receiver) -> None:
    ids = [str((await create(stack.api, receiver.url, ["case.filed"]))["id"]) for _ in range(3)]
    page = (await stack.api.get(f"{API}/webhooks", params={"limit": 2, "cursor": ids[0]})).json()
    assert [w["id"] for w in page["items"]][:2] == ids[1:]
    r = await stack.api.get(f"{API}/webhooks/{ids[0]}/deliveries", params={"cursor": "x"})
    assert r.status_code == 422 and "cursor is not valid" in r.json()["detail"]
    r = await stack.api.post(f"{API}/webhooks/{ids[0]}/replay", params={"since": -1})
    assert r.status_code == 422
    for webhook_id in ids:
        await stack.api.delete(f"{API}/webhooks/{webhook_id}")
    await asyncio.sleep(0)
