"""The invariant checker: every violation of DESIGN section 3, found in the database and in Temporal.

`find_violations` reads the database only. It checks the current state (who holds what), the history
(every `case_event` chain, every reservation against the agent's state at that instant from
`agent_event`, every hand-off against the queue as it stood at that instant) and liveness (no eligible
agent idle while an eligible case waits beyond a grace period). Run it inside `snapshot_session`, so
that all its reads see one instant even while the service is busy.

`find_workflow_violations` compares each case row with its workflow `case-<id>`: an open case whose
workflow is closed, a workflow that failed or was terminated, and a case whose state (status, holder)
differs from what its workflow publishes in the `CaseStatus` and `AgentId` search attributes. A
disagreement is reported only when it holds still over a few re-checks: a transition in flight
(the database has committed, the workflow has not yet applied the activity's result) moves on.

What the history can and cannot prove: a reservation is checked against the agent's removal time
(`agent.deleted_at`) and, from `agent_event`, against their status and team at that instant. Agents
created before `agent_event` existed have a `baseline` row from the migration; reservations before an
agent's first `agent_event` row are checked against the removal time only.
"""

import asyncio
from collections import defaultdict
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from core import search_attributes as sa
from core.clock import db_now
from core.ids import workflow_id_for_case
from core.models import (
    HELD_STATUSES,
    PRIORITY_RANK,
    TERMINAL_STATUSES,
    Agent,
    AgentEvent,
    AgentStatus,
    CaseEvent,
    CasePriority,
    CaseStatus,
    ReturnCase,
)


class ViolationKind(StrEnum):
    AGENT_HOLDS_TWO_CASES = "agent_holds_two_cases"
    CASE_HELD_BY_TWO_AGENTS = "case_held_by_two_agents"
    HOLDER_MISMATCH = "holder_mismatch"
    HELD_BY_REMOVED_AGENT = "held_by_removed_agent"
    RESERVED_FOR_INELIGIBLE_AGENT = "reserved_for_ineligible_agent"
    TERMINAL_CASE_HOLDS_AGENT = "terminal_case_holds_agent"
    IDLE_AGENT_WHILE_CASE_WAITS = "idle_agent_while_case_waits"
    OUT_OF_ORDER_HANDOFF = "out_of_order_handoff"
    AGENT_PASSED_OVER = "agent_passed_over"
    STALE_RESERVATION = "stale_reservation"
    INCONSISTENT_FIELDS = "inconsistent_fields"
    BROKEN_HISTORY = "broken_history"
    WORKFLOW_MISSING = "workflow_missing"
    OPEN_CASE_WORKFLOW_CLOSED = "open_case_workflow_closed"
    WORKFLOW_NOT_COMPLETED = "workflow_not_completed"
    WORKFLOW_DISAGREES = "workflow_disagrees"


class Violation(BaseModel):
    """One broken promise, with the case and agent it concerns."""

    model_config = ConfigDict(frozen=True)

    kind: ViolationKind
    case_id: str | None = None
    agent_id: str | None = None
    detail: str

    def __str__(self) -> str:
        where = " ".join(f"{k}={v}" for k, v in (("case", self.case_id), ("agent", self.agent_id)) if v)
        return f"{self.kind.value} [{where}] {self.detail}"


# Which event may move a case from which state to which (None: before the case exists).
LEGAL_TRANSITIONS: dict[str, set[tuple[str | None, str]]] = {
    "filed": {(None, CaseStatus.QUEUED)},
    "reserved": {(CaseStatus.QUEUED, CaseStatus.RESERVED)},
    "assigned": {(CaseStatus.RESERVED, CaseStatus.ASSIGNED)},
    "requeued": {(CaseStatus.RESERVED, CaseStatus.QUEUED), (CaseStatus.ASSIGNED, CaseStatus.QUEUED)},
    "resolved": {(CaseStatus.ASSIGNED, CaseStatus.RESOLVED)},
    "cancelled": {(s, CaseStatus.CANCELLED) for s in (CaseStatus.QUEUED, CaseStatus.RESERVED, CaseStatus.ASSIGNED)},
    # Routing (DESIGN section 13).
    "offered": {(CaseStatus.QUEUED, CaseStatus.RESERVED)},
    "declined": {(CaseStatus.RESERVED, CaseStatus.QUEUED)},
    "offer_missed": {(CaseStatus.RESERVED, CaseStatus.QUEUED)},
    "escalated": {(CaseStatus.QUEUED, CaseStatus.QUEUED)},
    "overdue": {(CaseStatus.ASSIGNED, CaseStatus.ASSIGNED)},
    "transferred": {(s, CaseStatus.QUEUED) for s in (CaseStatus.QUEUED, CaseStatus.RESERVED, CaseStatus.ASSIGNED)},
    "reopened": {(CaseStatus.RESOLVED, CaseStatus.QUEUED)},
}
# Events that give an agent a case (a reservation, or an offer, which holds the agent just the same).
RESERVE_EVENTS = frozenset({"reserved", "offered"})
# Events that end an agent's hold on a case.
RELEASE_EVENTS = frozenset({"resolved", "cancelled", "requeued", "declined", "offer_missed", "transferred"})


