"""Tell case workflows what an agent change did to them (the reconciler covers a lost signal)."""

from temporalio.client import Client

from core.agents import AgentChange
from workflows.delivery import deliveries, signal_from_client


async def notify_case_workflows(client: Client, change: AgentChange) -> None:
    """Signal the requeued case and every case dispatch reserved an agent for."""
    await signal_from_client(client, deliveries(change.reservations, change.requeues))
