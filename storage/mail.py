"""Mail tokens and mail jobs in Postgres (CONTRACT §7).

| table | rows |
|---|---|
| email_tokens | one per token: its SHA-256, kind, user, the address it went to, expiry, use |
| mail_jobs | one per mail queued (never its token): counted by the hourly limit; `sent_at` is
  written by the mailer the moment the SMTP server accepts the mail |
| outbox | a job's message (type `mail.job`, its token sealed), published by the relay to
  the private queue warden.mail, never to warden.events |
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, Literal

import asyncpg
import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from contract.mail import MAIL_JOB_TYPE, MailJob
from contract.wire import dump
from domain.model import EmailToken, Mail
from storage.idempotency import Sealer
from storage.outbox import OUTBOX_CHANNEL


def seal_token(sealer: Sealer, job_id: str, kind: str, token: str) -> str:
    sealed = sealer.seal(token.encode(), _context(job_id, kind))
    return base64.urlsafe_b64encode(sealed).decode()


def open_token(sealer: Sealer, job: MailJob) -> str | None:
    """The job's token, or None when it has none or it fails authentication."""
    if job.token is None:
        return None
    try:
        sealed = base64.urlsafe_b64decode(job.token.encode())
    except ValueError:
        return None
    opened = sealer.open(sealed, _context(job.id, job.kind))
    return None if opened is None else opened.decode()


def _context(job_id: str, kind: str) -> bytes:
    return f"warden mail job\x00{job_id}\x00{kind}".encode()


