"""open cases by index

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

`return_case.is_open`: true until the case is resolved or cancelled (kept with `open_order_line`, and
checked against `status` by the database), so `GET /cases?status=active` reads the open cases through
`(is_open, queued_at, id)` (and `(team, is_open, queued_at, id)` for a team's list) instead of walking
the whole history.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OPEN_MATCHES_STATUS = "is_open = (status IN ('queued', 'reserved', 'assigned'))"


def upgrade() -> None:
    with op.batch_alter_table("return_case", schema=None) as batch_op:
        batch_op.add_column(sa.Column("is_open", sa.Boolean(), nullable=False, server_default=sa.true()))
    case = sa.table("return_case", sa.column("is_open", sa.Boolean()), sa.column("status", sa.String()))
    op.execute(case.update().where(case.c.status.in_(["resolved", "cancelled"])).values(is_open=False))
    with op.batch_alter_table("return_case", schema=None) as batch_op:
        batch_op.create_check_constraint(op.f("ck_return_case_is_open"), OPEN_MATCHES_STATUS)
        batch_op.create_index("ix_return_case_open", ["is_open", "queued_at", "id"], unique=False)
        batch_op.create_index("ix_return_case_team_open", ["team", "is_open", "queued_at", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("return_case", schema=None) as batch_op:
        batch_op.drop_index("ix_return_case_team_open")
        batch_op.drop_index("ix_return_case_open")
        batch_op.drop_constraint("ck_return_case_is_open", type_="check")
        batch_op.drop_column("is_open")
