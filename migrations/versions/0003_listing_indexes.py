"""keyset and search indexes for the user listing

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    # One index per sort key, the id as the unique tiebreaker; text keys in byte order.
    op.execute("CREATE INDEX ix_users_created_at_id ON users (created_at, id)")
    op.execute('CREATE INDEX ix_users_username_id ON users ((lower(username) COLLATE "C"), id)')
    op.execute('CREATE INDEX ix_users_email_id ON users ((lower(email) COLLATE "C"), id)')
    op.execute(
        "CREATE INDEX ix_users_search_trgm ON users USING gin "
        "((lower(email || ' ' || username || ' ' || coalesce(full_name, ''))) gin_trgm_ops)"
    )


def downgrade() -> None:
    op.execute("DROP INDEX ix_users_search_trgm")
    op.execute("DROP INDEX ix_users_email_id")
    op.execute("DROP INDEX ix_users_username_id")
    op.execute("DROP INDEX ix_users_created_at_id")
