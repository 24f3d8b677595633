"""Faults mid-flight: workers SIGKILLed, the Temporal server stopped and restarted, the database cut off.

In each test simulated customers file cases (repeating their Idempotency-Key after a 503) while
simulated agents resolve what they hold (repeating after a 503). Then: every case filed exists exactly
once, is resolved exactly once and its workflow completed; replaying the case events shows no agent
ever held two cases and no case two agents; and no answer was a 5xx other than a 503 with a reason.
"""

import asyncio
import signal
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from api.errors import install_error_handlers
from core.db import make_engine, make_session_factory, run_transaction
from tests.conftest import Stack
from tests.fault_support import BusyDesk, Traffic, assert_nothing_lost
from tests.helpers import API, add_agent, agent_token, bearer, case_body, eventually, new_team, resolve
from tests.support import (
    ServiceProcess,
    TemporalDevServer,
    api_settings,
    drop_database,
    in_process_api,
    own_database,
    through,
    worker_env,
    worker_process,
)
from tests.tcp_proxy import Outage, TcpProxy


async def held_case(api: httpx.AsyncClient, team: str) -> tuple[str, str]:
    """An assigned case of the team and its agent (waits for one), to try resolving during an outage."""
    found = await eventually(
        lambda: api.get(f"{API}/cases", params={"team": team, "status": "assigned", "limit": 1}),
        lambda r: r.status_code == 200 and bool(r.json()["items"]),
        timeout=30,
    )
    case = found.json()["items"][0]
    return case["id"], case["agent_id"]


def kill(worker: ServiceProcess) -> None:
    assert worker.alive(), f"{worker.name} died before it was killed:\n{worker.log_text()[-2000:]}"
    worker.kill()


# --- a. workers SIGKILLed ------------------------------------------------------------------------


async def _kill_workers_while_busy(
    stack: Stack, env: dict[str, str], tmp_path: Path, *, cases: int, agents: int, rounds: int
) -> tuple[int, Traffic]:
    """Two workers; each round SIGKILLs one (every third round both) and starts replacements."""
    traffic = Traffic()
    spawned = 0

    def new_worker() -> ServiceProcess:
        nonlocal spawned
        spawned += 1
        w = worker_process(f"worker-{spawned}", env, tmp_path)
        w.start()
        return w

    workers: list[ServiceProcess] = []
    kills = filed_count = 0
    async with in_process_api(api_settings(env)) as api:
        try:
            workers = [new_worker(), new_worker()]
            team = await new_team(api)
            agent_ids = [(await add_agent(api, team))["id"] for _ in range(agents)]
            async with BusyDesk(api, team, agent_ids, traffic, cases=cases, pause=0.15) as desk:
                for round_no in range(rounds):
                    await asyncio.sleep(2.5)
                    assert desk.filing(), "the kill must land while cases are still being filed"
                    victims = list(workers) if round_no % 3 == 2 else [workers[round_no % 2]]
                    for victim in victims:
                        kill(victim)
                        kills += 1
                    await asyncio.sleep(1.0)
                    workers = [w for w in workers if w not in victims] + [new_worker() for _ in victims]
                filed = await desk.finish()
                filed_count = len(filed)
            await assert_nothing_lost(stack.session_factory, stack.client, team, filed)
        finally:
            for w in workers:
                w.terminate()
    assert traffic.bad == [], traffic.bad
    for w in workers:
        assert "Traceback" not in w.log_text(), w.log_text()[-3000:]
    print(f"{kills} SIGKILLs, {filed_count} cases: answers {dict(traffic.statuses)}")  # noqa: T201
    return kills, traffic


async def test_workers_sigkilled_three_times_mid_flight(
    stack: Stack, worker_process_env: dict[str, str], tmp_path: Path
) -> None:
    kills, traffic = await _kill_workers_while_busy(stack, worker_process_env, tmp_path, cases=30, agents=4, rounds=3)
    assert kills == 4