@contextmanager
def snapshot_session(session_factory: sessionmaker[Session]) -> Iterator[Session]:
    """A read-only session whose reads all see one instant (REPEATABLE READ on MySQL; SQLite's
    transactions already do). Rolled back at the end."""
    with session_factory() as session:
        if session.get_bind().dialect.name in ("mysql", "mariadb"):
            session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        try:
            yield session
        finally:
            session.rollback()


@dataclass(frozen=True)
class _Case:
    id: str
    team: str
    status: str
    agent_id: str | None
    priority_rank: int
    queued_at: datetime
    reserved_at: datetime | None
    assigned_at: datetime | None
    resolved_at: datetime | None
    cancelled_at: datetime | None
    open_order_line: str | None
    offer_expires_at: datetime | None = None
    # The agent who last declined it: not offered it again while another agent is free.
    declined_by: str | None = None

    @property
    def rank(self) -> tuple[int, datetime, str]:
        """Serving order within a team (invariant 5): priority, then oldest `queued_at`, then id."""
        return (self.priority_rank, self.queued_at, self.id)


@dataclass(frozen=True)
class _Agent:
    id: str
    team: str
    status: str
    available_since: datetime
    current_case_id: str | None
    deleted_at: datetime | None


@dataclass(frozen=True)
class _Event:
    id: int
    case_id: str
    at: datetime
    type: str
    from_status: str | None
    to_status: str | None
    agent_id: str | None
    # From the event's snapshot (None for rows recorded before the outbox): the case's team and serving rank
    # right after the event (escalation, transfer and reopen change them), and the team a transfer left.
    team: str | None = None
    rank: tuple[int, datetime, str] | None = None
    from_team: str | None = None


def _event(row: Any) -> _Event:
    snapshot = row.snapshot or {}
    data = row.data or {}
    rank = None
    if snapshot.get("priority") in PRIORITY_RANK and snapshot.get("queued_at"):
        queued_at = datetime.fromisoformat(snapshot["queued_at"]).replace(tzinfo=UTC)
        rank = (PRIORITY_RANK[CasePriority(snapshot["priority"])], queued_at, row.case_id)
    return _Event(
        row.id,
        row.case_id,
        row.at,
        row.type,
        row.from_status,
        row.to_status,
        row.agent_id,
        snapshot.get("team"),
        rank,
        data.get("from_team") if row.type == "transferred" else None,
    )


@dataclass(frozen=True)
class _AgentState:
    at: datetime
    status: str
    team: str
    removed: bool
    available_since: datetime | None


def find_violations(
    *,
    session: Session,
    idle_grace: timedelta,
    now: datetime | None = None,
    teams: Collection[str] | None = None,
    reservation_grace: timedelta | None = None,
) -> list[Violation]:
    """Every invariant violation the database shows, for all teams or only `teams`.

    `idle_grace`: how long an eligible agent may stay idle while an eligible case waits (the reconcile
    interval, plus the time one reconciler run takes). `reservation_grace`: how long a reservation may
    stay unconfirmed by its workflow (None: not checked). `now`: the instant the snapshot stands for.
    """
    now = now or db_now(session)
    cases, agents, events, agent_history = _load(session=session, teams=teams)
    found: list[Violation] = []
    found += _holding(cases, agents, _pointed_cases(session=session, cases=cases, agents=agents))
    found += _fields(cases.values())
    found += _history(cases, events)
    found += _reservations(cases, agents, events, agent_history)
    found += _handoff_order(cases, events)
    found += _agent_order(cases, events, agent_history, teams=teams)
    found += _idle(cases, agents, events, agent_history, now=now, grace=idle_grace)
    if reservation_grace is not None:
        found += [
            Violation(
                kind=ViolationKind.STALE_RESERVATION,
                case_id=c.id,
                agent_id=c.agent_id,
                detail=f"reserved at {c.reserved_at.isoformat()} and still not confirmed by its workflow",
            )
            for c in cases.values()
            if c.status == CaseStatus.RESERVED
            and c.reserved_at is not None
            # An offer waits for its agent until it expires.
            and now - max(c.reserved_at, c.offer_expires_at or c.reserved_at) > reservation_grace
        ]
    return list(dict.fromkeys(found))


