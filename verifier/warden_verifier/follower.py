"""Hearing Warden's `session.revoked` events on RabbitMQ, so revoked tokens are refused at once.

The follower declares a queue of its own process (named, not exclusive, deleted by the broker
after `queue_expires` seconds unused), binds it to the topic exchange `warden.events` with the
routing key `session.revoked`, and writes each event's session into a `RevokedSessions` until
the event's `expires_at`. The queue outlives a dropped connection: events published while the
follower reconnects wait for it there. `stop()` deletes the queue.

The broker is a trust boundary: with `trusted_publisher` (Warden's broker user) only messages
whose `user_id` is that user are believed; RabbitMQ refuses a `user_id` that is not the
publishing connection's own. A malformed event is logged and dropped, never retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import uuid
from datetime import datetime
from typing import Any

import aio_pika
import aio_pika.abc
from aio_pika.connection import make_url

from warden_verifier.revocations import RevokedSessions

log = logging.getLogger("warden_verifier")

EXCHANGE = "warden.events"
SESSION_REVOKED = "session.revoked"
MAX_EVENT_BYTES = 64 * 1024
MAX_SESSION_ID = 256


def read_session_revoked(body: bytes) -> tuple[str, float]:
    """The session id and `expires_at` (epoch seconds) of a `session.revoked` CloudEvent.

    ValueError for anything else."""
    if len(body) > MAX_EVENT_BYTES:
        raise ValueError("event too large")
    event = json.loads(body)
    if not isinstance(event, dict) or event.get("type") != SESSION_REVOKED:
        raise ValueError("not a session.revoked CloudEvent")
    if event.get("specversion") != "1.0":
        raise ValueError("not a CloudEvents 1.0 event")
    data = event.get("data")
    if not isinstance(data, dict):
        raise ValueError("no data")
    sid, expires = data.get("session_id"), data.get("expires_at")
    if not isinstance(sid, str) or not 0 < len(sid) <= MAX_SESSION_ID or "\x00" in sid:
        raise ValueError("no valid session_id")
    if not isinstance(expires, str):
        raise ValueError("no expires_at")
    moment = datetime.fromisoformat(expires)
    if moment.tzinfo is None:
        raise ValueError("expires_at has no time zone")
    return sid, moment.timestamp()


class SessionRevokedFollower:
    """Follows `session.revoked` on the broker at `amqp_url` into `revoked`; reconnects."""

    def __init__(
        self,
        amqp_url: str,
        revoked: RevokedSessions,
        *,
        trusted_publisher: str | None,
        exchange: str = EXCHANGE,
        queue_name: str | None = None,
        queue_expires: float = 600.0,
        reconnect_delay: float = 0.5,
        max_reconnect_delay: float = 10.0,
        purge_interval: float = 1.0,
    ) -> None:
        self.revoked = revoked
        self._url = amqp_url
        self._publisher = trusted_publisher
        self._exchange = exchange
        self.queue_name = queue_name or _queue_name()
        self._queue_expires_ms = int(queue_expires * 1000)
        self._delay = reconnect_delay
        self._max_delay = max_reconnect_delay
        self._purge_interval = purge_interval
        self._task: asyncio.Task[None] | None = None
        self._connection: aio_pika.abc.AbstractConnection | None = None
        self.ready = asyncio.Event()  # set while bound and consuming
        self.disconnected = asyncio.Event()  # set while not (after a drop, before the next)
        self.connections = 0  # connections made: 1 + reconnects
        self.dropped = 0  # messages refused as malformed or foreign

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="warden-verifier-follower")

    async def wait_ready(self, within: float = 10.0) -> None:
        async with asyncio.timeout(within):
            await self.ready.wait()

    async def wait_disconnected(self, within: float = 10.0) -> None:
        async with asyncio.timeout(within):
            await self.disconnected.wait()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Exception):
            await self._delete_queue()

    async def __aenter__(self) -> SessionRevokedFollower:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _run(self) -> None:
        delay = self._delay
        while True:
            try:
                await self._follow()
                delay = self._delay
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("session.revoked follower: %r; reconnecting in %.1fs", exc, delay)
            finally:
                self.ready.clear()
                self.disconnected.set()
                await self._close()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._max_delay)

    async def _follow(self) -> None:
        closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._connection = connection = await _connect(self._url, within=10)
        self.connections += 1

        def on_close(*_: Any) -> None:
            if not closed.done():
                closed.set_result(None)

        connection.close_callbacks.add(on_close)
        channel = await connection.channel()
        channel.close_callbacks.add(on_close)
        await channel.set_qos(prefetch_count=100)
        # Passive: Warden declares its exchange; a consumer needs no configure permission on
        # it. Until it exists (Warden never started on this broker) the follower retries.
        exchange = await channel.get_exchange(self._exchange, ensure=True)
        queue = await channel.declare_queue(self.queue_name, arguments=self._queue_arguments())
        await queue.bind(exchange, routing_key=SESSION_REVOKED)
        await queue.consume(self._on_message)
        self.disconnected.clear()
        self.ready.set()
        log.info("session.revoked follower: consuming from %s", self.queue_name)
        while not closed.done():
            await asyncio.wait([closed], timeout=self._purge_interval)
            self.revoked.purge()

    def _queue_arguments(self) -> dict[str, Any]:
        return {"x-expires": self._queue_expires_ms}

    async def _on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        async with message.process(ignore_processed=True):
            if self._publisher is not None and message.user_id != self._publisher:
                self.dropped += 1
                log.warning("session.revoked follower: dropped a message of %r", message.user_id)
                return
            try:
                session_id, expires_at = read_session_revoked(message.body)
            except (ValueError, TypeError, OverflowError) as exc:
                self.dropped += 1
                log.warning("session.revoked follower: dropped a malformed event: %s", exc)
                return
            self.revoked.revoke(session_id, expires_at)

    async def _close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close()

    async def _delete_queue(self) -> None:
        async with await _connect(self._url, within=5) as connection:
            channel = await connection.channel()
            await channel.queue_delete(self.queue_name)


async def _connect(url: str, within: float) -> aio_pika.abc.AbstractConnection:
    """`aio_pika.connect`, but a connection that fails to open is closed at once, not left to
    the garbage collector (whose close, scheduled from `__del__`, nobody may await).

    Warden's own is `handlers.nodes.connect`; this package imports nothing of Warden's."""
    connection = aio_pika.Connection(make_url(url))
    try:
        await connection.connect(timeout=within)
    except BaseException:
        await connection.close()
        raise
    return connection


def _queue_name() -> str:
    host = socket.gethostname()[:64]
    return f"warden-verifier.{host}.{os.getpid()}.{uuid.uuid4().hex[:12]}"
