"""Sending a rendered mail: over SMTP with aiosmtplib, or (dev, no WARDEN_SMTP_URL) to the log.

An SMTP answer decides what happens to the job (handlers.mailer):
- 5xx to MAIL, RCPT or DATA is about this message: PermanentMailError, dead-lettered at once;
- 4xx, no answer, a refused or broken connection, a timeout, or a 5xx to the greeting, EHLO
  or AUTH (about the server or our credentials, which an operator mends): TemporaryMailError,
  retried with backoff.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.message import EmailMessage
from urllib.parse import unquote, urlsplit

import aiosmtplib
import structlog

log = structlog.get_logger("warden.mail")

Accepted = Callable[[], Awaitable[None]]


class TemporaryMailError(Exception):
    """Try again later: the server is away, busy, or answered 4xx."""


class PermanentMailError(Exception):
    """The server refused this message for good (5xx)."""


@dataclass(frozen=True)
class SmtpTarget:
    """WARDEN_SMTP_URL read: smtp://host:port, smtp+starttls://user:pass@host:587,
    smtps://user:pass@host:465."""

    host: str
    port: int
    use_tls: bool
    start_tls: bool
    username: str | None
    password: str | None

    @classmethod
    def parse(cls, url: str) -> SmtpTarget:
        parts = urlsplit(url)
        scheme = parts.scheme
        default_port = {"smtp": 25, "smtp+starttls": 587, "smtps": 465}[scheme]
        return cls(
            host=parts.hostname or "localhost",
            port=parts.port or default_port,
            use_tls=scheme == "smtps",
            start_tls=scheme == "smtp+starttls",
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )


class SmtpMailSender:
    """One SMTP connection per mail: connect, (STARTTLS, AUTH,) send, mark, QUIT."""

    def __init__(self, target: SmtpTarget, timeout: float) -> None:
        self._target = target
        self._timeout = timeout

    async def send(self, message: EmailMessage, accepted: Accepted, link: str | None) -> None:
        """Send `message`; `accepted()` runs the moment the server has taken it, before QUIT."""
        t = self._target
        client = aiosmtplib.SMTP(
            hostname=t.host,
            port=t.port,
            use_tls=t.use_tls,
            start_tls=t.start_tls,
            username=t.username,
            password=t.password,
            timeout=self._timeout,
        )
        try:
            await client.connect()
        except aiosmtplib.SMTPException as exc:
            raise TemporaryMailError(_describe(exc)) from None
        except (OSError, TimeoutError) as exc:
            raise TemporaryMailError(type(exc).__name__) from None
        try:
            await self._transfer(client, message)
            await accepted()
            # The mail was taken: a lost goodbye changes nothing.
            with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
                await client.quit()
        finally:
            client.close()

    async def _transfer(self, client: aiosmtplib.SMTP, message: EmailMessage) -> None:
        try:
            await client.send_message(message)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            if codes and all(500 <= c < 600 for c in codes):
                raise PermanentMailError(f"recipient refused: {codes}") from None
            raise TemporaryMailError(f"recipient refused: {codes}") from None
        except aiosmtplib.SMTPResponseException as exc:
            if 500 <= exc.code < 600:
                raise PermanentMailError(_describe(exc)) from None
            raise TemporaryMailError(_describe(exc)) from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise TemporaryMailError(type(exc).__name__) from None


def _describe(exc: aiosmtplib.SMTPException) -> str:
    code = getattr(exc, "code", None)
    return f"{code} {exc.message}" if code else exc.message


class LogMailSender:
    """Dev mode: each mail is one log line with its link (WARDEN_SMTP_URL empty; never in
    production). The link holds the token: that is the point of this mode."""

    async def send(self, message: EmailMessage, accepted: Accepted, link: str | None) -> None:
        log.info(
            "mail (dev: written here, not sent)",
            to=message["To"],
            subject=message["Subject"],
            message_id=message["Message-ID"],
            link=link,
        )
        await accepted()