def check_database(
    session_factory: sessionmaker[Session],
    *,
    idle_grace: timedelta,
    teams: Collection[str] | None = None,
    reservation_grace: timedelta | None = None,
) -> list[Violation]:
    """`find_violations` on one consistent snapshot taken now."""
    with session_factory() as clock:
        now = db_now(clock)  # read before the snapshot starts: waits are measured short, never long
    with snapshot_session(session_factory) as session:
        return find_violations(
            session=session, idle_grace=idle_grace, now=now, teams=teams, reservation_grace=reservation_grace
        )


# --- loading --------------------------------------------------------------------------------------

_CASE_COLUMNS = (
    ReturnCase.id,
    ReturnCase.team,
    ReturnCase.status,
    ReturnCase.agent_id,
    ReturnCase.priority_rank,
    ReturnCase.queued_at,
    ReturnCase.reserved_at,
    ReturnCase.assigned_at,
    ReturnCase.resolved_at,
    ReturnCase.cancelled_at,
    ReturnCase.open_order_line,
    ReturnCase.offer_expires_at,
    ReturnCase.declined_by,
)


def _load(
    *, session: Session, teams: Collection[str] | None
) -> tuple[dict[str, _Case], dict[str, _Agent], dict[str, list[_Event]], dict[str, list[_AgentState]]]:
    case_stmt = select(*_CASE_COLUMNS)
    agent_stmt = select(
        Agent.id, Agent.team, Agent.status, Agent.available_since, Agent.current_case_id, Agent.deleted_at
    )
    event_stmt = select(
        CaseEvent.id,
        CaseEvent.case_id,
        CaseEvent.at,
        CaseEvent.type,
        CaseEvent.from_status,
        CaseEvent.to_status,
        CaseEvent.agent_id,
        CaseEvent.snapshot,
        CaseEvent.data,
    ).order_by(CaseEvent.id)
    if teams is not None:
        scoped = select(ReturnCase.id).where(ReturnCase.team.in_(list(teams)))
        case_stmt = case_stmt.where(ReturnCase.team.in_(list(teams)))
        event_stmt = event_stmt.where(CaseEvent.case_id.in_(scoped))
        # The team's agents, the agents its cases name, and agents pointing at its cases.
        agent_stmt = agent_stmt.where(
            or_(
                Agent.team.in_(list(teams)),
                Agent.id.in_(select(ReturnCase.agent_id).where(ReturnCase.team.in_(list(teams)))),
                Agent.current_case_id.in_(scoped),
                Agent.id.in_(select(CaseEvent.agent_id).where(CaseEvent.case_id.in_(scoped))),
                Agent.id.in_(select(AgentEvent.agent_id).where(AgentEvent.team.in_(list(teams)))),
            )
        )
    cases = {row.id: _Case(*row) for row in session.execute(case_stmt)}
    agents = {row.id: _Agent(*row) for row in session.execute(agent_stmt)}
    events: dict[str, list[_Event]] = defaultdict(list)
    for row in session.execute(event_stmt):
        events[row.case_id].append(_event(row))
    agent_event_stmt = select(
        AgentEvent.agent_id,
        AgentEvent.at,
        AgentEvent.status,
        AgentEvent.team,
        AgentEvent.removed,
        AgentEvent.available_since,
    ).order_by(AgentEvent.id)
    if teams is not None:
        agent_event_stmt = agent_event_stmt.where(AgentEvent.agent_id.in_(list(agents) or [""]))
    history: dict[str, list[_AgentState]] = defaultdict(list)
    for agent_id, at, status, team, removed, available_since in session.execute(agent_event_stmt):
        history[agent_id].append(_AgentState(at, status, team, bool(removed), available_since))
    return cases, agents, events, history


def _pointed_cases(*, session: Session, cases: dict[str, _Case], agents: dict[str, _Agent]) -> dict[str, _Case]:
    """Cases outside the scope that scoped agents point at, so those pointers can be judged too."""
    outside = {a.current_case_id for a in agents.values() if a.current_case_id and a.current_case_id not in cases}
    if not outside:
        return {}
    stmt = select(*_CASE_COLUMNS).where(ReturnCase.id.in_(outside))
    return {row.id: _Case(*row) for row in session.execute(stmt)}


# --- the checks -----------------------------------------------------------------------------------


def _v(kind: ViolationKind, detail: str, case_id: str | None = None, agent_id: str | None = None) -> Violation:
    return Violation(kind=kind, case_id=case_id, agent_id=agent_id, detail=detail)


