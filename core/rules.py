"""Which resolve and cancel requests a case accepts, and which routing timer a case runs: one rule set for the
workflow, the database and the API."""

from dataclasses import dataclass
from datetime import datetime, timedelta
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


class TimedCase(CaseLike, Protocol):
    @property
    def queued_at(self) -> datetime: ...
    @property
    def assigned_at(self) -> datetime | None: ...
    @property
    def escalated_at(self) -> datetime | None: ...
    @property
    def overdue_at(self) -> datetime | None: ...
    @property
    def offer_expires_at(self) -> datetime | None: ...


class Timers(Protocol):
    @property
    def wait_sla_seconds(self) -> int | None: ...
    @property
    def resolve_sla_seconds(self) -> int | None: ...


@dataclass(frozen=True)
class RoutingTimer:
    """The routing timer a case runs now (DESIGN section 13): what fires (`escalate`, `overdue`, `offer_missed`),
    when (by the database's clock, from the case's own times), and a summary for the Temporal UI."""

    step: str
    due_at: datetime
    summary: str
    agent_id: str | None = None


def routing_timer(case: TimedCase, timers: Timers | None) -> RoutingTimer | None:
    """The timer the case's workflow runs now, if any: an offer's expiry, the wait SLA while queued (until
    escalated), the resolve SLA while assigned (until overdue)."""
    if case.status == CaseStatus.RESERVED and case.offer_expires_at is not None and case.agent_id:
        return RoutingTimer(
            "offer_missed",
            case.offer_expires_at,
            f"offer to agent {case.agent_id}: set them away and requeue the case unless they answer",
            case.agent_id,
        )
    if timers is None:
        return None
    if case.status == CaseStatus.QUEUED and timers.wait_sla_seconds and case.escalated_at is None:
        return RoutingTimer(
            "escalate",
            case.queued_at + timedelta(seconds=timers.wait_sla_seconds),
            f"wait SLA {timers.wait_sla_seconds}s: escalate to high priority if still queued",
        )
    if (
        case.status == CaseStatus.ASSIGNED
        and timers.resolve_sla_seconds
        and case.overdue_at is None
        and case.assigned_at is not None
    ):
        return RoutingTimer(
            "overdue",
            case.assigned_at + timedelta(seconds=timers.resolve_sla_seconds),
            f"resolve SLA {timers.resolve_sla_seconds}s: mark overdue if still assigned to {case.agent_id}",
        )
    return None
