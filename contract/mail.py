"""The private mail queue: what a mail job carries from the outbox to the mailer.

Never published on warden.events: a job's `token` is the secret its link carries, sealed
(AES-256-GCM, a key derived from WARDEN_KEY_ENCRYPTION_KEY, the job's id and kind as
associated data) so it is not readable in the outbox row, on the queue or in a dead letter.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from contract.wire import Timestamp

MAIL_QUEUE = "warden.mail"  # the mailer's work queue, fed by the outbox relay
MAIL_RETRY_QUEUE = "warden.mail.retry"  # a job waits out its backoff here (per-message TTL)
MAIL_JOB_TYPE = "mail.job"  # the outbox rows that are mail jobs, not events
MailKind = Literal["verify_email", "reset_password", "email_changed"]


class MailJob(BaseModel):
    """One mail to send; `id` is its de-duplication key (a job is sent once)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="The job's UUID; the mail's Message-ID is made from it.")
    kind: MailKind
    to: str = Field(description="The address the mail goes to.")
    user_id: int
    username: str
    token: str | None = Field(
        default=None,
        description="The link's token, sealed (base64url of nonce, ciphertext and tag).",
    )
    expires_at: Timestamp | None = None
    new_email: str | None = Field(
        default=None, description="email_changed: the address the account moved to."
    )
    requestid: str | None = None