@pytest.mark.slow
async def test_workers_sigkilled_many_times_mid_flight(
    stack: Stack, worker_process_env: dict[str, str], tmp_path: Path
) -> None:
    kills, _ = await _kill_workers_while_busy(stack, worker_process_env, tmp_path, cases=150, agents=8, rounds=12)
    assert kills == 16


# --- b. the Temporal server stopped and restarted -------------------------------------------------


async def _assert_temporal_outage_answers(api: httpx.AsyncClient, team: str, case_id: str, agent_id: str) -> None:
    """While Temporal is down: filing and resolving are 503s naming Temporal; reads still work."""
    r = await api.post(f"{API}/cases", json=case_body(team), headers={"Idempotency-Key": f"down-{uuid.uuid4()}"})
    assert r.status_code == 503, r.text
    assert "Temporal" in r.json()["detail"] or "workflow" in r.json()["detail"], r.text
    r = await resolve(api, case_id, agent_id)
    assert r.status_code == 503, r.text
    assert r.json()["detail"], r.text
    r = await api.get(f"{API}/cases/{case_id}")
    assert r.status_code == 200, r.text
    r = await api.get("/readyz")
    assert r.status_code == 503 and "temporal" in r.json()["detail"], r.text


async def _restart_temporal_while_busy(
    mysql_url: str, tmp_path: Path, *, cases: int, agents: int, stops: list[signal.Signals], down_for: float
) -> Traffic:
    database_url = own_database(mysql_url, "temporal_restart")
    server = TemporalDevServer(tmp_path)
    server.start()
    await server.wait_ready()
    env = worker_env(database_url, server.address)
    engine = make_engine(database_url, pool_size=2)
    traffic = Traffic()
    filed_count = 0
    workers = [worker_process("worker-a", env, tmp_path), worker_process("worker-b", env, tmp_path)]
    try:
        for w in workers:
            w.start()
        async with in_process_api(api_settings(env)) as api:
            team = await new_team(api)
            agent_ids = [(await add_agent(api, team))["id"] for _ in range(agents)]
            async with BusyDesk(api, team, agent_ids, traffic, cases=cases, handle_time=1.0) as desk:
                for sig in stops:
                    await asyncio.sleep(3.0)
                    assert desk.filing(), "the stop must land while cases are still being filed"
                    case_id, agent_id = await held_case(api, team)
                    server.stop(sig)
                    await _assert_temporal_outage_answers(api, team, case_id, agent_id)
                    # An API process (re)started during the outage connects lazily: its first call is a 503 too.
                    async with in_process_api(api_settings(env)) as fresh_api:
                        await _assert_temporal_outage_answers(fresh_api, team, case_id, agent_id)
                    await asyncio.sleep(down_for)
                    server.start()
                    await server.wait_ready()
                filed = await desk.finish()
                filed_count = len(filed)
            client = await Client.connect(server.address, data_converter=pydantic_data_converter)
            await assert_nothing_lost(make_session_factory(engine), client, team, filed)
        for w in workers:
            assert w.alive(), f"{w.name} did not survive the outage:\n{w.log_text()[-3000:]}"
    finally:
        for w in workers:
            w.terminate()
        server.stop()
        engine.dispose()
        drop_database(database_url)
    assert traffic.bad == [], traffic.bad
    assert traffic.unavailable > 0, "no client ever saw the outage"
    print(f"Temporal stopped {[s.name for s in stops]}, {filed_count} cases: answers {dict(traffic.statuses)}")  # noqa: T201
    return traffic


async def test_temporal_restarted_mid_flight(mysql_url: str, tmp_path: Path) -> None:
    await _restart_temporal_while_busy(mysql_url, tmp_path, cases=20, agents=3, stops=[signal.SIGTERM], down_for=4)


@pytest.mark.slow
async def test_temporal_stopped_and_crashed_repeatedly(mysql_url: str, tmp_path: Path) -> None:
    stops = [signal.SIGTERM, signal.SIGKILL, signal.SIGTERM, signal.SIGKILL]
    await _restart_temporal_while_busy(mysql_url, tmp_path, cases=80, agents=5, stops=stops, down_for=15)


# --- c. the database cut off ------------------------------------------------------------------------


