"""The transactional outbox: event rows get their ids at the tail of the writing transaction, in commit order.

`case_event`, `agent_event` and `system_event` rows are written in the transaction of the change they
describe. Their ids come from one counter row (`event_sequence`), bumped by the last statement before
COMMIT: the domain functions only buffer the rows (`buffer_event`), and a `before_commit` hook (installed
by core/db.py on every session) flushes everything else first, then takes the counter's row lock, assigns
the ids in record order and inserts the rows. The lock is held from that UPDATE to COMMIT only, and every
writer takes it last (after its team locks), so there is no deadlock cycle; the next writer can take ids
only after this one committed, so ids grow in commit order, and a rollback gives its ids back (no gap).

A reader therefore never skips a row: `read_events` reads `id > cursor AND id <= last_id` in one statement
(one snapshot), and every row below a committed `last_id` is committed too (InnoDB's AUTO_INCREMENT, by
contrast, hands out ids at INSERT, so a poller can pass a lower id that commits later: DESIGN section 11).
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, String, column, literal, select, text, union_all
from sqlalchemy.orm import Session, SessionTransaction
from sqlalchemy.sql.elements import ColumnElement

from core.models import AgentEvent, CaseEvent, SystemEvent

SEQUENCE_NAME = "events"
_PENDING = "outbox_pending"
_SAVEPOINT_MARKS = "outbox_savepoint_marks"

OutboxRow = CaseEvent | AgentEvent | SystemEvent


def buffer_event(*, session: Session, row: OutboxRow) -> None:
    """Queue an event row for this transaction; it gets its id and is inserted as the transaction commits."""
    if not _hooks_installed:
        raise RuntimeError("the outbox hooks are not installed: import core.db before writing events")
    session.info.setdefault(_PENDING, []).append(row)


def pending_events(session: Session) -> list[OutboxRow]:
    """The event rows this transaction will insert at commit (for tests and the history of an open transaction)."""
    return list(session.info.get(_PENDING, []))


def _bump_sequence(session: Session, count: int) -> int:
    """Take `count` ids from the sequence (holding its row lock to COMMIT); return the last one."""
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        # Writers are already serialized by BEGIN IMMEDIATE (core/db.py).
        last = session.execute(
            text("UPDATE event_sequence SET last_id = last_id + :n WHERE name = :name RETURNING last_id"),
            {"n": count, "name": SEQUENCE_NAME},
        ).scalar_one()
        return int(last)
    # LAST_INSERT_ID(expr) hands the new value back in the OK packet (the cursor's lastrowid): no extra SELECT.
    result = session.execute(
        text("UPDATE event_sequence SET last_id = LAST_INSERT_ID(last_id + :n) WHERE name = :name"),
        {"n": count, "name": SEQUENCE_NAME},
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise RuntimeError("event_sequence has no row: run the migrations")
    return int(result.lastrowid)  # type: ignore[attr-defined]


def flush_events(session: Session) -> None:
    """`before_commit` hook: flush other changes, then number and insert the buffered events, last."""
    if session.in_nested_transaction():
        return  # a SAVEPOINT "commit"; the rows wait for the real one
    rows: list[OutboxRow] = session.info.pop(_PENDING, [])
    session.info.pop(_SAVEPOINT_MARKS, None)
    if not rows:
        return
    # Constraint errors of the change itself surface here, before the sequence lock is taken.
    session.flush()
    last = _bump_sequence(session, len(rows))
    for offset, row in enumerate(rows):
        row.id = last - len(rows) + 1 + offset
    session.add_all(rows)
    session.flush()


def _on_transaction_create(session: Session, transaction: SessionTransaction) -> None:
    if transaction.nested:
        marks: dict[int, int] = session.info.setdefault(_SAVEPOINT_MARKS, {})
        marks[id(transaction)] = len(session.info.get(_PENDING, []))


def _on_soft_rollback(session: Session, previous_transaction: SessionTransaction) -> None:
    """Forget the events of what rolled back: a savepoint's since it began, or the whole transaction's."""
    if previous_transaction.nested:
        mark = session.info.get(_SAVEPOINT_MARKS, {}).pop(id(previous_transaction), None)
        if mark is not None and _PENDING in session.info:
            del session.info[_PENDING][mark:]
        return
    session.info.pop(_PENDING, None)
    session.info.pop(_SAVEPOINT_MARKS, None)


_hooks_installed = False


def install_hooks(session_class: type[Session]) -> None:
    """Register the outbox hooks on every session of `session_class` (core/db.py does this once, at import)."""
    global _hooks_installed
    from sqlalchemy import event

    event.listen(session_class, "before_commit", flush_events)
    event.listen(session_class, "after_transaction_create", _on_transaction_create)
    event.listen(session_class, "after_soft_rollback", _on_soft_rollback)
    _hooks_installed = True


# --- reading ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredEvent:
    """One outbox row as the readers see it."""

    id: int
    kind: str  # "case", "agent" or "system"
    type: str  # the row's own type: "assigned", "created", "webhook.disabled", ...
    at: datetime
    # The case id, the agent id, or None for a system event.
    subject_id: str | None
    # The agent a case event concerns (the holder, or the one just removed from it); the agent of an agent event.
    agent_id: str | None
    snapshot: dict[str, Any] | None


def _last_id_subquery() -> ColumnElement[Any]:
    return (
        select(column("last_id", BigInteger))
        .select_from(text("event_sequence"))
        .where(column("name", String) == SEQUENCE_NAME)
        .scalar_subquery()
    )


def read_events(*, session: Session, after: int, limit: int = 500, upto: int | None = None) -> list[StoredEvent]:
    """Committed events with `after < id <= upto` (default: the sequence's last id), oldest first, in one statement."""
    bound: ColumnElement[Any] = literal(upto, BigInteger) if upto is not None else _last_id_subquery()
    case_rows = select(
        CaseEvent.id.label("id"),
        literal("case", String).label("kind"),
        CaseEvent.type.label("type"),
        CaseEvent.at.label("at"),
        CaseEvent.case_id.label("subject_id"),
        CaseEvent.agent_id.label("agent_id"),
        CaseEvent.snapshot.label("snapshot"),
    ).where(CaseEvent.id > after, CaseEvent.id <= bound)
    agent_rows = select(
        AgentEvent.id,
        literal("agent", String),
        AgentEvent.type,
        AgentEvent.at,
        AgentEvent.agent_id,
        AgentEvent.agent_id,
        AgentEvent.snapshot,
    ).where(AgentEvent.id > after, AgentEvent.id <= bound)
    system_rows = select(
        SystemEvent.id,
        literal("system", String),
        SystemEvent.type,
        SystemEvent.at,
        literal(None, String),
        literal(None, String),
        SystemEvent.snapshot,
    ).where(SystemEvent.id > after, SystemEvent.id <= bound)
    union = union_all(case_rows, agent_rows, system_rows).subquery()
    rows = session.execute(select(union).order_by(union.c.id).limit(limit)).all()
    return [
        StoredEvent(
            id=int(r.id),
            kind=r.kind,
            type=r.type,
            at=r.at,
            subject_id=r.subject_id,
            agent_id=r.agent_id,
            snapshot=r.snapshot,
        )
        for r in rows
    ]


def last_event_id(*, session: Session) -> int:
    """The id of the newest committed event (0 before the first)."""
    return int(session.execute(select(_last_id_subquery())).scalar_one_or_none() or 0)
