"""TOTP second factor: each user's sealed secret and its recovery code digests

Revision ID: 0009
Revises: 0008

`user_totp` holds one enrolment per user: the secret sealed with AES-GCM under a subkey of
WARDEN_KEY_ENCRYPTION_KEY (the user id as associated data), whether it is confirmed, and
the last time-step whose code was accepted (the replay guard: a step is accepted only if
later). `mfa_recovery_codes` holds HMAC-SHA256 digests of the unused recovery codes; a code
is spent by deleting its row. Both go with their user (ON DELETE CASCADE).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "user_totp",
        sa.Column(
            "user_id",
            sa.BigInteger,
            sa.ForeignKey("users.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("secret", sa.LargeBinary, nullable=False),
        sa.Column("confirmed", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("last_step", sa.BigInteger, nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "mfa_recovery_codes",
        sa.Column(
            "user_id",
            sa.BigInteger,
            sa.ForeignKey("users.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("digest", sa.LargeBinary, primary_key=True),
    )


def downgrade() -> None:
    op.drop_table("mfa_recovery_codes")
    op.drop_table("user_totp")