async def _assert_database_outage_answers(api: httpx.AsyncClient, team: str, case_id: str, agent_id: str) -> None:
    """While the database is cut off, every route answers 503 naming the database, none a 500."""
    as_agent = bearer(await agent_token(api, agent_id))  # signed in before the cut
    spare = {"name": "Spare", "email": f"{uuid.uuid4().hex[:10]}@desk.example", "team": team}
    probes: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", f"{API}/cases", {"params": {"team": team}}),
        ("GET", f"{API}/cases/{case_id}", {}),
        ("GET", f"{API}/cases/{case_id}/history", {}),
        ("GET", f"{API}/agents", {}),
        ("GET", f"{API}/agents/{agent_id}", {}),
        ("GET", f"{API}/teams", {}),
        ("GET", f"{API}/queue", {}),
        ("POST", f"{API}/teams", {"json": {"name": f"t-{uuid.uuid4().hex[:10]}"}}),
        ("POST", f"{API}/agents", {"json": spare}),
        ("PATCH", f"{API}/agents/{agent_id}", {"json": {"name": "Renamed"}}),
        ("DELETE", f"{API}/agents/{agent_id}", {}),
        ("POST", f"{API}/cases", {"json": case_body(team)}),
        ("POST", f"{API}/cases", {"json": case_body(team), "headers": {"Idempotency-Key": str(uuid.uuid4())}}),
        ("POST", f"{API}/cases/{case_id}/resolve", {"json": {}, "headers": as_agent}),
        ("POST", f"{API}/cases/{case_id}/cancel", {"json": {}}),
    ]
    answers = await asyncio.gather(*(api.request(m, u, **kw) for m, u, kw in probes))
    wrong = [
        f"{m} {u} -> {r.status_code} {r.text[:200]}"
        for (m, u, _), r in zip(probes, answers, strict=True)
        if r.status_code != 503 or "database" not in r.json().get("detail", "") or not r.headers.get("Retry-After")
    ]
    assert wrong == [], wrong
    ready = await api.get("/readyz")
    assert ready.status_code == 503 and "database" in ready.json()["detail"], ready.text


async def _cut_database_while_busy(
    stack: Stack,
    env: dict[str, str],
    tmp_path: Path,
    *,
    cases: int,
    agents: int,
    outages: list[Outage],
    down_for: float,
) -> tuple[TcpProxy, Traffic]:
    proxy = TcpProxy(make_url(env["DATABASE_URL"]).port or 3306).start()
    env = {**env, "DATABASE_URL": through(proxy, env["DATABASE_URL"])}
    traffic = Traffic()
    filed_count = 0
    workers = [worker_process("worker-a", env, tmp_path), worker_process("worker-b", env, tmp_path)]
    try:
        for w in workers:
            w.start()
        async with in_process_api(api_settings(env)) as api:
            team = await new_team(api)
            agent_ids = [(await add_agent(api, team))["id"] for _ in range(agents)]
            async with BusyDesk(api, team, agent_ids, traffic, cases=cases, handle_time=1.0) as desk:
                for outage in outages:
                    await asyncio.sleep(3.0)
                    assert desk.filing(), "the outage must start while cases are still being filed"
                    case_id, agent_id = await held_case(api, team)
                    await agent_token(api, agent_id)
                    assert proxy.open_connections > 0, "nothing was connected through the proxy"
                    proxy.cut(outage)
                    await _assert_database_outage_answers(api, team, case_id, agent_id)
                    await asyncio.sleep(down_for)
                    await _assert_database_outage_answers(api, team, case_id, agent_id)
                    proxy.heal()
                filed = await desk.finish()
                filed_count = len(filed)
            await assert_nothing_lost(stack.session_factory, stack.client, team, filed)
        for w in workers:
            assert w.alive(), f"{w.name} did not survive the outage:\n{w.log_text()[-3000:]}"
    finally:
        for w in workers:
            w.terminate()
        proxy.stop()
    assert traffic.bad == [], traffic.bad
    assert traffic.unavailable > 0, "no client ever saw the outage"
    print(  # noqa: T201
        f"database cut {[o.value for o in outages]} for {down_for}s each, {filed_count} cases: "
        f"{proxy.reset} connections reset, answers {dict(traffic.statuses)}"
    )
    return proxy, traffic


