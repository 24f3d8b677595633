"""The custom search attributes every case workflow keeps current, registered wherever a server starts."""

from typing import Any

from temporalio.common import SearchAttributeIndexedValueType, SearchAttributeKey

CASE_STATUS = SearchAttributeKey.for_keyword("CaseStatus")
AGENT_ID = SearchAttributeKey.for_keyword("AgentId")
TEAM = SearchAttributeKey.for_keyword("Team")
CASE_PRIORITY = SearchAttributeKey.for_keyword("CasePriority")
CUSTOMER_EMAIL = SearchAttributeKey.for_keyword("CustomerEmail")
ORDER_ID = SearchAttributeKey.for_keyword("OrderId")
# Routing (DESIGN section 13): the case waited past its wait SLA; it stayed assigned past its resolve SLA.
CASE_ESCALATED = SearchAttributeKey.for_bool("CaseEscalated")
CASE_OVERDUE = SearchAttributeKey.for_bool("CaseOverdue")

ALL_SEARCH_ATTRIBUTES: list[SearchAttributeKey[Any]] = [
    CASE_STATUS,
    AGENT_ID,
    TEAM,
    CASE_PRIORITY,
    CUSTOMER_EMAIL,
    ORDER_ID,
    CASE_ESCALATED,
    CASE_OVERDUE,
]

# The `Name=Type` type names of the Temporal CLI.
TYPE_NAMES = {SearchAttributeIndexedValueType.KEYWORD: "Keyword", SearchAttributeIndexedValueType.BOOL: "Bool"}


def dev_server_flags() -> list[str]:
    """`--search-attribute Name=Type` flags for `temporal server start-dev`."""
    flags: list[str] = []
    for key in ALL_SEARCH_ATTRIBUTES:
        flags += ["--search-attribute", f"{key.name}={TYPE_NAMES[key.indexed_value_type]}"]
    return flags
