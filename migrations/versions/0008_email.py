"""account recovery by email: users.is_verified, mail tokens, mail jobs

Revision ID: 0008
Revises: 0007

Existing users start unverified (CONTRACT §7). `email_tokens` keeps only the SHA-256 of each
token. `mail_jobs` is every mail queued (never its token): the hourly limit counts it, and the
mailer marks a job sent in it, so a redelivered job is not sent twice.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "users",
        sa.Column("is_verified", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_table(
        "email_tokens",
        sa.Column("digest", sa.LargeBinary, primary_key=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column(
            "user_id",
            sa.BigInteger,
            sa.ForeignKey("users.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("email", sa.Text, nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )
    op.create_index(
        "ix_email_tokens_unspent",
        "email_tokens",
        ["user_id", "kind"],
        postgresql_where=sa.text("used_at IS NULL"),
    )
    op.create_table(
        "mail_jobs",
        sa.Column("id", UUID(as_uuid=False), primary_key=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("address", sa.Text, nullable=False),
        sa.Column("user_id", sa.BigInteger, nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_mail_jobs_recent", "mail_jobs", ["kind", "address", "created_at"])


def downgrade() -> None:
    op.drop_table("mail_jobs")
    op.drop_table("email_tokens")
    op.drop_column("users", "is_verified")