class SqlAlchemyEmailTokens:
    """EmailTokenRepository on the unit of work's transaction."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, token: EmailToken) -> None:
        await self._conn.exec_driver_sql(
            "INSERT INTO email_tokens (digest, kind, user_id, email, expires_at)"
            " VALUES ($1, $2, $3, $4, $5)",
            (token.digest, token.kind, token.user_id, token.email, token.expires_at),
        )

    async def find(self, digest: bytes, kind: str, now: datetime) -> EmailToken | None:
        return await self._one(_FIND, digest, kind, now)

    async def spend(self, digest: bytes, kind: str, now: datetime) -> EmailToken | None:
        return await self._one(_SPEND, digest, kind, now)

    async def spend_all(self, user_id: int, kind: str, now: datetime) -> None:
        await self._conn.exec_driver_sql(
            "UPDATE email_tokens SET used_at = $3"
            " WHERE user_id = $1 AND kind = $2 AND used_at IS NULL",
            (user_id, kind, now),
        )

    async def _one(self, query: str, *args: Any) -> EmailToken | None:
        row = (await self._conn.exec_driver_sql(query, args)).mappings().first()
        if row is None:
            return None
        return EmailToken(
            row["digest"], row["kind"], row["user_id"], row["email"], row["expires_at"]
        )


_FIND = (
    "SELECT digest, kind, user_id, email, expires_at FROM email_tokens"
    " WHERE digest = $1 AND kind = $2 AND used_at IS NULL AND expires_at > $3"
)
# One statement: of two concurrent spends of a token, the second finds it used.
_SPEND = (
    "UPDATE email_tokens SET used_at = $3"
    " WHERE digest = $1 AND kind = $2 AND used_at IS NULL AND expires_at > $3"
    " RETURNING digest, kind, user_id, email, expires_at"
)


class SqlAlchemyMailQueue:
    """MailQueue of one unit of work: the mails it queued are written at its commit, each as a
    mail_jobs row and an outbox row (its message, token sealed), in the same transaction."""

    def __init__(self, sealer: Sealer | None, request_id: str | None) -> None:
        self.pending: list[Mail] = []
        self._sealer = sealer
        self._request_id = request_id

    async def count_since(
        self, conn: AsyncConnection, kind: str, address: str, since: datetime
    ) -> int:
        # A transaction-scoped lock per (kind, address): two requests for the same address
        # count one after the other, so the limit is never passed by a race.
        await conn.exec_driver_sql(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", (f"{kind} {address}",)
        )
        result = await conn.exec_driver_sql(
            "SELECT count(*) FROM mail_jobs WHERE kind = $1 AND address = $2 AND created_at > $3",
            (kind, address, since),
        )
        return int(result.scalar_one())

    def add(self, mail: Mail) -> None:
        self.pending.append(mail)

    async def flush(self, conn: AsyncConnection) -> None:
        if not self.pending:
            return
        if self._sealer is None:
            raise RuntimeError("mails were queued on a unit of work that has no mail sealer")
        jobs = [self._job(mail) for mail in self.pending]
        await conn.exec_driver_sql(
            _QUEUE,
            (
                [m.id for m in self.pending],
                [m.kind for m in self.pending],
                [m.to for m in self.pending],
                [m.user_id for m in self.pending],
                [orjson.dumps(job).decode() for job in jobs],
                MAIL_JOB_TYPE,
                OUTBOX_CHANNEL,
            ),
        )
        self.pending.clear()

    def _job(self, mail: Mail) -> dict[str, Any]:
        assert self._sealer is not None
        token = None
        if mail.token is not None:
            token = seal_token(self._sealer, mail.id, mail.kind, mail.token)
        return dump(
            MailJob,
            {
                "id": mail.id,
                "kind": mail.kind,
                "to": mail.to,
                "user_id": mail.user_id,
                "username": mail.username,
                "token": token,
                "expires_at": mail.expires_at,
                "new_email": mail.new_email,
                "requestid": self._request_id,
            },
        )


_QUEUE = """
WITH jobs AS (
    INSERT INTO mail_jobs (id, kind, address, user_id)
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bigint[])
    RETURNING 1
), added AS (
    INSERT INTO outbox (event_id, type, user_id, payload)
    SELECT e, $6, u, p::jsonb
    FROM unnest($1::uuid[], $4::bigint[], $5::text[]) WITH ORDINALITY AS rows (e, u, p, n)
    ORDER BY n
    RETURNING 1
)
SELECT pg_notify($7, '') FROM (SELECT 1 FROM added LIMIT 1) AS any_added
"""


Claim = Literal["send", "sent", "unknown"]


class PostgresMailLedger:
    """Which jobs were sent: the mailer's de-duplication, on a small asyncpg pool of its own.

    `claim` locks the job's row for as long as the mail is being sent: a second delivery of
    the same job (a copy, or a redelivery after its worker died) waits, then finds it sent.
    """

    def __init__(self, dsn: str, size: int) -> None:
        self._dsn = dsn
        self._size = size
        self._pool: asyncpg.Pool | None = None

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    @contextlib.asynccontextmanager
    async def claim(self, job_id: str) -> AsyncIterator[tuple[Claim, Mark]]:
        """("send", mark) when the job is to be sent now: `await mark()` as soon as the SMTP
        server has accepted it, which commits the mark at once; ("sent", _) when it was sent
        before; ("unknown", _) when no such job was ever queued (it is not Warden's).

        The row stays locked until the mark commits or the block ends (a rollback: not sent).
        """
        if self._pool is None:
            self._pool = await asyncpg.create_pool(
                self._dsn, min_size=0, max_size=self._size, timeout=5
            )
        async with self._pool.acquire() as conn:
            tx = conn.transaction()
            await tx.start()
            mark = Mark(conn, tx, job_id)
            try:
                row = await conn.fetchrow(
                    "SELECT sent_at FROM mail_jobs WHERE id = $1::uuid FOR UPDATE", job_id
                )
                if row is None:
                    yield "unknown", mark
                elif row["sent_at"] is not None:
                    yield "sent", mark
                else:
                    yield "send", mark
            finally:
                if not mark.committed:
                    with contextlib.suppress(Exception):
                        await tx.rollback()

    async def prune(self, older_than_days: int) -> None:
        """Forget jobs long past any redelivery (and the hourly limit's window)."""
        if self._pool is not None:
            await self._pool.execute(
                "DELETE FROM mail_jobs WHERE created_at < now() - make_interval(days => $1)",
                older_than_days,
            )


class Mark:
    """Marks the claimed job sent and commits: the one statement between the SMTP server's
    acceptance and a redelivery knowing the job was sent."""

    def __init__(self, conn: asyncpg.Connection, tx: Any, job_id: str) -> None:
        self._conn = conn
        self._tx = tx
        self._job_id = job_id
        self.committed = False

    async def __call__(self) -> None:
        await self._conn.execute(
            "UPDATE mail_jobs SET sent_at = now() WHERE id = $1::uuid", self._job_id
        )
        await self._tx.commit()
        self.committed = True
