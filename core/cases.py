"""Case transitions and reads. Functions take the session as a keyword and never commit."""

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import exists, or_, select, true
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.clock import db_now
from core.dispatch import dispatch, lock_teams, record_event
from core.errors import (
    CannotReopen,
    CannotTransfer,
    CaseNotFound,
    ConcurrentChange,
    DuplicateOpenCase,
    IdempotencyKeyReused,
    Invalid,
    NotAnOffer,
    UnknownTeam,
    WrongAgent,
)
from core.models import (
    PRIORITY_RANK,
    TERMINAL_STATUSES,
    Agent,
    AgentStatus,
    CaseEvent,
    CasePriority,
    CaseStatus,
    ReturnCase,
    Team,
)
from core.rules import cancel_refusal, resolve_refusal

# The views live in core/views.py (every event's snapshot is made there too); read them through here.
from core.views import to_public as to_public
from core.views import to_record as to_record
from workflows.messages import CaseDraft, Requeue, Reservation

ACTIVE = "active"


class Filing(Protocol):
    """A filing as the API validated it (CaseCreate) or as the case workflow carries it (CaseDraft)."""

    @property
    def team(self) -> str: ...
    @property
    def order_id(self) -> str: ...
    @property
    def product_sku(self) -> str: ...
    def model_dump(self) -> dict[str, Any]: ...


def open_order_line(order_id: str, product_sku: str) -> str:
    """The key that makes one open case per order line unique."""
    return f"{order_id}\x1f{product_sku}"


def matches_request(case: ReturnCase, data: Filing) -> bool:
    """True when a repeated filing asks for exactly the case that exists."""
    return all(getattr(case, field) == value for field, value in data.model_dump().items())


def find_open_case_for_order_line(*, session: Session, order_id: str, product_sku: str) -> ReturnCase | None:
    """The open case for this order line, if any."""
    return session.scalars(
        select(ReturnCase).where(ReturnCase.open_order_line == open_order_line(order_id, product_sku))
    ).first()


def find_by_idempotency_key(*, session: Session, key: str) -> ReturnCase | None:
    """The case filed with this `Idempotency-Key`, if any."""
    return session.scalars(select(ReturnCase).where(ReturnCase.idempotency_key == key)).first()


def duplicate_open_case_error(existing: ReturnCase) -> DuplicateOpenCase:
    """The 409 naming the case that already covers the order line."""
    return DuplicateOpenCase(
        f"order {existing.order_id} product {existing.product_sku} already has open case {existing.id}",
        existing_case_id=existing.id,
    )


def check_filing(
    *, session: Session, case_id: str, data: Filing, idempotency_key: str | None, lock: bool = False
) -> ReturnCase | None:
    """The filing rules, for the API's pre-check and for the open activity alike: a repeat of an earlier filing
    (same case id or `Idempotency-Key`) with the same details returns that case, with other details it is
    IdempotencyKeyReused; otherwise the team must exist (UnknownTeam) and the order line must have no open
    case (DuplicateOpenCase). `lock` takes the team's lock for the check (the open activity's insert follows).
    """
    existing = session.get(ReturnCase, case_id)
    if existing is None and idempotency_key is not None:
        existing = find_by_idempotency_key(session=session, key=idempotency_key)
    if existing is not None:
        if not matches_request(existing, data):
            raise IdempotencyKeyReused(
                f"Idempotency-Key was already used for case {existing.id} with different details"
            )
        return existing
    if lock:
        lock_teams(session=session, teams=[data.team])
    elif session.get(Team, data.team) is None:
        raise UnknownTeam(f"team {data.team!r} does not exist")
    other = find_open_case_for_order_line(session=session, order_id=data.order_id, product_sku=data.product_sku)
    if other is not None and other.id != case_id:
        raise duplicate_open_case_error(other)
    return None


