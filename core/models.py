"""ORM models: team, agent, return_case, case_event, and who may sign in or call the API. The database enforces
the holding invariants."""

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Text,
    TypeDecorator,
    true,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC with microseconds (MySQL DATETIME keeps no offset); loads aware UTC."""

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime())

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class AgentStatus(enum.StrEnum):
    AVAILABLE = "available"
    AWAY = "away"


class CaseStatus(enum.StrEnum):
    QUEUED = "queued"
    RESERVED = "reserved"
    ASSIGNED = "assigned"
    RESOLVED = "resolved"
    CANCELLED = "cancelled"


TERMINAL_STATUSES = frozenset({CaseStatus.RESOLVED, CaseStatus.CANCELLED})
HELD_STATUSES = frozenset({CaseStatus.RESERVED, CaseStatus.ASSIGNED})


class UserRole(enum.StrEnum):
    ADMIN = "admin"
    AGENT = "agent"


class CasePriority(enum.StrEnum):
    NORMAL = "normal"
    HIGH = "high"


# Lower rank is served first; stored so the dispatch index can serve the ORDER BY.
PRIORITY_RANK = {CasePriority.HIGH: 0, CasePriority.NORMAL: 1}


# Outbox ids: BIGINT on MySQL; SQLite's INTEGER PRIMARY KEY is its 64-bit rowid.
EVENT_ID = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {str: String(255), datetime: UTCDateTime()}


class Team(Base):
    """A routing group: cases of a team go only to agents of that team."""

    __tablename__ = "team"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Routing timers (DESIGN section 13), each NULL (off) by default: escalate a case queued this long, mark
    # overdue a case assigned this long, and make each reservation an offer the agent must accept in time.
    wait_sla_seconds: Mapped[int | None] = mapped_column(Integer)
    resolve_sla_seconds: Mapped[int | None] = mapped_column(Integer)
    offer_timeout_seconds: Mapped[int | None] = mapped_column(Integer)


class Agent(Base):
    """A support agent; `current_case_id` is UNIQUE, so no case can ever have two holders."""

    __tablename__ = "agent"
    __table_args__ = (
        CheckConstraint("status IN ('available', 'away')", name="status"),
        Index("ix_agent_dispatch", "team", "status", "current_case_id", "available_since", "id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320))
    # Equals `email` while the agent exists and NULL once removed, so emails stay unique among live agents.
    active_email: Mapped[str | None] = mapped_column(String(320), unique=True)
    team: Mapped[str] = mapped_column(String(64), ForeignKey("team.name"))
    status: Mapped[str] = mapped_column(String(16))
    available_since: Mapped[datetime]
    current_case_id: Mapped[str | None] = mapped_column(String(32), unique=True)
    deleted_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ReturnCase(Base):
    """A product-return case; its workflow is `case-<id>`."""

    __tablename__ = "return_case"
    __table_args__ = (
        CheckConstraint("status IN ('queued', 'reserved', 'assigned', 'resolved', 'cancelled')", name="status"),
        CheckConstraint("priority IN ('normal', 'high')", name="priority"),
        CheckConstraint("is_open = (status IN ('queued', 'reserved', 'assigned'))", name="is_open"),
        # Serves dispatch's ORDER BY without a filesort, so FOR UPDATE locks only the rows it takes.
        Index("ix_return_case_dispatch", "team", "status", "priority_rank", "queued_at", "id"),
        Index("ix_return_case_status_reserved_at", "status", "reserved_at"),
        Index("ix_return_case_queued_at", "queued_at", "id"),
        # The open cases (`status=active`), oldest first, without reading closed ones; and a team's.
        Index("ix_return_case_open", "is_open", "queued_at", "id"),
        Index("ix_return_case_team_open", "team", "is_open", "queued_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    team: Mapped[str] = mapped_column(String(64), ForeignKey("team.name"))
    priority: Mapped[str] = mapped_column(String(16))
    priority_rank: Mapped[int] = mapped_column(SmallInteger)
    customer_name: Mapped[str] = mapped_column(String(200))
    customer_email: Mapped[str] = mapped_column(String(320), index=True)
    order_id: Mapped[str] = mapped_column(String(100))
    product_sku: Mapped[str] = mapped_column(String(100))
    product_name: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(String(500))
    description: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    agent_id: Mapped[str | None] = mapped_column(String(32), ForeignKey("agent.id"), index=True)
    queued_at: Mapped[datetime]
    reserved_at: Mapped[datetime | None]
    assigned_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    cancelled_at: Mapped[datetime | None]
    resolution: Mapped[str | None] = mapped_column(Text)
    cancel_reason: Mapped[str | None] = mapped_column(Text)
    # Routing (DESIGN section 13): escalated past the team's wait SLA; overdue past its resolve SLA; a
    # reservation that is an offer until `offer_expires_at`; the agent who last declined it (not offered it
    # again while another agent is free); when it was last reopened.
    escalated_at: Mapped[datetime | None]
    overdue_at: Mapped[datetime | None]
    offer_expires_at: Mapped[datetime | None]
    declined_by: Mapped[str | None] = mapped_column(String(32))
    reopened_at: Mapped[datetime | None]
    idempotency_key: Mapped[str | None] = mapped_column(String(255), unique=True)
    # "<order_id>\x1f<sku>" while the case is open, NULL once terminal: one open case per order line.
    open_order_line: Mapped[str | None] = mapped_column(String(210), unique=True)
    # True until the case is resolved or cancelled; the database checks it against `status`.
    is_open: Mapped[bool] = mapped_column(default=True, server_default=true())
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class CaseEvent(Base):
    """One row per transition of a case, written in the transaction that made it; never updated."""

    __tablename__ = "case_event"
    __table_args__ = (Index("ix_case_event_case_id_id", "case_id", "id"),)

    # Drawn from `event_sequence` at the tail of the writing transaction (core/outbox.py), never AUTO_INCREMENT.
    id: Mapped[int] = mapped_column(EVENT_ID, primary_key=True, autoincrement=False)
    case_id: Mapped[str] = mapped_column(String(32), ForeignKey("return_case.id"))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    type: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(200))
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str | None] = mapped_column(String(16))
    agent_id: Mapped[str | None] = mapped_column(String(32))
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # The case as `GET /cases/{id}` showed it right after this transition (NULL: recorded before the outbox).
    snapshot: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class AgentEvent(Base):
    """One row per change of an agent (created, edited, removed) with the agent's state after it.

    Written in the transaction that made the change, under the team lock, so an agent's status, team and
    removal at any instant can be read back: the invariant checker uses it to prove that no case was
    reserved for an agent who was away, removed or in another team at that moment.
    """

    __tablename__ = "agent_event"
    __table_args__ = (Index("ix_agent_event_agent_id_id", "agent_id", "id"),)

    id: Mapped[int] = mapped_column(EVENT_ID, primary_key=True, autoincrement=False)
    agent_id: Mapped[str] = mapped_column(String(32), ForeignKey("agent.id"))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    type: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))
    team: Mapped[str] = mapped_column(String(64))
    removed: Mapped[bool]
    # The agent's `available_since` after the change (their place in the longest-idle order).
    available_since: Mapped[datetime | None]
    # What changed: {"field": [before, after]}.
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # The agent as `GET /agents/{id}` showed it right after this change (NULL: recorded before the outbox).
    snapshot: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class AppUser(Base):
    """Someone who signs in: an admin, or the login of an agent (created, edited and removed with the agent)."""

    __tablename__ = "app_user"
    __table_args__ = (
        CheckConstraint("role IN ('admin', 'agent')", name="role"),
        CheckConstraint(
            "(role = 'agent' AND agent_id IS NOT NULL) OR (role = 'admin' AND agent_id IS NULL)", name="agent_login"
        ),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    # Equals `email` while the user exists and NULL once removed: one live login per email.
    active_email: Mapped[str | None] = mapped_column(String(320), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    agent_id: Mapped[str | None] = mapped_column(String(32), ForeignKey("agent.id"), unique=True)
    # Argon2; NULL means the user cannot sign in (an agent nobody has set a password for).
    password_hash: Mapped[str | None] = mapped_column(String(255))
    # Carried by each access token; bumped on removal and password change, which ends every token issued before.
    token_version: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    deleted_at: Mapped[datetime | None]


class ApiKey(Base):
    """A service's key (the storefront's backend): stored as a SHA-256 of the key, which is shown only once."""

    __tablename__ = "api_key"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    # The first characters of the key, to tell keys apart in a listing.
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_by: Mapped[str] = mapped_column(String(32), ForeignKey("app_user.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Updated at most about once a minute, so a busy key does not write on every request.
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class LoginFailure(Base):
    """One failed sign-in; the rows of the last 15 minutes throttle an account and a client address, across every
    API replica."""

    __tablename__ = "login_failure"
    __table_args__ = (
        Index("ix_login_failure_account_key_at", "account_key", "at"),
        Index("ix_login_failure_client_address_at", "client_address", "at"),
        Index("ix_login_failure_at", "at"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    # SHA-256 of the email as typed (lowercased): people type passwords into the email field too.
    account_key: Mapped[str] = mapped_column(String(64))
    client_address: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(default=utcnow)


class SystemEvent(Base):
    """An event about the system itself (`webhook.disabled`), announced through the outbox like the others."""

    __tablename__ = "system_event"

    id: Mapped[int] = mapped_column(EVENT_ID, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    type: Mapped[str] = mapped_column(String(64))
    snapshot: Mapped[dict[str, Any]] = mapped_column(JSON)


class EventSequence(Base):
    """The one counter every outbox row takes its id from, bumped as the last statement of each writing
    transaction: ids then grow in commit order (core/outbox.py)."""

    __tablename__ = "event_sequence"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    last_id: Mapped[int] = mapped_column(BigInteger)


class WebhookEndpoint(Base):
    """A receiver of signed event deliveries; its workflow is `webhook-<id>`."""

    __tablename__ = "webhook_endpoint"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    url: Mapped[str] = mapped_column(String(2048))
    # Event types the endpoint wants (an empty list: none).
    events: Mapped[list[str]] = mapped_column(JSON)
    enabled: Mapped[bool]
    # AES-GCM ciphertext of the signing secret, keyed from SECRET_KEY (core/secrets.py).
    secret_encrypted: Mapped[str] = mapped_column(String(512))
    # The last event id this endpoint has been given (or skipped as not wanted).
    cursor: Mapped[int] = mapped_column(BigInteger)
    # Bumped by a replay, so a delivery in flight cannot move the cursor back past it.
    cursor_epoch: Mapped[int] = mapped_column(Integer, default=0)
    # First failure of the current run of failures; NULL while deliveries succeed.
    failing_since: Mapped[datetime | None]
    disabled_reason: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class WebhookDelivery(Base):
    """One attempt to deliver one event (or a test ping) to one endpoint."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (
        Index("ix_webhook_delivery_endpoint_id_id", "endpoint_id", "id"),
        Index("ix_webhook_delivery_endpoint_id_event_id", "endpoint_id", "event_id"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    endpoint_id: Mapped[str] = mapped_column(String(32), ForeignKey("webhook_endpoint.id", ondelete="CASCADE"))
    # NULL for a test ping.
    event_id: Mapped[int | None] = mapped_column(BigInteger)
    event_type: Mapped[str] = mapped_column(String(64))
    attempt: Mapped[int]
    succeeded: Mapped[bool]
    response_code: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(String(500))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    duration_ms: Mapped[int]
