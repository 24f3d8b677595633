"""Agents: add, list, read, edit, remove."""

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from api.deps import ActorDep, DatabaseDep, TemporalClientDep
from api.errors import error_responses
from api.notify import notify_case_workflows
from core import agents as agent_service
from core.models import AgentStatus
from core.schemas import AgentCreate, AgentPublic, AgentUpdate, Page

router = APIRouter(prefix="/agents", tags=["agents"])


@router.post(
    "", status_code=status.HTTP_201_CREATED, response_model=AgentPublic, responses=error_responses(400, 409, 422, 503)
)
async def create_agent(body: AgentCreate, db: DatabaseDep, client: TemporalClientDep, actor: ActorDep) -> AgentPublic:
    """Add an agent; an available one takes the oldest waiting case of their team at once."""
    change = await db.write(lambda s: agent_service.create_agent(session=s, data=body, actor=actor))
    await notify_case_workflows(client, change)
    return AgentPublic.model_validate(change.agent)


@router.get("", response_model=Page[AgentPublic], responses=error_responses(422, 503))
async def read_agents(
    db: DatabaseDep,
    status: AgentStatus | None = None,
    team: Annotated[str | None, Query(max_length=64)] = None,
    cursor: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Page[AgentPublic]:
    """List agents, filtered by status or team; each shows the case they hold."""
    rows, next_cursor = await db.read(
        lambda s: agent_service.list_agents(session=s, status=status, team=team, cursor=cursor, limit=limit)
    )
    return Page[AgentPublic](items=[AgentPublic.model_validate(a) for a in rows], next_cursor=next_cursor)


@router.get("/{agent_id}", response_model=AgentPublic, responses=error_responses(404, 422, 503))
async def read_agent(agent_id: str, db: DatabaseDep) -> AgentPublic:
    """One agent."""
    return AgentPublic.model_validate(await db.read(lambda s: agent_service.get_agent(session=s, agent_id=agent_id)))


@router.patch("/{agent_id}", response_model=AgentPublic, responses=error_responses(400, 404, 409, 422, 503))
async def update_agent(
    agent_id: str, body: AgentUpdate, db: DatabaseDep, client: TemporalClientDep, actor: ActorDep
) -> AgentPublic:
    """Edit name, email, status or team; becoming available hands the agent the next waiting case."""
    change = await db.write(lambda s: agent_service.update_agent(session=s, agent_id=agent_id, data=body, actor=actor))
    await notify_case_workflows(client, change)
    return AgentPublic.model_validate(change.agent)


@router.delete("/{agent_id}", status_code=status.HTTP_204_NO_CONTENT, responses=error_responses(404, 422, 503))
async def delete_agent(agent_id: str, db: DatabaseDep, client: TemporalClientDep, actor: ActorDep) -> Response:
    """Remove an agent; a case they held goes back to the front of the queue."""
    change = await db.write(lambda s: agent_service.remove_agent(session=s, agent_id=agent_id, actor=actor))
    await notify_case_workflows(client, change)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
