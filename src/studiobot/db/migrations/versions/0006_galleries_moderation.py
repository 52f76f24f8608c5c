"""Galleries and moderation: collections, votes, bans, blocked terms, the audit log; the community
a job was made in; hidden images; indexes for community and public galleries.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-21
"""

from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(sa.Column('community_id', _ID, nullable=True))
        batch.create_foreign_key(op.f('fk_jobs_community_id_communities'), 'communities', ['community_id'],
                                 ['id'], ondelete='SET NULL')
    op.create_index('ix_jobs_community_id_created_at', 'jobs', ['community_id', 'created_at'], unique=False)
    op.create_index('ix_jobs_community_id_status', 'jobs', ['community_id', 'status'], unique=False)
    op.add_column('assets', sa.Column('hidden', sa.Boolean(), server_default='0', nullable=False))
    op.create_index('ix_assets_community_id_visibility_id', 'assets', ['community_id', 'visibility', 'id'],
                    unique=False)
    op.create_index('ix_assets_visibility_id', 'assets', ['visibility', 'id'], unique=False)
    op.create_table('collections',
    sa.Column('id', _ID, nullable=False),
    sa.Column('owner_id', _ID, nullable=False),
    sa.Column('name', sa.String(length=40), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['owner_id'], ['users.id'], name=op.f('fk_collections_owner_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_collections')),
    sa.UniqueConstraint('owner_id', 'name', name=op.f('uq_collections_owner_id'))
    )
    op.create_table('collection_items',
    sa.Column('collection_id', _ID, nullable=False),
    sa.Column('asset_id', _ID, nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['asset_id'], ['assets.id'], name=op.f('fk_collection_items_asset_id_assets'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['collection_id'], ['collections.id'], name=op.f('fk_collection_items_collection_id_collections'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('collection_id', 'asset_id', name=op.f('pk_collection_items'))
    )
    op.create_table('votes',
    sa.Column('asset_id', _ID, nullable=False),
    sa.Column('user_id', _ID, nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['asset_id'], ['assets.id'], name=op.f('fk_votes_asset_id_assets'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_votes_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('asset_id', 'user_id', name=op.f('pk_votes'))
    )
    op.create_index('ix_votes_created_at', 'votes', ['created_at'], unique=False)
    op.create_table('bans',
    sa.Column('id', _ID, nullable=False),
    sa.Column('user_id', _ID, nullable=False),
    sa.Column('community_id', _ID, nullable=True),
    sa.Column('until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('reason', sa.String(length=200), nullable=False),
    sa.Column('actor', sa.String(length=100), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['community_id'], ['communities.id'], name=op.f('fk_bans_community_id_communities'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_bans_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_bans'))
    )
    op.create_index('ix_bans_user_id', 'bans', ['user_id'], unique=False)
    op.create_table('blocked_terms',
    sa.Column('id', _ID, nullable=False),
    sa.Column('community_id', _ID, nullable=True),
    sa.Column('pattern', sa.String(length=200), nullable=False),
    sa.Column('is_regex', sa.Boolean(), nullable=False),
    sa.Column('actor', sa.String(length=100), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['community_id'], ['communities.id'], name=op.f('fk_blocked_terms_community_id_communities'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_blocked_terms'))
    )
    op.create_index('ix_blocked_terms_community_id', 'blocked_terms', ['community_id'], unique=False)
    op.create_table('audit_log',
    sa.Column('id', _ID, nullable=False),
    sa.Column('community_id', _ID, nullable=True),
    sa.Column('actor', sa.String(length=100), nullable=False),
    sa.Column('action', sa.String(length=32), nullable=False),
    sa.Column('target', sa.String(length=200), nullable=False),
    sa.Column('reason', sa.String(length=200), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['community_id'], ['communities.id'], name=op.f('fk_audit_log_community_id_communities'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_log'))
    )
    op.create_index('ix_audit_log_community_id_id', 'audit_log', ['community_id', 'id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_audit_log_community_id_id', table_name='audit_log')
    op.drop_table('audit_log')
    op.drop_index('ix_blocked_terms_community_id', table_name='blocked_terms')
    op.drop_table('blocked_terms')
    op.drop_index('ix_bans_user_id', table_name='bans')
    op.drop_table('bans')
    op.drop_index('ix_votes_created_at', table_name='votes')
    op.drop_table('votes')
    op.drop_table('collection_items')
    op.drop_table('collections')
    op.drop_index('ix_assets_visibility_id', table_name='assets')
    op.drop_index('ix_assets_community_id_visibility_id', table_name='assets')
    with op.batch_alter_table('assets') as batch:
        batch.drop_column('hidden')
    op.drop_index('ix_jobs_community_id_status', table_name='jobs')
    op.drop_index('ix_jobs_community_id_created_at', table_name='jobs')
    with op.batch_alter_table('jobs') as batch:
        batch.drop_constraint(op.f('fk_jobs_community_id_communities'), type_='foreignkey')
        batch.drop_column('community_id')