def _holding(cases: dict[str, _Case], agents: dict[str, _Agent], pointed: dict[str, _Case]) -> list[Violation]:
    """Invariants 1 and 2 now: one case per agent, one agent per case, both sides agree."""
    found: list[Violation] = []
    held = [c for c in cases.values() if c.status in HELD_STATUSES and c.agent_id is not None]
    by_holder: dict[str, list[str]] = defaultdict(list)
    for c in held:
        by_holder[c.agent_id or ""].append(c.id)
    for agent_id, case_ids in by_holder.items():
        if len(case_ids) > 1:
            found.append(
                _v(
                    ViolationKind.AGENT_HOLDS_TWO_CASES,
                    f"cases {sorted(case_ids)} all name this agent",
                    agent_id=agent_id,
                )
            )
    by_case: dict[str, list[str]] = defaultdict(list)
    for a in agents.values():
        if a.current_case_id:
            by_case[a.current_case_id].append(a.id)
    for case_id, holders in by_case.items():
        if len(holders) > 1:
            found.append(
                _v(ViolationKind.CASE_HELD_BY_TWO_AGENTS, f"agents {sorted(holders)} all point at it", case_id=case_id)
            )
    for c in held:
        agent = agents.get(c.agent_id or "")
        if agent is None:
            found.append(
                _v(ViolationKind.HOLDER_MISMATCH, f"{c.status} by an agent that does not exist", c.id, c.agent_id)
            )
            continue
        if agent.current_case_id != c.id:
            found.append(
                _v(
                    ViolationKind.HOLDER_MISMATCH,
                    f"case is {c.status} by the agent, but the agent's current case is {agent.current_case_id}",
                    c.id,
                    agent.id,
                )
            )
        if agent.deleted_at is not None:
            found.append(
                _v(
                    ViolationKind.HELD_BY_REMOVED_AGENT,
                    f"case is {c.status} by an agent removed at {agent.deleted_at.isoformat()}",
                    c.id,
                    agent.id,
                )
            )
    every_case = {**pointed, **cases}
    for a in agents.values():
        if a.current_case_id is None:
            continue
        if a.deleted_at is not None:
            found.append(
                _v(ViolationKind.HELD_BY_REMOVED_AGENT, "a removed agent still holds a case", a.current_case_id, a.id)
            )
        case = every_case.get(a.current_case_id)
        if case is None:
            found.append(
                _v(ViolationKind.HOLDER_MISMATCH, "the agent's current case does not exist", a.current_case_id, a.id)
            )
        elif case.status in TERMINAL_STATUSES:
            found.append(
                _v(
                    ViolationKind.TERMINAL_CASE_HOLDS_AGENT,
                    f"the case is {case.status} but still holds the agent",
                    case.id,
                    a.id,
                )
            )
        elif case.status not in HELD_STATUSES or case.agent_id != a.id:
            found.append(
                _v(
                    ViolationKind.HOLDER_MISMATCH,
                    f"the agent points at the case, which is {case.status} with agent {case.agent_id}",
                    case.id,
                    a.id,
                )
            )
    return found


# Per status: the fields that must be set (True) or empty (False).
_FIELDS: dict[str, dict[str, bool]] = {
    CaseStatus.QUEUED: {
        "agent_id": False,
        "reserved_at": False,
        "assigned_at": False,
        "open_order_line": True,
        "offer_expires_at": False,
    },
    CaseStatus.RESERVED: {"agent_id": True, "reserved_at": True, "assigned_at": False, "open_order_line": True},
    CaseStatus.ASSIGNED: {
        "agent_id": True,
        "reserved_at": True,
        "assigned_at": True,
        "open_order_line": True,
        "offer_expires_at": False,
    },
    CaseStatus.RESOLVED: {"agent_id": True, "resolved_at": True, "cancelled_at": False, "open_order_line": False},
    CaseStatus.CANCELLED: {"cancelled_at": True, "resolved_at": False, "open_order_line": False},
}


def _fields(cases: Collection[_Case]) -> list[Violation]:
    """Each state carries exactly the fields it implies (a resolved case has `resolved_at`, ...)."""
    found = []
    for c in cases:
        expected = _FIELDS.get(c.status)
        if expected is None:
            found.append(_v(ViolationKind.INCONSISTENT_FIELDS, f"unknown status {c.status!r}", c.id, c.agent_id))
            continue
        wrong = [
            f"{name} {'missing' if must_be_set else 'set'}"
            for name, must_be_set in expected.items()
            if (getattr(c, name) is not None) != must_be_set
        ]
        if wrong:
            found.append(
                _v(ViolationKind.INCONSISTENT_FIELDS, f"{c.status} case: {', '.join(wrong)}", c.id, c.agent_id)
            )
    return found


