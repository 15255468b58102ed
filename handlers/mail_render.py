"""A mail job as the message people receive: Jinja2 templates, a text and an HTML part.

One layout per part; HTML autoescaped; no images, no tracking pixel, no redirecting link.
The link carries its token in the URL fragment (`#token=...`): a browser never sends the
fragment to a server, so the token stays out of access logs and Referer headers; the page at
the link reads it and posts it to the API.

Headers are written under `email.policy.SMTP`, which refuses a CR or LF in any header value:
no address, name or subject can add a header.
"""

from __future__ import annotations

import email.policy
import email.utils
from dataclasses import dataclass
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from pathlib import Path

import jinja2

from contract.mail import MailJob

TEMPLATES = Path(__file__).with_name("templates") / "mail"
# Where each link kind points: pages of the account console (CONTRACT §9), under PUBLIC_URL.
LINK_PATHS = {"verify_email": "/account/verify", "reset_password": "/account/reset-password"}
SUBJECTS = {
    "verify_email": "Verify your email address for {product}",
    "reset_password": "Reset your {product} password",
    "email_changed": "Your {product} email address was changed",
}


@dataclass(frozen=True)
class Branding:
    """What every mail names: the product, the public base URL, the sender."""

    product: str
    public_url: str
    mail_from: str


class MailRenderer:
    """Renders mail jobs (their tokens already opened) to RFC 5322 messages."""

    def __init__(self, branding: Branding) -> None:
        self._branding = branding
        self._env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES),
            autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=False),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
        )
        # The domain of Message-IDs: the sender's, so they are unique to this deployment.
        sender = email.utils.parseaddr(branding.mail_from)[1]
        self._domain = sender.rpartition("@")[2] or "localhost"

    def link(self, job: MailJob, token: str | None) -> str | None:
        """The mail's link, token in the fragment; None for a notice."""
        path = LINK_PATHS.get(job.kind)
        if path is None or token is None:
            return None
        return f"{self._branding.public_url}{path}#token={token}"

    def render(self, job: MailJob, token: str | None, now: datetime) -> EmailMessage:
        """The message; ValueError if a header would hold a line break (never sent)."""
        b = self._branding
        subject = SUBJECTS[job.kind].format(product=b.product)
        context = {
            "product": b.product,
            "public_url": b.public_url,
            "subject": subject,
            "username": job.username,
            "to": job.to,
            "new_email": job.new_email or "",
            "link": self.link(job, token),
            "expires": _when(job.expires_at),
        }
        message = EmailMessage(policy=email.policy.SMTP)
        message["From"] = b.mail_from
        message["To"] = Address(addr_spec=job.to)
        message["Subject"] = subject
        message["Date"] = email.utils.format_datetime(now.astimezone(UTC))
        # Made from the job's id: a mail sent twice (see the README) is recognisably one.
        message["Message-ID"] = f"<{job.id}@{self._domain}>"
        message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to it
        message.set_content(self._env.get_template(f"{job.kind}.txt").render(context))
        message.add_alternative(
            self._env.get_template(f"{job.kind}.html").render(context), subtype="html"
        )
        return message


def _when(moment: datetime | None) -> str:
    if moment is None:
        return ""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
