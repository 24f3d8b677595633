"""Tell case workflows what an agent change did to them (the reconciler covers a lost signal)."""

import asyncio
import logging

from temporalio.client import Client

from core.agents import AgentChange
from core.ids import workflow_id_for_case
from core.schemas import AgentReservedInput, CaseRequeuedInput
from workflows.return_case import ReturnCaseWorkflow

log = logging.getLogger("returns.api")


async def notify_case_workflows(client: Client, change: AgentChange, actor: str) -> None:
    """Signal the requeued case and every case dispatch reserved an agent for."""
    sends = []
    if change.requeued_case_id is not None:
        handle = client.get_workflow_handle_for(ReturnCaseWorkflow.run, workflow_id_for_case(change.requeued_case_id))
        sends.append(
            handle.signal(ReturnCaseWorkflow.case_requeued, CaseRequeuedInput(agent_id=change.agent.id, actor=actor))
        )
    for r in change.reservations:
        handle = client.get_workflow_handle_for(ReturnCaseWorkflow.run, workflow_id_for_case(r.case_id))
        sends.append(handle.signal(ReturnCaseWorkflow.agent_reserved, AgentReservedInput(agent_id=r.agent_id)))
    for outcome in await asyncio.gather(*sends, return_exceptions=True):
        if isinstance(outcome, Exception):
            # Committed already; the reconciler re-signals reservations that stay unconfirmed.
            log.warning(
                "could not signal a case workflow after agent change: %s", outcome, extra={"agent_id": change.agent.id}
            )