def open_case(
    *, session: Session, case_id: str, data: CaseDraft, actor: str, idempotency_key: str | None
) -> tuple[ReturnCase, list[Reservation]]:
    """Insert the case (idempotent by id), queue it (in line from the database's now) and dispatch its team."""
    existing = check_filing(session=session, case_id=case_id, data=data, idempotency_key=idempotency_key, lock=True)
    if existing is not None:
        return existing, []
    case = ReturnCase(
        id=case_id,
        **data.model_dump(),
        priority_rank=PRIORITY_RANK[data.priority],
        status=CaseStatus.QUEUED,
        queued_at=db_now(session),
        idempotency_key=idempotency_key,
        open_order_line=open_order_line(data.order_id, data.product_sku),
        is_open=True,
    )
    try:
        with session.begin_nested():
            session.add(case)
            session.flush()
    except IntegrityError:
        # Another team's transaction took the order line between our check and insert.
        other = find_open_case_for_order_line(session=session, order_id=data.order_id, product_sku=data.product_sku)
        if other is None:
            raise
        raise duplicate_open_case_error(other) from None
    record_event(
        session=session,
        case=case,
        type="filed",
        actor=actor,
        reason=f"customer filed a return: {case.reason}",
        from_status=None,
        priority=case.priority,
        team=case.team,
    )
    return case, dispatch(session=session, team=data.team)


def get_case(*, session: Session, case_id: str, for_update: bool = False) -> ReturnCase:
    """The case, or CaseNotFound."""
    stmt = select(ReturnCase).where(ReturnCase.id == case_id)
    if for_update:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    case = session.scalars(stmt).first()
    if case is None:
        raise CaseNotFound(f"case {case_id} not found")
    return case


def confirm_assignment(
    *, session: Session, case_id: str, agent_id: str | None, actor: str, accept_offer: bool = False
) -> ReturnCase:
    """Turn the reservation for `agent_id` into an assignment if it still stands; return the case as it is.
    An offer (`offer_expires_at` set) is turned only when its agent accepts it (`accept_offer`)."""
    case = get_case(session=session, case_id=case_id, for_update=True)
    is_offer = case.offer_expires_at is not None
    if (
        agent_id is not None
        and case.status == CaseStatus.RESERVED
        and case.agent_id == agent_id
        and (accept_offer or not is_offer)
    ):
        now = db_now(session)
        case.status = CaseStatus.ASSIGNED
        case.assigned_at = now
        case.offer_expires_at = None
        record_event(
            session=session,
            case=case,
            type="assigned",
            actor=f"agent:{agent_id}" if is_offer else actor,
            reason="the agent accepted the offer" if is_offer else "the case workflow confirmed the reservation",
            from_status=CaseStatus.RESERVED,
            agent_id=agent_id,
            at=now,
        )
        session.flush()
    return case


def free_agent(*, session: Session, agent_id: str, case_id: str) -> Agent | None:
    """Clear the agent's hold on `case_id` (only that case) and mark them idle from now."""
    agent = session.scalars(select(Agent).where(Agent.id == agent_id).with_for_update()).first()
    if agent is None or agent.current_case_id != case_id:
        return None
    agent.current_case_id = None
    agent.available_since = db_now(session)
    return agent


def _lock_case_and_holder_teams(*, session: Session, case_id: str, also: str | None = None) -> ReturnCase:
    """Lock the case's team and its holder's team (and `also`, in name order), then the case row."""
    for _ in range(5):
        case = get_case(session=session, case_id=case_id)
        holder = session.get(Agent, case.agent_id) if case.agent_id else None
        teams = {case.team} | ({holder.team} if holder else set()) | ({also} if also else set())
        lock_teams(session=session, teams=teams)
        case = get_case(session=session, case_id=case_id, for_update=True)
        holder = session.get(Agent, case.agent_id, populate_existing=True) if case.agent_id else None
        if case.team in teams and (holder is None or holder.team in teams):
            return case
    raise ConcurrentChange(f"case {case_id}: its holder kept moving between teams")


