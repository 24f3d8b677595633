"""The custom search attributes every case workflow keeps current, registered wherever a server starts."""

from temporalio.common import SearchAttributeKey

CASE_STATUS = SearchAttributeKey.for_keyword("CaseStatus")
AGENT_ID = SearchAttributeKey.for_keyword("AgentId")
TEAM = SearchAttributeKey.for_keyword("Team")
CASE_PRIORITY = SearchAttributeKey.for_keyword("CasePriority")
CUSTOMER_EMAIL = SearchAttributeKey.for_keyword("CustomerEmail")
ORDER_ID = SearchAttributeKey.for_keyword("OrderId")

ALL_SEARCH_ATTRIBUTES: list[SearchAttributeKey[str]] = [
    CASE_STATUS,
    AGENT_ID,
    TEAM,
    CASE_PRIORITY,
    CUSTOMER_EMAIL,
    ORDER_ID,
]


def dev_server_flags() -> list[str]:
    """`--search-attribute Name=Type` flags for `temporal server start-dev`."""
    flags: list[str] = []
    for key in ALL_SEARCH_ATTRIBUTES:
        flags += ["--search-attribute", f"{key.name}=Keyword"]
    return flags
