"""Users' preferences, Telegram file ids, and platform updates already handled.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('users') as batch:
        batch.add_column(sa.Column('preferences', sa.JSON(), nullable=False, server_default=sa.text("'{}'")))
    op.create_table('platform_files',
    sa.Column('platform', sa.String(length=16), nullable=False),
    sa.Column('storage_key', sa.String(length=200), nullable=False),
    sa.Column('file_id', sa.String(length=255), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('platform', 'storage_key', name=op.f('pk_platform_files'))
    )
    op.create_table('seen_updates',
    sa.Column('platform', sa.String(length=16), nullable=False),
    sa.Column('update_id', sa.BigInteger(), nullable=False),
    sa.Column('seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('platform', 'update_id', name=op.f('pk_seen_updates'))
    )
    op.create_index(op.f('ix_seen_updates_seen_at'), 'seen_updates', ['seen_at'])


def downgrade() -> None:
    op.drop_index(op.f('ix_seen_updates_seen_at'), table_name='seen_updates')
    op.drop_table('seen_updates')
    op.drop_table('platform_files')
    with op.batch_alter_table('users') as batch:
        batch.drop_column('preferences')
