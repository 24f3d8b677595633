"""How a case and an agent are shown: by the API, to the workflows, and in every event's snapshot."""

from typing import Any

from core.ids import workflow_id_for_case
from core.models import Agent, ReturnCase
from core.schemas import AgentPublic, CasePublic
from workflows.messages import CaseRecord


def _case_fields(case: ReturnCase, fields: Any) -> dict[str, Any]:
    return {**{c: getattr(case, c) for c in fields if c != "workflow_id"}, "workflow_id": workflow_id_for_case(case.id)}


def to_public(case: ReturnCase) -> CasePublic:
    """The API's view of a case row (also what every case event's snapshot holds)."""
    return CasePublic.model_validate(_case_fields(case, CasePublic.model_fields))


def to_record(case: ReturnCase) -> CaseRecord:
    """The case row as a workflow payload."""
    return CaseRecord.model_validate(_case_fields(case, CaseRecord.model_fields))


def agent_public(agent: Agent) -> AgentPublic:
    """The API's view of an agent row (also what every agent event's snapshot holds)."""
    return AgentPublic.model_validate(agent)
