"""How a case and an agent are shown: by the API, to the workflows, and in every event's snapshot."""

from typing import Any

from sqlalchemy.orm import object_session

from core.ids import workflow_id_for_case
from core.models import Agent, ReturnCase, Team
from core.schemas import AgentPublic, CasePublic
from workflows.messages import CaseRecord, TeamTimers


def _case_fields(case: ReturnCase, fields: Any) -> dict[str, Any]:
    return {**{c: getattr(case, c) for c in fields if c != "workflow_id"}, "workflow_id": workflow_id_for_case(case.id)}


def to_public(case: ReturnCase) -> CasePublic:
    """The API's view of a case row (also what every case event's snapshot holds)."""
    return CasePublic.model_validate(_case_fields(case, CasePublic.model_fields))


def to_record(case: ReturnCase) -> CaseRecord:
    """The case row as a workflow payload, with its team's routing timers (read in the case's session)."""
    fields = _case_fields(case, [f for f in CaseRecord.model_fields if f != "timers"])
    session = object_session(case)
    team = session.get(Team, case.team) if session is not None else None
    return CaseRecord.model_validate({**fields, "timers": team_timers(team) if team is not None else None})


def team_timers(team: Team) -> TeamTimers:
    """A team's routing timers as the case workflows carry them."""
    return TeamTimers(
        wait_sla_seconds=team.wait_sla_seconds,
        resolve_sla_seconds=team.resolve_sla_seconds,
        offer_timeout_seconds=team.offer_timeout_seconds,
    )


def agent_public(agent: Agent) -> AgentPublic:
    """The API's view of an agent row (also what every agent event's snapshot holds)."""
    return AgentPublic.model_validate(agent)
