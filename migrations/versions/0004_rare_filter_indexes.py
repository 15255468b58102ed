"""listing at scale: partial keyset indexes for rare filters, finer statistics for q

Revision ID: 0004
Revises: 0003

Superusers and deactivated accounts are a small share of all users. Without an index of
their own, a page of `is_superuser=true` (or `is_active=false`) sorted by any key walks the
whole key index, or scans the table, discarding almost every row: hundreds of milliseconds
at a million users. Partial indexes hold only the matching rows, so a page reads about
`limit` entries, and cost nothing to maintain for the other rows.

A `q` page is planned from the estimated share of matching users. For `LIKE '%text%'`
Postgres counts matches among the search expression's histogram; at the default 100 entries
a 1 % match is often counted as none and floored at 0.01 %, and the planner then fetches all
ten thousand matches through the trigram index and sorts them (90 ms at a million users)
instead of walking the sort key's index until the page is full (a few ms). A 1,000-entry
histogram keeps that estimate close.
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

KEYS = {
    "created_at": "created_at, id",
    "username": '(lower(username) COLLATE "C"), id',
    "email": '(lower(email) COLLATE "C"), id',
}
SUBSETS = {"superuser": "is_superuser", "inactive": "NOT is_active"}
SEARCH_STATISTICS = 1000


def upgrade() -> None:
    for subset, predicate in SUBSETS.items():
        for key, columns in KEYS.items():
            op.execute(
                f"CREATE INDEX ix_users_{subset}_{key} ON users ({columns}) WHERE {predicate}"
            )
    op.execute(
        f"ALTER INDEX ix_users_search_trgm ALTER COLUMN 1 SET STATISTICS {SEARCH_STATISTICS}"
    )


def downgrade() -> None:
    op.execute("ALTER INDEX ix_users_search_trgm ALTER COLUMN 1 SET STATISTICS -1")
    for subset in SUBSETS:
        for key in KEYS:
            op.execute(f"DROP INDEX ix_users_{subset}_{key}")
