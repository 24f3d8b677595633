"""Teams and their queue figures."""

from datetime import datetime

from sqlalchemy import case, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.clock import db_now
from core.errors import TeamExists, TeamNotFound
from core.models import Agent, AgentStatus, CaseStatus, ReturnCase, Team
from core.schemas import TeamQueue

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
