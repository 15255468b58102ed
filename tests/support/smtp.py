"""A real SMTP server in the test (aiosmtpd), on a port of its own, that the test can stop,
restart, make refuse mail, or make hang before saying goodbye."""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
from email.message import EmailMessage
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.support.processes import free_port

TOKEN = re.compile(r"#token=([A-Za-z0-9_-]+)")


class Inbox:
    """aiosmtpd handler: keeps every accepted message; `refuse` answers DATA with it instead."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.refused = 0  # DATA commands answered with `refuse`
        self.refuse: str | None = None  # e.g. "550 5.7.1 no" or "451 4.3.0 later"
        self.hold_quit: asyncio.Event | None = None  # set: QUIT is answered only once it is set
        self.accepted = asyncio.Event()  # set at each accepted message

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.refuse is not None:
            self.refused += 1
            return self.refuse
        content = envelope.original_content or b""
        message = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        message["X-Envelope-To"] = ",".join(envelope.rcpt_tos)
        self.messages.append(message)
        self.accepted.set()
        return "250 2.0.0 OK"

    async def handle_QUIT(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.hold_quit is not None:
            await self.hold_quit.wait()
        return "221 Bye"

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.messages if m["To"] == address]


def text_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    content: str = part.get_content()
    return content


def html_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("html",))
    assert part is not None
    content: str = part.get_content()
    return content


def token_in(message: EmailMessage) -> str:
    """The token of the mail's link (the text part's; the HTML part carries the same)."""
    found = TOKEN.search(text_of(message))
    assert found, f"no link with a token in:\n{text_of(message)}"
    return found.group(1)


class SmtpServer:
    """An aiosmtpd server on 127.0.0.1:`port` in this event loop; stop() closes the port."""

    def __init__(self, inbox: Inbox | None = None, port: int | None = None) -> None:
        self.inbox = inbox or Inbox()
        self.port = port or free_port()
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    async def start(self) -> SmtpServer:
        loop = asyncio.get_running_loop()

        def protocol() -> Any:
            return SMTP(self.inbox, hostname="smtp.test", loop=loop)

        self._server = await loop.create_server(protocol, "127.0.0.1", self.port)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    async def __aenter__(self) -> SmtpServer:
        return await self.start()

    async def __aexit__(self, *_: object) -> None:
        await self.stop()
