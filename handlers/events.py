"""Events leave through the outbox relay; the audit log is their first subscriber."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import structlog
from faststream import AckPolicy
from faststream.exceptions import RejectMessage
from faststream.rabbit import Channel, RabbitBroker, RabbitRouter
from faststream.rabbit.annotations import RabbitMessage

from contract.mail import MAIL_JOB_TYPE
from handlers import metrics
from handlers.decoding import raw_body
from handlers.queues import (
    EVENT_DELIVERY_LIMIT,
    EVENTS_EXCHANGE,
    MAIL_QUEUE,
    event_queue,
)
from storage.outbox import PostgresOutboxSource

log = structlog.get_logger("warden.events")

AUDIT_DELIVERY_LIMIT = EVENT_DELIVERY_LIMIT  # then dead-lettered: a poison event never loops
AUDIT_QUEUE = event_queue("warden.audit", routing_key="#", delivery_limit=AUDIT_DELIVERY_LIMIT)
CLOUDEVENTS_JSON = "application/cloudevents+json"
BATCH = 200
IDLE_WAIT = 5.0  # a safety net only: commits wake the relay through NOTIFY
# A retry costs one connect and one publish attempt, so it stays frequent: events committed
# while the broker was away go out within seconds of its return, not after a long sleep.
MAX_BACKOFF = 2.0
FINAL_DRAIN = 5.0  # seconds a stopping leader spends publishing what was just committed
AUDIT_PREFETCH = 16  # bounds the audit consumer's share of the database pool
AUDIT_RETRY_BASE = 0.1  # seconds before a failed event goes back to the queue, doubling
AUDIT_RETRY_MAX = 1.0


class OutboxRelay:
    """Publishes committed events in id order with confirms, then deletes them (pruning)."""

    def __init__(self, source: PostgresOutboxSource, broker: RabbitBroker, user: str) -> None:
        self._source = source
        self._broker = broker
        self._user = user  # the broker's user of `broker`: each event names it as its user_id
        self._stopping = asyncio.Event()
        self.leading = False
        self.published = 0

    def stop(self) -> None:
        self._stopping.set()
        self._source.wakeup.set()

    async def run(self) -> None:
        backoff = 0.5
        while not self._stopping.is_set():
            try:
                await self._lead_and_drain()
                backoff = 0.5
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("outbox relay retrying", error=type(exc).__name__, in_s=backoff)
                await self._source.close()
                self.leading = False
                await self._sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
        await self._final_drain()
        await self._source.close()

    async def _final_drain(self) -> None:
        """On shutdown the leader publishes what the last in-flight handlers committed."""
        if not (self.leading and self._source.connected):
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(FINAL_DRAIN):
                while await self._drain_batch():
                    pass

    async def _lead_and_drain(self) -> None:
        if not self._source.connected:
            await self._source.connect()
        if not self.leading:
            self.leading = await self._source.try_lead()
            if not self.leading:  # another worker's relay publishes; stand by
                await self._sleep(2.0)
                return
        self._source.wakeup.clear()
        while await self._drain_batch():
            if self._stopping.is_set():
                return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(IDLE_WAIT):
                await self._source.wakeup.wait()

    async def _drain_batch(self) -> bool:
        rows = await self._source.pending(BATCH)
        done: list[int] = []
        try:
            for row_id, kind, payload in rows:
                await self._publish(kind, payload)
                done.append(row_id)
        finally:
            if done:
                await self._source.delete(done)
                self.published += len(done)
                metrics.EVENTS_PUBLISHED.inc(len(done))
        return len(rows) == BATCH

    async def _publish(self, kind: str, payload: bytes) -> None:
        if kind == MAIL_JOB_TYPE:
            await self._publish_mail(payload)
            return
        event = orjson.loads(payload)
        headers = {"x-request-id": event["requestid"]} if event.get("requestid") else None
        await self._broker.publish(
            payload,
            exchange=EVENTS_EXCHANGE,
            routing_key=kind,
            content_type=CLOUDEVENTS_JSON,
            message_id=event["id"],
            # RabbitMQ refuses a user_id that is not the connection's user: subscribers (the
            # audit first) tell Warden's events from anything else on the exchange by it.
            user_id=self._user,
            persist=True,
            headers=headers,
            timeout=10,
        )

    async def _publish_mail(self, payload: bytes) -> None:
        """A mail job goes to the private queue warden.mail, never to warden.events."""
        job = orjson.loads(payload)
        headers = {"x-request-id": job["requestid"]} if job.get("requestid") else None
        await self._broker.publish(
            payload,
            routing_key=MAIL_QUEUE.name,
            content_type="application/json",
            message_id=job["id"],
            user_id=self._user,  # the mailer sends only what Warden's user published
            persist=True,
            headers=headers,
            timeout=10,
        )

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()


StoreEvent = Callable[[dict[str, Any]], Awaitable[bool]]


def audit_router(store: StoreEvent, warden_user: str) -> RabbitRouter:
    """The audit consumer: stores each event Warden published (user_id `warden_user`) once."""
    r = RabbitRouter()

    @r.subscriber(
        AUDIT_QUEUE,
        exchange=EVENTS_EXCHANGE,
        channel=Channel(prefetch_count=AUDIT_PREFETCH),
        decoder=raw_body,
        ack_policy=AckPolicy.NACK_ON_ERROR,
        no_reply=True,
        description="Stores every domain event once in the audit log.",
    )
    async def record(body: bytes, message: RabbitMessage) -> None:
        publisher = message.raw_message.user_id
        if publisher != warden_user:
            # Dead-lettered, as a malformed event is: kept for whoever looks into it, never
            # stored, never retried.
            metrics.REFUSED.labels(AUDIT_QUEUE.name, "foreign_publisher").inc()
            log.warning(
                "audit refused an event Warden did not publish",
                message_id=message.message_id,
                publisher=publisher,
            )
            raise RejectMessage()
        try:
            event = orjson.loads(body)
            if not isinstance(event, dict) or not {"id", "type", "time"} <= event.keys():
                raise ValueError("not a CloudEvent")
        except ValueError:
            log.warning("audit rejected a malformed event", message_id=message.message_id)
            raise RejectMessage() from None
        structlog.contextvars.bind_contextvars(
            request_id=event.get("requestid"), queue=AUDIT_QUEUE.name
        )
        try:
            stored = await store(event)
        except Exception:
            # Back to the queue after a pause, so a failing store never loops hot; the
            # queue's delivery limit then dead-letters an event that keeps failing.
            await asyncio.sleep(_retry_delay(message.headers or {}))
            raise
        log.info("event audited", event_id=event["id"], type=event["type"], duplicate=not stored)

    return r


def _retry_delay(headers: dict[str, Any]) -> float:
    """Seconds to wait before a failed delivery goes back: none before the dead-lettering one."""
    attempt = headers.get("x-delivery-count") or 0  # set by quorum queues on redeliveries
    if not isinstance(attempt, int) or attempt >= AUDIT_DELIVERY_LIMIT:
        return 0.0
    return min(AUDIT_RETRY_BASE * 2.0**attempt, AUDIT_RETRY_MAX)