def resolve_case(
    *, session: Session, case_id: str, agent_id: str, resolution: str | None, actor: str
) -> tuple[ReturnCase, list[Reservation]]:
    """Resolve an assigned case for its assignee, free the agent and hand them the next case."""
    case = _lock_case_and_holder_teams(session=session, case_id=case_id)
    refusal = resolve_refusal(case, agent_id)
    if refusal is not None:
        raise refusal
    if case.status == CaseStatus.RESOLVED:
        return case, _pending_reservation_of(session=session, agent_id=case.agent_id)
    return _close(session=session, case=case, to=CaseStatus.RESOLVED, actor=actor, note=resolution)


def cancel_case(
    *, session: Session, case_id: str, reason: str | None, actor: str
) -> tuple[ReturnCase, list[Reservation]]:
    """Cancel a case wherever it stands; a holding agent is freed and handed the next case."""
    case = _lock_case_and_holder_teams(session=session, case_id=case_id)
    refusal = cancel_refusal(case)
    if refusal is not None:
        raise refusal
    if case.status == CaseStatus.CANCELLED:
        return case, _pending_reservation_of(session=session, agent_id=case.agent_id)
    return _close(session=session, case=case, to=CaseStatus.CANCELLED, actor=actor, note=reason)


def _pending_reservation_of(*, session: Session, agent_id: str | None) -> list[Reservation]:
    """On a retried close: the reservation the first attempt's dispatch made for the freed agent, if still
    unconfirmed, so the retry delivers it too (signals are idempotent)."""
    if agent_id is None:
        return []
    agent = session.get(Agent, agent_id)
    if agent is None or agent.current_case_id is None:
        return []
    held = session.get(ReturnCase, agent.current_case_id)
    if held is None or held.status != CaseStatus.RESERVED:
        return []
    return [Reservation(case_id=held.id, agent_id=agent_id)]


def _close(
    *, session: Session, case: ReturnCase, to: CaseStatus, actor: str, note: str | None
) -> tuple[ReturnCase, list[Reservation]]:
    now = db_now(session)
    before = case.status
    holder_id = case.agent_id
    case.status = to
    case.open_order_line = None
    case.is_open = False
    case.offer_expires_at = None
    if to == CaseStatus.RESOLVED:
        case.resolved_at, case.resolution = now, note
    else:
        case.cancelled_at, case.cancel_reason = now, note
    record_event(
        session=session,
        case=case,
        type=to.value,
        actor=actor,
        reason="resolved by the assignee" if to == CaseStatus.RESOLVED else (note or "cancelled, no reason given"),
        from_status=before,
        agent_id=holder_id,
        at=now,
        **({"note": note} if note else {}),
    )
    freed = free_agent(session=session, agent_id=holder_id, case_id=case.id) if holder_id else None
    session.flush()
    reservations = dispatch(session=session, team=freed.team) if freed else []
    return case, reservations


def requeue(*, session: Session, case: ReturnCase, actor: str, reason: str) -> None:
    """Put a held case back in the queue at its original place (the caller holds the team locks)."""
    before, holder = case.status, case.agent_id
    case.status = CaseStatus.QUEUED
    case.agent_id = None
    case.reserved_at = None
    case.assigned_at = None
    case.offer_expires_at = None
    record_event(
        session=session, case=case, type="requeued", actor=actor, from_status=before, agent_id=holder, reason=reason
    )


# --- routing (DESIGN section 13) ----------------------------------------------------------------------------


def _unhold(*, session: Session, case: ReturnCase) -> tuple[str | None, CaseStatus]:
    """Take the case from its holder and put it back in its team's queue (its `queued_at` kept); the caller frees
    the agent and records the event. Returns the holder and the status before."""
    before, holder = CaseStatus(case.status), case.agent_id
    case.status = CaseStatus.QUEUED
    case.agent_id = None
    case.reserved_at = None
    case.assigned_at = None
    case.offer_expires_at = None
    return holder, before