def _history(cases: dict[str, _Case], events: dict[str, list[_Event]]) -> list[Violation]:
    """Each case's events form one legal chain, in time order, that ends in the row's state and holder."""
    found = []
    for c in cases.values():
        problem = _chain_problem(c, events.get(c.id, []))
        if problem:
            found.append(_v(ViolationKind.BROKEN_HISTORY, problem, c.id, c.agent_id))
    return found


def _chain_problem(case: _Case, chain: list[_Event]) -> str | None:
    if not chain:
        return "the case has no events"
    status: str | None = None
    holder: str | None = None
    previous: _Event | None = None
    for e in chain:
        label = f"event #{e.id} {e.type} ({e.from_status}->{e.to_status})"
        if (e.from_status, e.to_status) not in LEGAL_TRANSITIONS.get(e.type, set()):
            return f"{label} is not a legal transition"
        if e.from_status != status:
            return f"{label} starts from {e.from_status} but the case was {status}"
        if previous is not None and e.at < previous.at:
            return f"{label} at {e.at.isoformat()} is earlier than the event before it"
        if e.type in RESERVE_EVENTS:
            holder = e.agent_id
        elif e.type == "reopened":
            holder = None  # the resolved case kept its agent's name; the reopened one waits for anyone
        elif e.agent_id != holder:
            return f"{label} names agent {e.agent_id} but the case was held by {holder}"
        elif e.type in RELEASE_EVENTS and e.type != "resolved":
            holder = None
        status, previous = e.to_status, e
    if status != case.status:
        return f"the events leave the case {status}, the row says {case.status}"
    if case.status in HELD_STATUSES and case.agent_id != holder:
        return f"the events give the case to agent {holder}, the row says {case.agent_id}"
    return None


def _state_at(history: list[_AgentState], at: datetime) -> _AgentState | None:
    """The agent's recorded state at `at`: the last change at or before it."""
    state = None
    for h in history:
        if h.at > at:
            break
        state = h
    return state


def _reservations(
    cases: dict[str, _Case],
    agents: dict[str, _Agent],
    events: dict[str, list[_Event]],
    agent_history: dict[str, list[_AgentState]],
) -> list[Violation]:
    """Invariant 3 over history: every reservation went to an agent who, at that instant, existed, was
    available, in the case's team and held no other case."""
    found = []
    timeline: dict[str, list[tuple[datetime, int, _Event]]] = defaultdict(list)
    for case_id, chain in events.items():
        case = cases.get(case_id)
        if case is None:
            continue
        for e in chain:
            if e.agent_id is None:
                continue
            if e.type in RESERVE_EVENTS:
                timeline[e.agent_id].append((e.at, 1, e))
                why = _ineligible(agents.get(e.agent_id), agent_history.get(e.agent_id, []), e.team or case.team, e.at)
                if why:
                    found.append(
                        _v(
                            ViolationKind.RESERVED_FOR_INELIGIBLE_AGENT,
                            f"reserved at {e.at.isoformat()} for an agent who {why}",
                            case_id,
                            e.agent_id,
                        )
                    )
            elif e.type in RELEASE_EVENTS:
                timeline[e.agent_id].append((e.at, 0, e))
    for agent_id, moments in timeline.items():
        holding: _Event | None = None
        # Releases sort before reservations made at the same instant.
        for _, is_reservation, e in sorted(moments, key=lambda m: (m[0], m[1], m[2].id)):
            if not is_reservation:
                if holding is not None and holding.case_id == e.case_id:
                    holding = None
                continue
            if holding is not None:
                found.append(
                    _v(
                        ViolationKind.AGENT_HOLDS_TWO_CASES,
                        f"reserved at {e.at.isoformat()} while still holding case {holding.case_id} "
                        f"(reserved at {holding.at.isoformat()})",
                        e.case_id,
                        agent_id,
                    )
                )
            holding = e
    return found


def _ineligible(agent: _Agent | None, history: list[_AgentState], team: str, at: datetime) -> str | None:
    if agent is None:
        return "does not exist"
    if agent.deleted_at is not None and agent.deleted_at <= at:
        return f"was removed at {agent.deleted_at.isoformat()}"
    state = _state_at(history, at)
    if state is None:
        return None  # no recorded state before this instant: only the removal time can be judged
    if state.removed:
        return f"was removed (recorded at {state.at.isoformat()})"
    if state.status != AgentStatus.AVAILABLE:
        return f"was {state.status} (since {state.at.isoformat()})"
    if state.team != team:
        return f"was in team {state.team}, not {team} (since {state.at.isoformat()})"
    return None


def _rank(e: _Event, cases: dict[str, _Case]) -> tuple[int, datetime, str]:
    """The case's serving rank right after event `e` (its snapshot), or its rank now for older rows."""
    return e.rank if e.rank is not None else cases[e.case_id].rank


