"""What a customer sees of their case through its tracking token: never the agent, never an email."""

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.models import CaseStatus, ReturnCase

STATUS_WORDS = {
    CaseStatus.QUEUED: "waiting for a support agent",
    CaseStatus.RESERVED: "a support agent is taking your case",
    CaseStatus.ASSIGNED: "a support agent is handling your case",
    CaseStatus.RESOLVED: "resolved",
    CaseStatus.CANCELLED: "cancelled",
}


def place_in_line(*, session: Session, case: ReturnCase) -> int | None:
    """1 when the case is next for its team's next free agent; None unless it is waiting. The order is
    dispatch's: priority, then time in the queue, then id."""
    if case.status != CaseStatus.QUEUED:
        return None
    ahead = session.scalar(
        select(func.count()).where(
            ReturnCase.team == case.team,
            ReturnCase.status == CaseStatus.QUEUED,
            (ReturnCase.priority_rank < case.priority_rank)
            | (
                (ReturnCase.priority_rank == case.priority_rank)
                & (
                    (ReturnCase.queued_at < case.queued_at)
                    | ((ReturnCase.queued_at == case.queued_at) & (ReturnCase.id < case.id))
                )
            ),
        )
    )
    return (ahead or 0) + 1


def status_in_words(case: ReturnCase, place: int | None) -> str:
    """The case's status as the customer reads it."""
    words = STATUS_WORDS[CaseStatus(case.status)]
    if place is not None:
        return f"{words}: {'you are next' if place == 1 else f'{place - 1} ahead of you'}"
    return words