def _open_offer_for(case: ReturnCase, agent_id: str | None) -> bool:
    return (
        case.status == CaseStatus.RESERVED
        and case.offer_expires_at is not None
        and agent_id is not None
        and case.agent_id == agent_id
    )


def decline_offer(*, session: Session, case_id: str, agent_id: str) -> tuple[ReturnCase, list[Reservation]]:
    """The offered agent declines: the case goes to the next agent in order (never straight back to them while
    another is free), and the decliner, freed, goes to the back of the idle order."""
    case = _lock_case_and_holder_teams(session=session, case_id=case_id)
    if case.declined_by == agent_id and case.agent_id != agent_id:
        return case, []  # a retried decline: already done
    if not _open_offer_for(case, agent_id):
        raise NotAnOffer(f"case {case_id} is not offered to agent {agent_id}")
    _unhold(session=session, case=case)
    case.declined_by = agent_id
    now = db_now(session)
    record_event(
        session=session,
        case=case,
        type="declined",
        actor=f"agent:{agent_id}",
        reason=f"agent {agent_id} declined the offer",
        from_status=CaseStatus.RESERVED,
        agent_id=agent_id,
        at=now,
    )
    free_agent(session=session, agent_id=agent_id, case_id=case_id)
    session.flush()
    return case, dispatch(session=session, team=case.team)


def miss_offer(*, session: Session, case_id: str, agent_id: str) -> tuple[ReturnCase, list[Reservation]]:
    """The offer expired unanswered: the agent is set away (they are absent) with the reason recorded, and the case
    goes back to its place in the queue and to the next free agent."""
    from core.agents import record_agent_event  # core.agents imports this module

    case = _lock_case_and_holder_teams(session=session, case_id=case_id)
    if not _open_offer_for(case, agent_id):
        return case, []  # accepted, declined, cancelled or already missed meanwhile
    _unhold(session=session, case=case)
    now = db_now(session)
    record_event(
        session=session,
        case=case,
        type="offer_missed",
        actor="workflow",
        reason=f"agent {agent_id} did not answer the offer in time",
        from_status=CaseStatus.RESERVED,
        agent_id=agent_id,
        at=now,
    )
    agent = free_agent(session=session, agent_id=agent_id, case_id=case_id)
    if agent is not None and agent.status != AgentStatus.AWAY:
        agent.status = AgentStatus.AWAY
        session.flush()
        record_agent_event(
            session=session,
            agent=agent,
            type="updated",
            actor="workflow",
            changes={"status": [AgentStatus.AVAILABLE.value, AgentStatus.AWAY.value]},
            reason=f"missed the offer of case {case_id}",
        )
    session.flush()
    return case, dispatch(session=session, team=case.team)


def escalate(*, session: Session, case_id: str) -> tuple[ReturnCase, list[Reservation]]:
    """The case waited past its team's wait SLA: it becomes `high` (keeping its `queued_at`, so it goes ahead of
    normal cases but not of older high ones)."""
    lock_teams(session=session, teams=[get_case(session=session, case_id=case_id).team])
    case = get_case(session=session, case_id=case_id, for_update=True)
    if case.status != CaseStatus.QUEUED or case.escalated_at is not None:
        return case, []
    now = db_now(session)
    before = case.priority
    case.priority = CasePriority.HIGH
    case.priority_rank = PRIORITY_RANK[CasePriority.HIGH]
    case.escalated_at = now
    record_event(
        session=session,
        case=case,
        type="escalated",
        actor="workflow",
        reason="waited past the team's wait SLA",
        from_status=CaseStatus.QUEUED,
        at=now,
        priority=[before, CasePriority.HIGH.value],
        waited_seconds=round((now - case.queued_at).total_seconds(), 3),
    )
    session.flush()
    return case, dispatch(session=session, team=case.team)


