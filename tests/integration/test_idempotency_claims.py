"""Idempotency.once against this session's Redis: the claim's lease, what is kept, what is not.

The work is a function of the test's own, so that how often it ran is known exactly.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from collections.abc import AsyncIterator

import orjson
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

import handlers.idempotency
import storage.idempotency
from contract.errors import IdempotencyKeyInUse, IdempotencyKeyReused, MalformedMessage
from domain.errors import ServiceUnavailable
from handlers.envelope import failure, success
from handlers.idempotency import Envelope, Idempotency
from storage.idempotency import HEARTBEAT_TTL_MS, PREFIX, RedisIdempotencyStore, ReplyRecorder
from tests.conftest import unique
from tests.support.waiting import eventually
from warden.keys import IDEMPOTENCY_FINGERPRINT, IDEMPOTENCY_REPLY, AesGcmSealer, subkey

QUEUE = "warden.users.register"
BODY = b'{"email": "a@example.com", "username": "a", "password": "correct horse battery"}'
SCOPE = "anonymous"
LEASE = 2  # seconds a claim outlives its worker, in these tests (PENDING_TTL is 10)
RENEWAL = 0.2  # seconds between two renewals of a claim, in these tests (RENEW_EVERY is 3)


MASTER = b"a key of these tests' own, 32 bytes or more"


async def anonymous(_authorization: str | None) -> str:
    return SCOPE


@pytest_asyncio.fixture
async def idempotency(client: aioredis.Redis) -> AsyncIterator[Idempotency]:
    """Idempotency as a worker runs it: its heartbeat beating while the test runs."""
    store = RedisIdempotencyStore(client, 600, AesGcmSealer(subkey(MASTER, IDEMPOTENCY_REPLY)))
    idempotency = Idempotency(store, anonymous, subkey(MASTER, IDEMPOTENCY_FINGERPRINT))
    heartbeat = asyncio.create_task(idempotency.heartbeat())
    yield idempotency
    heartbeat.cancel()
    await asyncio.wait([heartbeat])


def claim_of(key: str) -> str:
    """The Redis key of an anonymous request's claim on QUEUE."""
    return f"{PREFIX}{SCOPE}:{QUEUE}:{hashlib.sha256(key.encode()).hexdigest()}"


class Work:
    """Work that answers with the next of its replies, counting its runs."""

    def __init__(self, *replies: Envelope) -> None:
        self.replies = list(replies)
        self.runs = 0

    async def __call__(self, recorder: ReplyRecorder | None) -> Envelope:
        assert recorder is None  # no ledger here: nothing is recorded in Postgres
        self.runs += 1
        return self.replies[self.runs - 1]


async def test_a_5xx_is_not_kept_so_the_retry_does_the_work_and_its_reply_is_kept(
    idempotency: Idempotency,
) -> None:
    key = unique("key-")
    work = Work(failure(ServiceUnavailable()), success({"id": 1}))

    assert await idempotency.once(QUEUE, None, key, BODY, work) == failure(ServiceUnavailable())
    assert await idempotency.once(QUEUE, None, key, BODY, work) == success({"id": 1})
    assert await idempotency.once(QUEUE, None, key, BODY, work) == success({"id": 1})
    assert work.runs == 2  # the 503 was not replayed; the 201 was


async def test_a_body_that_is_not_json_is_told_apart_by_its_bytes(
    idempotency: Idempotency,
) -> None:
    key = unique("key-")
    work = Work(failure(MalformedMessage()))

    first = await idempotency.once(QUEUE, None, key, b"{not json", work)
    assert first == failure(MalformedMessage())
    assert await idempotency.once(QUEUE, None, key, b"{not json", work) == first
    with pytest.raises(IdempotencyKeyReused):
        await idempotency.once(QUEUE, None, key, b"{not json either", work)
    assert work.runs == 1


