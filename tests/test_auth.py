"""Sign-in, access tokens, API keys, customer tracking tokens and the first admin."""

import base64
import json
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from api.main import create_app
from core.config import PROJECT_ROOT, Settings
from core.models import ApiKey, AppUser, utcnow
from core.security import issue_access_token, tracking_token
from tests.conftest import Stack
from tests.helpers import (
    API,
    TEST_PASSWORD,
    add_agent,
    agent_token,
    bearer,
    case_body,
    file_case,
    forget_agent_token,
    new_team,
    resolve,
    sign_in,
)


@asynccontextmanager
async def client_at(stack: Stack, address: str, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A client of its own address (the throttle counts per address), on an app with these settings changed."""
    app = create_app(stack.settings.model_copy(update=settings))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=(address, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as api:
            yield api


def unique_address() -> str:
    """A client address of its own (in the documentation range), so no other test's failures count against it."""
    h = uuid.uuid4().hex
    return f"2001:db8::{h[:4]}:{h[4:8]}:{h[8:12]}"


async def try_sign_in(api: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await api.post(f"{API}/auth/token", data={"username": email, "password": password})


# --- sign-in ---------------------------------------------------------------------------------------------------


async def test_agent_signs_in_and_sees_who_they_are(stack: Stack) -> None:
    team = await new_team(stack.api)
    agent = await add_agent(stack.api, team)
    r = await try_sign_in(stack.api, agent["email"].upper(), TEST_PASSWORD)  # emails match whatever their case
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == stack.settings.ACCESS_TOKEN_MINUTES * 60
    me = await stack.api.get(f"{API}/me", headers=bearer(body["access_token"]))
    assert me.status_code == 200
    assert {k: me.json()[k] for k in ("role", "agent_id", "team", "email")} == {
        "role": "agent", "agent_id": agent["id"], "team": team, "email": agent["email"],
    }  # fmt: skip
    assert me.json()["agent"]["status"] == "available"


async def test_unknown_email_and_wrong_password_get_the_same_401(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    team = await new_team(stack.api)
    agent = await add_agent(stack.api, team)
    no_password = await add_agent(stack.api, team, password=None)
    async with client_at(stack, unique_address()) as api:
        with caplog.at_level(logging.DEBUG):
            answers = [
                await try_sign_in(api, agent["email"], "not the password at all"),
                await try_sign_in(api, f"nobody-{uuid.uuid4().hex[:6]}@desk.example", "not the password at all"),
                await try_sign_in(api, no_password["email"], "not the password at all"),
            ]
    assert {r.status_code for r in answers} == {401}
    assert {r.text for r in answers} == {json.dumps({"detail": "wrong email or password"}, separators=(",", ":"))}
    assert {r.headers["www-authenticate"] for r in answers} == {"Bearer"}
    assert "not the password at all" not in caplog.text and agent["email"] not in caplog.text


async def test_repeated_failures_for_one_account_are_throttled(stack: Stack) -> None:
    agent = await add_agent(stack.api, await new_team(stack.api))
    limit = stack.settings.LOGIN_FAILURES_PER_ACCOUNT
    async with client_at(stack, unique_address()) as api:
        for _ in range(limit):
            assert (await try_sign_in(api, agent["email"], "wrong password, again")).status_code == 401
        throttled = await try_sign_in(api, agent["email"], TEST_PASSWORD)  # even the right password waits
    assert throttled.status_code == 429, throttled.text
    assert 1 <= int(throttled.headers["retry-after"]) <= 15 * 60
    assert "too many failed sign-ins" in throttled.json()["detail"]
    # Per account: from another address too. Another account is not affected.
    async with client_at(stack, unique_address()) as elsewhere:
        assert (await try_sign_in(elsewhere, agent["email"], TEST_PASSWORD)).status_code == 429
        other = await add_agent(stack.api, await new_team(stack.api))
        assert (await try_sign_in(elsewhere, other["email"], TEST_PASSWORD)).status_code == 200


async def test_repeated_failures_from_one_address_are_throttled(stack: Stack) -> None:
    address = unique_address()
    agent = await add_agent(stack.api, await new_team(stack.api))
    async with client_at(stack, address, LOGIN_FAILURES_PER_ADDRESS=3) as api:
        for n in range(3):
            r = await try_sign_in(api, f"guess-{n}-{uuid.uuid4().hex[:6]}@desk.example", "a guessed password")
            assert r.status_code == 401
        r = await try_sign_in(api, agent["email"], TEST_PASSWORD)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    async with client_at(stack, unique_address(), LOGIN_FAILURES_PER_ADDRESS=3) as other_address:
        assert (await try_sign_in(other_address, agent["email"], TEST_PASSWORD)).status_code == 200


async def test_a_success_forgives_the_accounts_failures(stack: Stack) -> None:
    agent = await add_agent(stack.api, await new_team(stack.api))
    limit = stack.settings.LOGIN_FAILURES_PER_ACCOUNT
    async with client_at(stack, unique_address()) as api:
        for _ in range(limit - 1):
            assert (await try_sign_in(api, agent["email"], "wrong password, again")).status_code == 401
        assert (await try_sign_in(api, agent["email"], TEST_PASSWORD)).status_code == 200
        assert (await try_sign_in(api, agent["email"], "wrong password, again")).status_code == 401
        assert (await try_sign_in(api, agent["email"], TEST_PASSWORD)).status_code == 200


async def test_sign_in_form_is_checked(stack: Stack) -> None:
    r = await stack.api.post(f"{API}/auth/token", data={"username": "a@b.example"})
    assert r.status_code == 422 and "password" in r.json()["detail"]
    r = await stack.api.post(
        f"{API}/auth/token", data={"username": "a@b.example", "password": "x", "grant_type": "code"}
    )
    assert r.status_code == 422 and "grant_type" in r.json()["detail"]


async def test_argon2_is_paid_only_at_sign_in(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    team = await new_team(stack.api)
    agent = await add_agent(stack.api, team)
    token = await agent_token(stack.api, agent["id"])
    r = await stack.api.post(f"{API}/api-keys", json={"name": "argon2-check", "scopes": ["cases:file", "cases:read"]})
    key = r.json()["key"]

    def no_argon2(*_: object) -> None:
        raise AssertionError("a request with a token or an API key hashed a password")

    from core import security

    monkeypatch.setattr(security._passwords, "verify", no_argon2)
    monkeypatch.setattr(security._passwords, "hash", no_argon2)
    case = (await stack.api.post(f"{API}/cases", json=case_body(team), headers=bearer(key))).json()
    assert (await stack.api.get(f"{API}/cases/{case['id']}", headers=bearer(key))).status_code == 200
    assert (await stack.api.get(f"{API}/me", headers=bearer(token))).status_code == 200
    assert (await resolve(stack.api, case["id"], agent["id"])).status_code == 200
    assert (await stack.api.get(f"{API}/agents")).status_code == 200


# --- access tokens ---------------------------------------------------------------------------------------------


def _token_for(stack: Stack, user_id: str, minutes: int, secret_key: str | None = None) -> str:
    with stack.session_factory() as session:
        user = session.get(AppUser, user_id)
        assert user is not None
        return issue_access_token(
            secret_key=secret_key or stack.settings.SECRET_KEY,
            user_id=user.id,
            role=user.role,
            version=user.token_version,
            minutes=minutes,
        )


async def _agent_user_id(stack: Stack, agent_id: str) -> str:
    with stack.session_factory() as session:
        user_id = session.scalar(select(AppUser.id).where(AppUser.agent_id == agent_id))
    assert user_id is not None
    return user_id


async def test_expired_and_tampered_tokens_are_401(stack: Stack) -> None:
    agent = await add_agent(stack.api, await new_team(stack.api))
    user_id = await _agent_user_id(stack, agent["id"])
    good = _token_for(stack, user_id, minutes=5)
    assert (await stack.api.get(f"{API}/me", headers=bearer(good))).status_code == 200

    header, payload, signature = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    as_admin = base64.urlsafe_b64encode(json.dumps({**claims, "role": "admin"}).encode()).decode().rstrip("=")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    unsigned = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').decode().rstrip("=")
    cases = {
        "expired": (_token_for(stack, user_id, minutes=-1), "has expired"),
        "claims changed": (f"{header}.{as_admin}.{signature}", "not valid"),
        "signature changed": (f"{header}.{payload}.{flipped}", "not valid"),
        "another key": (_token_for(stack, user_id, minutes=5, secret_key="k" * 40), "not valid"),
        "not a token": ("garbage", "not valid"),
        "alg none": (f"{unsigned}.{payload}.", "not valid"),
    }
    for name, (token, words) in cases.items():
        r = await stack.api.get(f"{API}/me", headers=bearer(token))
        assert r.status_code == 401, (name, r.text)
        assert words in r.json()["detail"] and r.headers["www-authenticate"] == "Bearer", (name, r.text)
    for header_value in ("Basic YWRtaW46YWRtaW4=", "Bearer", "Bearer    "):
        r = await stack.api.get(f"{API}/me", headers={"Authorization": header_value})
        assert r.status_code == 401 and "Bearer" in r.json()["detail"], (header_value, r.text)


async def test_a_new_password_ends_earlier_tokens(stack: Stack) -> None:
    team = await new_team(stack.api)
    agent = await add_agent(stack.api, team)
    old = await agent_token(stack.api, agent["id"])
    new_password = "a completely new passphrase"
    r = await stack.api.patch(f"{API}/agents/{agent['id']}", json={"password": new_password})
    assert r.status_code == 200 and "password" not in r.text
    forget_agent_token(agent["id"])
    assert (await stack.api.get(f"{API}/me", headers=bearer(old))).status_code == 401
    assert (await try_sign_in(stack.api, agent["email"], TEST_PASSWORD)).status_code == 401
    assert (await try_sign_in(stack.api, agent["email"], new_password)).status_code == 200


async def test_agents_change_their_own_password(stack: Stack) -> None:
    agent = await add_agent(stack.api, await new_team(stack.api))
    token = await agent_token(stack.api, agent["id"])
    change = {"current_password": "not my password at all", "new_password": "my own new passphrase"}
    async with client_at(stack, unique_address()) as api:
        r = await api.post(f"{API}/me/password", json=change, headers=bearer(token))
        assert r.status_code == 403 and r.json()["detail"] == "current_password is wrong"
        r = await api.post(f"{API}/me/password", json={**change, "new_password": "tiny-pw-42"}, headers=bearer(token))
        assert r.status_code == 422 and "at least 15 characters" in r.json()["detail"] and "tiny-pw-42" not in r.text
        r = await api.post(
            f"{API}/me/password", json={**change, "current_password": TEST_PASSWORD}, headers=bearer(token)
        )
    assert r.status_code == 200, r.text
    forget_agent_token(agent["id"])
    assert (await stack.api.get(f"{API}/me", headers=bearer(token))).status_code == 401
    assert (await stack.api.get(f"{API}/me", headers=bearer(r.json()["access_token"]))).status_code == 200
    assert (await try_sign_in(stack.api, agent["email"], "my own new passphrase")).status_code == 200


async def test_passwords_are_stored_as_argon2_hashes(stack: Stack) -> None:
    agent = await add_agent(stack.api, await new_team(stack.api))
    with stack.session_factory() as session:
        stored = session.scalar(select(AppUser.password_hash).where(AppUser.agent_id == agent["id"]))
    assert stored is not None and stored.startswith("$argon2id$") and TEST_PASSWORD not in stored
    r = await stack.api.post(f"{API}/agents", json={"name": "A", "email": "short@desk.example", "password": "short"})
    assert r.status_code == 422 and "password: String should have at least 15 characters" in r.json()["detail"]


# --- what an agent may do ------------------------------------------------------------------------------------


async def test_an_agent_sees_their_own_team_only(stack: Stack) -> None:
    api = stack.api
    home, elsewhere = await new_team(api), await new_team(api)
    agent = await add_agent(api, home)
    mine, theirs = await file_case(api, home), await file_case(api, elsewhere)
    token = bearer(await agent_token(api, agent["id"]))

    listed = (await api.get(f"{API}/cases", params={"status": "active"}, headers=token)).json()["items"]
    assert [c["id"] for c in listed] == [mine["id"]]
    r = await api.get(f"{API}/cases", params={"team": elsewhere}, headers=token)
    assert r.status_code == 403 and home in r.json()["detail"]
    for path in (f"/cases/{theirs['id']}", f"/cases/{theirs['id']}/history"):
        r = await api.get(f"{API}{path}", headers=token)
        assert r.status_code == 404 and r.json()["detail"] == f"case {theirs['id']} not found"
    assert (await resolve(api, theirs["id"], agent["id"])).status_code == 404
    queue = (await api.get(f"{API}/queue", headers=token)).json()["teams"]
    assert [q["team"] for q in queue] == [home]

    # The case they hold stays theirs when they move to another team.
    assert (await api.patch(f"{API}/agents/{agent['id']}", json={"team": elsewhere})).status_code == 200
    assert (await api.get(f"{API}/cases/{mine['id']}", headers=token)).status_code == 200
    assert (await resolve(api, mine["id"], agent["id"])).status_code == 200


async def test_an_agent_sets_only_their_own_availability(stack: Stack) -> None:
    api = stack.api
    team = await new_team(api)
    agent, colleague = await add_agent(api, team), await add_agent(api, team)
    token = bearer(await agent_token(api, agent["id"]))
    r = await api.patch(f"{API}/agents/{agent['id']}", json={"status": "away"}, headers=token)
    assert r.status_code == 200 and r.json()["status"] == "away"
    for body in ({"status": "away", "name": "Renamed"}, {"team": "returns"}, {"password": "a passphrase of mine"}):
        r = await api.patch(f"{API}/agents/{agent['id']}", json=body, headers=token)
        assert r.status_code == 403 and "only their own `status`" in r.json()["detail"], body
    r = await api.patch(f"{API}/agents/{colleague['id']}", json={"status": "away"}, headers=token)
    assert r.status_code == 403
    history = await api.get(f"{API}/agents/{colleague['id']}")
    assert history.json()["status"] == "available"
    assert (await api.post(f"{API}/cases", json=case_body(team), headers=token)).status_code == 403


async def test_admins_do_not_resolve(stack: Stack) -> None:
    team = await new_team(stack.api)
    await add_agent(stack.api, team)
    case = await file_case(stack.api, team)
    r = await stack.api.post(f"{API}/cases/{case['id']}/resolve", json={})
    assert r.status_code == 403 and "only the agent who holds the case" in r.json()["detail"]


# --- API keys --------------------------------------------------------------------------------------------------


async def test_api_keys_are_shown_once_scoped_and_revocable(stack: Stack) -> None:
    api = stack.api
    team = await new_team(api)
    r = await api.post(f"{API}/api-keys", json={"name": "storefront-test", "scopes": ["cases:read", "cases:file"]})
    assert r.status_code == 201, r.text
    created = r.json()
    key = created["key"]
    assert key.startswith("rdk_") and len(key) > 40 and created["prefix"] == key[:12]
    assert created["scopes"] == ["cases:file", "cases:read"] and created["last_used_at"] is None
    listed = next(k for k in (await api.get(f"{API}/api-keys")).json()["items"] if k["id"] == created["id"])
    assert "key" not in listed and key not in json.dumps(listed)
    with stack.session_factory() as session:
        stored = session.get(ApiKey, created["id"])
        assert stored is not None and key not in stored.key_hash and len(stored.key_hash) == 64

    # A scope it lacks: 403, naming it, and the key's last use is not recorded for a refusal.
    r = await api.post(f"{API}/cases/c-any/cancel", json={}, headers=bearer(key))
    assert r.status_code == 403 and "`cases:cancel`" in r.json()["detail"]
    assert (await api.get(f"{API}/agents", headers=bearer(key))).status_code == 403
    with stack.session_factory() as session:
        assert session.get(ApiKey, created["id"]).last_used_at is None  # type: ignore[union-attr]

    filed = await api.post(f"{API}/cases", json=case_body(team), headers=bearer(key))
    assert filed.status_code == 201
    history = (await api.get(f"{API}/cases/{filed.json()['id']}/history", headers=bearer(key))).json()["events"]
    assert history[0]["actor"] == "key:storefront-test"
    with stack.session_factory() as session:
        used = session.get(ApiKey, created["id"]).last_used_at  # type: ignore[union-attr]
    assert used is not None and utcnow() - used < timedelta(minutes=1)

    assert (await api.delete(f"{API}/api-keys/{created['id']}")).status_code == 204
    assert (await api.delete(f"{API}/api-keys/{created['id']}")).status_code == 204  # again: still revoked
    r = await api.get(f"{API}/cases", headers=bearer(key))
    assert r.status_code == 401 and r.json()["detail"] == "the API key was revoked"
    r = await api.get(f"{API}/cases", headers=bearer("rdk_" + "x" * 43))
    assert r.status_code == 401 and r.json()["detail"] == "the API key is not valid"
    assert (await api.delete(f"{API}/api-keys/ak-missing")).status_code == 404


async def test_api_key_input_is_checked(stack: Stack) -> None:
    for body, field in (
        ({"name": "x", "scopes": []}, "scopes"),
        ({"name": "x", "scopes": ["cases:delete"]}, "scopes"),
        ({"name": "has spaces", "scopes": ["cases:read"]}, "name"),
        ({"scopes": ["cases:read"]}, "name"),
    ):
        r = await stack.api.post(f"{API}/api-keys", json=body)
        assert r.status_code == 422 and field in r.json()["detail"], body


# --- customer tracking -----------------------------------------------------------------------------------------


async def test_customer_follows_their_case_by_its_tracking_link(stack: Stack) -> None:
    api = stack.api
    team = await new_team(api)
    first = await file_case(api, team)
    urgent = await file_case(api, team, priority="high")
    assert first["tracking_url"] == f"{stack.settings.PUBLIC_URL}/api/v1/track/{first['tracking_token']}"
    customer = httpx.AsyncClient(transport=api._transport, base_url="http://test")  # no credential at all
    async with customer:
        seen = (await customer.get(f"{API}/track/{first['tracking_token']}")).json()
        assert (seen["status"], seen["place_in_line"]) == ("queued", 2)  # the urgent case goes first
        assert seen["status_text"] == "waiting for a support agent: 1 ahead of you"
        assert (await customer.get(f"{API}/track/{urgent['tracking_token']}")).json()["place_in_line"] == 1
        assert "@" not in json.dumps(seen) and not [k for k in seen if "agent" in k or "email" in k]

        agent = await add_agent(api, team)
        assert (await resolve(api, urgent["id"], agent["id"])).status_code == 200
        seen = (await customer.get(f"{API}/track/{urgent['tracking_token']}")).json()
        assert (seen["status"], seen["resolution"], seen["place_in_line"]) == ("resolved", "refunded", None)
        assert agent["id"] not in json.dumps(seen) and agent["email"] not in json.dumps(seen)

        # Withdrawn by the customer while not resolved; refused once resolved.
        r = await customer.post(f"{API}/track/{first['tracking_token']}/cancel", json={"reason": "changed my mind"})
        assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
        assert (await customer.post(f"{API}/track/{urgent['tracking_token']}/cancel")).status_code == 409
        history = (await api.get(f"{API}/cases/{first['id']}/history")).json()["events"]
        assert (history[-1]["type"], history[-1]["actor"]) == ("cancelled", "customer")

        # The token is a credential for that case only.
        r = await customer.get(f"{API}/cases/{first['id']}", headers=bearer(first["tracking_token"]))
        assert r.status_code == 401


async def test_forged_and_unknown_tracking_tokens_are_404(stack: Stack) -> None:
    case = await file_case(stack.api, await new_team(stack.api))
    token = case["tracking_token"]
    case_id, mac = token.split(".")
    forged = [
        f"{case_id}.{('A' if mac[0] != 'A' else 'B') + mac[1:]}",
        f"{case_id}.",
        case_id,
        tracking_token(secret_key="another key" * 4, case_id=case_id),
        tracking_token(secret_key=stack.settings.SECRET_KEY, case_id="c-never-filed"),
    ]
    for bad in forged:
        for r in (
            await stack.api.get(f"{API}/track/{bad}"),
            await stack.api.post(f"{API}/track/{bad}/cancel", json={}),
        ):
            assert r.status_code == 404 and r.json()["detail"] == "no case has this tracking token", (bad, r.text)


async def test_a_repeated_filing_gets_the_same_tracking_token(stack: Stack) -> None:
    team = await new_team(stack.api)
    body, headers = case_body(team), {"Idempotency-Key": f"track-{uuid.uuid4()}"}
    first = await stack.api.post(f"{API}/cases", json=body, headers=headers)
    again = await stack.api.post(f"{API}/cases", json=body, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["tracking_token"] == again.json()["tracking_token"]


# --- SECRET_KEY and the first admin ----------------------------------------------------------------------------


def test_the_api_and_the_worker_refuse_to_start_without_a_secret_key() -> None:
    for key, words in (("", "SECRET_KEY is not set"), ("too-short", "shorter than 32 characters")):
        with pytest.raises(SystemExit, match=words):
            create_app(Settings(SECRET_KEY=key))
        worker = subprocess.run(
            [sys.executable, "worker.py"], cwd=PROJECT_ROOT, env={**os.environ, "SECRET_KEY": key},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert worker.returncode == 1 and worker.stderr.strip().count("\n") == 0 and words in worker.stderr


def _bootstrap(mysql_url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "core.bootstrap", *args],
        cwd=PROJECT_ROOT,
        env={**os.environ, "DATABASE_URL": mysql_url, "ADMIN_EMAIL": "", "ADMIN_PASSWORD": "", **env},
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


async def test_bootstrap_creates_admins_from_the_environment_or_refuses(stack: Stack, mysql_url: str) -> None:
    email, password = f"ops-{uuid.uuid4().hex[:6]}@desk.example", "a long admin passphrase"
    nothing = _bootstrap(mysql_url, "ensure-admin")
    assert nothing.returncode == 0 and "no admin created" in nothing.stdout
    created = _bootstrap(mysql_url, "ensure-admin", ADMIN_EMAIL=email, ADMIN_PASSWORD=password)
    assert created.returncode == 0 and "created" in created.stdout, created.stderr
    again = _bootstrap(mysql_url, "ensure-admin", ADMIN_EMAIL=email, ADMIN_PASSWORD="another passphrase here")
    assert again.returncode == 0 and "exists already" in again.stdout
    token = await sign_in(stack.api, email, password)
    assert (await stack.api.get(f"{API}/me", headers=bearer(token))).json()["role"] == "admin"

    second = f"ops2-{uuid.uuid4().hex[:6]}@desk.example"
    assert _bootstrap(mysql_url, "create-admin", "--email", second, ADMIN_PASSWORD=password).returncode == 0
    taken = _bootstrap(mysql_url, "create-admin", "--email", second, ADMIN_PASSWORD=password)
    assert taken.returncode == 1 and "already used" in taken.stderr
    short = _bootstrap(mysql_url, "create-admin", "--email", f"x{second}", ADMIN_PASSWORD="short")
    assert short.returncode == 1 and "at least 15 characters" in short.stderr
    asked = _bootstrap(mysql_url, "create-admin", "--email", f"y{second}")  # no terminal to ask on
    assert asked.returncode == 1 and "ADMIN_PASSWORD" in asked.stderr
    assert password not in created.stdout + created.stderr
