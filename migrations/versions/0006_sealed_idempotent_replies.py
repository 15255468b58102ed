"""idempotent replies sealed at rest: the reply column holds AES-GCM ciphertext

Revision ID: 0006
Revises: 0005

A kept reply can be a live token pair, and its fingerprint was a plain SHA-256 of a body
that may hold a password. Replies are now sealed with a key derived from
WARDEN_KEY_ENCRYPTION_KEY (the slot as associated data) and fingerprints are HMACs, so the
column holds bytes. Rows written before cannot be read by the new code (their fingerprints
no longer match either), and they hold secrets in clear: they are deleted. A repeat of a
request answered before the upgrade is then worked as new; run the migration, then restart
the workers (a worker of the previous version fails its keyed changes until it restarts).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DELETE FROM idempotent_replies")
    op.alter_column(
        "idempotent_replies", "reply", type_=sa.LargeBinary, postgresql_using="NULL::bytea"
    )


def downgrade() -> None:
    op.execute("DELETE FROM idempotent_replies")
    op.alter_column("idempotent_replies", "reply", type_=JSONB, postgresql_using="NULL::jsonb")
