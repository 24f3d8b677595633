"""Agent administration. Every change that can free capacity dispatches in the same transaction."""

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.cases import requeue
from core.clock import db_now
from core.dispatch import dispatch, lock_teams
from core.errors import AgentNotFound, ConcurrentChange, EmailInUse
from core.ids import new_id
from core.models import Agent, AgentEvent, AgentStatus, ReturnCase
from core.outbox import buffer_event
from core.schemas import AgentCreate, AgentUpdate
from core.users import create_agent_login, ensure_login_email_free, remove_agent_login, sync_agent_login
from core.views import agent_public
from workflows.messages import Requeue, Reservation


@dataclass
class AgentChange:
    """What an agent change did, so the caller can tell the affected case workflows."""

    agent: Agent
    reservations: list[Reservation] = field(default_factory=list)
    requeues: list[Requeue] = field(default_factory=list)


def record_agent_event(
    *,
    session: Session,
    agent: Agent,
    type: str,
    actor: str,
    changes: dict[str, list[object]] | None = None,
    reason: str | None = None,
) -> None:
    """Append the agent's state after a change the caller just made (call it with the team locks held), and why
    when the system made it (`reason`)."""
    buffer_event(
        session=session,
        row=AgentEvent(
            agent_id=agent.id,
            at=db_now(session),
            type=type,
            actor=actor,
            status=agent.status,
            team=agent.team,
            removed=agent.deleted_at is not None,
            available_since=agent.available_since,
            data={**(changes or {}), **({"reason": reason} if reason else {})},
            snapshot=agent_public(agent).model_dump(mode="json"),
        ),
    )


def get_agent(*, session: Session, agent_id: str, for_update: bool = False) -> Agent:
    """A live (not removed) agent, or AgentNotFound."""
    stmt = select(Agent).where(Agent.id == agent_id, Agent.deleted_at.is_(None))
    if for_update:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    agent = session.scalars(stmt).first()
    if agent is None:
        raise AgentNotFound(f"agent {agent_id} not found")
    return agent


def list_agents(
    *, session: Session, status: str | None, team: str | None, cursor: str | None, limit: int
) -> tuple[list[Agent], str | None]:
    """Live agents ordered by id (ids grow with creation time); returns the page and the next cursor."""
    stmt = select(Agent).where(Agent.deleted_at.is_(None))
    if status is not None:
        stmt = stmt.where(Agent.status == status)
    if team is not None:
        stmt = stmt.where(Agent.team == team)
    if cursor is not None:
        stmt = stmt.where(Agent.id > cursor)
    rows = list(session.scalars(stmt.order_by(Agent.id).limit(limit + 1)))
    if len(rows) <= limit:
        return rows, None
    return rows[:limit], rows[limit - 1].id


def _ensure_email_free(*, session: Session, email: str, agent_id: str | None) -> None:
    holder = session.scalars(select(Agent.id).where(Agent.active_email == email)).first()
    if holder is not None and holder != agent_id:
        raise EmailInUse(f"email {email} is already used by agent {holder}")
    ensure_login_email_free(session=session, email=email, agent_id=agent_id)


def _flush_agent(*, session: Session, agent: Agent) -> None:
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        raise EmailInUse(f"email {agent.email} is already used by another agent") from None


def create_agent(
    *, session: Session, data: AgentCreate, actor: str = "api", password_hash: str | None = None
) -> AgentChange:
    """Add an agent and their login (`password_hash`: of `data.password`, hashed by the caller beforehand, since
    Argon2 is too slow to run under the team lock); an available agent immediately takes the oldest waiting case."""
    lock_teams(session=session, teams=[data.team])
    _ensure_email_free(session=session, email=data.email, agent_id=None)
    agent = Agent(
        id=new_id("a"),
        name=data.name,
        email=data.email,
        active_email=data.email,
        team=data.team,
        status=data.status,
        available_since=db_now(session),
    )
    session.add(agent)
    _flush_agent(session=session, agent=agent)
    create_agent_login(session=session, agent=agent, password_hash=password_hash)
    record_agent_event(session=session, agent=agent, type="created", actor=actor)
    return AgentChange(agent=agent, reservations=dispatch(session=session, team=agent.team))


def update_agent(
    *, session: Session, agent_id: str, data: AgentUpdate, actor: str = "api", password_hash: str | None = None
) -> AgentChange:
    """Edit an agent (and their login: email, and a new password hashed by the caller); becoming available or
    joining a team hands them that team's next case."""
    current = get_agent(session=session, agent_id=agent_id)
    lock_teams(session=session, teams={current.team, data.team or current.team})
    agent = get_agent(session=session, agent_id=agent_id, for_update=True)
    before = {"name": agent.name, "email": agent.email, "status": agent.status, "team": agent.team}
    if data.email is not None and data.email != agent.email:
        _ensure_email_free(session=session, email=data.email, agent_id=agent.id)
        agent.email = agent.active_email = data.email
    if data.name is not None:
        agent.name = data.name
    frees_capacity = False
    if data.status is not None and data.status != agent.status:
        agent.status = data.status
        if data.status == AgentStatus.AVAILABLE:
            agent.available_since = db_now(session)
            frees_capacity = True
    if data.team is not None and data.team != agent.team:
        # A held case stays with the agent; the new team's queue is served once they are free.
        agent.team = data.team
        frees_capacity = True
    agent.updated_at = db_now(session)
    _flush_agent(session=session, agent=agent)
    sync_agent_login(session=session, agent=agent, password_hash=password_hash)
    changes = {k: [v, getattr(agent, k)] for k, v in before.items() if getattr(agent, k) != v}
    if changes:
        record_agent_event(session=session, agent=agent, type="updated", actor=actor, changes=changes)
    reservations = dispatch(session=session, team=agent.team) if frees_capacity else []
    return AgentChange(agent=agent, reservations=reservations)


def remove_agent(*, session: Session, agent_id: str, actor: str) -> AgentChange:
    """Soft-delete an agent and end their login at once; a case they held goes back to the front of its queue and is
    dispatched again."""
    current = get_agent(session=session, agent_id=agent_id)
    held = session.get(ReturnCase, current.current_case_id) if current.current_case_id else None
    lock_teams(session=session, teams={current.team} | ({held.team} if held else set()))
    agent = get_agent(session=session, agent_id=agent_id, for_update=True)
    if agent.current_case_id != (held.id if held else None):
        raise ConcurrentChange(f"agent {agent_id} changed case while being removed")
    now = db_now(session)
    agent.deleted_at = now
    agent.updated_at = now
    agent.active_email = None
    agent.status = AgentStatus.AWAY
    agent.current_case_id = None
    remove_agent_login(session=session, agent_id=agent.id)
    record_agent_event(session=session, agent=agent, type="removed", actor=actor)
    if held is None:
        session.flush()
        return AgentChange(agent=agent)
    case = session.scalars(
        select(ReturnCase).where(ReturnCase.id == held.id).with_for_update().execution_options(populate_existing=True)
    ).one()
    requeue(session=session, case=case, actor=actor, reason=f"agent {agent_id} removed")
    session.flush()
    return AgentChange(
        agent=agent,
        reservations=dispatch(session=session, team=case.team),
        requeues=[Requeue(case_id=case.id, agent_id=agent_id, actor=actor)],
    )
