"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-22

The four tables, their constraints and the default team `returns`.
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# MySQL DATETIME keeps no fraction by default; FIFO order needs microseconds.
DATETIME6 = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
# Binary collation: ids, keys and order lines compare exactly, as they do on SQLite.
TABLE_OPTIONS = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}


def upgrade() -> None:
    op.create_table('team',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('created_at', DATETIME6, nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_team')),
    **TABLE_OPTIONS,
    )
    op.bulk_insert(sa.table("team", sa.column("name"), sa.column("created_at", DATETIME6)),
                   [{"name": "returns", "created_at": datetime.now(UTC).replace(tzinfo=None)}])
    op.create_table('agent',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=False),
    sa.Column('active_email', sa.String(length=320), nullable=True),
    sa.Column('team', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('available_since', DATETIME6, nullable=False),
    sa.Column('current_case_id', sa.String(length=32), nullable=True),
    sa.Column('deleted_at', DATETIME6, nullable=True),
    sa.Column('created_at', DATETIME6, nullable=False),
    sa.Column('updated_at', DATETIME6, nullable=False),
    sa.CheckConstraint("status IN ('available', 'away')", name=op.f('ck_agent_status')),
    sa.ForeignKeyConstraint(['team'], ['team.name'], name=op.f('fk_agent_team_team')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_agent')),
    sa.UniqueConstraint('active_email', name=op.f('uq_agent_active_email')),
    sa.UniqueConstraint('current_case_id', name=op.f('uq_agent_current_case_id')),
    **TABLE_OPTIONS,
    )
    with op.batch_alter_table('agent', schema=None) as batch_op:
        batch_op.create_index('ix_agent_dispatch', ['team', 'status', 'current_case_id', 'available_since', 'id'], unique=False)

    op.create_table('return_case',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('team', sa.String(length=64), nullable=False),
    sa.Column('priority', sa.String(length=16), nullable=False),
    sa.Column('priority_rank', sa.SmallInteger(), nullable=False),
    sa.Column('customer_name', sa.String(length=200), nullable=False),
    sa.Column('customer_email', sa.String(length=320), nullable=False),
    sa.Column('order_id', sa.String(length=100), nullable=False),
    sa.Column('product_sku', sa.String(length=100), nullable=False),
    sa.Column('product_name', sa.String(length=200), nullable=False),
    sa.Column('reason', sa.String(length=500), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('agent_id', sa.String(length=32), nullable=True),
    sa.Column('queued_at', DATETIME6, nullable=False),
    sa.Column('reserved_at', DATETIME6, nullable=True),
    sa.Column('assigned_at', DATETIME6, nullable=True),
    sa.Column('resolved_at', DATETIME6, nullable=True),
    sa.Column('cancelled_at', DATETIME6, nullable=True),
    sa.Column('resolution', sa.Text(), nullable=True),
    sa.Column('cancel_reason', sa.Text(), nullable=True),
    sa.Column('idempotency_key', sa.String(length=255), nullable=True),
    sa.Column('open_order_line', sa.String(length=210), nullable=True),
    sa.Column('created_at', DATETIME6, nullable=False),
    sa.Column('updated_at', DATETIME6, nullable=False),
    sa.CheckConstraint("priority IN ('normal', 'high')", name=op.f('ck_return_case_priority')),
    sa.CheckConstraint("status IN ('queued', 'reserved', 'assigned', 'resolved', 'cancelled')", name=op.f('ck_return_case_status')),
    sa.ForeignKeyConstraint(['agent_id'], ['agent.id'], name=op.f('fk_return_case_agent_id_agent')),
    sa.ForeignKeyConstraint(['team'], ['team.name'], name=op.f('fk_return_case_team_team')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_return_case')),
    sa.UniqueConstraint('idempotency_key', name=op.f('uq_return_case_idempotency_key')),
    sa.UniqueConstraint('open_order_line', name=op.f('uq_return_case_open_order_line')),
    **TABLE_OPTIONS,
    )
    with op.batch_alter_table('return_case', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_return_case_agent_id'), ['agent_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_return_case_customer_email'), ['customer_email'], unique=False)
        batch_op.create_index('ix_return_case_dispatch', ['team', 'status', 'priority_rank', 'queued_at', 'id'], unique=False)
        batch_op.create_index('ix_return_case_queued_at', ['queued_at', 'id'], unique=False)
        batch_op.create_index('ix_return_case_status_reserved_at', ['status', 'reserved_at'], unique=False)

    op.create_table('case_event',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('case_id', sa.String(length=32), nullable=False),
    sa.Column('at', DATETIME6, nullable=False),
    sa.Column('type', sa.String(length=32), nullable=False),
    sa.Column('actor', sa.String(length=200), nullable=False),
    sa.Column('from_status', sa.String(length=16), nullable=True),
    sa.Column('to_status', sa.String(length=16), nullable=True),
    sa.Column('agent_id', sa.String(length=32), nullable=True),
    sa.Column('data', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['case_id'], ['return_case.id'], name=op.f('fk_case_event_case_id_return_case')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_case_event')),
    **TABLE_OPTIONS,
    )
    with op.batch_alter_table('case_event', schema=None) as batch_op:
        batch_op.create_index('ix_case_event_case_id_id', ['case_id', 'id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('case_event', schema=None) as batch_op:
        batch_op.drop_index('ix_case_event_case_id_id')

    op.drop_table('case_event')
    with op.batch_alter_table('return_case', schema=None) as batch_op:
        batch_op.drop_index('ix_return_case_status_reserved_at')
        batch_op.drop_index('ix_return_case_queued_at')
        batch_op.drop_index('ix_return_case_dispatch')
        batch_op.drop_index(batch_op.f('ix_return_case_customer_email'))
        batch_op.drop_index(batch_op.f('ix_return_case_agent_id'))

    op.drop_table('return_case')
    with op.batch_alter_table('agent', schema=None) as batch_op:
        batch_op.drop_index('ix_agent_dispatch')

    op.drop_table('agent')
    op.drop_table('team')
