"""Table definitions (SQLAlchemy Core). The migrations, not these, create the schema."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    LargeBinary,
    MetaData,
    Table,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID

metadata = MetaData()

users = Table(
    "users",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("email", Text, nullable=False),
    Column("username", Text, nullable=False),
    Column("hashed_password", Text, nullable=False),
    Column("full_name", Text, nullable=True),
    Column("is_active", Boolean, nullable=False, server_default="true"),
    Column("is_superuser", Boolean, nullable=False, server_default="false"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("is_verified", Boolean, nullable=False, server_default="false"),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("event_id", UUID(as_uuid=False), nullable=False),
    Column("type", Text, nullable=False),
    Column("user_id", BigInteger, nullable=True),
    Column("payload", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("event_id", UUID(as_uuid=False), nullable=False, unique=True),
    Column("type", Text, nullable=False),
    Column("user_id", BigInteger, nullable=True),
    Column("time", DateTime(timezone=True), nullable=False),
    Column("data", JSONB, nullable=False),
)

# The reply to an idempotent change, written in the change's own transaction (0005), sealed
# (0006: AES-GCM, see storage/idempotency.py).
idempotent_replies = Table(
    "idempotent_replies",
    metadata,
    Column("slot", Text, primary_key=True),
    Column("fingerprint", Text, nullable=False),
    Column("reply", LargeBinary, nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)

# Signing keys (0007): every key of the JWKS, its state and its sealed private half.
signing_keys = Table(
    "signing_keys",
    metadata,
    Column("kid", Text, primary_key=True),
    Column("algorithm", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("public_jwk", JSONB, nullable=False),
    Column("private_key", LargeBinary, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("activates_at", DateTime(timezone=True), nullable=False),
    Column("retired_at", DateTime(timezone=True), nullable=True),
    Column("removes_at", DateTime(timezone=True), nullable=True),
)

# A user's TOTP enrolment (0009): the secret sealed (AES-GCM, see domain/mfa.py), confirmed or
# pending, and the last time-step accepted (the replay guard).
user_totp = Table(
    "user_totp",
    metadata,
    Column("user_id", BigInteger, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("secret", LargeBinary, nullable=False),
    Column("confirmed", Boolean, nullable=False, server_default="false"),
    Column("last_step", BigInteger, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("confirmed_at", DateTime(timezone=True), nullable=True),
)

# Digests (HMAC-SHA256) of a user's unused recovery codes; spending one deletes its row.
mfa_recovery_codes = Table(
    "mfa_recovery_codes",
    metadata,
    Column("user_id", BigInteger, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("digest", LargeBinary, primary_key=True),
)

# CONTRACT §7 (0008): mail tokens, kept only as their SHA-256; every mail queued (no token).
email_tokens = Table(
    "email_tokens",
    metadata,
    Column("digest", LargeBinary, primary_key=True),
    Column("kind", Text, nullable=False),
    Column("user_id", BigInteger, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("email", Text, nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("used_at", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

mail_jobs = Table(
    "mail_jobs",
    metadata,
    Column("id", UUID(as_uuid=False), primary_key=True),
    Column("kind", Text, nullable=False),
    Column("address", Text, nullable=False),
    Column("user_id", BigInteger, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("sent_at", DateTime(timezone=True), nullable=True),
)
