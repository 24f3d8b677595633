"""What the fault tests share: a Temporal dev server of their own, a database of their own, client traffic
that records every answer, and the end-of-run checks (nothing lost, nothing double-assigned)."""

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client, WorkflowExecutionStatus

from core.config import Settings
from core.db import make_engine, make_session_factory
from core.models import CaseEvent, ReturnCase
from ops.invariants import find_workflow_violations
from tests.helpers import API, agent_token, bearer, case_body
from tests.invariants import assert_holding_invariants
from tests.support import (
    ServiceProcess,
    TemporalDevServer,
    api_settings,
    drop_database,
    own_database,
    worker_env,
    worker_process,
)

# --- infrastructure of a test's own --------------------------------------------------------------


@dataclass
class IsolatedDesk:
    """A whole service of a test's own: database, Temporal dev server and one worker process.

    Nothing it does shows in the session's database or Temporal server, so whatever a fuzzer leaves
    behind (queued cases, half-filed workflows) cannot upset another test's checks."""

    settings: Settings
    env: dict[str, str]
    session_factory: sessionmaker[Session]
    server: TemporalDevServer
    worker: ServiceProcess


@contextmanager
def isolated_desk(base_url: str, name: str, state_dir: Path) -> Iterator[IsolatedDesk]:
    """Start an IsolatedDesk (synchronously, for fixtures of sync tests), and tear it down afterwards."""
    database_url = own_database(base_url, name)
    server = TemporalDevServer(state_dir)
    server.start()
    engine = make_engine(database_url, pool_size=4)
    env = worker_env(database_url, server.address, f"tq-{name}")
    worker = worker_process(f"{name}-worker", env, state_dir)
    try:
        asyncio.run(server.wait_ready())
        worker.start()
        settings = api_settings(env, TEMPORAL_RPC_TIMEOUT_SECONDS=15)
        yield IsolatedDesk(settings, env, make_session_factory(engine), server, worker)
        assert worker.alive(), worker.log_text()[-3000:]
    finally:
        worker.terminate()
        server.stop()
        engine.dispose()
        drop_database(database_url)


# --- client traffic -------------------------------------------------------------------------------