async def test_database_cut_off_mid_flight(stack: Stack, worker_process_env: dict[str, str], tmp_path: Path) -> None:
    proxy, _ = await _cut_database_while_busy(
        stack, worker_process_env, tmp_path, cases=20, agents=3, outages=[Outage.REFUSE, Outage.RESET], down_for=3
    )
    assert proxy.reset > 0


@pytest.mark.slow
async def test_database_cut_off_repeatedly(stack: Stack, worker_process_env: dict[str, str], tmp_path: Path) -> None:
    outages = [Outage.REFUSE, Outage.RESET] * 3
    await _cut_database_while_busy(
        stack, worker_process_env, tmp_path, cases=100, agents=6, outages=outages, down_for=12
    )


# --- c'. every way the driver fails maps to a 503 -----------------------------------------------------


PING = text("SELECT 1")


def _captured_failures(proxy: TcpProxy, url: str) -> dict[str, Exception]:
    """Provoke each way a lost database shows up in SQLAlchemy, through the proxy, and keep the exception."""
    engine = make_engine(url, pool_size=1)
    session_factory = make_session_factory(engine)
    caught: dict[str, Exception] = {}

    def capture(name: str, action: Any) -> None:
        try:
            action()
        except Exception as err:
            caught[name] = err
        else:
            raise AssertionError(f"{name}: no error")

    def ping() -> None:
        with session_factory() as session:
            session.execute(text("SELECT 1"))

    try:
        proxy.cut(Outage.REFUSE)
        capture("connect refused", ping)
        proxy.cut(Outage.RESET)
        capture("handshake reset", ping)
        capture(
            "transaction, connect reset",
            lambda: run_transaction(session_factory, lambda s: s.execute(text("SELECT 1"))),
        )
        proxy.heal()
        with session_factory() as session:
            session.execute(text("SELECT 1"))
            proxy.cut(Outage.REFUSE)
            capture("query on a dropped connection", lambda: session.execute(text("SELECT 1")))
        proxy.heal()
        session = session_factory()
        session.begin()
        session.execute(text("SELECT 1"))
        proxy.cut(Outage.REFUSE)
        capture("commit on a dropped connection", session.commit)
        session.close()
        proxy.heal()
        with session_factory() as session:
            session.execute(text("SELECT 1"))
            raw = session.connection().connection.dbapi_connection
            assert raw is not None
            raw.close()  # the driver's own socket gone: pymysql answers InterfaceError (0, '')
            capture("query on a closed driver connection", lambda: session.execute(text("SELECT 1")))
        # Every connection of the pool held: the next request waits `pool_timeout`, then gives up.
        small = make_engine(url, pool_size=1)
        small.pool._max_overflow = 0  # type: ignore[attr-defined]
        small.pool._timeout = 0.2  # type: ignore[attr-defined]
        with small.connect():
            capture("pool exhausted", lambda: small.connect().close())
        small.dispose()
    finally:
        proxy.heal()
        engine.dispose()
    return caught


async def test_every_database_failure_mode_is_a_503(mysql_url: str) -> None:
    proxy = TcpProxy(make_url(mysql_url).port or 3306).start()
    try:
        failures = await asyncio.to_thread(_captured_failures, proxy, through(proxy, mysql_url))
    finally:
        proxy.stop()
    assert len(failures) == 7, sorted(failures)
    assert all(isinstance(e, DBAPIError | PoolTimeoutError) for e in failures.values()), failures

    app = FastAPI()
    install_error_handlers(app)

    @app.get("/fail/{name}")
    async def fail(name: str) -> None:
        raise failures[name]

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        for name, err in failures.items():
            r = await client.get(f"/fail/{name}")
            assert r.status_code == 503, f"{name}: {type(err).__name__} {err} -> {r.status_code} {r.text}"
            assert "database" in r.json()["detail"], r.text
            assert r.headers.get("Retry-After"), name
