"""A worker killed with `kill -9` after the SMTP server accepted a mail and before the job was
acknowledged: the job comes back, and the mail is still sent once."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest_asyncio

from storage.db import asyncpg_dsn
from tests.conftest import PASSWORD, make_settings, own_world, unique
from tests.e2e.test_faults import WardenProcess, edge_client, worker_env
from tests.support.infra import Urls
from tests.support.smtp import SmtpServer
from tests.support.waiting import eventually

STARTUP = 90.0
DELIVERY = 30.0


@pytest_asyncio.fixture(scope="module")
async def isolated(urls: Urls) -> AsyncIterator[Urls]:
    async with own_world(urls, "mailcrash") as own:
        yield own


async def sent_at(database_url: str, address: str) -> Any:
    conn = await asyncpg.connect(asyncpg_dsn(database_url), timeout=10)
    try:
        return await conn.fetchval("SELECT sent_at FROM mail_jobs WHERE address = $1", address)
    finally:
        await conn.close()


async def test_a_worker_killed_between_the_smtp_accept_and_the_ack_sends_the_mail_once(
    isolated: Urls, tmp_path: Path
) -> None:
    async with SmtpServer() as smtp:
        settings = make_settings(isolated, smtp_url=smtp.url)
        env = worker_env(settings) | {"WARDEN_SMTP_URL": smtp.url}
        inbox = smtp.inbox
        inbox.hold_quit = asyncio.Event()  # the worker waits for "221 Bye" before its ack
        first = WardenProcess("worker", env, tmp_path / "first.log")
        second = WardenProcess("worker", env, tmp_path / "second.log")
        try:
            await first.start()
            await first.wait_for_line("worker started", STARTUP)
            name = unique()
            address = f"{name}@example.com"
            async with edge_client(settings) as http:
                body = {"email": address, "username": name, "password": PASSWORD}
                async with http.post("/api/v1/users", json=body) as r:
                    assert r.status == 201, await r.text()

            database = settings.database_url.get_secret_value()

            async def marked() -> bool:
                return await sent_at(database, address) is not None

            # Accepted by the server, marked sent, and the worker held at QUIT: not acked.
            await eventually(marked, DELIVERY, "the job marked sent", 0.05)
            assert len(inbox.to(address)) == 1
            first.signal(signal.SIGKILL)
            assert await first.wait(10) is not None
            inbox.hold_quit.set()
            inbox.hold_quit = None

            await second.start()
            await second.wait_for_line("worker started", STARTUP)
            # The job came back to the second worker, which found it sent and acked it.
            await second.wait_for_line("outcome=sent", DELIVERY)
            await asyncio.sleep(1.0)
            assert len(inbox.to(address)) == 1
        finally:
            if inbox.hold_quit is not None:
                inbox.hold_quit.set()
            await first.stop()
            await second.stop()
