"""`make dev`: the Temporal dev server (with UI), migrations, the worker and the API on one machine.

Restarts the worker or the API if one dies, the way a process manager would; Ctrl-C stops everything.
"""

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.bootstrap import BootstrapError, admin_exists, ensure_admin  # noqa: E402
from core.config import Settings, get_settings, secret_key_problem  # noqa: E402
from core.db import make_engine, make_session_factory  # noqa: E402
from core.dev_server import dev_server_argv, wait_for_temporal  # noqa: E402

BIN = Path(sys.executable).parent
RESTART_BACKOFF_SECONDS = (1, 2, 5, 10)


def log(message: str) -> None:
    print(f"[dev] {time.strftime('%H:%M:%S')} {message}", flush=True)


class Supervised:
    """A child process that is started again when it exits while we are not stopping."""

    def __init__(self, name: str, argv: list[str], log_file: Path | None = None) -> None:
        self.name, self.argv, self.log_file = name, argv, log_file
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    def start(self) -> None:
        output = self.log_file.open("ab") if self.log_file else None
        self.process = subprocess.Popen(self.argv, cwd=ROOT, start_new_session=True, stdout=output, stderr=output)
        shown = self.log_file and (
            self.log_file.relative_to(ROOT) if self.log_file.is_relative_to(ROOT) else self.log_file
        )
        where = f", log in {shown}" if shown else ""
        log(f"{self.name} started (pid {self.process.pid}{where})")

    def check(self) -> None:
        if self.process is None or self.process.poll() is None:
            return
        code = self.process.returncode
        delay = RESTART_BACKOFF_SECONDS[min(self.restarts, len(RESTART_BACKOFF_SECONDS) - 1)]
        log(f"{self.name} exited with code {code}; restarting in {delay}s (restart #{self.restarts + 1})")
        time.sleep(delay)
        self.restarts += 1
        self.start()

    def stop(self, timeout: float = 15) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            log(f"{self.name} did not stop in {timeout:g}s; killing it")
            self.process.kill()
            self.process.wait()
        log(f"{self.name} stopped")


def temporal_argv(settings: Settings) -> list[str]:
    return dev_server_argv(
        port=settings.TEMPORAL_PORT,
        ui_port=settings.TEMPORAL_UI_PORT,
        db_file=settings.DATA_DIR / "temporal.db",
        namespace=settings.TEMPORAL_NAMESPACE,
    )


def ports_in_use(settings: Settings) -> list[int]:
    """The ports `make dev` needs that something else already listens on."""
    taken = []
    for port in (settings.TEMPORAL_PORT, settings.TEMPORAL_UI_PORT, settings.API_PORT):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                taken.append(port)
    return taken


DEFAULT_ADMIN_EMAIL = "admin@localhost"


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (mode 600 from the start, never readable by others)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    path.chmod(0o600)


def ensure_secret_key(settings: Settings) -> str:
    """SECRET_KEY from the environment or .env, else the one generated into DATA_DIR on the first run."""
    if settings.SECRET_KEY:
        problem = secret_key_problem(settings)
        if problem:
            raise SystemExit(f"[dev] {problem}")
        return settings.SECRET_KEY
    path = settings.DATA_DIR / "secret-key"
    if not path.exists():
        write_private(path, secrets.token_hex(32))
        log(f"generated SECRET_KEY into {path}")
    return path.read_text().strip()


def ensure_first_admin(settings: Settings) -> None:
    """Create the first admin unless a user with that email exists, and say how to sign in."""
    email = settings.ADMIN_EMAIL or DEFAULT_ADMIN_EMAIL
    password_file = settings.DATA_DIR / "admin-password"
    # Shown relative to the project, where the commands it prints are run.
    shown = password_file.relative_to(ROOT) if password_file.is_relative_to(ROOT) else password_file
    engine = make_engine(settings.DATABASE_URL, pool_size=1)
    session_factory = make_session_factory(engine)
    try:
        if admin_exists(session_factory, email):
            log(f"admin {email} exists")
        elif settings.ADMIN_PASSWORD:
            ensure_admin(session_factory, email, settings.ADMIN_PASSWORD)
            log(f"created admin {email} with the password ADMIN_PASSWORD gives")
        else:
            password = secrets.token_urlsafe(18)
            ensure_admin(session_factory, email, password)
            write_private(password_file, password)
            log(f"created admin {email}, password {password} (shown once; kept in {shown})")
    except BootstrapError as err:
        raise SystemExit(f"[dev] cannot create the first admin: {err}") from None
    finally:
        engine.dispose()
    api = f"http://{settings.API_HOST}:{settings.API_PORT}/api/v1"
    from_file = password_file.exists() and not settings.ADMIN_PASSWORD
    password = f"password@{shown}" if from_file else "password=..."
    log(f"sign in: curl -s {api}/auth/token --data-urlencode username={email} --data-urlencode {password}")
    log(f"      or the Authorize button of http://{settings.API_HOST}:{settings.API_PORT}/docs")


def main() -> None:
    settings = get_settings()
    taken = ports_in_use(settings)
    if taken:
        raise SystemExit(
            f"[dev] port(s) {', '.join(map(str, taken))} already in use (another `make dev`?); "
            "stop it or set API_PORT / TEMPORAL_PORT / TEMPORAL_UI_PORT"
        )
    settings.DATA_DIR.mkdir(parents=True, exist_ok=True)
    # The worker and the API read it from the environment they inherit.
    os.environ["SECRET_KEY"] = ensure_secret_key(settings)
    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    temporal = Supervised("temporal", temporal_argv(settings), log_file=settings.DATA_DIR / "temporal.log")
    worker = Supervised("worker", [sys.executable, "worker.py"])
    api = Supervised(
        "api",
        [sys.executable, "-m", "uvicorn", "--factory", "api.main:create_app",
         "--host", settings.API_HOST, "--port", str(settings.API_PORT), "--log-level", "warning"],
    )  # fmt: skip
    children = [temporal, worker, api]
    try:
        temporal.start()
        try:
            asyncio.run(wait_for_temporal(settings.TEMPORAL_ADDRESS, namespace=settings.TEMPORAL_NAMESPACE))
        except RuntimeError as err:
            raise SystemExit(f"[dev] {err}") from None
        log(f"database: {settings.DATABASE_URL}")
        subprocess.run([str(BIN / "alembic"), "upgrade", "head"], cwd=ROOT, check=True)
        ensure_first_admin(settings)
        worker.start()
        api.start()
        log(f"Console:     http://{settings.API_HOST}:{settings.API_PORT}/login")
        log(f"API docs:    http://{settings.API_HOST}:{settings.API_PORT}/docs")
        log(f"Temporal UI: {settings.TEMPORAL_UI_URL}")
        log("Ctrl-C stops everything")
        while not stopping:
            time.sleep(0.5)
            for child in children:
                if not stopping:
                    child.check()
    finally:
        log("stopping")
        for child in reversed(children):
            child.stop()


if __name__ == "__main__":
    main()