def mark_overdue(*, session: Session, case_id: str) -> ReturnCase:
    """The case stayed assigned past its team's resolve SLA: mark it overdue."""
    case = get_case(session=session, case_id=case_id, for_update=True)
    if case.status != CaseStatus.ASSIGNED or case.overdue_at is not None:
        return case
    now = db_now(session)
    case.overdue_at = now
    record_event(
        session=session,
        case=case,
        type="overdue",
        actor="workflow",
        reason="assigned past the team's resolve SLA",
        from_status=CaseStatus.ASSIGNED,
        agent_id=case.agent_id,
        at=now,
        assigned_seconds=round((now - case.assigned_at).total_seconds(), 3) if case.assigned_at else None,
    )
    session.flush()
    return case


@dataclass
class Transfer:
    """What a transfer did: the case, the reservations dispatch made, and the holder it took the case from."""

    case: ReturnCase
    reservations: list[Reservation]
    requeues: list[Requeue]


def transfer_case(
    *, session: Session, case_id: str, team: str, note: str | None, actor: str, by_agent: str | None = None
) -> Transfer:
    """Move an open case to `team`'s queue with its original `queued_at`; its holder is freed and takes their next
    case, in this transaction. `by_agent`: the agent asking, who must hold the case."""
    case = _lock_case_and_holder_teams(session=session, case_id=case_id, also=team)
    if case.status in TERMINAL_STATUSES:
        raise CannotTransfer(f"case {case_id} is already {case.status}")
    if by_agent is not None and case.agent_id != by_agent:
        raise WrongAgent(f"case {case_id} is not held by agent {by_agent}")
    if case.team == team:
        raise CannotTransfer(f"case {case_id} is already in team {team!r}")
    from_team = case.team
    holder, before = _unhold(session=session, case=case)
    case.team = team
    case.declined_by = None
    case.overdue_at = None
    record_event(
        session=session,
        case=case,
        type="transferred",
        actor=actor,
        reason=note or f"moved from team {from_team} to {team}",
        from_status=before,
        agent_id=holder,
        from_team=from_team,
        to_team=team,
        note=note,
    )
    freed = free_agent(session=session, agent_id=holder, case_id=case_id) if holder else None
    session.flush()
    reservations = dispatch(session=session, team=freed.team) if freed else []
    reservations += dispatch(session=session, team=team)
    requeues = [Requeue(case_id=case_id, agent_id=holder, actor=actor)] if holder else []
    return Transfer(case=case, reservations=reservations, requeues=requeues)


def reopen_check(*, session: Session, case: ReturnCase, window_days: float) -> None:
    """Why a resolved case may not be reopened (raised), by the database's clock."""
    if case.status != CaseStatus.RESOLVED:
        raise CannotReopen(f"case {case.id} is {case.status}; only a resolved case can be reopened")
    if case.resolved_at is None or case.resolved_at < db_now(session) - timedelta(days=window_days):
        raise CannotReopen(f"case {case.id} was resolved more than {window_days:g} days ago; file a new case")
    other = find_open_case_for_order_line(session=session, order_id=case.order_id, product_sku=case.product_sku)
    if other is not None and other.id != case.id:
        raise duplicate_open_case_error(other)


def reopen_case(
    *, session: Session, case_id: str, reason: str | None, actor: str, window_days: float
) -> tuple[ReturnCase, list[Reservation]]:
    """Queue a resolved case again as `high` (same id and history); idempotent: an open case is returned as is."""
    lock_teams(session=session, teams=[get_case(session=session, case_id=case_id).team])
    case = get_case(session=session, case_id=case_id, for_update=True)
    if case.status in (CaseStatus.QUEUED, CaseStatus.RESERVED, CaseStatus.ASSIGNED):
        return case, []
    reopen_check(session=session, case=case, window_days=window_days)
    now = db_now(session)
    try:
        with session.begin_nested():
            case.open_order_line = open_order_line(case.order_id, case.product_sku)
            case.is_open = True
            case.status = CaseStatus.QUEUED
            session.flush()
    except IntegrityError:
        session.refresh(case)
        other = find_open_case_for_order_line(session=session, order_id=case.order_id, product_sku=case.product_sku)
        if other is None:
            raise
        raise duplicate_open_case_error(other) from None
    case.priority = CasePriority.HIGH
    case.priority_rank = PRIORITY_RANK[CasePriority.HIGH]
    case.queued_at = now
    case.agent_id = None
    case.reserved_at = case.assigned_at = case.resolved_at = None
    case.resolution = None
    case.escalated_at = case.overdue_at = case.offer_expires_at = None
    case.declined_by = None
    case.reopened_at = now
    record_event(
        session=session,
        case=case,
        type="reopened",
        actor=actor,
        reason=reason or "reopened, no reason given",
        from_status=CaseStatus.RESOLVED,
        at=now,
    )
    session.flush()
    return case, dispatch(session=session, team=case.team)


