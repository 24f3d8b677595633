"""event outbox and webhooks

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23

- `event_sequence`: the one counter every outbox row (`case_event`, `agent_event`, `system_event`) takes its
  id from, at the tail of its transaction (core/outbox.py). Ids so grow in commit order; AUTO_INCREMENT is
  dropped from the event tables.
- Existing `agent_event` ids move above every `case_event` id (ids are unique across the outbox), and the
  counter starts after the highest.
- `snapshot` on both event tables: the case or agent as the API showed it right after the change. Rows
  written before this migration have none and are not announced.
- `system_event`, `webhook_endpoint`, `webhook_delivery`.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DATETIME6 = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
EVENT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TABLE_OPTIONS = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}
SEQUENCE_NAME = "events"


def _is_mysql() -> bool:
    return op.get_bind().dialect.name in ("mysql", "mariadb")


def upgrade() -> None:
    bind = op.get_bind()
    op.create_table(
        "event_sequence",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("last_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_event_sequence")),
        **TABLE_OPTIONS,
    )
    max_case = bind.execute(sa.text("SELECT COALESCE(MAX(id), 0) FROM case_event")).scalar_one()
    max_agent = bind.execute(sa.text("SELECT COALESCE(MAX(id), 0) FROM agent_event")).scalar_one()
    # Shifting by at least the highest agent_event id keeps every new id above every old one: no clash midway.
    shift = max(int(max_case), int(max_agent))
    if max_agent:
        op.execute(sa.text("UPDATE agent_event SET id = id + :shift").bindparams(shift=shift))
    last = int(max_agent) + shift if max_agent else int(max_case)
    op.bulk_insert(
        sa.table("event_sequence", sa.column("name"), sa.column("last_id", sa.BigInteger())),
        [{"name": SEQUENCE_NAME, "last_id": last}],
    )

    for table in ("case_event", "agent_event"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("snapshot", sa.JSON(), nullable=True))
        if _is_mysql():
            op.execute(f"ALTER TABLE {table} MODIFY id BIGINT NOT NULL")

    op.create_table(
        "system_event",
        sa.Column("id", EVENT_ID, autoincrement=False, nullable=False),
        sa.Column("at", DATETIME6, nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("snapshot", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_system_event")),
        **TABLE_OPTIONS,
    )
    op.create_table(
        "webhook_endpoint",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("events", sa.JSON(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("secret_encrypted", sa.String(length=512), nullable=False),
        sa.Column("cursor", sa.BigInteger(), nullable=False),
        sa.Column("cursor_epoch", sa.Integer(), nullable=False),
        sa.Column("failing_since", DATETIME6, nullable=True),
        sa.Column("disabled_reason", sa.String(length=500), nullable=True),
        sa.Column("created_at", DATETIME6, nullable=False),
        sa.Column("updated_at", DATETIME6, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_endpoint")),
        **TABLE_OPTIONS,
    )
    op.create_table(
        "webhook_delivery",
        sa.Column("id", EVENT_ID, autoincrement=True, nullable=False),
        sa.Column("endpoint_id", sa.String(length=32), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=True),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("succeeded", sa.Boolean(), nullable=False),
        sa.Column("response_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.String(length=500), nullable=True),
        sa.Column("at", DATETIME6, nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["webhook_endpoint.id"],
            name=op.f("fk_webhook_delivery_endpoint_id_webhook_endpoint"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_delivery")),
        **TABLE_OPTIONS,
    )
    with op.batch_alter_table("webhook_delivery", schema=None) as batch_op:
        batch_op.create_index("ix_webhook_delivery_endpoint_id_id", ["endpoint_id", "id"], unique=False)
        batch_op.create_index("ix_webhook_delivery_endpoint_id_event_id", ["endpoint_id", "event_id"], unique=False)


def downgrade() -> None:
    op.drop_table("webhook_delivery")
    op.drop_table("webhook_endpoint")
    op.drop_table("system_event")
    for table in ("case_event", "agent_event"):
        if _is_mysql():
            op.execute(f"ALTER TABLE {table} MODIFY id BIGINT NOT NULL AUTO_INCREMENT")
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("snapshot")
    op.drop_table("event_sequence")
