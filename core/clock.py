"""One clock for every ordering time: the database's, read once per transaction.

`queued_at` (FIFO), `available_since` (longest idle) and the other transition times are compared across
rows written by different hosts (API replicas, workers), so they must not depend on which host's clock
wrote them. Each transaction reads the database's UTC time once, caches it in `session.info`, and stamps
everything it writes with it.
"""

from datetime import UTC, datetime

from sqlalchemy import event, text
from sqlalchemy.orm import Session, SessionTransaction

_KEY = "db_now"
# Microseconds on MySQL/MariaDB; SQLite's clock has milliseconds.
_NOW_SQL = {
    "mysql": "SELECT UTC_TIMESTAMP(6)",
    "mariadb": "SELECT UTC_TIMESTAMP(6)",
    "sqlite": "SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')",
}


def db_now(session: Session) -> datetime:
    """The database's current UTC time, the same for the whole transaction (timezone-aware)."""
    cached: datetime | None = session.info.get(_KEY)
    if cached is not None:
        return cached
    value = session.execute(text(_NOW_SQL[session.get_bind().dialect.name])).scalar_one()
    now = (datetime.fromisoformat(value) if isinstance(value, str) else value).replace(tzinfo=UTC)
    session.info[_KEY] = now
    return now


@event.listens_for(Session, "after_transaction_end")
def _forget_now(session: Session, transaction: SessionTransaction) -> None:
    # The next transaction reads the clock again; a savepoint ending keeps the outer transaction's.
    if transaction.parent is None:
        session.info.pop(_KEY, None)
