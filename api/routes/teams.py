"""Teams and the queue overview."""

from fastapi import APIRouter, status
from sqlalchemy.orm import Session

from api.deps import DatabaseDep
from api.errors import error_responses
from api.security import Allow, CurrentPrincipal, RuledRoute
from core import teams as team_service
from core.schemas import Page, QueueOverview, TeamCreate, TeamPublic, TeamWithQueue

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
            items=[TeamWithQueue(name=t.name, created_at=t.created_at, queue=figures[t.name]) for t in teams]
        )

    return await db.read(read)


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
