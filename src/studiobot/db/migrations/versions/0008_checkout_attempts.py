"""Checkout attempts: each order's attempt number at a Stripe Checkout Session.

Stripe replays a stored failure (a 500 included) to every request with the same idempotency key
for 24 hours, so each attempt needs its own key; ``orders.checkout_attempt`` is its number.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-22
"""

from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('orders', sa.Column('checkout_attempt', sa.Integer(), server_default='1', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('orders') as batch:
        batch.drop_column('checkout_attempt')
