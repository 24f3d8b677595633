"""Which resolve and cancel requests a case accepts: one rule set for the workflow, the database and the API."""

from typing import Protocol

from core.errors import CaseClosed, CaseNotAssigned, CaseNotFound, DomainError, WrongAgent
from core.models import TERMINAL_STATUSES, CaseStatus


class CaseLike(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def agent_id(self) -> str | None: ...


def resolve_refusal(case: CaseLike | None, agent_id: str) -> DomainError | None:
    """Why `agent_id` may not resolve the case, or None (a repeat by the resolving agent is allowed)."""
    if case is None:
        return CaseNotAssigned("the case is still being filed")
    if case.status == CaseStatus.RESOLVED and case.agent_id == agent_id:
        return None
    if case.status in TERMINAL_STATUSES:
        return CaseClosed(f"case {case.id} is already {case.status}")
    if case.status != CaseStatus.ASSIGNED:
        return CaseNotAssigned(f"case {case.id} is {case.status}, not assigned; only its assignee can resolve it")
    if case.agent_id != agent_id:
        return WrongAgent(f"case {case.id} is assigned to another agent, not {agent_id}")
    return None


def cancel_refusal(case: CaseLike | None) -> DomainError | None:
    """Why the case may not be cancelled, or None (a repeat on a cancelled case is allowed)."""
    if case is None:
        return CaseNotFound("the case is still being filed")
    if case.status == CaseStatus.RESOLVED:
        return CaseClosed(f"case {case.id} is already resolved")
    return None
