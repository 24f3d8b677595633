"""Telling case workflows what dispatch did to them: the one mapping from reservations and requeues to signals,
with a sender for workflow code (a durable external signal) and one for a client (the API).

A signal that cannot be delivered is logged and dropped: the reconciler re-signals every reservation that
stays unconfirmed, so nothing is lost.
"""

import asyncio
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from temporalio import workflow
from temporalio.client import Client
from temporalio.exceptions import FailureError

with workflow.unsafe.imports_passed_through():
    from core.ids import workflow_id_for_case
    from core.logging import case_context
    from workflows.messages import AgentReservedInput, CaseRequeuedInput, Message, Requeue, Reservation

# The case workflow's signal names (ReturnCaseWorkflow declares its handlers with these).
AGENT_RESERVED = "agent_reserved"
CASE_REQUEUED = "case_requeued"
TEAM_TIMERS = "team_timers"
CASE_MOVED = "case_moved"

log = logging.getLogger("returns.delivery")


@dataclass(frozen=True)
class Delivery:
    """One signal to one case workflow."""

    case_id: str
    agent_id: str
    signal: str
    payload: Message

    @property
    def workflow_id(self) -> str:
        return workflow_id_for_case(self.case_id)


def deliveries(reservations: Iterable[Reservation], requeues: Iterable[Requeue] = ()) -> list[Delivery]:
    """The signals that tell each affected case workflow: requeued cases first, then every reservation."""
    out = [
        Delivery(r.case_id, r.agent_id, CASE_REQUEUED, CaseRequeuedInput(agent_id=r.agent_id, actor=r.actor))
        for r in requeues
    ]
    out += [
        Delivery(r.case_id, r.agent_id, AGENT_RESERVED, AgentReservedInput(agent_id=r.agent_id)) for r in reservations
    ]
    return out


async def signal_from_workflow(items: Sequence[Delivery]) -> None:
    """Send the signals from workflow code (each is a durable command in that workflow's history)."""

    async def send(item: Delivery) -> None:
        try:
            await workflow.get_external_workflow_handle(item.workflow_id).signal(item.signal, item.payload)
        except FailureError as err:
            workflow.logger.warning(
                "could not signal %s to case %s: %s",
                item.signal,
                item.case_id,
                err,
                extra=case_context(item.case_id, item.agent_id),
            )

    await asyncio.gather(*(send(item) for item in items))


async def signal_from_client(client: Client, items: Sequence[Delivery]) -> None:
    """Send the signals through a client (after a commit outside any workflow)."""
    outcomes = await asyncio.gather(
        *(client.get_workflow_handle(item.workflow_id).signal(item.signal, item.payload) for item in items),
        return_exceptions=True,
    )
    for item, outcome in zip(items, outcomes, strict=True):
        if isinstance(outcome, Exception):
            log.warning(
                "could not signal %s to case %s: %s",
                item.signal,
                item.case_id,
                outcome,
                extra=case_context(item.case_id, item.agent_id),
            )
