"""Teams and the queue overview."""

import asyncio
import logging

from fastapi import APIRouter, status
from sqlalchemy.orm import Session
from temporalio.client import Client

from api.deps import DatabaseDep, TemporalClientDep
from api.errors import error_responses
from api.security import Allow, CurrentPrincipal, RuledRoute
from core import teams as team_service
from core.ids import workflow_id_for_case
from core.schemas import Page, QueueOverview, TeamCreate, TeamPublic, TeamUpdate, TeamWithQueue
from core.views import team_timers
from workflows.delivery import TEAM_TIMERS
from workflows.messages import TeamTimers

log = logging.getLogger("returns.api")

router = APIRouter(tags=["teams"], route_class=RuledRoute)


@router.post(
    "/teams",
    status_code=status.HTTP_201_CREATED,
    response_model=TeamPublic,
    dependencies=[Allow(admin=True)],
    responses=error_responses(400, 409, 422, 503),
)
async def create_team(body: TeamCreate, db: DatabaseDep) -> TeamPublic:
    """Create a routing group."""
    team = await db.write(lambda s: team_service.create_team(session=s, name=body.name))
    return TeamPublic.model_validate(team)


@router.get(
    "/teams", response_model=Page[TeamWithQueue], dependencies=[Allow(admin=True)], responses=error_responses(503)
)
async def read_teams(db: DatabaseDep) -> Page[TeamWithQueue]:
    """Every team with its queue figures."""

    def read(session: Session) -> Page[TeamWithQueue]:
        teams = team_service.list_teams(session=session)
        figures = {q.team: q for q in team_service.queue_figures(session=session, teams=[t.name for t in teams])}
        return Page[TeamWithQueue](
            items=[
                TeamWithQueue.model_validate({**TeamPublic.model_validate(t).model_dump(), "queue": figures[t.name]})
                for t in teams
            ]
        )

    return await db.read(read)


@router.patch(
    "/teams/{name}",
    response_model=TeamPublic,
    dependencies=[Allow(admin=True)],
    responses=error_responses(400, 404, 422, 503),
)
async def update_team(name: str, body: TeamUpdate, db: DatabaseDep, client: TemporalClientDep) -> TeamPublic:
    """Set the team's routing timers (`wait_sla_seconds`, `resolve_sla_seconds`, `offer_timeout_seconds`; null:
    off); the workflows of the team's open cases learn them at once."""

    def write(session: Session) -> tuple[TeamPublic, TeamTimers, list[str]]:
        team, open_cases = team_service.update_team(session=session, name=name, data=body)
        return TeamPublic.model_validate(team), team_timers(team), open_cases

    team, timers, open_cases = await db.write(write)
    await _tell_case_workflows(client, open_cases, timers)
    return team


async def _tell_case_workflows(client: Client, case_ids: list[str], timers: TeamTimers) -> None:
    """Signal the new timers to each open case of the team (a case that misses it reads them at its next step)."""
    for start in range(0, len(case_ids), 100):
        batch = case_ids[start : start + 100]
        outcomes = await asyncio.gather(
            *(client.get_workflow_handle(workflow_id_for_case(c)).signal(TEAM_TIMERS, timers) for c in batch),
            return_exceptions=True,
        )
        for case_id, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, Exception):
                log.warning("could not tell case %s its team's new timers: %s", case_id, outcome)


@router.get(
    "/queue",
    response_model=QueueOverview,
    dependencies=[Allow(admin=True, agent=True)],
    responses=error_responses(503),
)
async def read_queue(db: DatabaseDep, principal: CurrentPrincipal) -> QueueOverview:
    """Per team: waiting cases, oldest wait, next case in line, and available/busy/away agents (an agent: their
    own team)."""
    teams = [str(principal.team)] if principal.role == "agent" else None
    return QueueOverview(teams=await db.read(lambda s: team_service.queue_figures(session=s, teams=teams)))
