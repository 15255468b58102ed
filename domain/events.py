"""Domain events: past-tense facts, written to the outbox in their change's transaction.

The type names are the domain's; contract/events.py says what each carries on the wire and
writes it as a CloudEvent.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from domain.model import EndedSession, RevokeReason, UserView

USER_REGISTERED = "user.registered"
USER_UPDATED = "user.updated"
USER_DELETED = "user.deleted"
USER_PASSWORD_CHANGED = "user.password_changed"
USER_LOGGED_IN = "user.logged_in"
USER_LOGGED_OUT = "user.logged_out"
USER_LOGIN_FAILED = "user.login_failed"
USER_TOKEN_REUSE_DETECTED = "user.token_reuse_detected"
SIGNING_KEYS_CHANGED = "signing_keys.changed"  # the published key set changed (no user)
USER_MFA_ENABLED = "user.mfa_enabled"
USER_MFA_DISABLED = "user.mfa_disabled"
# CONTRACT §7: none of these carries a token (the mail that does leaves on a private queue).
USER_VERIFICATION_REQUESTED = "user.verification_requested"
USER_VERIFIED = "user.verified"
USER_PASSWORD_RESET_REQUESTED = "user.password_reset_requested"
USER_PASSWORD_RESET = "user.password_reset"
USER_EMAIL_CHANGED = "user.email_changed"
SESSION_REVOKED = "session.revoked"

EVENT_TYPES = (
    USER_REGISTERED,
    USER_UPDATED,
    USER_DELETED,
    USER_PASSWORD_CHANGED,
    USER_LOGGED_IN,
    USER_LOGGED_OUT,
    USER_LOGIN_FAILED,
    USER_TOKEN_REUSE_DETECTED,
    SIGNING_KEYS_CHANGED,
    USER_MFA_ENABLED,
    USER_MFA_DISABLED,
    USER_VERIFICATION_REQUESTED,
    USER_VERIFIED,
    USER_PASSWORD_RESET_REQUESTED,
    USER_PASSWORD_RESET,
    USER_EMAIL_CHANGED,
    SESSION_REVOKED,
)
# One session ends once: its session.revoked has an id of its own, derived from the session,
# so even a copy written twice would be one event to a subscriber that de-duplicates.
_REVOKED_IDS = uuid.UUID("6f0c6a8e-6b1e-4a53-9a7d-2f3c4e5d6a7b")


@dataclass(frozen=True)
class Event:
    """One domain event; `extra` holds session_id, client_ip or reason beside `user`.

    `about`: the user an event carries no `user` of is about (its subject).
    """

    type: str
    time: datetime
    user: UserView | None
    extra: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    about: int | None = None

    @property
    def subject(self) -> str | None:
        user_id = self.user_id
        return None if user_id is None else str(user_id)

    @property
    def user_id(self) -> int | None:
        return self.about if self.user is None else self.user.id


def session_revoked(ended: EndedSession, reason: RevokeReason, time: datetime) -> Event:
    """The one event of a session that `reason` ended."""
    data = {
        "session_id": ended.session_id,
        "user_id": ended.user_id,
        "reason": reason.value,
        "expires_at": ended.access_expires_at,
    }
    event_id = str(uuid.uuid5(_REVOKED_IDS, ended.session_id))
    return Event(SESSION_REVOKED, time, None, data, id=event_id, about=ended.user_id)
