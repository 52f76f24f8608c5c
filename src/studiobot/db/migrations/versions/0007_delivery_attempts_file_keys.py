"""Bounded result deliveries (attempts and the next try on each job); indexes on assets' file keys,
which releasing a shared file looks up.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(sa.Column('delivery_attempts', sa.Integer(), server_default='0', nullable=False))
        batch.add_column(sa.Column('delivery_due_at', sa.DateTime(timezone=True), nullable=True))
    op.create_index('ix_assets_storage_key', 'assets', ['storage_key'], unique=False)
    op.create_index('ix_assets_thumbnail_key', 'assets', ['thumbnail_key'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_assets_thumbnail_key', table_name='assets')
    op.drop_index('ix_assets_storage_key', table_name='assets')
    with op.batch_alter_table('jobs') as batch:
        batch.drop_column('delivery_due_at')
        batch.drop_column('delivery_attempts')
