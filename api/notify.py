"""Tell case workflows what an agent change did to them (the reconciler covers a lost signal)."""

import asyncio
import logging

from temporalio.client import Client

from core.agents import AgentChange
from core.ids import workflow_id_for_case
from core.logging import case_context
from core.schemas import AgentReservedInput, CaseRequeuedInput
from workflows.return_case import ReturnCaseWorkflow

log = logging.getLogger("returns.api")


async def notify_case_workflows(client: Client, change: AgentChange, actor: str) -> None:
    """Signal the requeued case and every case dispatch reserved an agent for."""
    sends = []
    # The case each signal is about, and the agent it concerns, for the log line should it fail.
    targets: list[tuple[str, str | None]] = []
    if change.requeued_case_id is not None:
        handle = client.get_workflow_handle_for(ReturnCaseWorkflow.run, workflow_id_for_case(change.requeued_case_id))
        sends.append(
            handle.signal(ReturnCaseWorkflow.case_requeued, CaseRequeuedInput(agent_id=change.agent.id, actor=actor))
        )
        targets.append((change.requeued_case_id, None))
    for r in change.reservations:
        handle = client.get_workflow_handle_for(ReturnCaseWorkflow.run, workflow_id_for_case(r.case_id))
        sends.append(handle.signal(ReturnCaseWorkflow.agent_reserved, AgentReservedInput(agent_id=r.agent_id)))
        targets.append((r.case_id, r.agent_id))
    outcomes = await asyncio.gather(*sends, return_exceptions=True)
    for (case_id, agent_id), outcome in zip(targets, outcomes, strict=True):
        if isinstance(outcome, Exception):
            # Committed already; the reconciler re-signals reservations that stay unconfirmed.
            log.warning(
                "could not signal case %s after a change to agent %s: %s",
                case_id,
                change.agent.id,
                outcome,
                extra=case_context(case_id, agent_id),
            )
