"""The load the benchmark drives: closed loops over HTTP, the bare baseline, hand-offs, a deep queue."""

import asyncio
import functools
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
from temporalio.client import Client
from temporalio.common import SearchAttributePair, TypedSearchAttributes

from bench.bare_workflow import BareCaseWorkflow
from bench.db import Db
from bench.procs import cpu_seconds, machine_busy_seconds
from bench.stack import say
from bench.stats import Summary, summarize
from core import search_attributes as sa
from core.ids import case_id_for_idempotency_key, workflow_id_for_case
from core.models import CaseStatus
from workflows.messages import CaseDraft, ReturnCaseInput
from workflows.return_case import ReturnCaseWorkflow

T = TypeVar("T")
API = "/api/v1"
# 503s retried per call before the run fails.
RETRIES = 5


class ApiError(RuntimeError):
    pass


# Bench agents who resolve sign in with this (Argon2 costs a few hundred ms per agent, at setup only).
AGENT_PASSWORD = "bench agent passphrase"


class Api:
    """The HTTP API as a storefront (an API key that files), an admin (a token) and the agents (each their own
    token) use it. Against a product from before sign-in existed (`--product-dir`), it sends no credentials and
    names the agent in the resolve body, so before and after run through the same driver."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.http = httpx.AsyncClient(
            base_url=base_url + API,
            timeout=60,
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=256),
        )
        self.retried = 0
        self.signs_in = True
        self.admin: dict[str, str] = {}
        self.storefront: dict[str, str] = {}
        self._emails: dict[str, str] = {}  # agent id -> email, for agents made without a password
        self._agents: dict[str, dict[str, str]] = {}  # agent id -> their credential header
        self.sign_in_seconds: list[float] = []  # each sign-in's answer time (Argon2 dominates it)

    async def close(self) -> None:
        await self.http.aclose()

    async def sign_in_as_admin(self, email: str, password: str) -> None:
        """Sign in as the admin and make the storefront's key (with `cases:file`); or notice there is no sign-in."""
        paths = (await self.http.get(f"{self.base_url}/openapi.json")).json()["paths"]
        self.signs_in = f"{API}/auth/token" in paths
        if not self.signs_in:
            return
        self.admin = bearer(await self._sign_in(email, password))
        key, _ = await self._post("/api-keys", {"name": "bench-storefront", "scopes": ["cases:file"]}, self.admin)
        self.storefront = bearer(str(key["key"]))

    async def _sign_in(self, email: str, password: str) -> str:
        t0 = time.perf_counter()
        r = await self.http.post("/auth/token", data={"username": email, "password": password})
        self.sign_in_seconds.append(time.perf_counter() - t0)
        if r.status_code != 200:
            raise ApiError(f"POST /auth/token -> {r.status_code}: {r.text[:300]}")
        return str(r.json()["access_token"])

    async def _post(
        self, path: str, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> tuple[dict[str, Any], float]:
        t0 = time.perf_counter()
        r = await self.http.post(path, json=body, headers=headers)
        elapsed = time.perf_counter() - t0
        if r.status_code not in (200, 201):
            raise ApiError(f"POST {path} -> {r.status_code}: {r.text[:300]}")
        return r.json(), elapsed

    async def team(self, name: str) -> str:
        await self._post("/teams", {"name": name}, self.admin)
        return name

    async def agent(self, team: str, status: str = "available", signed_in: bool = True) -> str:
        """Add an agent; `signed_in`: with a password, signed in now (else `sign_in_agents` does it later)."""
        email = f"{uuid.uuid4().hex[:16]}@bench.example"
        body = {"name": "Bench Agent", "email": email, "team": team, "status": status}
        if signed_in and self.signs_in:
            body["password"] = AGENT_PASSWORD
        agent, _ = await self._post("/agents", body, self.admin)
        agent_id = str(agent["id"])
        self._emails[agent_id] = email
        if signed_in and self.signs_in:
            self._agents[agent_id] = bearer(await self._sign_in(email, AGENT_PASSWORD))
        return agent_id

    async def sign_in_agents(self, agent_ids: Iterable[str]) -> None:
        """Give these agents a password and sign them in (before a measured phase: Argon2 is slow on purpose)."""
        if not self.signs_in:
            return
        for agent_id in agent_ids:
            if agent_id in self._agents:
                continue
            r = await self.http.patch(f"/agents/{agent_id}", json={"password": AGENT_PASSWORD}, headers=self.admin)
            if r.status_code != 200:
                raise ApiError(f"PATCH /agents/{agent_id} -> {r.status_code}: {r.text[:300]}")
            self._agents[agent_id] = bearer(await self._sign_in(self._emails[agent_id], AGENT_PASSWORD))

    async def _retrying(
        self, call: Callable[[], Awaitable[tuple[dict[str, Any], float]]], retries: int
    ) -> tuple[dict[str, Any], float]:
        """Retry a 503 (the database or Temporal was briefly unavailable, e.g. out of connections on a shared
        server); every retry is counted and reported, and the latency is that of the answered attempt."""
        for attempt in range(retries + 1):
            try:
                return await call()
            except ApiError as err:
                if " -> 503" not in str(err) or attempt == retries:
                    raise
                self.retried += 1
                await asyncio.sleep(0.2 * 2**attempt)
        raise AssertionError("unreachable")

    async def file(self, team: str, retries: int = RETRIES) -> tuple[dict[str, Any], float]:
        """File a case with a fresh order line; the answer says `assigned` (with the agent) or `queued`.

        Every filing carries an Idempotency-Key, so a retried 503 never files a second case.
        """
        key = uuid.uuid4().hex
        return await self._retrying(functools.partial(self._file, team, key), retries)

    async def _file(self, team: str, key: str) -> tuple[dict[str, Any], float]:
        return await self._post("/cases", case_body(team, key), {**self.storefront, "Idempotency-Key": key})

    async def resolve(self, case_id: str, agent_id: str, retries: int = RETRIES) -> tuple[dict[str, Any], float]:
        """Resolve as the assignee, with their own token (repeat-safe: a repeat answers the same)."""
        if not self.signs_in:
            body, headers = {"agent_id": agent_id, "resolution": "refunded"}, None
        elif agent_id not in self._agents:
            raise ApiError(f"agent {agent_id} was not signed in before the measured phase")
        else:
            body, headers = {"resolution": "refunded"}, self._agents[agent_id]
        call = functools.partial(self._post, f"/cases/{case_id}/resolve", body, headers)
        return await self._retrying(call, retries)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def bounded[T](concurrency: int, jobs: Iterable[Callable[[], Awaitable[T]]]) -> list[T]:
    """Run the jobs with at most `concurrency` in flight; results in job order."""
    gate = asyncio.Semaphore(concurrency)

    async def one(job: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await job()

    return list(await asyncio.gather(*(one(job) for job in jobs)))


class CpuMeter:
    """CPU seconds each process spent between `start` and `stop`: where the time goes, per process."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = {name: pid for name, pid in pids.items() if pid is not None}
        self._start: dict[str, float] = {}

    def start(self) -> None:
        self._start = {name: cpu_seconds(pid) or 0.0 for name, pid in self.pids.items()}
        self._machine = machine_busy_seconds()

    def stop(self) -> dict[str, float]:
        """CPU seconds per process, plus `outside`: what every other process on the machine used meanwhile
        (other people's test runs on a shared machine; MariaDB is counted as ours even when others use it)."""
        used = {
            name: round((cpu_seconds(pid) or 0.0) - self._start.get(name, 0.0), 2) for name, pid in self.pids.items()
        }
        used["outside"] = round(max(0.0, machine_busy_seconds() - self._machine - sum(used.values())), 2)
        return used


@dataclass
class LevelResult:
    """One closed-loop run at a fixed number of concurrent lifecycles."""

    system: str
    concurrency: int
    seconds: float
    lifecycles: int
    per_second: float
    # product: POST /cases (agents free); baseline: the start RPC.
    assign_ms: Summary
    # product: POST /resolve; baseline: signal to workflow completion.
    resolve_ms: Summary
    lifecycle_ms: Summary
    cpu_seconds: dict[str, float]
    cpu_ms_per_lifecycle: dict[str, float]
    not_assigned_at_filing: int = 0


async def closed_loop(
    system: str,
    concurrency: int,
    think: float,
    warmup: float,
    duration: float,
    lifecycle: Callable[[], Awaitable[tuple[float, float, int]]],
    meter: CpuMeter,
) -> LevelResult:
    """`concurrency` loops each running `lifecycle` back to back; only the measuring window counts."""
    begin = time.monotonic()
    window_start, window_end = begin + warmup, begin + warmup + duration
    assign: list[float] = []
    resolve: list[float] = []
    whole: list[float] = []
    done_in_window = 0
    not_assigned = 0
    metered = False

    async def loop() -> None:
        nonlocal done_in_window, not_assigned, metered
        while time.monotonic() < window_end:
            if not metered and time.monotonic() >= window_start:
                metered = True
                meter.start()
            t0 = time.monotonic()
            a, r, late = await lifecycle()
            t1 = time.monotonic()
            not_assigned += late
            if window_start <= t1 <= window_end:
                done_in_window += 1
            if t0 >= window_start and t1 <= window_end:
                assign.append(a * 1000)
                resolve.append(r * 1000)
                whole.append((t1 - t0) * 1000)

    await asyncio.gather(*(loop() for _ in range(concurrency)))
    cpu = meter.stop()
    rate = done_in_window / duration
    return LevelResult(
        system=system,
        concurrency=concurrency,
        seconds=duration,
        lifecycles=done_in_window,
        per_second=round(rate, 2),
        assign_ms=summarize(assign),
        resolve_ms=summarize(resolve),
        lifecycle_ms=summarize(whole),
        cpu_seconds=cpu,
        cpu_ms_per_lifecycle={k: round(v * 1000 / max(done_in_window, 1), 1) for k, v in cpu.items()},
        not_assigned_at_filing=not_assigned,
    )


def product_lifecycle(api: Api, db: Db, team: str, think: float) -> Callable[[], Awaitable[tuple[float, float, int]]]:
    """File a case, think, resolve it as its agent."""

    async def run() -> tuple[float, float, int]:
        case, file_s = await api.file(team)
        late = 0
        agent_id = case.get("agent_id")
        if case["status"] != "assigned":
            # Not expected with agents >= loops; wait for the assignment so the loop goes on.
            late = 1
            agent_id = await wait_assigned(db, case["id"], timeout=30)
        await asyncio.sleep(think)
        _, resolve_s = await api.resolve(case["id"], str(agent_id))
        return file_s, resolve_s, late

    return run


def bare_lifecycle(client: Client, task_queue: str, think: float) -> Callable[[], Awaitable[tuple[float, float, int]]]:
    """Start the bare workflow, think, signal it, wait for it to finish."""

    async def run() -> tuple[float, float, int]:
        t0 = time.perf_counter()
        handle = await client.start_workflow(
            BareCaseWorkflow.run, "x", id=f"bare-{uuid.uuid4().hex}", task_queue=task_queue
        )
        t1 = time.perf_counter()
        await asyncio.sleep(think)
        t2 = time.perf_counter()
        await handle.signal(BareCaseWorkflow.resolve)
        await handle.result()
        return t1 - t0, time.perf_counter() - t2, 0

    return run


async def wait_assigned(db: Db, case_id: str, timeout: float, poll: float = 0.005) -> str:
    """Poll the database until the case is assigned; its agent."""
    deadline = time.monotonic() + timeout
    while True:
        status, agent = await asyncio.to_thread(db.status_of, case_id)
        if status == "assigned" and agent is not None:
            return agent
        if time.monotonic() > deadline:
            raise TimeoutError(f"case {case_id} not assigned in {timeout:g}s (status {status})")
        await asyncio.sleep(poll)


@dataclass
class HandOff:
    resolved_case: str
    next_case: str
    expected_case: str | None
    agent_id: str
    answered_at: datetime
    seen_at: datetime


@dataclass
class HandOffResult:
    depth: int
    count: int
    # assigned_at(next) - resolved_at(resolved), both written by the service (the most exact figure).
    handoff_ms: Summary
    # assigned_at(next) - the moment the resolve answer reached the client.
    after_answer_ms: Summary
    # reserved_at(next) - resolved_at(resolved): the resolve transaction's dispatch, seen end to end.
    in_transaction_dispatch_ms: Summary
    # the client seeing `assigned` by polling, after the resolve answer.
    polled_ms: Summary
    resolve_answer_ms: Summary
    fifo_violations: int
    # CPU that processes outside the benchmark used meanwhile, in cores (the machine is shared).
    others_load_cores: float = 0.0
    samples: list[dict[str, Any]] = field(default_factory=list)


async def hand_offs(
    api: Api,
    db: Db,
    team: str,
    held: dict[str, str],
    count: int,
    think: float,
    depth: int,
    meter: CpuMeter,
) -> HandOffResult:
    """Resolve held cases one at a time (round robin over agents); each time the oldest waiting case must
    go to the freed agent. A filing after each hand-off keeps the queue depth where it was."""
    meter.start()
    t_start = time.monotonic()
    agents = list(held)
    records: list[HandOff] = []
    answers: list[float] = []
    for i in range(count):
        agent_id = agents[i % len(agents)]
        case_id = held[agent_id]
        expected = await asyncio.to_thread(db.next_queued, team)
        _, answer_s = await api.resolve(case_id, agent_id)
        answered = datetime.now(UTC)
        answers.append(answer_s * 1000)
        found = None
        deadline = time.monotonic() + 30
        while found is None:
            found = await asyncio.to_thread(db.held_by, agent_id)
            if found is not None and found[1] == "assigned":
                break
            found = None
            if time.monotonic() > deadline:
                raise TimeoutError(f"agent {agent_id} was not handed a case in 30s")
            await asyncio.sleep(0.005)
        seen = datetime.now(UTC)
        records.append(HandOff(case_id, found[0], expected, agent_id, answered, seen))
        held[agent_id] = found[0]
        await api.file(team)  # top the queue up (outside the measured interval)
        await asyncio.sleep(think)
    cpu = meter.stop()
    others = cpu.get("outside", 0.0) / (time.monotonic() - t_start)
    times = await asyncio.to_thread(db.times, [r.resolved_case for r in records] + [r.next_case for r in records])
    handoff, after_answer, in_tx, polled = [], [], [], []
    samples: list[dict[str, Any]] = []
    for r in records:
        prev, nxt = times[r.resolved_case], times[r.next_case]
        assert prev.resolved_at and nxt.assigned_at and nxt.reserved_at
        h = (nxt.assigned_at - prev.resolved_at).total_seconds() * 1000
        a = (nxt.assigned_at - r.answered_at).total_seconds() * 1000
        d = (nxt.reserved_at - prev.resolved_at).total_seconds() * 1000
        p = (r.seen_at - r.answered_at).total_seconds() * 1000
        handoff.append(h)
        after_answer.append(a)
        in_tx.append(d)
        polled.append(p)
        samples.append({"handoff_ms": round(h, 2), "after_answer_ms": round(a, 2), "dispatch_ms": round(d, 2)})
    return HandOffResult(
        depth=depth,
        count=len(records),
        handoff_ms=summarize(handoff),
        after_answer_ms=summarize(after_answer),
        in_transaction_dispatch_ms=summarize(in_tx),
        polled_ms=summarize(polled),
        resolve_answer_ms=summarize(answers),
        fifo_violations=sum(1 for r in records if r.expected_case != r.next_case),
        others_load_cores=round(others, 2),
        samples=samples,
    )


def case_body(team: str, key: str) -> dict[str, Any]:
    """A filing with a fresh order line."""
    return {
        "customer_name": "Bench Customer",
        "customer_email": "customer@bench.example",
        "order_id": f"o-{key}",
        "product_sku": "SKU-1",
        "product_name": "Kettle",
        "reason": "arrived broken",
        "team": team,
    }


async def fill_direct(
    client: Client, db: Db, task_queue: str, team: str, count: int, concurrency: int, timeout: float = 1800
) -> float:
    """Start `count` case workflows the way `POST /cases` does, without HTTP and without waiting for each
    one's answer; return cases per second once every case row is in the queue.

    Filling 10,000 through the API costs about as much per case as a lifecycle; this reaches the same state
    (each workflow's open activity inserts its row and queues it) with many starts in flight.
    """
    if count <= 0:
        return 0.0
    before = await asyncio.to_thread(db.waiting, team)
    t0 = time.monotonic()

    async def start(i: int) -> None:
        key = uuid.uuid4().hex
        body = CaseDraft.model_validate(case_body(team, key))
        case_id = case_id_for_idempotency_key(key)
        await client.start_workflow(
            ReturnCaseWorkflow.run,
            ReturnCaseInput(case_id=case_id, case=body, actor="bench", idempotency_key=key),
            id=workflow_id_for_case(case_id),
            task_queue=task_queue,
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(sa.CASE_STATUS, CaseStatus.QUEUED.value),
                    SearchAttributePair(sa.TEAM, team),
                    SearchAttributePair(sa.CASE_PRIORITY, body.priority.value),
                    SearchAttributePair(sa.CUSTOMER_EMAIL, body.customer_email),
                    SearchAttributePair(sa.ORDER_ID, body.order_id),
                ]
            ),
        )

    await bounded(concurrency, [functools.partial(start, i) for i in range(count)])
    say(f"  {count} workflows started in {time.monotonic() - t0:.0f}s; waiting for their cases to be queued")
    deadline = time.monotonic() + timeout
    next_report = time.monotonic() + 30
    while (waiting := await asyncio.to_thread(db.waiting, team)) < before + count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {waiting - before} of {count} started cases reached the queue")
        if time.monotonic() > next_report:
            next_report += 30
            say(f"  {waiting - before}/{count} queued ({(waiting - before) / (time.monotonic() - t0):.0f}/s)")
        await asyncio.sleep(0.5)
    return round(count / (time.monotonic() - t0), 1)


async def fill(api: Api, team: str, count: int, concurrency: int) -> tuple[float, Summary, int]:
    """File `count` cases with `concurrency` in flight; (cases per second, POST latency, how many queued)."""
    if count <= 0:
        return 0.0, summarize([]), 0
    latencies: list[float] = []
    queued = 0
    progress = max(count // 5, 500)
    t0 = time.monotonic()

    async def one(i: int) -> None:
        nonlocal queued
        case, dt = await api.file(team)
        latencies.append(dt * 1000)
        queued += case["status"] == "queued"
        if (i + 1) % progress == 0:
            say(f"  filed {i + 1}/{count} ({(i + 1) / (time.monotonic() - t0):.0f}/s)")

    await bounded(concurrency, [functools.partial(one, i) for i in range(count)])
    elapsed = time.monotonic() - t0
    return round(count / elapsed, 1), summarize(latencies), queued
