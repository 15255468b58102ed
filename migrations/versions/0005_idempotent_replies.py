"""idempotent replies kept in the transaction of the change they answer

Revision ID: 0005
Revises: 0004

An Idempotency-Key's reply lived only in Redis, stored after the change committed: a worker
killed between the two left a committed change without a kept reply, and the client's retry
did the work again (a registration then answered a false 409 email_taken). The reply of a
change is now written in the change's own transaction, so it exists exactly when the change
does. Rows expire with the key's lifetime; every write removes a few expired ones.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "idempotent_replies",
        sa.Column("slot", sa.Text, primary_key=True),
        sa.Column("fingerprint", sa.Text, nullable=False),
        sa.Column("reply", JSONB, nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("idempotent_replies_expires_at", "idempotent_replies", ["expires_at"])


def downgrade() -> None:
    op.drop_table("idempotent_replies")
