"""What a case workflow shows in the Temporal UI: its search attributes and its live details panel.

Pure functions of the case as the database returned it (no clock, no I/O), so they are deterministic.
"""

from datetime import datetime, timedelta
from typing import Any

from temporalio.common import SearchAttributeUpdate

from core import search_attributes as sa
from core.models import CaseStatus
from workflows.messages import CaseRecord


def search_attribute_updates(case: CaseRecord) -> list[SearchAttributeUpdate[Any]]:
    """Every search attribute of the case, current (AgentId is unset while nobody holds it)."""
    return [
        sa.CASE_STATUS.value_set(case.status.value),
        sa.AGENT_ID.value_set(case.agent_id) if case.agent_id else sa.AGENT_ID.value_unset(),
        sa.TEAM.value_set(case.team),
        sa.CASE_PRIORITY.value_set(case.priority.value),
        sa.CUSTOMER_EMAIL.value_set(case.customer_email),
        sa.ORDER_ID.value_set(case.order_id),
        sa.CASE_ESCALATED.value_set(case.escalated_at is not None),
        sa.CASE_OVERDUE.value_set(case.overdue_at is not None and case.status == CaseStatus.ASSIGNED),
    ]


def format_duration(delta: timedelta) -> str:
    """`delta` the way a person reads it: 850ms, 42s, 4m 12s, 3h 05m, 2d 4h."""
    seconds = max(delta.total_seconds(), 0.0)
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def _at(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _waited(case: CaseRecord, until: datetime | None) -> str:
    if until is None:
        return ""
    return f"waited {format_duration(until - case.queued_at)} for an agent (in line since {_at(case.queued_at)})"


def current_details(case: CaseRecord) -> str:
    """The live details panel: the state, who holds the case, and how long it waited."""
    agent = f"agent `{case.agent_id}`" if case.agent_id else "no agent"
    if case.status == CaseStatus.QUEUED:
        lines = ["**queued**, no agent yet", f"waiting since {_at(case.queued_at)}"]
    elif case.status == CaseStatus.RESERVED:
        lines = [f"**reserved** for {agent}, being confirmed", _waited(case, case.reserved_at)]
    elif case.status == CaseStatus.ASSIGNED:
        lines = [f"**assigned** to {agent}", _waited(case, case.assigned_at)]
    elif case.status == CaseStatus.RESOLVED:
        took = format_duration(case.resolved_at - case.queued_at) if case.resolved_at else "?"
        lines = [
            f"**resolved** by {agent}",
            _waited(case, case.assigned_at),
            f"resolved {took} after joining the queue",
        ]
    else:
        lines = [f"**{case.status.value}** ({agent})", f"in line since {_at(case.queued_at)}"]
        if case.cancel_reason:
            lines.append(f"reason: {case.cancel_reason}")
    if case.offer_expires_at is not None and case.status == CaseStatus.RESERVED:
        lines.append(f"offer expires {_at(case.offer_expires_at)}")
    if case.escalated_at is not None:
        lines.append(f"escalated {_at(case.escalated_at)} (waited past the wait SLA)")
    if case.overdue_at is not None:
        lines.append(f"overdue since {_at(case.overdue_at)} (past the resolve SLA)")
    lines.append(f"team `{case.team}`, priority {case.priority.value}")
    return "\n\n".join(line for line in lines if line)
