"""Every ordering time comes from the database's clock (core/clock.py), never from the host that wrote the row.

MariaDB lets a session set its own clock (`SET timestamp`): a transaction that does so and then files,
dispatches, assigns and resolves must stamp every time with that clock, whatever the host's says.
"""

from datetime import UTC, datetime

from sqlalchemy import select, text

from core import agents, cases
from core.clock import db_now
from core.models import AgentEvent, CaseEvent
from core.schemas import AgentCreate
from tests.conftest import Stack
from tests.helpers import case_body, new_team
from workflows.messages import CaseDraft

# Far from any host's clock: a stamp from the host could not equal it.
DATABASE_TIME = datetime(2031, 7, 1, 12, 0, 0, tzinfo=UTC)


async def test_transitions_take_the_database_clock(stack: Stack) -> None:
    team = await new_team(stack.api)
    with stack.session_factory.begin() as session:
        session.execute(text("SET SESSION timestamp = :at"), {"at": DATABASE_TIME.timestamp()})
        assert db_now(session) == DATABASE_TIME
        agent = agents.create_agent(session=session, data=AgentCreate(name="A", email=f"{team}@x.example", team=team))
        case, reservations = cases.open_case(
            session=session, case_id=f"c-{team}", data=CaseDraft(**case_body(team)), actor="test", idempotency_key=None
        )
        assert [r.case_id for r in reservations] == [case.id]
        cases.confirm_assignment(session=session, case_id=case.id, agent_id=agent.agent.id, actor="test")
        cases.resolve_case(session=session, case_id=case.id, agent_id=agent.agent.id, resolution=None, actor="test")
        session.execute(text("SET SESSION timestamp = DEFAULT"))
    with stack.session_factory() as session:
        row = cases.get_case(session=session, case_id=f"c-{team}")
        stamps = {
            "queued_at": row.queued_at,
            "reserved_at": row.reserved_at,
            "assigned_at": row.assigned_at,
            "resolved_at": row.resolved_at,
            "available_since": agents.get_agent(session=session, agent_id=agent.agent.id).available_since,
        }
        stamps |= {
            f"event {e.type}": e.at for e in session.scalars(select(CaseEvent).where(CaseEvent.case_id == row.id))
        }
        stamps |= {
            f"agent event {e.type}": e.at
            for e in session.scalars(select(AgentEvent).where(AgentEvent.agent_id == agent.agent.id))
        }
        # The next transaction reads the clock again (the cached value belongs to one transaction).
        assert db_now(session) != DATABASE_TIME
    assert {name: at for name, at in stamps.items() if at != DATABASE_TIME} == {}
    assert len(stamps) == 10, sorted(stamps)
