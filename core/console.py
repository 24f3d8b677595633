"""Read models for the console's pages: the queue's last hour and case search. Functions take the session as
a keyword and never commit."""

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from core.clock import db_now
from core.models import ReturnCase

CHART_POINTS = 13  # every 5 minutes over the last hour, both ends included
CHART_STEP = timedelta(minutes=5)


@dataclass(frozen=True)
class WaitingPoint:
    """How many cases of a team waited at `at`."""

    at: datetime
    waiting: int


def _first(*times: datetime | None) -> datetime | None:
    known = [t for t in times if t is not None]
    return min(known) if known else None


def waiting_last_hour(*, session: Session, teams: list[str]) -> dict[str, list[WaitingPoint]]:
    """Per team, the number of waiting cases every five minutes over the last hour (a case waits from its
    filing until it is first reserved, assigned, resolved or cancelled)."""
    now = db_now(session)
    start = now - CHART_STEP * (CHART_POINTS - 1)
    rows = session.execute(
        select(
            ReturnCase.team,
            ReturnCase.queued_at,
            ReturnCase.reserved_at,
            ReturnCase.assigned_at,
            ReturnCase.resolved_at,
            ReturnCase.cancelled_at,
        ).where(
            ReturnCase.team.in_(teams),
            ReturnCase.queued_at <= now,
            or_(
                ReturnCase.is_open.is_(True),
                func.coalesce(ReturnCase.resolved_at, ReturnCase.cancelled_at) >= start,
            ),
        )
    ).all()
    points = [start + CHART_STEP * i for i in range(CHART_POINTS)]
    series: dict[str, list[int]] = {team: [0] * CHART_POINTS for team in teams}
    for team, queued_at, reserved_at, assigned_at, resolved_at, cancelled_at in rows:
        left = _first(reserved_at, assigned_at, resolved_at, cancelled_at)
        for i, at in enumerate(points):
            if queued_at <= at and (left is None or left > at):
                series[team][i] += 1
    return {
        team: [WaitingPoint(at, n) for at, n in zip(points, counts, strict=True)] for team, counts in series.items()
    }


def search_cases(*, session: Session, query: str, limit: int = 50) -> list[ReturnCase]:
    """Cases whose order number or customer email is `query` (exactly, newest first)."""
    text = query.strip()
    if not text:
        return []
    stmt = select(ReturnCase).where(or_(ReturnCase.order_id == text, ReturnCase.customer_email == text.lower()))
    return list(session.scalars(stmt.order_by(ReturnCase.queued_at.desc(), ReturnCase.id.desc()).limit(limit)))
