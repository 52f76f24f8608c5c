"""Billing: orders, the Stripe event inbox, passes; debt and pass columns on accounts and jobs.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21
"""

from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('stripe_events',
    sa.Column('id', sa.String(length=255), nullable=False),
    sa.Column('type', sa.String(length=64), nullable=False),
    sa.Column('order_id', sa.BigInteger(), nullable=True),
    sa.Column('payment_intent', sa.String(length=255), nullable=True),
    sa.Column('object', sa.JSON(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('outcome', sa.String(length=200), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('processed_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_stripe_events'))
    )
    op.create_index(op.f('ix_stripe_events_order_id'), 'stripe_events', ['order_id'], unique=False)
    op.create_index(op.f('ix_stripe_events_payment_intent'), 'stripe_events', ['payment_intent'], unique=False)
    op.create_index(op.f('ix_stripe_events_processed_at'), 'stripe_events', ['processed_at'], unique=False)
    op.create_table('orders',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('user_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('kind', sa.String(length=8), nullable=False),
    sa.Column('product_id', sa.String(length=40), nullable=False),
    sa.Column('label', sa.String(length=100), nullable=False),
    sa.Column('credits', sa.Integer(), nullable=False),
    sa.Column('pass_window_s', sa.Integer(), nullable=True),
    sa.Column('pass_duration_s', sa.Integer(), nullable=True),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('checkout_session_id', sa.String(length=255), nullable=True),
    sa.Column('checkout_url', sa.Text(), nullable=True),
    sa.Column('payment_intent_id', sa.String(length=255), nullable=True),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('amount_refunded', sa.BigInteger(), nullable=False),
    sa.Column('credits_clawed', sa.Integer(), nullable=False),
    sa.Column('note', sa.String(length=200), nullable=False),
    sa.Column('origin_platform', sa.String(length=16), nullable=False),
    sa.Column('origin_chat', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('fulfilled_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('notified_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_orders_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_orders')),
    sa.UniqueConstraint('checkout_session_id', name=op.f('uq_orders_checkout_session_id'))
    )
    op.create_index(op.f('ix_orders_payment_intent_id'), 'orders', ['payment_intent_id'], unique=False)
    op.create_index(op.f('ix_orders_user_id'), 'orders', ['user_id'], unique=False)
    op.create_table('passes',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('user_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('order_id', sa.BigInteger(), nullable=True),
    sa.Column('plan', sa.String(length=40), nullable=False),
    sa.Column('label', sa.String(length=100), nullable=False),
    sa.Column('credits_per_window', sa.Integer(), nullable=False),
    sa.Column('window_s', sa.Integer(), nullable=False),
    sa.Column('starts_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('window_no', sa.Integer(), nullable=False),
    sa.Column('used', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_passes_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_passes')),
    sa.UniqueConstraint('order_id', name=op.f('uq_passes_order_id'))
    )
    op.create_index('ix_passes_user_id_expires_at', 'passes', ['user_id', 'expires_at'], unique=False)
    with op.batch_alter_table('credit_accounts') as batch:
        batch.add_column(sa.Column('owed', sa.BigInteger(), server_default='0', nullable=False))
        batch.add_column(sa.Column('pass_until', sa.DateTime(timezone=True), nullable=True))
        batch.create_check_constraint(op.f('ck_credit_accounts_owed_not_negative'), sa.text('owed >= 0'))
    op.add_column('credit_entries', sa.Column('order_id', sa.BigInteger(), nullable=True))
    op.add_column('credit_entries', sa.Column('actor', sa.String(length=100), nullable=True))
    op.add_column('jobs', sa.Column('pass_id', sa.BigInteger(), nullable=True))
    op.add_column('jobs', sa.Column('pass_credits', sa.Integer(), server_default='0', nullable=False))


def downgrade() -> None:
    op.drop_column('jobs', 'pass_credits')
    op.drop_column('jobs', 'pass_id')
    op.drop_column('credit_entries', 'actor')
    op.drop_column('credit_entries', 'order_id')
    with op.batch_alter_table('credit_accounts') as batch:
        batch.drop_constraint(op.f('ck_credit_accounts_owed_not_negative'), type_='check')
        batch.drop_column('pass_until')
        batch.drop_column('owed')
    op.drop_index('ix_passes_user_id_expires_at', table_name='passes')
    op.drop_table('passes')
    op.drop_index(op.f('ix_orders_user_id'), table_name='orders')
    op.drop_index(op.f('ix_orders_payment_intent_id'), table_name='orders')
    op.drop_table('orders')
    op.drop_index(op.f('ix_stripe_events_processed_at'), table_name='stripe_events')
    op.drop_index(op.f('ix_stripe_events_payment_intent'), table_name='stripe_events')
    op.drop_index(op.f('ix_stripe_events_order_id'), table_name='stripe_events')
    op.drop_table('stripe_events')
