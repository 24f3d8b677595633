"""Direct database checks of the holding invariants, used by tests after every scenario."""

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.models import HELD_STATUSES, Agent, ReturnCase


def assert_holding_invariants(session_factory: sessionmaker[Session], team: str) -> None:
    """No agent holds two cases, no case two agents, and both sides of every hold agree."""
    with session_factory() as session:
        cases = session.scalars(select(ReturnCase).where(ReturnCase.team == team)).all()
        agents = {a.id: a for a in session.scalars(select(Agent))}
    held = [c for c in cases if c.status in HELD_STATUSES]
    holders = [c.agent_id for c in held]
    assert len(holders) == len(set(holders)), f"an agent holds two cases: {holders}"
    for case in held:
        assert case.agent_id is not None, f"case {case.id} is {case.status} with no agent"
        agent = agents[case.agent_id]
        assert agent.current_case_id == case.id, f"case {case.id} says {agent.id}, agent says {agent.current_case_id}"
        assert agent.deleted_at is None, f"case {case.id} held by removed agent {agent.id}"
    team_cases = {c.id: c for c in cases}
    for agent in agents.values():
        if agent.current_case_id in team_cases:
            case = team_cases[agent.current_case_id]
            assert case.status in HELD_STATUSES and case.agent_id == agent.id, (
                f"agent {agent.id} points at case {case.id} which is {case.status} with {case.agent_id}"
            )
