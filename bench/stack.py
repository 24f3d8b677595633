"""The stack under test: started here as subprocesses, or one already running (given by URL and address)."""

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from core.config import DATA_DIR, PROJECT_ROOT
from core.dev_server import dev_server_argv, wait_for_temporal

BIN = Path(sys.executable).parent
LOG_DIR = DATA_DIR / "bench"


@dataclass
class StackConfig:
    """Where the stack listens. Defaults keep clear of `make dev` (7233/8233/8000) and the tests."""

    api_url: str = "http://127.0.0.1:8033"
    temporal_address: str = "127.0.0.1:7333"
    temporal_ui_port: int = 8333
    database_url: str = "mysql+pymysql://root@127.0.0.1:3306/returns_bench"
    task_queue: str = "returns-bench"
    # A running stack: use it, start nothing but the baseline's worker.
    external: bool = False
    worker_pid: int | None = None
    api_pid: int | None = None
    # Run the worker, the API and the migrations from another copy of the code (e.g. a snapshot taken
    # before a change), so before and after are measured by the same harness.
    product_dir: Path = PROJECT_ROOT
    # The admin the driver signs in as: made by the stack it starts (a fresh one each run), given for an
    # external stack (BENCH_ADMIN_EMAIL, BENCH_ADMIN_PASSWORD).
    admin_email: str = "bench-admin@bench.example"
    admin_password: str = field(default_factory=lambda: secrets.token_urlsafe(18))


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: IO[bytes]


@dataclass
class Stack:
    """The processes the benchmark measures, and the baseline's worker."""

    config: StackConfig
    bare_task_queue: str
    children: list[Child] = field(default_factory=list)

    def pid(self, name: str) -> int | None:
        for child in self.children:
            if child.name == name:
                return child.process.pid
        if name == "worker":
            return self.config.worker_pid
        if name == "api":
            return self.config.api_pid
        return None

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None, cwd: Path = PROJECT_ROOT) -> None:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        log = (LOG_DIR / f"{name}.log").open("ab")
        process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.children.append(Child(name, process, log))
        say(f"{name} started (pid {process.pid}, log {(LOG_DIR / f'{name}.log').relative_to(PROJECT_ROOT)})")

    def check_alive(self) -> None:
        """Fail loudly when a process under test died: figures from a broken stack mean nothing."""
        for child in self.children:
            if child.process.poll() is not None:
                raise RuntimeError(f"{child.name} exited with code {child.process.returncode}; see its log")

    async def start(self) -> None:
        cfg = self.config
        host, port = cfg.temporal_address.rsplit(":", 1)
        if not cfg.external:
            self._spawn("temporal", dev_server_argv(ip=host, port=int(port), ui_port=cfg.temporal_ui_port))
        try:
            await wait_for_temporal(cfg.temporal_address)
        except RuntimeError as err:
            raise RuntimeError(f"{err} (log in {LOG_DIR / 'temporal.log'})") from None
        if not cfg.external:
            fresh_database(cfg.database_url, cfg.product_dir)
            env = {
                **os.environ,
                "PYTHONPATH": str(cfg.product_dir),
                "DATABASE_URL": cfg.database_url,
                "TEMPORAL_ADDRESS": cfg.temporal_address,
                "TEMPORAL_UI_PORT": str(cfg.temporal_ui_port),
                "TASK_QUEUE": cfg.task_queue,
                # A key and an admin of this run's own.
                "SECRET_KEY": secrets.token_hex(32),
                "ADMIN_EMAIL": cfg.admin_email,
                "ADMIN_PASSWORD": cfg.admin_password,
            }
            if (cfg.product_dir / "core" / "bootstrap.py").exists():  # a product from before sign-in has none
                subprocess.run(
                    [sys.executable, "-m", "core.bootstrap", "ensure-admin"],
                    cwd=cfg.product_dir, env=env, check=True, capture_output=True,
                )  # fmt: skip
            api_port = str(make_url_port(cfg.api_url))
            env["API_PORT"] = api_port
            self._spawn("worker", [sys.executable, "worker.py"], env, cfg.product_dir)
            self._spawn(
                "api",
                [sys.executable, "-m", "uvicorn", "--factory", "api.main:create_app",
                 "--host", "127.0.0.1", "--port", api_port, "--log-level", "warning", "--no-access-log"],
                env,
                cfg.product_dir,
            )  # fmt: skip
        bare = [sys.executable, "-m", "bench.bare_worker", cfg.temporal_address, self.bare_task_queue]
        self._spawn("bare-worker", bare)
        await wait_for_ready(cfg.api_url, self)

    def stop(self) -> None:
        for child in reversed(self.children):
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
                try:
                    child.process.wait(20)
                except subprocess.TimeoutExpired:
                    child.process.kill()
                    child.process.wait()
            child.log.close()
        self.children.clear()


def say(message: str) -> None:
    print(f"[bench] {time.strftime('%H:%M:%S')} {message}", flush=True)


def make_url_port(url: str) -> int:
    return httpx.URL(url).port or 80


def fresh_database(url: str, product_dir: Path) -> None:
    """Drop, create and migrate the benchmark's own database (never the dev or test one)."""
    parsed = make_url(url)
    if not parsed.database or "bench" not in parsed.database:
        raise RuntimeError(f"refusing to drop {parsed.database!r}: the benchmark's database name must contain 'bench'")
    server = create_engine(parsed.set(database=""))
    with server.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS `{parsed.database}`"))
        conn.execute(text(f"CREATE DATABASE `{parsed.database}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"))
    server.dispose()
    migration = subprocess.run(
        [str(BIN / "alembic"), "-x", f"url={url}", "upgrade", "head"],
        cwd=product_dir,
        env={**os.environ, "PYTHONPATH": str(product_dir)},
        capture_output=True,
        text=True,
    )
    if migration.returncode != 0:
        last = (migration.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"migrating {parsed.database} failed: {last}")
    say(f"database {parsed.database} dropped, created and migrated")


async def wait_for_ready(api_url: str, stack: Stack, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=api_url, timeout=5) as http:
        while True:
            stack.check_alive()
            try:
                if (await http.get("/readyz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the API at {api_url} did not become ready in {timeout:g}s (log in {LOG_DIR})")
            await asyncio.sleep(0.3)
