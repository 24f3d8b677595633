"""identity: users, API keys, sign-in throttle

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23

`app_user` (admins, and the login of each agent), `api_key` (service keys, stored hashed) and
`login_failure` (failed sign-ins of the last 15 minutes, shared by every API replica). Every live agent
gets its login row, without a password: an admin sets one before the agent can sign in.
"""

from collections.abc import Sequence
from datetime import UTC, datetime
from secrets import token_hex
from time import time

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DATETIME6 = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
TABLE_OPTIONS = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}
BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "app_user",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("active_email", sa.String(length=320), nullable=True),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("agent_id", sa.String(length=32), nullable=True),
        sa.Column("password_hash", sa.String(length=255), nullable=True),
        sa.Column("token_version", sa.Integer(), nullable=False),
        sa.Column("created_at", DATETIME6, nullable=False),
        sa.Column("updated_at", DATETIME6, nullable=False),
        sa.Column("deleted_at", DATETIME6, nullable=True),
        sa.CheckConstraint("role IN ('admin', 'agent')", name=op.f("ck_app_user_role")),
        sa.CheckConstraint(
            "(role = 'agent' AND agent_id IS NOT NULL) OR (role = 'admin' AND agent_id IS NULL)",
            name=op.f("ck_app_user_agent_login"),
        ),
        sa.ForeignKeyConstraint(["agent_id"], ["agent.id"], name=op.f("fk_app_user_agent_id_agent")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_app_user")),
        sa.UniqueConstraint("active_email", name=op.f("uq_app_user_active_email")),
        sa.UniqueConstraint("agent_id", name=op.f("uq_app_user_agent_id")),
        **TABLE_OPTIONS,
    )
    op.create_table(
        "api_key",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.String(length=32), nullable=False),
        sa.Column("created_at", DATETIME6, nullable=False),
        sa.Column("last_used_at", DATETIME6, nullable=True),
        sa.Column("revoked_at", DATETIME6, nullable=True),
        sa.ForeignKeyConstraint(["created_by"], ["app_user.id"], name=op.f("fk_api_key_created_by_app_user")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_key")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_key_key_hash")),
        **TABLE_OPTIONS,
    )
    op.create_table(
        "login_failure",
        sa.Column("id", BIGINT, autoincrement=True, nullable=False),
        sa.Column("account_key", sa.String(length=64), nullable=False),
        sa.Column("client_address", sa.String(length=64), nullable=False),
        sa.Column("at", DATETIME6, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_login_failure")),
        **TABLE_OPTIONS,
    )
    with op.batch_alter_table("login_failure", schema=None) as batch_op:
        batch_op.create_index("ix_login_failure_account_key_at", ["account_key", "at"], unique=False)
        batch_op.create_index("ix_login_failure_client_address_at", ["client_address", "at"], unique=False)
        batch_op.create_index("ix_login_failure_at", ["at"], unique=False)

    # Every live agent gets a login (no password yet), as creating an agent does from now on.
    agent = sa.table("agent", sa.column("id"), sa.column("email"), sa.column("deleted_at", DATETIME6))
    rows = op.get_bind().execute(sa.select(agent.c.id, agent.c.email).where(agent.c.deleted_at.is_(None))).all()
    if rows:
        now = datetime.now(UTC).replace(tzinfo=None)
        op.bulk_insert(
            sa.table(
                "app_user", sa.column("id"), sa.column("email"), sa.column("active_email"), sa.column("role"),
                sa.column("agent_id"), sa.column("password_hash"), sa.column("token_version"),
                sa.column("created_at", DATETIME6), sa.column("updated_at", DATETIME6),
            ),
            [
                {"id": f"u{int(time() * 1000):012x}{token_hex(4)}", "email": r.email, "active_email": r.email,
                 "role": "agent", "agent_id": r.id, "password_hash": None, "token_version": 0, "created_at": now,
                 "updated_at": now}
                for r in rows
            ],
        )  # fmt: skip


def downgrade() -> None:
    with op.batch_alter_table("login_failure", schema=None) as batch_op:
        batch_op.drop_index("ix_login_failure_at")
        batch_op.drop_index("ix_login_failure_client_address_at")
        batch_op.drop_index("ix_login_failure_account_key_at")
    op.drop_table("login_failure")
    op.drop_table("api_key")
    op.drop_table("app_user")
