"""A database that hangs (accepts, never answers) or answers slowly: the API answers 503 within its own
deadline instead of hanging, the worker gives back its threads and connections, and once the database
heals everything goes on, with no invariant broken.

The worker runs as a real process and the API in process, both reaching MariaDB through `TcpProxy`.
"""

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url
from temporalio.client import WorkflowUpdateStage

from ops.invariants import find_workflow_violations
from tests.conftest import Stack
from tests.fault_support import BusyDesk, Traffic, assert_nothing_lost
from tests.helpers import API, add_agent, agent_token, bearer, case_body, eventually, file_case, new_team, resolve
from tests.invariants import assert_holding_invariants
from tests.support import ServiceProcess, in_process_api, through, worker_process
from tests.tcp_proxy import TcpProxy
from workflows.messages import ResolveCaseInput
from workflows.return_case import ReturnCaseWorkflow


def _threads(worker: ServiceProcess) -> int:
    """How many threads the worker process runs now (activity threads included)."""
    assert worker.process is not None
    status = Path(f"/proc/{worker.process.pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("Threads:")))


async def _timed(api: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await api.request(method, url, **kwargs)
    return response, time.monotonic() - started


async def test_hung_database_is_a_quick_503_and_everything_recovers(
    stack: Stack, worker_process_env: dict[str, str], tmp_path: Path
) -> None:
    proxy = TcpProxy(make_url(worker_process_env["DATABASE_URL"]).port or 3306).start()
    env = {**worker_process_env, "DATABASE_URL": through(proxy, worker_process_env["DATABASE_URL"])}
    worker = worker_process("hang-worker", env, tmp_path)
    settings = stack.settings.model_copy(update={"DATABASE_URL": env["DATABASE_URL"], "TASK_QUEUE": env["TASK_QUEUE"]})
    hang_seconds = 40.0
    try:
        worker.start()
        async with in_process_api(settings) as api:
            team = await new_team(api)
            agent = await add_agent(api, team)
            as_agent = bearer(await agent_token(api, agent["id"]))  # signed in before the hang
            held = await file_case(api, team)
            waiting = await file_case(api, team)
            assert (held["status"], waiting["status"]) == ("assigned", "queued")

            threads_before = _threads(worker)
            proxy.hang()
            hung_at = time.monotonic()
            # A resolve caught mid-step: its transaction waits on a database that says nothing.
            await stack.client.get_workflow_handle(held["workflow_id"]).start_update(
                ReturnCaseWorkflow.resolve,
                ResolveCaseInput(agent_id=agent["id"], resolution="refunded"),
                wait_for_stage=WorkflowUpdateStage.ACCEPTED,
            )
            probes: list[tuple[str, str, dict[str, Any]]] = [
                ("GET", f"{API}/cases", {"params": {"team": team, "status": "active"}}),
                ("GET", f"{API}/cases/{held['id']}", {}),
                ("GET", f"{API}/cases/{held['id']}/history", {}),
                ("GET", f"{API}/queue", {}),
                ("GET", f"{API}/teams", {}),
                ("GET", f"{API}/agents/{agent['id']}", {}),
                ("POST", f"{API}/cases", {"json": case_body(team)}),
                ("POST", f"{API}/cases/{held['id']}/resolve", {"json": {}, "headers": as_agent}),
                ("POST", f"{API}/agents", {"json": {"name": "Spare", "email": f"{uuid.uuid4().hex[:8]}@x.example",
                                                    "team": team}}),
                ("PATCH", f"{API}/agents/{agent['id']}", {"json": {"name": "Renamed"}}),
            ]  # fmt: skip
            answers = await asyncio.gather(*(_timed(api, m, u, **kw) for m, u, kw in probes))
            wrong = [
                f"{m} {u} -> {r.status_code} {r.text[:200]}"
                for (m, u, _), (r, _) in zip(probes, answers, strict=True)
                if r.status_code != 503 or "database" not in r.json()["detail"] or not r.headers.get("Retry-After")
            ]
            assert wrong == [], wrong
            ready = await api.get("/readyz")
            assert ready.status_code == 503 and "database" in ready.json()["detail"], ready.text
            slowest = max(seconds for _, seconds in answers)
            await asyncio.sleep(max(hang_seconds - (time.monotonic() - hung_at), 0))
            threads_during = _threads(worker)
            assert worker.alive(), worker.log_text()[-3000:]

            proxy.heal()
            healed_at = time.monotonic()
            resolved = await eventually(
                lambda: api.get(f"{API}/cases/{held['id']}"),
                lambda r: r.status_code == 200 and r.json()["status"] == "resolved",
                timeout=30,
            )
            handed = await eventually(
                lambda: api.get(f"{API}/cases/{waiting['id']}"),
                lambda r: r.status_code == 200 and r.json()["status"] == "assigned",
                timeout=30,
            )
            recovered = time.monotonic() - healed_at
            assert resolved.json()["agent_id"] == handed.json()["agent_id"] == agent["id"]
            # The service works as before: a new filing is answered, the agent resolves what they hold.
            fresh = await file_case(api, team)
            r = await resolve(api, waiting["id"], agent["id"])
            assert r.status_code == 200, r.text
            assigned = await eventually(
                lambda: api.get(f"{API}/cases/{fresh['id']}"), lambda r: r.json()["status"] == "assigned", timeout=30
            )
            r = await resolve(api, fresh["id"], assigned.json()["agent_id"])
            assert r.status_code == 200, r.text
    finally:
        worker.terminate()
        proxy.stop()
    assert worker.process is not None and worker.process.returncode == 0, worker.log_text()[-3000:]
    assert_holding_invariants(stack.session_factory, team)
    violations = await find_workflow_violations(
        client=stack.client, session_factory=stack.session_factory, teams=[team]
    )
    assert not violations, "\n".join(str(v) for v in violations)
    print(  # noqa: T201
        f"hang {hang_seconds:g}s: {len(answers)} requests answered 503, slowest {slowest:.1f}s "
        f"(API deadline {settings.API_DB_TIMEOUT_SECONDS:g}s); worker threads {threads_before} before the hang, "
        f"{threads_during} at its end; recovered {recovered:.1f}s after healing"
    )


@pytest.mark.parametrize("latency", [1.5])
async def test_slow_database_keeps_the_desk_correct(
    stack: Stack, worker_process_env: dict[str, str], tmp_path: Path, latency: float
) -> None:
    """Seconds of latency while customers file and agents resolve (repeating after a 503): nothing is lost,
    nothing double-assigned, and every answer is a success or a 503 with a reason."""
    proxy = TcpProxy(make_url(worker_process_env["DATABASE_URL"]).port or 3306).start()
    env = {**worker_process_env, "DATABASE_URL": through(proxy, worker_process_env["DATABASE_URL"])}
    worker = worker_process("slow-worker", env, tmp_path)
    settings = stack.settings.model_copy(
        update={"DATABASE_URL": env["DATABASE_URL"], "TASK_QUEUE": env["TASK_QUEUE"], "TEMPORAL_RPC_TIMEOUT_SECONDS": 3}
    )
    traffic = Traffic()
    try:
        worker.start()
        async with in_process_api(settings) as api:
            team = await new_team(api)
            agents = [(await add_agent(api, team))["id"] for _ in range(2)]
            async with BusyDesk(api, team, agents, traffic, cases=8, handle_time=0.5) as desk:
                await asyncio.sleep(3)
                assert desk.filing(), "the latency must start while cases are being filed"
                proxy.slow(latency)
                await asyncio.sleep(20)
                proxy.heal()
                filed = await desk.finish()
            await assert_nothing_lost(stack.session_factory, stack.client, team, filed)
    finally:
        worker.terminate()
        proxy.stop()
    assert traffic.bad == [], traffic.bad
    print(f"latency {latency:g}s for 20s, {len(filed)} cases: answers {dict(traffic.statuses)}")  # noqa: T201
