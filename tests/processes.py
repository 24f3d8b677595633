"""Run the worker and the API as real child processes, to kill and restart them in tests."""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from core.config import PROJECT_ROOT


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