def _team_timelines(cases: dict[str, _Case], events: dict[str, list[_Event]]) -> dict[str, list[_Event]]:
    """Each team's events in time order: an event counts in the team the case was in right after it, and a
    transfer also in the team it left (where the case stops waiting)."""
    by_team: dict[str, list[_Event]] = defaultdict(list)
    for case_id, chain in events.items():
        case = cases.get(case_id)
        if case is None:
            continue
        for e in chain:
            by_team[e.team or case.team].append(e)
            if e.from_team is not None and e.from_team != (e.team or case.team):
                by_team[e.from_team].append(
                    _Event(e.id, e.case_id, e.at, "transferred_out", e.from_status, None, e.agent_id)
                )
    for team_events in by_team.values():
        team_events.sort(key=lambda e: (e.at, e.id))
    return by_team


def _handoff_order(cases: dict[str, _Case], events: dict[str, list[_Event]]) -> list[Violation]:
    """Invariant 5 over history: whenever a case was reserved (or offered), no case of its team that ranks
    before it (higher priority, or same priority and older `queued_at`, as both stood then) was still waiting
    at that instant, unless that case's last decline was by the very agent reserved (DESIGN section 13).

    Every transition into or out of `queued` happens under the team lock and stamps its time inside it,
    so within a team the events' times order them as the database did. Events sharing one instant were
    made by one dispatch round: all of them apply before the round's reservations are judged.
    """
    found = []
    for team_events in _team_timelines(cases, events).values():
        waiting: dict[str, tuple[int, datetime, str]] = {}  # case id -> its rank while it waits
        declined: dict[str, str] = {}  # case id -> the agent who last declined it
        i = 0
        while i < len(team_events):
            at = team_events[i].at
            group = []
            while i < len(team_events) and team_events[i].at == at:
                group.append(team_events[i])
                i += 1
            for e in group:
                if e.type == "declined" and e.agent_id:
                    declined[e.case_id] = e.agent_id
                elif e.type in RESERVE_EVENTS or e.type in ("reopened", "transferred"):
                    declined.pop(e.case_id, None)
                if e.to_status == CaseStatus.QUEUED:
                    waiting[e.case_id] = _rank(e, cases)
                else:
                    waiting.pop(e.case_id, None)
            if not waiting:
                continue
            for e in group:
                if e.type not in RESERVE_EVENTS:
                    continue
                rank = _rank(e, cases)
                ahead = [r for case_id, r in waiting.items() if declined.get(case_id) != e.agent_id and r < rank]
                if ahead:
                    first = min(ahead)
                    found.append(
                        _v(
                            ViolationKind.OUT_OF_ORDER_HANDOFF,
                            f"reserved at {at.isoformat()} while case {first[2]} (priority rank {first[0]}, "
                            f"queued at {first[1].isoformat()}) waited ahead of it (priority rank {rank[0]}, "
                            f"queued at {rank[1].isoformat()})",
                            e.case_id,
                            e.agent_id,
                        )
                    )
    return found


