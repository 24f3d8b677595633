"""Agents: add, list, read, edit, remove (admins); an agent sets their own availability."""

from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from fastapi.concurrency import run_in_threadpool

from api.deps import DatabaseDep, TemporalClientDep
from api.errors import error_responses
from api.notify import notify_case_workflows
from api.security import Allow, CurrentPrincipal, RuledRoute, forbidden
from core import agents as agent_service
from core.models import AgentStatus
from core.schemas import AgentCreate, AgentPublic, AgentUpdate, Page
from core.security import hash_password

router = APIRouter(prefix="/agents", tags=["agents"], route_class=RuledRoute)

ADMINS = Allow(admin=True)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=AgentPublic,
    dependencies=[ADMINS],
    responses=error_responses(400, 409, 422, 503),
)
async def create_agent(
    body: AgentCreate, db: DatabaseDep, client: TemporalClientDep, principal: CurrentPrincipal
) -> AgentPublic:
    """Add an agent (with a `password`, they can sign in with their email); an available one takes the oldest
    waiting case of their team at once."""
    # Argon2 takes a while: hash before the transaction, which holds the team lock.
    password_hash = await run_in_threadpool(hash_password, body.password) if body.password is not None else None
    change = await db.write(
        lambda s: agent_service.create_agent(session=s, data=body, actor=principal.actor, password_hash=password_hash)
    )
    await notify_case_workflows(client, change)
    return AgentPublic.model_validate(change.agent)


@router.get("", response_model=Page[AgentPublic], dependencies=[ADMINS], responses=error_responses(422, 503))
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


@router.get("/{agent_id}", response_model=AgentPublic, dependencies=[ADMINS], responses=error_responses(404, 422, 503))
async def read_agent(agent_id: str, db: DatabaseDep) -> AgentPublic:
    """One agent."""
    return AgentPublic.model_validate(await db.read(lambda s: agent_service.get_agent(session=s, agent_id=agent_id)))


@router.patch(
    "/{agent_id}",
    response_model=AgentPublic,
    dependencies=[Allow(admin=True, agent=True)],
    responses=error_responses(400, 404, 409, 422, 503),
)
async def update_agent(
    agent_id: str,
    body: AgentUpdate,
    db: DatabaseDep,
    client: TemporalClientDep,
    principal: CurrentPrincipal,
) -> AgentPublic:
    """Edit name, email, status, team or password (a new password ends the agent's tokens); becoming available
    hands the agent the next waiting case. An agent may set only their own `status`."""
    if principal.role == "agent":
        if agent_id != principal.agent_id:
            raise forbidden("agents may change only their own availability")
        if body.model_fields_set - {"status"}:
            raise forbidden("agents may change only their own `status`; an admin changes the rest")
    password_hash = await run_in_threadpool(hash_password, body.password) if body.password is not None else None
    change = await db.write(
        lambda s: agent_service.update_agent(
            session=s, agent_id=agent_id, data=body, actor=principal.actor, password_hash=password_hash
        )
    )
    await notify_case_workflows(client, change)
    return AgentPublic.model_validate(change.agent)


@router.delete(
    "/{agent_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=[ADMINS],
    responses=error_responses(404, 422, 503),
)
async def delete_agent(
    agent_id: str, db: DatabaseDep, client: TemporalClientDep, principal: CurrentPrincipal
) -> Response:
    """Remove an agent: their sign-in ends at once, and a case they held goes back to the front of the queue."""
    change = await db.write(lambda s: agent_service.remove_agent(session=s, agent_id=agent_id, actor=principal.actor))
    await notify_case_workflows(client, change)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
