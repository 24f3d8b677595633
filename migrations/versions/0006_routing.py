"""routing: team timers, escalation, overdue, offers, reopen

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01

- `team.wait_sla_seconds`, `team.resolve_sla_seconds`, `team.offer_timeout_seconds`: NULL (off) by default.
- `return_case.escalated_at`, `overdue_at`, `offer_expires_at`, `declined_by`, `reopened_at`.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DATETIME6 = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
TEAM_COLUMNS = ("wait_sla_seconds", "resolve_sla_seconds", "offer_timeout_seconds")
CASE_TIMES = ("escalated_at", "overdue_at", "offer_expires_at", "reopened_at")


def upgrade() -> None:
    with op.batch_alter_table("team") as batch:
        for name in TEAM_COLUMNS:
            batch.add_column(sa.Column(name, sa.Integer(), nullable=True))
    with op.batch_alter_table("return_case") as batch:
        for name in CASE_TIMES:
            batch.add_column(sa.Column(name, DATETIME6, nullable=True))
        batch.add_column(sa.Column("declined_by", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("return_case") as batch:
        batch.drop_column("declined_by")
        for name in reversed(CASE_TIMES):
            batch.drop_column(name)
    with op.batch_alter_table("team") as batch:
        for name in reversed(TEAM_COLUMNS):
            batch.drop_column(name)
