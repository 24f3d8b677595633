"""Teams and their queue figures."""

from collections import defaultdict
from datetime import datetime

from sqlalchemy import case, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.clock import db_now
from core.errors import TeamExists, TeamNotFound
from core.models import Agent, AgentStatus, CaseStatus, ReturnCase, Team
from core.schemas import TeamQueue, TeamUpdate

DEFAULT_TEAM = "returns"


def create_team(*, session: Session, name: str) -> Team:
    """Add a routing group."""
    if session.get(Team, name) is not None:
        raise TeamExists(f"team {name!r} already exists")
    team = Team(name=name)
    try:
        with session.begin_nested():
            session.add(team)
            session.flush()
    except IntegrityError:
        raise TeamExists(f"team {name!r} already exists") from None
    return team


def get_team(*, session: Session, name: str) -> Team:
    """The team, or TeamNotFound."""
    team = session.get(Team, name)
    if team is None:
        raise TeamNotFound(f"team {name!r} not found")
    return team


TIMER_FIELDS = ("wait_sla_seconds", "resolve_sla_seconds", "offer_timeout_seconds")


def update_team(*, session: Session, name: str, data: TeamUpdate) -> tuple[Team, list[str]]:
    """Change the team's routing timers (the fields sent; null: off); return the team and its open cases, whose
    workflows must learn the new timers."""
    team = session.scalars(select(Team).where(Team.name == name).with_for_update()).first()
    if team is None:
        raise TeamNotFound(f"team {name!r} not found")
    for field in TIMER_FIELDS:
        if field in data.model_fields_set:
            setattr(team, field, getattr(data, field))
    session.flush()
    open_cases = list(
        session.scalars(select(ReturnCase.id).where(ReturnCase.team == name, ReturnCase.is_open.is_(True)))
    )
    return team, open_cases


def list_teams(*, session: Session) -> list[Team]:
    """Every team by name."""
    return list(session.scalars(select(Team).order_by(Team.name)))


def queue_figures(*, session: Session, teams: list[str] | None = None) -> list[TeamQueue]:
    """Waiting count, oldest wait and agent counts per team."""
    names = teams if teams is not None else [t.name for t in list_teams(session=session)]
    waiting = {
        team: (count, oldest)
        for team, count, oldest in session.execute(
            select(ReturnCase.team, func.count(), func.min(ReturnCase.queued_at))
            .where(ReturnCase.status == CaseStatus.QUEUED, ReturnCase.team.in_(names))
            .group_by(ReturnCase.team)
        ).all()
    }
    kind = case(
        (Agent.current_case_id.is_not(None), "busy"),
        (Agent.status == AgentStatus.AVAILABLE, "available"),
        else_="away",
    )
    agent_counts: dict[tuple[str, str], int] = {
        (team, k): n
        for team, k, n in session.execute(
            select(Agent.team, kind, func.count())
            .where(Agent.deleted_at.is_(None), Agent.team.in_(names))
            .group_by(Agent.team, kind)
        ).all()
    }
    overdue: dict[str, list[str]] = defaultdict(list)
    for team, case_id in session.execute(
        select(ReturnCase.team, ReturnCase.id)
        .where(
            ReturnCase.status == CaseStatus.ASSIGNED,
            ReturnCase.overdue_at.is_not(None),
            ReturnCase.team.in_(names),
        )
        .order_by(ReturnCase.overdue_at, ReturnCase.id)
    ).all():
        overdue[team].append(case_id)
    escalated: dict[str, int] = {
        str(team): int(count)
        for team, count in session.execute(
            select(ReturnCase.team, func.count())
            .where(
                ReturnCase.status == CaseStatus.QUEUED,
                ReturnCase.escalated_at.is_not(None),
                ReturnCase.team.in_(names),
            )
            .group_by(ReturnCase.team)
        ).all()
    }
    now = db_now(session)
    figures = []
    for name in names:
        count, oldest = waiting.get(name, (0, None))
        figures.append(
            TeamQueue(
                team=name,
                waiting=count,
                next_case_id=_next_in_line(session=session, team=name) if count else None,
                oldest_wait_seconds=_seconds_since(oldest, now),
                agents_available=agent_counts.get((name, "available"), 0),
                agents_busy=agent_counts.get((name, "busy"), 0),
                agents_away=agent_counts.get((name, "away"), 0),
                overdue=len(overdue[name]),
                escalated_waiting=escalated.get(name, 0),
                overdue_case_ids=overdue[name][:50],
            )
        )
    return figures


def _seconds_since(at: datetime | None, now: datetime) -> float | None:
    return None if at is None else round((now - at).total_seconds(), 3)


def _next_in_line(*, session: Session, team: str) -> str | None:
    return session.scalars(
        select(ReturnCase.id)
        .where(ReturnCase.team == team, ReturnCase.status == CaseStatus.QUEUED)
        .order_by(ReturnCase.priority_rank, ReturnCase.queued_at, ReturnCase.id)
        .limit(1)
    ).first()
