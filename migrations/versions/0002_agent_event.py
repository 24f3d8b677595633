"""agent history

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22

`agent_event`: one row per change of an agent with its state after the change, so the invariant
checker can tell an agent's status, team and removal at the instant a case was reserved for them.
Existing agents get a `baseline` row with their current state.
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DATETIME6 = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
TABLE_OPTIONS = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}


def upgrade() -> None:
    op.create_table(
        "agent_event",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("agent_id", sa.String(length=32), nullable=False),
        sa.Column("at", DATETIME6, nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("team", sa.String(length=64), nullable=False),
        sa.Column("removed", sa.Boolean(), nullable=False),
        sa.Column("available_since", DATETIME6, nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["agent_id"], ["agent.id"], name=op.f("fk_agent_event_agent_id_agent")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agent_event")),
        **TABLE_OPTIONS,
    )
    with op.batch_alter_table("agent_event", schema=None) as batch_op:
        batch_op.create_index("ix_agent_event_agent_id_id", ["agent_id", "id"], unique=False)
    now = datetime.now(UTC).replace(tzinfo=None)
    agent = sa.table(
        "agent", sa.column("id"), sa.column("status"), sa.column("team"), sa.column("deleted_at", DATETIME6),
        sa.column("available_since", DATETIME6),
    )
    rows = op.get_bind().execute(
        sa.select(agent.c.id, agent.c.status, agent.c.team, agent.c.deleted_at, agent.c.available_since)
    ).all()
    if rows:
        op.bulk_insert(
            sa.table(
                "agent_event",
                sa.column("agent_id"),
                sa.column("at", DATETIME6),
                sa.column("type"),
                sa.column("actor"),
                sa.column("status"),
                sa.column("team"),
                sa.column("removed", sa.Boolean()),
                sa.column("available_since", DATETIME6),
                sa.column("data", sa.JSON()),
            ),
            [
                {"agent_id": r.id, "at": now, "type": "baseline", "actor": "migration", "status": r.status,
                 "team": r.team, "removed": r.deleted_at is not None, "available_since": r.available_since,
                 "data": {}}
                for r in rows
            ],
        )  # fmt: skip


def downgrade() -> None:
    with op.batch_alter_table("agent_event", schema=None) as batch_op:
        batch_op.drop_index("ix_agent_event_agent_id_id")
    op.drop_table("agent_event")