def list_cases(
    *,
    session: Session,
    status: str | None = None,
    agent_id: str | None = None,
    team: str | None = None,
    customer_email: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
    visible_to: tuple[str, str] | None = None,
) -> tuple[list[ReturnCase], str | None]:
    """Cases oldest first, filtered; returns the page and the cursor of the next one. `visible_to` (an agent's
    team and id) keeps only that team's cases and the case the agent holds."""
    stmt = select(ReturnCase)
    if visible_to is not None:
        own_team, own_id = visible_to
        stmt = stmt.where((ReturnCase.team == own_team) | (ReturnCase.agent_id == own_id))
    if status == ACTIVE:
        # `= true`, not `IS TRUE`, so the (team,) is_open, queued_at, id index serves it.
        stmt = stmt.where(ReturnCase.is_open == true())
    elif status is not None:
        stmt = stmt.where(ReturnCase.status == status)
    if agent_id is not None:
        stmt = stmt.where(ReturnCase.agent_id == agent_id)
    if team is not None:
        stmt = stmt.where(ReturnCase.team == team)
    if customer_email is not None:
        stmt = stmt.where(ReturnCase.customer_email == customer_email.strip().lower())
    if cursor is not None:
        after_at, after_id = decode_cursor(cursor)
        stmt = stmt.where(
            (ReturnCase.queued_at > after_at) | ((ReturnCase.queued_at == after_at) & (ReturnCase.id > after_id))
        )
    rows = list(session.scalars(stmt.order_by(ReturnCase.queued_at, ReturnCase.id).limit(limit + 1)))
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], encode_cursor(last.queued_at, last.id)


def encode_cursor(at: datetime, row_id: str) -> str:
    """An opaque cursor for the position after (at, id)."""
    return base64.urlsafe_b64encode(f"{at.isoformat()}|{row_id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Parse a cursor made by `encode_cursor`, or raise Invalid."""
    try:
        at, row_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|", 1)
        return datetime.fromisoformat(at), row_id
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise Invalid("cursor is not valid; pass back a next_cursor from a previous page") from None


def case_history(*, session: Session, case_id: str) -> list[CaseEvent]:
    """Every event of the case, oldest first."""
    if not session.scalar(select(exists().where(ReturnCase.id == case_id))):
        raise CaseNotFound(f"case {case_id} not found")
    return list(session.scalars(select(CaseEvent).where(CaseEvent.case_id == case_id).order_by(CaseEvent.id)))


def stale_reservations(*, session: Session, unconfirmed_for: timedelta) -> list[Reservation]:
    """Reservations their case workflow has not confirmed for `unconfirmed_for` (by the database's clock)."""
    # An offer waits for its agent until it expires: only one left unanswered past that is re-signalled (its
    # workflow then runs the missed-offer step).
    cutoff = db_now(session) - unconfirmed_for
    rows = session.execute(
        select(ReturnCase.id, ReturnCase.agent_id).where(
            ReturnCase.status == CaseStatus.RESERVED,
            ReturnCase.reserved_at < cutoff,
            or_(ReturnCase.offer_expires_at.is_(None), ReturnCase.offer_expires_at < cutoff),
        )
    ).all()
    return [Reservation(case_id=case_id, agent_id=agent_id) for case_id, agent_id in rows if agent_id]