@dataclass
class Traffic:
    """Every answer the simulated clients got, to prove that an outage is a 503 with a reason, never a 500."""

    statuses: Counter[int] = field(default_factory=Counter)
    bad: list[str] = field(default_factory=list)
    # Set when the test is over: the next call ends its client loop. (Cancelling alone is not enough: the
    # Temporal SDK turns a cancelled update into WorkflowUpdateRPCTimeoutOrCancelledError, the API answers
    # 503, and the loop would retry.)
    stopped: bool = False

    def record(self, method: str, url: str, response: httpx.Response) -> None:
        self.statuses[response.status_code] += 1
        if response.status_code >= 500 and not _is_clear_503(response):
            self.bad.append(f"{method} {url} -> {response.status_code} {response.text[:300]}")

    @property
    def unavailable(self) -> int:
        return self.statuses[503]

    async def call(self, api: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> httpx.Response:
        if self.stopped:
            raise asyncio.CancelledError
        response = await api.request(method, url, **kwargs)
        self.record(method, url, response)
        return response


def _is_clear_503(response: httpx.Response) -> bool:
    if response.status_code != 503:
        return False
    try:
        detail = response.json().get("detail")
    except ValueError:
        return False
    return isinstance(detail, str) and len(detail) > 10


async def retry_unavailable(
    send: Callable[[], Awaitable[httpx.Response]], *, attempts: int = 240, pause: float = 0.5
) -> httpx.Response:
    """What a well-behaved client does with a 503: wait and send the same request again (bounded)."""
    for _ in range(attempts):
        response = await send()
        if response.status_code != 503:
            return response
        await asyncio.sleep(pause)
    raise AssertionError(f"still 503 after {attempts} attempts: {response.text[:300]}")


async def file_cases(
    api: httpx.AsyncClient,
    team: str,
    count: int,
    traffic: Traffic,
    pause: float = 0.1,
    keep_going: asyncio.Event | None = None,
) -> list[str]:
    """File at least `count` cases one after another, each under its own Idempotency-Key, repeating a key
    after a 503; while `keep_going` is set, go on filing (up to 10 x `count`)."""
    ids: list[str] = []
    while len(ids) < count or (keep_going is not None and keep_going.is_set() and len(ids) < 10 * count):
        key = f"fault-{uuid.uuid4()}"
        body = case_body(team)
        r = await retry_unavailable(
            partial(traffic.call, api, "POST", f"{API}/cases", json=body, headers={"Idempotency-Key": key})
        )
        assert r.status_code in (200, 201), r.text
        ids.append(r.json()["id"])
        await asyncio.sleep(pause)
    assert len(set(ids)) == len(ids), "two filings got the same case"
    return ids


async def work_cases(
    api: httpx.AsyncClient,
    team: str,
    agent_ids: Iterable[str],
    traffic: Traffic,
    filing_done: asyncio.Event,
    *,
    handle_time: float = 0.0,
    timeout: float = 240,
) -> int:
    """Each agent resolves whatever they hold until filing is over and the team has no open case.

    Returns how many resolves were answered 200."""
    resolved = 0
    deadline = time.monotonic() + timeout
    # Each agent signs in once, before any fault; then resolves with their own token.
    tokens = {agent_id: await agent_token(api, agent_id) for agent_id in agent_ids}

    async def agent_loop(agent_id: str) -> None:
        nonlocal resolved
        while time.monotonic() < deadline:
            done = filing_done.is_set()
            active = await traffic.call(api, "GET", f"{API}/cases", params={"team": team, "status": "active"})
            listing = await traffic.call(
                api, "GET", f"{API}/cases", params={"agent_id": agent_id, "status": "assigned"}
            )
            if active.status_code == 503 or listing.status_code == 503:
                await asyncio.sleep(0.5)
                continue
            assert active.status_code == 200 and listing.status_code == 200, (active.text, listing.text)
            if done and not active.json()["items"]:
                return
            mine = listing.json()["items"]
            if not mine:
                await asyncio.sleep(0.3)
                continue
            case_id = mine[0]["id"]
            await asyncio.sleep(handle_time)  # the agent works on the case
            resolve = partial(
                traffic.call,
                api,
                "POST",
                f"{API}/cases/{case_id}/resolve",
                json={"resolution": "ok"},
                headers=bearer(tokens[agent_id]),
            )
            r = await retry_unavailable(resolve)
            assert r.status_code == 200, r.text
            assert r.json()["status"] == "resolved", r.text
            resolved += 1
        raise AssertionError(f"agent {agent_id} still had work after {timeout}s")

    await asyncio.gather(*(agent_loop(a) for a in tokens))
    return resolved


class BusyDesk:
    """Customers filing cases one after another (at least `cases`, and on until `finish()`) while every
    agent works the cases they get."""

    def __init__(
        self,
        api: httpx.AsyncClient,
        team: str,
        agent_ids: list[str],
        traffic: Traffic,
        *,
        cases: int,
        pause: float = 0.2,
        handle_time: float = 0.6,
    ) -> None:
        self.filing_done = asyncio.Event()
        # Customers keep coming until the test has made its faults, however fast the service is.
        self._keep_filing = asyncio.Event()
        self._keep_filing.set()
        self._traffic = traffic
        self._filing = asyncio.create_task(self._file(api, team, traffic, cases, pause))
        self._working = asyncio.create_task(
            work_cases(api, team, agent_ids, traffic, self.filing_done, handle_time=handle_time)
        )

    async def _file(self, api: httpx.AsyncClient, team: str, traffic: Traffic, cases: int, pause: float) -> list[str]:
        try:
            return await file_cases(api, team, cases, traffic, pause=pause, keep_going=self._keep_filing)
        finally:
            self.filing_done.set()

    def filing(self) -> bool:
        """True while cases are still being filed (so a fault now lands mid-flight)."""
        return not self._filing.done()

    async def finish(self, timeout: float = 300) -> list[str]:
        """Stop filing once `cases` are filed, wait until all are resolved; the ids of the cases filed."""
        self._keep_filing.clear()
        filed = await asyncio.wait_for(self._filing, timeout)
        await asyncio.wait_for(self._working, timeout)
        return filed

    async def __aenter__(self) -> "BusyDesk":
        return self

    async def __aexit__(self, *_: object) -> None:
        self._traffic.stopped = True
        loops: set[asyncio.Task[Any]] = {self._filing, self._working}
        for task in loops:
            task.cancel()
        pending = (await asyncio.wait(loops, timeout=60))[1]
        assert not pending, "client loops did not stop"


# --- end-of-run checks ----------------------------------------------------------------------------


def assert_no_double_assignment(session_factory: sessionmaker[Session], team: str) -> int:
    """Replay the team's case events in order: an agent is reserved only while holding nothing, a case only
    while queued, and every hold ends (resolve, cancel, requeue) by the agent that had it.

    Returns how many reservations were replayed."""
    with session_factory() as session:
        events = _team_events(session, team)
    holding: dict[str, str] = {}  # agent -> case
    holder: dict[str, str] = {}  # case -> agent
    reservations = 0
    for e in events:
        if e.type == "reserved":
            assert e.agent_id is not None
            assert e.agent_id not in holding, f"agent {e.agent_id} reserved for {e.case_id} while holding {holding}"
            assert e.case_id not in holder, f"case {e.case_id} reserved for {e.agent_id} while held by {holder}"
            holding[e.agent_id], holder[e.case_id] = e.case_id, e.agent_id
            reservations += 1
        elif e.type == "assigned":
            assert holder.get(e.case_id) == e.agent_id, f"case {e.case_id} assigned to {e.agent_id}, not its holder"
        elif e.type in ("resolved", "cancelled", "requeued") and e.case_id in holder:
            agent = holder.pop(e.case_id)
            assert e.agent_id == agent, f"case {e.case_id} released by {e.agent_id}, held by {agent}"
            del holding[agent]
    return reservations


def _team_events(session: Session, team: str) -> list[CaseEvent]:
    case_ids = select(ReturnCase.id).where(ReturnCase.team == team)
    return list(session.scalars(select(CaseEvent).where(CaseEvent.case_id.in_(case_ids)).order_by(CaseEvent.id)))


async def assert_nothing_lost(
    session_factory: sessionmaker[Session], client: Client, team: str, filed: Iterable[str]
) -> None:
    """Every filed case exists exactly once, is resolved exactly once, its workflow completed, and the
    invariant checker finds nothing in the database or in Temporal."""
    filed = list(filed)
    with session_factory() as session:
        cases = {c.id: c for c in session.scalars(select(ReturnCase).where(ReturnCase.team == team))}
        counts: dict[str, Counter[str]] = {cid: Counter() for cid in cases}
        for e in _team_events(session, team):
            counts[e.case_id][e.type] += 1
    assert set(cases) == set(filed), f"cases in the database {sorted(cases)} != filed {sorted(filed)}"
    for case_id, case in cases.items():
        assert case.status == "resolved", f"case {case_id} is {case.status}"
        assert counts[case_id]["filed"] == 1 and counts[case_id]["resolved"] == 1, (case_id, counts[case_id])
        assert counts[case_id]["assigned"] >= 1, (case_id, counts[case_id])
    assert_holding_invariants(session_factory, team)
    assert_no_double_assignment(session_factory, team)
    for case_id in cases:
        description = await client.get_workflow_handle(f"case-{case_id}").describe()
        assert description.status == WorkflowExecutionStatus.COMPLETED, (case_id, description.status)
    violations = await find_workflow_violations(client=client, session_factory=session_factory, teams=[team])
    assert not violations, "\n".join(str(v) for v in violations)
