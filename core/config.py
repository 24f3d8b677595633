"""Settings from environment variables, each with a default that runs on one machine."""

from functools import lru_cache
from pathlib import Path

from pydantic import model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# The default of the DATA_DIR setting.
DATA_DIR = PROJECT_ROOT / ".data"
# Start-to-close timeout of every database activity (workflows/policies.py). A database attempt must end
# before it, or a hung attempt keeps its thread and connection while the retry takes another.
ACTIVITY_START_TO_CLOSE_SECONDS = 10.0


class Settings(BaseSettings):
    """Every knob of the service; the API, the worker and the dev runner read the same values."""

    model_config = SettingsConfigDict(env_file=".env", env_ignore_empty=True, extra="ignore")

    # Local state of `make dev`: Temporal's file, its log and (by default) the SQLite database.
    DATA_DIR: Path = DATA_DIR
    DATABASE_URL: str = ""
    TEMPORAL_PORT: int = 7233
    TEMPORAL_UI_PORT: int = 8233
    TEMPORAL_ADDRESS: str = ""
    TEMPORAL_NAMESPACE: str = "default"
    TEMPORAL_UI_URL: str = ""
    TASK_QUEUE: str = "returns"
    API_HOST: str = "127.0.0.1"
    API_PORT: int = 8000
    RECONCILE_INTERVAL_SECONDS: float = 5.0
    # A reservation not confirmed by its case workflow after this long is signalled again.
    RESERVATION_RESIGNAL_SECONDS: float = 10.0
    DB_POOL_SIZE: int = 20
    ACTIVITY_THREADS: int = 32
    # Driver timeouts (MySQL): a database that accepts but never answers fails a read after DB_READ_TIMEOUT.
    DB_CONNECT_TIMEOUT_SECONDS: float = 3.0
    DB_READ_TIMEOUT_SECONDS: float = 8.0
    DB_WRITE_TIMEOUT_SECONDS: float = 8.0
    # A blocked row lock fails after this long and the transaction is retried whole.
    DB_LOCK_WAIT_TIMEOUT_SECONDS: int = 5
    # How long the API waits for the database before answering 503 (the thread it used finishes alone).
    API_DB_TIMEOUT_SECONDS: float = 5.0
    # How long the API waits on Temporal before answering 503.
    TEMPORAL_RPC_TIMEOUT_SECONDS: float = 10.0
    # A resolved case may be reopened (by an admin or its customer) for this many days.
    REOPEN_WINDOW_DAYS: float = 14.0
    METRICS_PORT: int = 0
    LOG_LEVEL: str = "INFO"
    # Signs access tokens and customer tracking tokens, and keys the encryption of webhook secrets. Required by
    # the API and the worker; `make dev` generates one into DATA_DIR/secret-key.
    SECRET_KEY: str = ""
    # The first admin, created when no user with this email exists (make dev, the compose migrate job).
    ADMIN_EMAIL: str = ""
    ADMIN_PASSWORD: str = ""
    ACCESS_TOKEN_MINUTES: int = 30
    # Failed sign-ins allowed in 15 minutes before a 429: per account, and per client address.
    LOGIN_FAILURES_PER_ACCOUNT: int = 10
    LOGIN_FAILURES_PER_ADDRESS: int = 50
    # The API's address as customers reach it: the base of tracking links. Default http://$API_HOST:$API_PORT.
    PUBLIC_URL: str = ""
    # How often the API's event reader and each webhook delivery poll the outbox.
    EVENT_POLL_INTERVAL_SECONDS: float = 0.15
    # Events one stream subscriber may fall behind by before its stream is closed (it resumes by Last-Event-ID).
    EVENT_SUBSCRIBER_QUEUE_SIZE: int = 1000
    # Allow webhook URLs on private, loopback and link-local addresses, and plain http to them.
    WEBHOOK_ALLOW_PRIVATE_URLS: bool = False
    # One delivery request, connect to last byte read.
    WEBHOOK_TIMEOUT_SECONDS: float = 10.0
    # Retries of a failing delivery: first interval, growing x2 up to the maximum interval, for the window;
    # an endpoint still failing after the window is disabled.
    WEBHOOK_RETRY_INITIAL_SECONDS: float = 5.0
    WEBHOOK_RETRY_MAX_INTERVAL_SECONDS: float = 3600.0
    WEBHOOK_RETRY_WINDOW_SECONDS: float = 90000.0

    @model_validator(mode="after")
    def _database_attempts_end_before_their_activity(self) -> "Settings":
        longest = max(
            self.DB_READ_TIMEOUT_SECONDS, self.DB_WRITE_TIMEOUT_SECONDS, float(self.DB_LOCK_WAIT_TIMEOUT_SECONDS)
        )
        if longest >= ACTIVITY_START_TO_CLOSE_SECONDS:
            raise ValueError(
                f"DB_READ_TIMEOUT_SECONDS, DB_WRITE_TIMEOUT_SECONDS and DB_LOCK_WAIT_TIMEOUT_SECONDS must be shorter "
                f"than the activities' start-to-close timeout ({ACTIVITY_START_TO_CLOSE_SECONDS:g}s)"
            )
        return self

    @model_validator(mode="after")
    def _derive_temporal_urls(self) -> "Settings":
        if not self.DATABASE_URL:
            self.DATABASE_URL = f"sqlite:///{self.DATA_DIR / 'returns.db'}"
        if not self.TEMPORAL_ADDRESS:
            self.TEMPORAL_ADDRESS = f"127.0.0.1:{self.TEMPORAL_PORT}"
        if not self.TEMPORAL_UI_URL:
            self.TEMPORAL_UI_URL = f"http://localhost:{self.TEMPORAL_UI_PORT}"
        if not self.PUBLIC_URL:
            self.PUBLIC_URL = f"http://{self.API_HOST}:{self.API_PORT}"
        self.PUBLIC_URL = self.PUBLIC_URL.rstrip("/")
        return self


# HMAC-SHA256 keys: 32 bytes of entropy, e.g. `openssl rand -hex 32` (64 characters).
SECRET_KEY_MIN_LENGTH = 32


def secret_key_problem(settings: Settings) -> str | None:
    """Why SECRET_KEY cannot be used, in one line, or None."""
    if not settings.SECRET_KEY:
        return "SECRET_KEY is not set: generate one with `openssl rand -hex 32` and set it in the environment or .env"
    if len(settings.SECRET_KEY) < SECRET_KEY_MIN_LENGTH:
        return (
            f"SECRET_KEY is shorter than {SECRET_KEY_MIN_LENGTH} characters: generate one with `openssl rand -hex 32`"
        )
    return None


def require_secret_key(settings: Settings) -> None:
    """Refuse to start (exit with one line) without a usable SECRET_KEY."""
    problem = secret_key_problem(settings)
    if problem is not None:
        raise SystemExit(problem)


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
