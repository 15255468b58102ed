"""Mails Warden sends, the tokens some of them carry, and when one may be sent (CONTRACT §7).

A mail is queued in the transaction of the change that asks for it (the unit of work's
`mails`), beside the hash of its token (`tokens`): the change, the token and the mail commit
together or not at all. What leaves the process, and how, is the adapters' business.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from domain import events
from domain.model import EmailToken, Mail, User
from domain.ports import Clock, UnitOfWork

VERIFY_EMAIL = "verify_email"  # a link that verifies the address it was sent to
RESET_PASSWORD = "reset_password"  # a link that sets a new password
EMAIL_CHANGED = "email_changed"  # a notice to the old address; no link, no token
MAIL_KINDS = (VERIFY_EMAIL, RESET_PASSWORD, EMAIL_CHANGED)
TOKEN_BYTES = 32  # 256 random bits, well over the contract's 128
RATE_WINDOW = 3600  # WARDEN_MAIL_MAX_PER_HOUR's hour, in seconds
# The public event that says a mail with a token was asked for (never the token itself).
_REQUESTED = {
    VERIFY_EMAIL: events.USER_VERIFICATION_REQUESTED,
    RESET_PASSWORD: events.USER_PASSWORD_RESET_REQUESTED,
}


def new_token() -> str:
    """A mail token: TOKEN_BYTES random bytes, URL-safe."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def digest(token: str) -> bytes:
    """What is stored of a token: its SHA-256 (a token has too much entropy to be guessed
    from it, so no slow hash is needed)."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True)
class MailPolicy:
    """WARDEN_EMAIL_TOKEN_TTL and WARDEN_MAIL_MAX_PER_HOUR."""

    token_ttl: int = 3600
    max_per_hour: int = 5


class Mailbox:
    """Queues mails in a unit of work: at most `max_per_hour` of one kind to one address."""

    def __init__(self, clock: Clock, policy: MailPolicy) -> None:
        self._clock = clock
        self.policy = policy

    async def allowed(self, uow: UnitOfWork, kind: str, address: str) -> bool:
        """Whether one more mail of `kind` may go to `address` this hour.

        Asked for every request, whether or not a mail follows, so an unknown address costs
        what a known one does; the count is serialised per (address, kind) until the commit.
        """
        since = self._clock.now() - timedelta(seconds=RATE_WINDOW)
        return await uow.mails.count_since(kind, address, since) < self.policy.max_per_hour

    async def send(self, uow: UnitOfWork, user: User, kind: str, address: str) -> None:
        """Queue a mail of `kind` to `address` if the hourly limit allows; a link kind gets a
        new token, stored as its hash, and its public event (which names no token)."""
        if not await self.allowed(uow, kind, address):
            return
        await self.queue(uow, user, kind, address)

    async def queue(self, uow: UnitOfWork, user: User, kind: str, address: str) -> None:
        """Queue the mail without asking the limit (the caller asked it)."""
        now = self._clock.now()
        if kind == EMAIL_CHANGED:
            uow.mails.add(Mail(kind, address, user.id, user.username, new_email=user.email))
            return
        token = new_token()
        expires = now + timedelta(seconds=self.policy.token_ttl)
        await uow.tokens.add(EmailToken(digest(token), kind, user.id, address, expires))
        uow.mails.add(Mail(kind, address, user.id, user.username, token, expires))
        uow.outbox.add(events.Event(_REQUESTED[kind], now, user.view()))