async def test_a_claim_whose_work_outlasts_its_lease_is_renewed_and_keeps_refusing_repeats(
    idempotency: Idempotency, client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage.idempotency, "PENDING_TTL", LEASE)
    monkeypatch.setattr(handlers.idempotency, "RENEW_EVERY", RENEWAL)
    key, done = unique("key-"), asyncio.Event()
    runs = 0

    async def slow(_: ReplyRecorder | None) -> Envelope:
        nonlocal runs
        runs += 1
        await done.wait()
        return success({"id": 2})

    first = asyncio.create_task(idempotency.once(QUEUE, None, key, BODY, slow))
    ttls = [LEASE * 1000]

    async def renewed_for_longer_than_a_lease() -> bool:
        ttl = await client.pttl(claim_of(key))
        assert ttl > 0 or runs == 0, "the claim lapsed while its work was still running"
        if ttl > 0:
            ttls.append(ttl)
        renewals = sum(later > earlier for earlier, later in itertools.pairwise(ttls))
        return renewals * RENEWAL > LEASE

    try:
        await eventually(renewed_for_longer_than_a_lease, 10 * LEASE)
        with pytest.raises(IdempotencyKeyInUse):  # a repeat now is not worked on a second time
            await idempotency.once(QUEUE, None, key, BODY, slow)
    finally:
        done.set()
    assert await first == success({"id": 2})
    assert await idempotency.once(QUEUE, None, key, BODY, slow) == success({"id": 2})
    assert runs == 1


async def test_a_request_cancelled_as_its_work_ends_is_cancelled_not_completed(
    idempotency: Idempotency, client: aioredis.Redis
) -> None:
    """A worker stopping cancels its requests; one caught as its lease renewal is stopped
    must end cancelled, not carry on as though nothing had happened."""
    key = unique("key-")
    request: asyncio.Task[Envelope]

    async def work(_: ReplyRecorder | None) -> Envelope:
        asyncio.get_running_loop().call_soon(request.cancel)  # lands as the renewal is stopped
        return success({"id": 3})

    request = asyncio.create_task(idempotency.once(QUEUE, None, key, BODY, work))
    with pytest.raises(asyncio.CancelledError):
        await request
    claim = await client.get(claim_of(key))
    assert claim is None or "reply" not in orjson.loads(claim)  # no reply was kept


async def test_a_request_cancelled_mid_work_releases_its_claim_for_the_retry(
    idempotency: Idempotency, client: aioredis.Redis
) -> None:
    """A request whose channel died with its broker node is cancelled while its worker lives
    on: the caller's retry is worked at once, not refused until the claim's lease lapses."""
    key = unique("key-")
    started = asyncio.Event()

    async def stuck(_: ReplyRecorder | None) -> Envelope:
        started.set()
        await asyncio.sleep(60)
        raise AssertionError("not cancelled")

    request = asyncio.create_task(idempotency.once(QUEUE, None, key, BODY, stuck))
    await started.wait()
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    assert await client.get(claim_of(key)) is None
    work = Work(success({"id": 4}))
    assert await idempotency.once(QUEUE, None, key, BODY, work) == success({"id": 4})
    assert work.runs == 1


async def test_a_live_workers_claim_outlasts_its_heartbeats_ttl_and_is_never_taken_over(
    idempotency: Idempotency, client: aioredis.Redis
) -> None:
    """Another worker's repeat, after the holder has worked for longer than one heartbeat
    lifetime, is in use: the holder's heartbeat loop keeps it alive, claims alone would not."""
    other_store = RedisIdempotencyStore(
        client, 600, AesGcmSealer(subkey(MASTER, IDEMPOTENCY_REPLY)), holder=unique("other-")
    )
    other = Idempotency(other_store, anonymous, subkey(MASTER, IDEMPOTENCY_FINGERPRINT))
    key, done = unique("key-"), asyncio.Event()
    runs = 0

    async def slow(recorder: ReplyRecorder | None) -> Envelope:
        nonlocal runs
        runs += 1
        await done.wait()
        return success({"id": 4})

    first = asyncio.create_task(idempotency.once(QUEUE, None, key, BODY, slow))
    await eventually(lambda: runs == 1, 5, "the first request never started its work")
    await asyncio.sleep(2 * HEARTBEAT_TTL_MS / 1000)  # the time under test: two lifetimes
    try:
        with pytest.raises(IdempotencyKeyInUse):  # taken over, it would do the work again
            await other.once(QUEUE, None, key, BODY, Work(success({"id": 5})))
    finally:
        done.set()
    assert await first == success({"id": 4})
    assert runs == 1
