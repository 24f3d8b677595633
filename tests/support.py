"""What tests share to launch things and wait for them: the database of a run (fresh, migrated), child processes
(worker, API), a Temporal dev server of a test's own, the app in process, a database behind the TCP proxy,
and the waiters (`eventually`, `wait_for_log`, `wait_until_ready`)."""

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from api.main import create_app
from core.config import PROJECT_ROOT, Settings
from core.dev_server import dev_server_argv, start_dev_server, wait_for_temporal
from core.temporal import reconciler_id
from tests.tcp_proxy import TcpProxy

# --- databases --------------------------------------------------------------------------------------


def migrate(url: str) -> None:
    """Build the schema the only way production does: Alembic."""
    subprocess.run(
        [str(Path(sys.executable).parent / "alembic"), "-x", f"url={url}", "upgrade", "head"],
        cwd=PROJECT_ROOT,
        check=True,
        capture_output=True,
    )


def fresh_mysql_database(url: str) -> None:
    """Drop and create the database so a run starts from an empty schema."""
    parsed = make_url(url)
    server = create_engine(parsed.set(database=""))
    with server.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS `{parsed.database}`"))
        conn.execute(text(f"CREATE DATABASE `{parsed.database}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"))
    server.dispose()


def own_database(base_url: str, suffix: str) -> str:
    """A fresh, migrated database next to the test database (`<name>_<suffix>`), for a test that must not
    share its rows with the session: its own Temporal server would not know the session's workflows."""
    parsed = make_url(base_url)
    url = parsed.set(database=f"{parsed.database}_{suffix}").render_as_string(hide_password=False)
    fresh_mysql_database(url)
    migrate(url)
    return url


def drop_database(url: str) -> None:
    """Drop a database made by `own_database`, best effort: a connection still open in it (a test that
    failed half-way) makes DROP wait for its metadata lock, so give up after a few seconds; the next
    `own_database` drops it anyway."""
    parsed = make_url(url)
    server = create_engine(parsed.set(database=""))
    try:
        with server.connect() as conn:
            conn.execute(text("SET SESSION lock_wait_timeout = 5"))
            conn.execute(text(f"DROP DATABASE IF EXISTS `{parsed.database}`"))
    except OperationalError as err:
        warnings.warn(f"could not drop {parsed.database}: {err}", stacklevel=2)
    finally:
        server.dispose()


def through(proxy: TcpProxy, url: str) -> str:
    """`url` with its host and port replaced by the proxy's."""
    return make_url(url).set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)


# --- waiters ----------------------------------------------------------------------------------------


async def eventually[T](probe: Callable[[], Awaitable[T]], done: Callable[[T], bool], timeout: float = 30.0) -> T:
    """Poll `probe` until `done` holds, or fail with the last value seen."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached in {timeout}s; last value: {value!r}")
        await asyncio.sleep(0.1)


def wait_for_log(process: "ServiceProcess", text: str, timeout: float = 90) -> None:
    """Block until the process has logged `text` (it must stay alive meanwhile)."""
    deadline = time.monotonic() + timeout
    while text not in process.log_text():
        assert process.alive(), f"{process.name} exited:\n{process.log_text()[-3000:]}"
        assert time.monotonic() < deadline, f"{process.name} never logged {text!r}:\n{process.log_text()[-3000:]}"
        time.sleep(0.2)


async def wait_for_log_async(process: "ServiceProcess", text: str, timeout: float = 90) -> None:
    """`wait_for_log` without blocking the event loop."""
    await asyncio.to_thread(wait_for_log, process, text, timeout)


# --- processes --------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServiceProcess:
    """One `python worker.py` or uvicorn API child, with its log in a file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name, self.argv, self.env = name, argv, env
        self.log_path = log_dir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.argv, cwd=PROJECT_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def kill(self) -> None:
        """SIGKILL: no shutdown, no cleanup, as in a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def terminate(self, timeout: float = 30) -> int | None:
        """SIGTERM and wait for a graceful exit; returns the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def worker_process(name: str, env: dict[str, str], log_dir: Path) -> ServiceProcess:
    """A worker child process configured by `env`."""
    return ServiceProcess(name, [sys.executable, "worker.py"], env, log_dir)


