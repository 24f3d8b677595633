"""Supervision: `make dev` restarts a worker or API that dies and says so; SIGINT stops everything.
The worker drains on SIGTERM: in-flight activities finish or are handed back, nothing is half-written."""

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from api.main import create_app
from core.config import PROJECT_ROOT
from core.models import CaseEvent, CaseStatus, ReturnCase
from ops.invariants import check_database, find_workflow_violations
from tests.conftest import Stack
from tests.helpers import API, add_agent, authorize_as_admin, bearer, case_body, new_team, resolve, sign_in
from tests.support import api_settings, child_env, free_port, wait_for_log, wait_until_ready, worker_process

# --- make dev ----------------------------------------------------------------------------------


class DevRunner:
    """`python scripts/dev.py` on its own ports, data directory and SQLite file, its output in a file."""

    def __init__(self, tmp_path: Path) -> None:
        self.api_port, self.temporal_port, self.ui_port = free_port(), free_port(), free_port()
        self.data_dir = tmp_path / "dev-data"
        self.log_path = tmp_path / "dev.log"
        self.env = child_env(
            API_PORT=str(self.api_port),
            TEMPORAL_PORT=str(self.temporal_port),
            TEMPORAL_UI_PORT=str(self.ui_port),
            DATA_DIR=str(self.data_dir),
            DATABASE_URL=f"sqlite:///{tmp_path / 'returns.db'}",
            RECONCILE_INTERVAL_SECONDS="1",
            # Empty means "the default": nothing from the test environment may point elsewhere.
            TEMPORAL_ADDRESS="",
            TEMPORAL_UI_URL="",
            TASK_QUEUE="",
            # ... so make dev generates its key and its first admin, as on a clean clone.
            SECRET_KEY="",
            ADMIN_EMAIL="",
            ADMIN_PASSWORD="",
            PUBLIC_URL="",
        )
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "scripts/dev.py"], cwd=PROJECT_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def pids(self, name: str) -> list[int]:
        """Every pid `make dev` said it started for `name`, oldest first."""
        return [int(p) for p in re.findall(rf"\] \S+ {name} started \(pid (\d+)", self.log())]

    def wait_for(self, pattern: str, timeout: float = 120, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while len(re.findall(pattern, self.log())) < count:
            assert self.process is not None and self.process.poll() is None, f"make dev exited:\n{self.log()[-4000:]}"
            assert time.monotonic() < deadline, f"no {pattern!r} (x{count}) in the log:\n{self.log()[-4000:]}"
            time.sleep(0.2)

    def stop(self, timeout: float = 90) -> int:
        """Ctrl-C, as a developer would; returns the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            self.process.wait(timeout)
        return self.process.returncode

    def kill_leftovers(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        for pid in processes_with_env("DATA_DIR", str(self.data_dir)):
            os.kill(pid, signal.SIGKILL)


def processes_with_env(name: str, value: str) -> list[int]:
    """Pids of live processes whose environment has `name=value` (ours only: unique tmp paths)."""
    wanted = f"{name}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().split(") ", 1)[1][0]
        except (OSError, IndexError):
            continue
        if wanted in environ and state != "Z":
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[DevRunner]:
    runner = DevRunner(tmp_path)
    try:
        yield runner
    finally:
        runner.kill_leftovers()


def kill_and_wait_for_restart(dev: DevRunner, name: str) -> int:
    """SIGKILL the child `name`; wait until `make dev` reports it dead and started again; the new pid."""
    before = dev.pids(name)
    os.kill(before[-1], signal.SIGKILL)
    dev.wait_for(rf"{name} exited with code -9; restarting in \d+s \(restart #{len(before)}\)", timeout=30)
    dev.wait_for(rf"{name} started \(pid \d+", count=len(before) + 1, timeout=30)
    after = dev.pids(name)[-1]
    assert after != before[-1] and alive(after)
    return after


async def test_make_dev_restarts_a_dead_worker_and_api_then_stops_everything(dev: DevRunner) -> None:
    dev.start()
    await asyncio.to_thread(dev.wait_for, r"Ctrl-C stops everything", 180)
    await asyncio.to_thread(wait_until_ready, dev.api_url, 90)
    assert dev.data_dir.joinpath("temporal.db").exists()  # Temporal's state is in our data dir, not .data/
    # A key and a first admin of its own, both readable by the owner only; the password is shown once.
    secret_key, password_file = dev.data_dir / "secret-key", dev.data_dir / "admin-password"
    assert secret_key.stat().st_mode & 0o777 == 0o600 and len(secret_key.read_text()) == 64
    assert password_file.stat().st_mode & 0o777 == 0o600
    password = password_file.read_text()
    assert dev.log().count(password) == 1 and "created admin admin@localhost" in dev.log()
    assert f"sign in: curl -s {dev.api_url}/api/v1/auth/token" in dev.log()

    await asyncio.to_thread(kill_and_wait_for_restart, dev, "worker")
    await asyncio.to_thread(kill_and_wait_for_restart, dev, "api")
    await asyncio.to_thread(wait_until_ready, dev.api_url, 90)

    # The restarted processes serve: a case filed now is assigned, and resolves.
    async with httpx.AsyncClient(base_url=dev.api_url, timeout=30) as api:
        api.headers.update(bearer(await sign_in(api, "admin@localhost", password)))
        agent = await add_agent(api, "returns")
        r = await api.post(f"{API}/cases", json=case_body("returns"))
        assert r.status_code == 201, r.text
        case = r.json()
        assert (case["status"], case["agent_id"]) == ("assigned", agent["id"])
        r = await resolve(api, case["id"], agent["id"])
        assert r.status_code == 200 and r.json()["status"] == "resolved", r.text

    children = dev.pids("temporal") + dev.pids("worker") + dev.pids("api")
    assert len(children) == 5  # temporal once, worker and api twice each
    assert await asyncio.to_thread(dev.stop) == 0
    log = dev.log()
    for name in ("api", "worker", "temporal"):
        assert f"{name} stopped" in log, log[-3000:]
    assert [pid for pid in children if alive(pid)] == []
    assert processes_with_env("DATA_DIR", str(dev.data_dir)) == []


# --- graceful worker shutdown ------------------------------------------------------------------


async def _resolve_everything(api: httpx.AsyncClient, team: str, agent_ids: list[str]) -> int:
    """Each agent resolves what they hold until nothing is active; a 503 (no worker) is retried."""
    resolved = 0

    async def agent_loop(agent_id: str) -> None:
        nonlocal resolved
        for _ in range(2000):
            listing = await api.get(f"{API}/cases", params={"team": team, "status": "active", "limit": 200})
            assert listing.status_code == 200, listing.text
            active = listing.json()["items"]
            if not active:
                return
            mine = [c for c in active if c["agent_id"] == agent_id and c["status"] == "assigned"]
            if not mine:
                await asyncio.sleep(0.1)
                continue
            r = await resolve(api, mine[0]["id"], agent_id)
            assert r.status_code in (200, 503), r.text
            if r.status_code == 200:
                resolved += 1
            else:
                await asyncio.sleep(0.3)
        raise AssertionError(f"agent {agent_id} never finished")

    await asyncio.gather(*(agent_loop(a) for a in agent_ids))
    return resolved


async def _file_retrying(api: httpx.AsyncClient, team: str, n: int) -> int:
    """File a case as a storefront would: with an Idempotency-Key, again after a 503 (the API waits only
    3 s for the workflow here). Returns the final status: 201, or 200 when a retry met the first try."""
    body, key = case_body(team), f"drain-{team}-{n}"
    for _ in range(20):
        r = await api.post(f"{API}/cases", json=body, headers={"Idempotency-Key": key})
        if r.status_code != 503:
            assert r.status_code in (200, 201), r.text
            return r.status_code
        await asyncio.sleep(0.5)
    raise AssertionError(f"filing {n} still answered 503 after 20 tries")


def _resolved_count(stack: Stack, team: str) -> int:
    with stack.session_factory() as session:
        return (
            session.scalar(
                select(func.count()).where(ReturnCase.team == team, ReturnCase.status == CaseStatus.RESOLVED)
            )
            or 0
        )


async def test_worker_drains_on_sigterm_and_leaves_nothing_half_written(
    stack: Stack, worker_process_env: dict[str, str], tmp_path: Path
) -> None:
    settings = api_settings(worker_process_env)
    first = worker_process("worker-1", worker_process_env, tmp_path)
    second = worker_process("worker-2", worker_process_env, tmp_path)
    app = create_app(settings)
    try:
        first.start()
        await asyncio.to_thread(wait_for_log, first, "worker polling task queue")
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=60) as api:
                await authorize_as_admin(api, app.state.session_factory)
                team = await new_team(api)
                agents = [(await add_agent(api, team))["id"] for _ in range(4)]
                await asyncio.gather(*(_file_retrying(api, team, n) for n in range(24)))
                agents_done = asyncio.create_task(_resolve_everything(api, team, agents))

                # SIGTERM while the agents are resolving and handing off.
                for _ in range(300):
                    if _resolved_count(stack, team) >= 4:
                        break
                    await asyncio.sleep(0.1)
                assert _resolved_count(stack, team) >= 4
                code = await asyncio.to_thread(first.terminate, 60)
                assert code == 0, first.log_text()[-3000:]
                assert "worker shutting down" in first.log_text() and "worker stopped" in first.log_text()

                # No worker runs now: whatever the drain finished is whole, whatever it did not is untouched.
                found = check_database(stack.session_factory, idle_grace=timedelta(seconds=30), teams=[team])
                assert found == [], "\n".join(map(str, found))

                second.start()
                await asyncio.wait_for(agents_done, timeout=180)

        with stack.session_factory() as session:
            statuses = session.scalars(select(ReturnCase.status).where(ReturnCase.team == team)).all()
            resolved_events = session.scalar(
                select(func.count()).where(
                    CaseEvent.type == "resolved",
                    CaseEvent.case_id.in_(select(ReturnCase.id).where(ReturnCase.team == team)),
                )
            )
        assert statuses == [CaseStatus.RESOLVED] * 24 and resolved_events == 24
        assert check_database(stack.session_factory, idle_grace=timedelta(seconds=30), teams=[team]) == []
        found = await find_workflow_violations(client=stack.client, session_factory=stack.session_factory, teams=[team])
        assert found == [], "\n".join(map(str, found))
        assert second.terminate(30) == 0, second.log_text()[-3000:]
    finally:
        first.kill()
        second.kill()
