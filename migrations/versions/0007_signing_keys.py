"""signing keys: the key store of CONTRACT §6 (EdDSA/ES256 keys, published as a JWKS)

Revision ID: 0007
Revises: 0006

One row per key, for its whole life: `next` (published, not signing yet), `active` (the one
that signs), `retired` (published and verifying until its last access token expired),
then `gone` (left the set; the private half erased) or `revoked` (`warden keys rotate
--now`: left the set at once). Partial unique indexes make "one active key, at most one
next" a fact of the database, whatever several workers do at the same moment. The private
half is AES-GCM ciphertext under a key derived from WARDEN_KEY_ENCRYPTION_KEY, the kid its
associated data.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

STATES = "'next', 'active', 'retired', 'gone', 'revoked'"


def upgrade() -> None:
    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.Text, primary_key=True),
        sa.Column("algorithm", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("public_jwk", JSONB, nullable=False),
        sa.Column("private_key", sa.LargeBinary, nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("activates_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("removes_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(f"state IN ({STATES})", name="signing_keys_state"),
    )
    op.create_index(
        "signing_keys_one_active",
        "signing_keys",
        ["state"],
        unique=True,
        postgresql_where=sa.text("state = 'active'"),
    )
    op.create_index(
        "signing_keys_one_next",
        "signing_keys",
        ["state"],
        unique=True,
        postgresql_where=sa.text("state = 'next'"),
    )


def downgrade() -> None:
    op.drop_index("signing_keys_one_next", table_name="signing_keys")
    op.drop_index("signing_keys_one_active", table_name="signing_keys")
    op.drop_table("signing_keys")