def _agent_order(
    cases: dict[str, _Case],
    events: dict[str, list[_Event]],
    agent_history: dict[str, list[_AgentState]],
    *,
    teams: Collection[str] | None,
) -> list[Violation]:
    """Invariant 5, the agents' side: whenever a dispatch round reserved agents of a team, no agent of
    that team who was free and available at that instant, and idle longer (then lower id), was left out.

    An agent's idle-since at an instant is rebuilt from history: their creation, their last return from
    away, their last release of a case. Only agents with a recorded state (`agent_event`) are judged, and
    with `teams` given, only agents who never left those teams (their other cases are not loaded).
    """
    holds: dict[str, list[tuple[datetime, int, str]]] = defaultdict(list)  # agent -> (at, +1/-1, case)
    rounds: dict[tuple[str, datetime], list[_Event]] = defaultdict(list)
    # Per reservation: the agent who had last declined that case (who could not have been given it).
    excluded: dict[int, str] = {}
    for case_id, chain in events.items():
        case = cases.get(case_id)
        if case is None:
            continue
        decliner: str | None = None
        for e in chain:
            if e.type == "declined":
                decliner = e.agent_id
            elif e.type in ("reopened", "transferred"):
                decliner = None
            if e.agent_id is None:
                continue
            if e.type in RESERVE_EVENTS:
                holds[e.agent_id].append((e.at, 1, case_id))
                rounds[(e.team or case.team, e.at)].append(e)
                if decliner is not None:
                    excluded[e.id] = decliner
                decliner = None
            elif e.type in RELEASE_EVENTS:
                holds[e.agent_id].append((e.at, -1, case_id))
    for moments in holds.values():
        moments.sort()
    judged = {
        agent_id: history
        for agent_id, history in agent_history.items()
        if history and (teams is None or all(h.team in teams for h in history))
    }
    found = []
    for (team, at), reserved in sorted(rounds.items(), key=lambda item: item[0][1]):
        chosen = {e.agent_id for e in reserved}
        candidates = []
        for agent_id, history in judged.items():
            state = _state_at(history, at)
            if state is None or state.removed or state.status != AgentStatus.AVAILABLE or state.team != team:
                continue
            if agent_id not in chosen and _holding_before(holds.get(agent_id, []), at):
                continue
            since = _idle_since(state, holds.get(agent_id, []), at)
            if since is None:
                continue  # recorded before agent_event kept `available_since`: cannot be judged
            candidates.append((since, agent_id))
        # An agent left out only of cases they had declined was not passed over.
        left_out = sorted(
            c for c in candidates if c[1] not in chosen and any(excluded.get(e.id) != c[1] for e in reserved)
        )
        if not left_out:
            continue
        first_left = left_out[0]
        for since, agent_id in candidates:
            if agent_id in chosen and first_left < (since, agent_id):
                case_id = next(e.case_id for e in reserved if e.agent_id == agent_id)
                found.append(
                    _v(
                        ViolationKind.AGENT_PASSED_OVER,
                        f"reserved at {at.isoformat()} for this agent (idle since {since.isoformat()}) while agent "
                        f"{first_left[1]}, idle since {first_left[0].isoformat()}, was free in team {team}",
                        case_id,
                        agent_id,
                    )
                )
    return found


def _holding_before(moments: list[tuple[datetime, int, str]], at: datetime) -> bool:
    """Whether the agent held a case just before `at` (reservations before it, releases up to it)."""
    held: set[str] = set()
    for when, step, case_id in moments:
        if when > at or (when == at and step > 0):
            break
        if step > 0:
            held.add(case_id)
        else:
            held.discard(case_id)
    return bool(held)


def _idle_since(state: _AgentState, moments: list[tuple[datetime, int, str]], at: datetime) -> datetime | None:
    """The agent's `available_since` at `at`: as last recorded, or the last release of a case since."""
    since = state.available_since
    for when, step, _ in moments:
        if when > at:
            break
        if step < 0 and (since is None or when > since):
            since = when
    return since


def _eligible_since(agent: _Agent, history: list[_AgentState]) -> datetime:
    """Since when the agent has been free, available and in their current team."""
    since = agent.available_since
    run_start: datetime | None = None
    for h in reversed(history):
        if h.removed or h.status != AgentStatus.AVAILABLE or h.team != agent.team:
            break
        run_start = h.at
    if run_start is not None and run_start > since:
        since = run_start
    return since


def _idle(
    cases: dict[str, _Case],
    agents: dict[str, _Agent],
    events: dict[str, list[_Event]],
    agent_history: dict[str, list[_AgentState]],
    *,
    now: datetime,
    grace: timedelta,
) -> list[Violation]:
    """Invariant 4: no eligible agent idle while a case of their team waits, for longer than `grace`."""
    idle: dict[str, list[tuple[datetime, str]]] = defaultdict(list)
    for a in agents.values():
        if a.deleted_at is None and a.status == AgentStatus.AVAILABLE and a.current_case_id is None:
            idle[a.team].append((_eligible_since(a, agent_history.get(a.id, [])), a.id))
    waiting: dict[str, list[tuple[datetime, str, str | None]]] = defaultdict(list)
    for c in cases.values():
        if c.status == CaseStatus.QUEUED:
            chain = events.get(c.id)
            since = chain[-1].at if chain and chain[-1].to_status == CaseStatus.QUEUED else c.queued_at
            waiting[c.team].append((since, c.id, c.declined_by))
    found = []
    for team, team_waiting in sorted(waiting.items()):
        # The longest overlap of a waiting case and an idle agent who may take it (not its last decliner).
        pairs = [
            (max(case_since, agent_since), case_since, case_id, agent_since, agent_id)
            for case_since, case_id, decliner in team_waiting
            for agent_since, agent_id in idle.get(team, [])
            if agent_id != decliner
        ]
        if not pairs:
            continue
        start, case_since, case_id, agent_since, agent_id = min(pairs)
        overlap = now - start
        if overlap > grace:
            found.append(
                _v(
                    ViolationKind.IDLE_AGENT_WHILE_CASE_WAITS,
                    f"team {team}: agent free since {agent_since.isoformat()} and case waiting since "
                    f"{case_since.isoformat()}, both for {overlap.total_seconds():.1f}s "
                    f"(grace {grace.total_seconds():g}s)",
                    case_id,
                    agent_id,
                )
            )
    return found


