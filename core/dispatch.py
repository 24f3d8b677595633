"""Dispatch: the one place where agents meet cases. Call it only inside a write transaction."""

from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.clock import db_now
from core.errors import UnknownTeam
from core.models import Agent, AgentStatus, CaseEvent, CaseStatus, ReturnCase, Team
from core.outbox import buffer_event
from core.views import to_public
from workflows.messages import Reservation

# Pairs made per round; dispatch loops until agents or cases run out.
DISPATCH_BATCH = 50


def lock_teams(*, session: Session, teams: Iterable[str]) -> None:
    """Lock team rows in name order: every writer that touches a team's agents or queue goes through here first."""
    names = sorted(set(teams))
    if not names:
        return
    found = session.scalars(select(Team.name).where(Team.name.in_(names)).order_by(Team.name).with_for_update()).all()
    missing = set(names) - set(found)
    if missing:
        raise UnknownTeam(f"team {sorted(missing)[0]!r} does not exist")


def record_event(
    *,
    session: Session,
    case: ReturnCase,
    type: str,
    actor: str,
    reason: str,
    from_status: str | None,
    agent_id: str | None = None,
    at: datetime | None = None,
    **data: object,
) -> None:
    """Append one history row for a transition the caller just made to `case`: who made it (`actor`) and why.

    The row carries the case as it stands now (a filing records `filed`, `reserved` and `assigned` in one
    transaction, each with its own state); it gets its id and is inserted when the transaction commits.
    """
    buffer_event(
        session=session,
        row=CaseEvent(
            case_id=case.id,
            at=at or db_now(session),
            type=type,
            actor=actor,
            from_status=from_status,
            to_status=case.status,
            agent_id=agent_id,
            data={**data, "reason": reason},
            snapshot=to_public(case).model_dump(mode="json"),
        ),
    )


def dispatch(*, session: Session, team: str, actor: str = "dispatch") -> list[Reservation]:
    """Reserve free agents of `team` for its waiting cases, in serving order; return the reservations.

    With the team's `offer_timeout_seconds` set, each reservation is an offer (`offer_expires_at`, event
    `offered`) that the agent accepts or declines. A case is not paired with the agent who last declined it
    (`declined_by`): the next agent in order takes it, and while no other agent is free it waits at its place.
    """
    lock_teams(session=session, teams=[team])
    offer_seconds = session.scalar(select(Team.offer_timeout_seconds).where(Team.name == team))
    reservations: list[Reservation] = []
    while True:
        agents = list(
            session.scalars(
                select(Agent)
                .where(
                    Agent.team == team,
                    Agent.status == AgentStatus.AVAILABLE,
                    Agent.current_case_id.is_(None),
                    Agent.deleted_at.is_(None),
                )
                .order_by(Agent.available_since, Agent.id)
                .limit(DISPATCH_BATCH)
                .with_for_update()
            ).all()
        )
        if not agents:
            return reservations
        # One case more than agents per agent: a case passed over (its decliner is the only one free) leaves
        # room for the next.
        cases = session.scalars(
            select(ReturnCase)
            .where(ReturnCase.team == team, ReturnCase.status == CaseStatus.QUEUED)
            .order_by(ReturnCase.priority_rank, ReturnCase.queued_at, ReturnCase.id)
            .limit(2 * len(agents))
            .with_for_update()
        ).all()
        now = db_now(session)
        made = 0
        free = list(agents)
        for case in cases:
            agent = next((a for a in free if a.id != case.declined_by), None)
            if agent is None:
                continue
            free.remove(agent)
            made += 1
            case.status = CaseStatus.RESERVED
            case.agent_id = agent.id
            case.reserved_at = now
            case.declined_by = None
            case.offer_expires_at = now + timedelta(seconds=offer_seconds) if offer_seconds else None
            agent.current_case_id = case.id
            record_event(
                session=session,
                case=case,
                type="offered" if offer_seconds else "reserved",
                actor=actor,
                reason=f"first in line in team {team} when agent {agent.id} was free"
                + (f"; offered for {offer_seconds}s" if offer_seconds else ""),
                from_status=CaseStatus.QUEUED,
                agent_id=agent.id,
                at=now,
                waited_seconds=round((now - case.queued_at).total_seconds(), 3),
            )
            reservations.append(Reservation(case_id=case.id, agent_id=agent.id))
            if not free:
                break
        session.flush()
        if made == 0 or len(agents) < DISPATCH_BATCH or len(cases) < 2 * len(agents):
            return reservations
