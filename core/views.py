"""How a case and an agent are shown: by the API, to the workflows, and in every event's snapshot."""

from core.ids import workflow_id_for_case
from core.models import Agent, ReturnCase
from core.schemas import AgentPublic, CasePublic


def to_public(case: ReturnCase) -> CasePublic:
    """The API and workflow view of a case row."""
    return CasePublic.model_validate(
        {
            **{c: getattr(case, c) for c in CasePublic.model_fields if c != "workflow_id"},
            "workflow_id": workflow_id_for_case(case.id),
        }
    )


def agent_public(agent: Agent) -> AgentPublic:
    """The API view of an agent row."""
    return AgentPublic.model_validate(agent)
