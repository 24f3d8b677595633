"""Direct reads of the system of record: timestamps, queue position, dispatch timing and plans, invariants."""

import functools
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import Engine, create_engine, event, func, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from core.db import make_engine, make_session_factory
from core.dispatch import dispatch
from core.models import HELD_STATUSES, TERMINAL_STATUSES, Agent, AgentStatus, CaseStatus, ReturnCase


@dataclass
class CaseTimes:
    id: str
    status: str
    agent_id: str | None
    queued_at: datetime
    reserved_at: datetime | None
    assigned_at: datetime | None
    resolved_at: datetime | None


@dataclass
class DispatchProbe:
    """One timed dispatch of a single freed agent against the loaded queue, rolled back."""

    dispatch_ms: float
    transaction_ms: float
    rows_read: int
    statements: int


P = ParamSpec("P")
R = TypeVar("R")
# Out of connections (1040), lost connection (2006, 2013), deadlock (1213), lock wait timeout (1205).
TRANSIENT = {1040, 2006, 2013, 1213, 1205}


def retrying[**P, R](method: Callable[P, R]) -> Callable[P, R]:
    """Retry a read a few times on a transient server error (the MariaDB server is shared with others)."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        for attempt in range(8):
            try:
                return method(*args, **kwargs)
            except OperationalError as err:
                code = err.orig.args[0] if err.orig is not None and err.orig.args else None
                if code not in TRANSIENT or attempt == 7:
                    raise
                time.sleep(0.1 * 2**attempt)
        raise AssertionError("unreachable")

    return wrapper


class Db:
    def __init__(self, url: str) -> None:
        self.engine: Engine = make_engine(url, pool_size=4)
        self.sessions: sessionmaker[Session] = make_session_factory(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    @retrying
    def next_queued(self, team: str) -> str | None:
        """The case the next freed agent of `team` must get (invariant 5)."""
        with self.sessions() as s:
            return s.scalar(
                select(ReturnCase.id)
                .where(ReturnCase.team == team, ReturnCase.status == CaseStatus.QUEUED)
                .order_by(ReturnCase.priority_rank, ReturnCase.queued_at, ReturnCase.id)
                .limit(1)
            )

    @retrying
    def status_of(self, case_id: str) -> tuple[str, str | None]:
        with self.sessions() as s:
            row = s.execute(select(ReturnCase.status, ReturnCase.agent_id).where(ReturnCase.id == case_id)).one()
            return row[0], row[1]

    @retrying
    def held_by(self, agent_id: str) -> tuple[str, str] | None:
        """(case id, status) of the case the agent holds, if any."""
        with self.sessions() as s:
            row = s.execute(
                select(ReturnCase.id, ReturnCase.status).where(
                    ReturnCase.agent_id == agent_id, ReturnCase.status.in_([x.value for x in HELD_STATUSES])
                )
            ).first()
            return None if row is None else (row[0], row[1])

    @retrying
    def times(self, case_ids: Iterable[str]) -> dict[str, CaseTimes]:
        ids = list(case_ids)
        out: dict[str, CaseTimes] = {}
        with self.sessions() as s:
            for start in range(0, len(ids), 500):
                for c in s.scalars(select(ReturnCase).where(ReturnCase.id.in_(ids[start : start + 500]))):
                    out[c.id] = CaseTimes(
                        c.id, c.status, c.agent_id, c.queued_at, c.reserved_at, c.assigned_at, c.resolved_at
                    )
        return out

    @retrying
    def waiting(self, team: str) -> int:
        with self.sessions() as s:
            return int(
                s.scalar(
                    select(func.count())
                    .select_from(ReturnCase)
                    .where(ReturnCase.team == team, ReturnCase.status == CaseStatus.QUEUED)
                )
                or 0
            )

    @retrying
    def open_cases(self) -> int:
        with self.sessions() as s:
            return int(
                s.scalar(
                    select(func.count())
                    .select_from(ReturnCase)
                    .where(ReturnCase.status.not_in([x.value for x in TERMINAL_STATUSES]))
                )
                or 0
            )

    @retrying
    def probe_dispatch(self, team: str, spare_agent_id: str) -> tuple[DispatchProbe, list[tuple[str, Any]]]:
        """Make the team's spare (away) agent available, dispatch, measure, and roll everything back.

        Returns the timing and the SELECT statements dispatch ran (with their parameters), for EXPLAIN.
        """
        statements: list[tuple[str, Any]] = []

        def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
            statements.append((statement, parameters))

        with self.engine.connect() as conn:
            t0 = time.perf_counter()
            tx = conn.begin()
            try:
                session = Session(bind=conn)
                session.execute(
                    update(Agent).where(Agent.id == spare_agent_id).values(status=AgentStatus.AVAILABLE.value)
                )
                # SHOW STATUS reads rows of its own: measure that overhead and take it off.
                first = _rows_read(conn)
                before = _rows_read(conn)
                overhead = before - first
                event.listen(conn, "before_cursor_execute", capture)
                t1 = time.perf_counter()
                reservations = dispatch(session=session, team=team, actor="bench-probe")
                t2 = time.perf_counter()
                event.remove(conn, "before_cursor_execute", capture)
                after = _rows_read(conn)
                if len(reservations) != 1:
                    raise RuntimeError(f"probe dispatch made {len(reservations)} reservations, expected 1")
                session.close()
            finally:
                tx.rollback()
            t3 = time.perf_counter()
        probe = DispatchProbe(
            dispatch_ms=(t2 - t1) * 1000,
            transaction_ms=(t3 - t0) * 1000,
            rows_read=after - before - overhead,
            statements=len(statements),
        )
        return probe, [(s, p) for s, p in statements if s.lstrip().upper().startswith("SELECT")]

    def explain(self, statements: Sequence[tuple[str, Any]]) -> list[list[dict[str, Any]]]:
        """MariaDB's plan for each statement: which index, estimated rows, and whether it sorts."""
        plans: list[list[dict[str, Any]]] = []
        with self.engine.connect() as conn:
            for statement, parameters in statements:
                result = conn.exec_driver_sql("EXPLAIN " + statement, parameters)
                plans.append([{k: _plain(v) for k, v in row._mapping.items()} for row in result])
        return plans

    @retrying
    def holding_violations(self, teams: Sequence[str]) -> list[str]:
        """Invariants 1 and 2 for the benchmark's teams: one case per agent, and both sides agree."""
        problems: list[str] = []
        with self.sessions() as s:
            held = s.execute(
                select(ReturnCase.id, ReturnCase.agent_id).where(
                    ReturnCase.team.in_(teams), ReturnCase.status.in_([x.value for x in HELD_STATUSES])
                )
            ).all()
            holders = [agent for _, agent in held]
            if len(holders) != len(set(holders)):
                problems.append("an agent holds two cases")
            current = dict(
                s.execute(select(Agent.id, Agent.current_case_id).where(Agent.team.in_(teams))).tuples().all()
            )
            for case_id, agent_id in held:
                if agent_id is None or current.get(agent_id) != case_id:
                    problems.append(f"case {case_id} says agent {agent_id}, who says {current.get(agent_id or '')}")
        return problems[:20]

    @retrying
    def stuck_reservations(self, teams: Sequence[str]) -> int:
        with self.sessions() as s:
            return int(
                s.scalar(
                    select(func.count())
                    .select_from(ReturnCase)
                    .where(ReturnCase.team.in_(teams), ReturnCase.status == CaseStatus.RESERVED)
                )
                or 0
            )

    @retrying
    def count_by_status(self, teams: Sequence[str]) -> dict[str, int]:
        with self.sessions() as s:
            rows = s.execute(
                select(ReturnCase.status, func.count()).where(ReturnCase.team.in_(teams)).group_by(ReturnCase.status)
            ).all()
            return {status: int(n) for status, n in rows}


@retrying
def server_connections(url: str) -> dict[str, int]:
    """The server's connection limit and how many are open (others share this server); read without naming a
    database, so it works before the benchmark's database exists."""
    engine = create_engine(make_url(url).set(database=""))
    try:
        with engine.connect() as conn:
            limit = conn.exec_driver_sql("SHOW VARIABLES LIKE 'max_connections'").one()[1]
            used = conn.exec_driver_sql("SHOW STATUS LIKE 'Threads_connected'").one()[1]
    finally:
        engine.dispose()
    return {"max_connections": int(limit), "connected": int(used)}


def _rows_read(conn: Any) -> int:
    """Rows the storage engine handed this session so far (MariaDB Handler_read_* counters)."""
    rows = conn.exec_driver_sql("SHOW SESSION STATUS LIKE 'Handler_read%%'").all()
    return sum(int(value) for _, value in rows)


def _plain(value: Any) -> Any:
    return value if value is None or isinstance(value, int | float | str) else str(value)
