"""The mailer: sends the mail jobs the outbox relay put on warden.mail, each once.

A job goes through these steps, and every outcome is decided here, on purpose:

1. Not published by Warden's broker user, or not a job: dead-lettered unworked.
2. Claimed in Postgres (storage.mail.PostgresMailLedger): a job already marked sent is
   acknowledged unsent (a redelivery after a worker died, or a copy); a job Warden never
   queued is acknowledged and dropped.
3. Rendered (handlers.mail_render) and sent. The moment the SMTP server accepts it, the job
   is marked sent (one committed UPDATE), then QUIT, then the acknowledgement.
4. A temporary failure (SMTP away, 4xx, Postgres away) sends the job to warden.mail.retry
   with a per-message TTL (WARDEN_MAIL_RETRY_BASE, doubling, at most WARDEN_MAIL_RETRY_MAX);
   it dead-letters back to warden.mail when the TTL runs out. After WARDEN_MAIL_MAX_ATTEMPTS
   attempts, or at once on a permanent refusal (5xx to the message), the job is rejected to
   warden.dlx → warden.dlq, token still sealed.

What remains: a worker killed after the SMTP server accepted a mail and before its mark
committed (one database round trip) sends it again on redelivery, with the same Message-ID.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog
from faststream import AckPolicy
from faststream.rabbit import Channel, RabbitRouter
from faststream.rabbit.annotations import RabbitMessage
from pydantic import ValidationError

from contract.mail import MailJob
from handlers import metrics
from handlers.decoding import raw_body
from handlers.mail_render import MailRenderer
from handlers.queues import MAIL_QUEUE
from storage.idempotency import Sealer
from storage.mail import Claim, Mark, PostgresMailLedger, open_token
from storage.smtp import Accepted, PermanentMailError, TemporaryMailError

log = structlog.get_logger("warden.mail")

ATTEMPT = "x-mail-attempt"  # header: which attempt this delivery of the job is (1 first)
PRUNE_EVERY = 500  # jobs sent between two prunes of the ledger
KEEP_DAYS = 14  # how long a sent job is remembered: far past any retry or redelivery


class MailSender(Protocol):
    """Sends one rendered mail (storage.smtp)."""

    async def send(self, message: Any, accepted: Accepted, link: str | None) -> None: ...


Retry = Callable[[bytes, dict[str, Any], int], Awaitable[None]]  # body, headers, delay in ms


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    base: float
    cap: float

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1 first)."""
        return float(min(self.base * 2.0 ** (attempt - 1), self.cap))


class Mailer:
    """Sends one job, once: claim, render, send, mark (see the module's steps)."""

    def __init__(
        self,
        ledger: PostgresMailLedger,
        sender: MailSender,
        renderer: MailRenderer,
        sealer: Sealer,
    ) -> None:
        self._ledger = ledger
        self._sender = sender
        self._renderer = renderer
        self._sealer = sealer
        self._sent = 0

    async def deliver(self, job: MailJob) -> Claim:
        """ "send" once sent now; "sent" if it was before; "unknown" if Warden never queued it.

        Raises TemporaryMailError (try again later) or PermanentMailError (never).
        """
        try:
            async with self._ledger.claim(job.id) as (state, mark):
                if state == "send":
                    await self._send(job, mark)
        except (TemporaryMailError, PermanentMailError):
            raise
        except Exception as exc:  # Postgres away (or a fault): the job waits as in an outage
            log.warning("mail job failed", error=type(exc).__name__, exc_info=True)
            raise TemporaryMailError(type(exc).__name__) from None
        if state == "send":
            await self._prune_now_and_then()
        return state

    async def _send(self, job: MailJob, mark: Mark) -> None:
        token = open_token(self._sealer, job)
        if job.token is not None and token is None:
            raise PermanentMailError("the job's token cannot be opened (another key?)")
        try:
            message = self._renderer.render(job, token, datetime.now(UTC))
        except ValueError as exc:  # a header with a line break: never sent
            raise PermanentMailError(f"unrenderable: {exc}") from None
        await self._sender.send(message, mark, self._renderer.link(job, token))

    async def _prune_now_and_then(self) -> None:
        self._sent += 1
        if self._sent % PRUNE_EVERY == 0:
            try:
                await self._ledger.prune(KEEP_DAYS)
            except Exception as exc:
                log.warning("mail ledger prune failed", error=type(exc).__name__)


def mailer_router(
    mailer: Mailer,
    retry: Retry,
    policy: RetryPolicy,
    warden_user: str,
    prefetch: int,
) -> RabbitRouter:
    """The subscriber of warden.mail: every delivery ends acknowledged, retried or dead-lettered.

    A job redelivered past warden.mail's delivery limit (its worker died holding it, again and
    again: a job that kills workers) is dead-lettered unworked by the broker.
    """
    r = RabbitRouter()

    @r.subscriber(
        MAIL_QUEUE,
        channel=Channel(prefetch_count=prefetch),
        decoder=raw_body,
        ack_policy=AckPolicy.MANUAL,
        no_reply=True,
        description="Sends each mail job once (SMTP), retrying with backoff; see the README.",
    )
    async def send_mail(body: bytes, message: RabbitMessage) -> None:
        raw = message.raw_message
        if raw.user_id != warden_user:
            metrics.REFUSED.labels(MAIL_QUEUE.name, "foreign_publisher").inc()
            log.warning("mail job refused: not published by Warden", publisher=raw.user_id)
            await message.reject()
            return
        try:
            job = MailJob.model_validate_json(body)
        except ValidationError:
            metrics.REFUSED.labels(MAIL_QUEUE.name, "malformed").inc()
            log.warning("mail job refused: malformed", message_id=raw.message_id)
            await message.reject()
            return
        headers = dict(raw.headers or {})
        attempt = _attempt(headers)
        structlog.contextvars.bind_contextvars(
            request_id=job.requestid, queue=MAIL_QUEUE.name, mail_id=job.id, kind=job.kind
        )
        started = time.perf_counter()
        try:
            state = await mailer.deliver(job)
        except PermanentMailError as exc:
            await _dead_letter(message, job, attempt, str(exc))
            return
        except TemporaryMailError as exc:
            metrics.MAILS.labels("failed", job.kind).inc()
            if attempt >= policy.max_attempts:
                await _dead_letter(message, job, attempt, str(exc))
                return
            delay = policy.delay(attempt)
            log.warning("mail not sent; will retry", attempt=attempt, in_s=delay, error=str(exc))
            await retry(body, headers | {ATTEMPT: attempt + 1}, int(delay * 1000))
            await message.ack()
            return
        if state == "send":
            metrics.MAILS.labels("sent", job.kind).inc()
        elif state == "unknown":
            metrics.REFUSED.labels(MAIL_QUEUE.name, "unknown_job").inc()
        elapsed = round((time.perf_counter() - started) * 1000, 2)
        log.info("mail job done", outcome=state, attempt=attempt, duration_ms=elapsed)
        await message.ack()

    return r


async def _dead_letter(message: RabbitMessage, job: MailJob, attempt: int, why: str) -> None:
    metrics.MAILS.labels("dead_lettered", job.kind).inc()
    log.error("mail dead-lettered", attempt=attempt, error=why)
    await message.reject()  # warden.mail's dead-letter exchange: warden.dlx → warden.dlq


def _attempt(headers: dict[str, Any]) -> int:
    value = headers.get(ATTEMPT, 1)
    return value if isinstance(value, int) and value >= 1 else 1