# --- database against workflows ---------------------------------------------------------------------


@dataclass(frozen=True)
class _WorkflowView:
    """What the case's workflow shows: its execution status and its search attributes."""

    execution: WorkflowExecutionStatus | None  # None: no such workflow
    case_status: str | None
    agent_id: str | None


@dataclass(frozen=True)
class _Row:
    id: str
    status: str
    agent_id: str | None


def _read_rows(
    session_factory: sessionmaker[Session],
    *,
    teams: Collection[str] | None,
    ids: Collection[str] | None,
    include_terminal: bool,
) -> dict[str, _Row]:
    stmt = select(ReturnCase.id, ReturnCase.status, ReturnCase.agent_id)
    if teams is not None:
        stmt = stmt.where(ReturnCase.team.in_(list(teams)))
    if ids is not None:
        stmt = stmt.where(ReturnCase.id.in_(list(ids) or [""]))
    if not include_terminal:
        stmt = stmt.where(ReturnCase.status.not_in([s.value for s in TERMINAL_STATUSES]))
    with session_factory() as session:
        return {row.id: _Row(*row) for row in session.execute(stmt)}


async def _describe(client: Client, case_id: str, limit: asyncio.Semaphore) -> _WorkflowView:
    async with limit:
        try:
            described = await client.get_workflow_handle(workflow_id_for_case(case_id)).describe()
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return _WorkflowView(None, None, None)
            raise
    attributes = described.typed_search_attributes
    return _WorkflowView(described.status, attributes.get(sa.CASE_STATUS), attributes.get(sa.AGENT_ID))


def _judge(row: _Row, view: _WorkflowView) -> list[tuple[ViolationKind, str]]:
    terminal = row.status in TERMINAL_STATUSES
    if view.execution is None:
        # A closed case's workflow may be gone after the namespace's retention period.
        return [] if terminal else [(ViolationKind.WORKFLOW_MISSING, f"the case is {row.status} but has no workflow")]
    problems: list[tuple[ViolationKind, str]] = []
    running = view.execution == WorkflowExecutionStatus.RUNNING
    if not running and view.execution != WorkflowExecutionStatus.COMPLETED:
        problems.append((ViolationKind.WORKFLOW_NOT_COMPLETED, f"the workflow ended {view.execution.name}"))
    if not terminal and not running:
        problems.append(
            (ViolationKind.OPEN_CASE_WORKFLOW_CLOSED, f"the case is {row.status} but its workflow is closed")
        )
    if view.case_status != row.status or view.agent_id != row.agent_id:
        problems.append(
            (
                ViolationKind.WORKFLOW_DISAGREES,
                f"database: {row.status} with agent {row.agent_id}; workflow: {view.case_status} with agent "
                f"{view.agent_id} ({view.execution.name})",
            )
        )
    return problems


async def find_workflow_violations(
    *,
    client: Client,
    session_factory: sessionmaker[Session],
    teams: Collection[str] | None = None,
    include_terminal: bool = True,
    recheck_after: timedelta = timedelta(seconds=2),
    rechecks: int = 2,
    concurrency: int = 16,
) -> list[Violation]:
    """Cases whose workflow is missing, closed too early, failed, or disagrees with the database.

    A case that looks wrong is looked at again `rechecks` times, `recheck_after` apart, and reported only
    if neither its row nor its workflow moved in between: a transition in flight is not a violation.
    """
    limit = asyncio.Semaphore(concurrency)
    rows = await asyncio.to_thread(
        _read_rows, session_factory, teams=teams, ids=None, include_terminal=include_terminal
    )
    suspects: dict[str, tuple[_Row, _WorkflowView]] = {}
    views = await asyncio.gather(*(_describe(client, case_id, limit) for case_id in rows))
    for row, view in zip(rows.values(), views, strict=True):
        if _judge(row, view):
            suspects[row.id] = (row, view)
    for _ in range(rechecks):
        if not suspects:
            break
        await asyncio.sleep(recheck_after.total_seconds())
        again = await asyncio.to_thread(
            _read_rows, session_factory, teams=None, ids=list(suspects), include_terminal=True
        )
        views = await asyncio.gather(*(_describe(client, case_id, limit) for case_id in suspects))
        suspects = {
            case_id: seen
            for (case_id, seen), view in zip(list(suspects.items()), views, strict=True)
            if again.get(case_id) == seen[0] and view == seen[1]
        }
    return [
        _v(kind, detail, row.id, row.agent_id) for row, view in suspects.values() for kind, detail in _judge(row, view)
    ]
