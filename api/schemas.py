"""Request and response bodies of sign-in, API keys and customer tracking (HTTP only, never Temporal payloads)."""

from datetime import datetime
from typing import Annotated, Literal, get_args

from pydantic import ConfigDict, Field, StringConstraints

from core.api_keys import SCOPES
from core.models import CaseStatus, UserRole
from core.schemas import SPACE, AgentPublic, CasePublic, Note, Password, Schema, Trim
from core.security import PASSWORD_MAX_LENGTH

Scope = Literal["cases:file", "cases:read", "cases:cancel", "events:read", "return-links:create"]
assert set(get_args(Scope)) == set(SCOPES)

KeyName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64, pattern=rf"^[{SPACE}]*[A-Za-z0-9][A-Za-z0-9_.-]*[{SPACE}]*$"),
    Trim,
    Field(description="who the key is for, e.g. `storefront`; events record the key's actions as `key:<name>`"),
]


class AccessToken(Schema):
    """A bearer token: send it as `Authorization: Bearer <access_token>` until it expires."""

    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="seconds until the token expires")


class Me(Schema):
    """Who the access token belongs to."""

    role: UserRole
    user_id: str
    email: str
    agent_id: str | None = None
    team: str | None = None
    agent: AgentPublic | None = Field(None, description="an agent's own record: status, case held")


class PasswordChange(Schema):
    model_config = ConfigDict(extra="forbid")
    current_password: Annotated[str, StringConstraints(max_length=PASSWORD_MAX_LENGTH), Field(json_schema_extra={
        "format": "password", "writeOnly": True})]  # fmt: skip
    new_password: Password


class ApiKeyCreate(Schema):
    model_config = ConfigDict(extra="forbid")
    name: KeyName
    scopes: Annotated[list[Scope], Field(min_length=1, max_length=len(SCOPES))]


class ApiKeyPublic(Schema):
    """A service key as listed: never the key itself, which was shown once."""

    id: str
    name: str
    prefix: str = Field(description="the key's first characters, to tell keys apart")
    scopes: list[str]
    created_by: str
    created_at: datetime
    last_used_at: datetime | None = Field(description="to the minute")
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyPublic):
    key: str = Field(description="the key, shown this once: store it now; send it as `Authorization: Bearer <key>`")


class CaseFiled(CasePublic):
    """The filed case, with the customer's private link to follow it."""

    tracking_token: str = Field(description="the customer's credential for this case only; give it to them alone")
    tracking_url: str


class TrackedCase(Schema):
    """A case as its customer sees it: never the agent, never an email."""

    id: str
    order_id: str
    product_sku: str
    product_name: str
    status: CaseStatus
    status_text: str = Field(description="the status in words")
    place_in_line: int | None = Field(description="while waiting: 1 means the case is next")
    resolution: str | None
    filed_at: datetime
    resolved_at: datetime | None
    cancelled_at: datetime | None


class TrackCancel(Schema):
    model_config = ConfigDict(extra="forbid")
    reason: Note | None = None


class TrackReopen(Schema):
    model_config = ConfigDict(extra="forbid")
    reason: Note | None = None