def api_process(name: str, env: dict[str, str], log_dir: Path, port: int) -> ServiceProcess:
    """An API child process (uvicorn) on `port`."""
    argv = [sys.executable, "-m", "uvicorn", "--factory", "api.main:create_app",
            "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]  # fmt: skip
    return ServiceProcess(name, argv, env, log_dir)


def wait_until_ready(base_url: str, timeout: float = 60) -> None:
    """Block until GET /readyz answers 200."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"{base_url}/readyz", timeout=5)
            if r.status_code == 200:
                return
            last = r.text
        except httpx.HTTPError as err:
            last = str(err)
        time.sleep(0.2)
    raise AssertionError(f"{base_url} not ready after {timeout}s: {last}")


@contextmanager
def running(*processes: ServiceProcess) -> Iterator[None]:
    """Start the processes, and stop (or kill) every one of them afterwards."""
    try:
        for p in processes:
            p.start()
        yield
    finally:
        for p in processes:
            p.terminate(timeout=15)


def child_env(**overrides: str) -> dict[str, str]:
    """The test process environment plus overrides (settings are read from env by the children)."""
    return {**os.environ, "PYTHONUNBUFFERED": "1", **overrides}


class TemporalDevServer:
    """A dev server of a test's own, on its own ports, keeping its state in a file so it can be restarted."""

    def __init__(self, state_dir: Path) -> None:
        self.port = free_port()
        self.db_file = state_dir / "temporal.db"
        self.log_path = state_dir / "temporal.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = start_dev_server(dev_server_argv(port=self.port, db_file=self.db_file), self.log_path)
        self.starts += 1

    async def wait_ready(self, timeout: float = 60) -> None:
        """Until the frontend answers a health check."""
        try:
            await wait_for_temporal(self.address, timeout, self.process)
        except RuntimeError as err:
            raise AssertionError(f"{err}\n{self.log_text()[-2000:]}") from None

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Stop the server (SIGTERM: orderly; SIGKILL: a crash) and wait until it is gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@asynccontextmanager
async def in_process_api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The real app with its lifespan, called in process, with an admin's token on the client."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=120) as api:
            from tests.helpers import authorize_as_admin  # helpers imports this module

            await authorize_as_admin(api, app.state.session_factory)
            yield api


async def stop_reconciler(client: Client, task_queue: str) -> None:
    """Terminate the reconciler a worker process started for `task_queue` (a test's own queue, polled by nobody
    once the test is over)."""
    try:
        await client.get_workflow_handle(reconciler_id(Settings(TASK_QUEUE=task_queue))).terminate("test over")
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise


def worker_env(database_url: str, temporal_address: str, task_queue: str | None = None) -> dict[str, str]:
    """The environment of a `worker.py` child process: its own task queue, the reconciler every second."""
    return {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "DATABASE_URL": database_url,
        "TEMPORAL_ADDRESS": temporal_address,
        "TASK_QUEUE": task_queue or f"tq-{uuid.uuid4()}",
        "RECONCILE_INTERVAL_SECONDS": "1",
        "RESERVATION_RESIGNAL_SECONDS": "2",
    }


def api_settings(env: dict[str, str], **overrides: Any) -> Settings:
    """Settings for an API in process beside workers started with `env`; a short Temporal wait by default, so an
    outage is a quick 503."""
    values: dict[str, Any] = {
        "DATABASE_URL": env["DATABASE_URL"],
        "TEMPORAL_ADDRESS": env["TEMPORAL_ADDRESS"],
        "TASK_QUEUE": env["TASK_QUEUE"],
        "TEMPORAL_RPC_TIMEOUT_SECONDS": 3,
        "DB_POOL_SIZE": 8,
    }
    return Settings(**(values | overrides))
