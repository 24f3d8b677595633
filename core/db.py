"""Engine and session factory for MySQL/MariaDB (production) and SQLite (the embedded default)."""

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from core import outbox
from core.config import Settings, get_settings
from core.errors import ConcurrentChange

# Every session numbers and inserts its buffered events as the last step before COMMIT (core/outbox.py).
outbox.install_hooks(Session)


def is_sqlite(url: str) -> bool:
    """True when the URL points at SQLite."""
    return make_url(url).get_backend_name() == "sqlite"


def make_engine(url: str, *, pool_size: int = 20, settings: Settings | None = None) -> Engine:
    """Build an engine with the locking behaviour dispatch relies on, and the driver timeouts of `settings`."""
    if is_sqlite(url):
        return _make_sqlite_engine(url)
    settings = settings or get_settings()
    return create_engine(
        url,
        # Dispatch serializes on the team row; READ COMMITTED keeps gap locks out of the way.
        isolation_level="READ COMMITTED",
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_recycle=1800,
        # Waiting for a free connection is bounded like any other database wait.
        pool_timeout=settings.DB_READ_TIMEOUT_SECONDS,
        connect_args={
            "connect_timeout": settings.DB_CONNECT_TIMEOUT_SECONDS,
            # A server that accepts but never answers (a partition, a hung host) fails the read; both are
            # shorter than the activity timeout, so a hung attempt gives back its thread and connection.
            "read_timeout": settings.DB_READ_TIMEOUT_SECONDS,
            "write_timeout": settings.DB_WRITE_TIMEOUT_SECONDS,
            # Fail a blocked lock fast (retried whole) rather than outliving the activity timeout.
            "init_command": f"SET SESSION innodb_lock_wait_timeout = {int(settings.DB_LOCK_WAIT_TIMEOUT_SECONDS)}",
        },
    )


def _make_sqlite_engine(url: str) -> Engine:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

    # SQLAlchemy's documented pysqlite recipe: let SQLAlchemy own BEGIN so every write
    # transaction starts with BEGIN IMMEDIATE and two processes never both hold a read lock
    # they try to upgrade ("database is locked").
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded values after commit, so results can be returned after the transaction."""
    return sessionmaker(engine, expire_on_commit=False)


T = TypeVar("T")

# MySQL: 1213 deadlock, 1205 lock wait timeout. Both roll back and are safe to retry whole.
RETRYABLE_MYSQL_ERRORS = (1213, 1205)


def run_transaction[T](session_factory: sessionmaker[Session], work: Callable[[Session], T], attempts: int = 5) -> T:
    """Run `work` in one transaction, retrying it whole on deadlocks and concurrent changes."""
    for attempt in range(1, attempts + 1):
        try:
            with session_factory.begin() as session:
                return work(session)
        except (OperationalError, ConcurrentChange) as err:
            retryable = isinstance(err, ConcurrentChange) or (
                err.orig is not None and bool(err.orig.args) and err.orig.args[0] in RETRYABLE_MYSQL_ERRORS
            )
            if not retryable or attempt == attempts:
                raise
            time.sleep(0.02 * 2**attempt)
    raise AssertionError("unreachable")
