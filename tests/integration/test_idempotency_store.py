"""The Redis side of Idempotency-Key: claims, their takeover from a dead worker, sealed replies."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from domain.errors import InternalError, ServiceUnavailable
from storage.idempotency import (
    ALIVE,
    HEARTBEAT_TTL_MS,
    PENDING_TTL,
    PREFIX,
    RedisIdempotencyStore,
)
from storage.redis_store import make_redis
from tests.conftest import unique
from tests.integration.test_redis_store import closed_port
from warden.keys import IDEMPOTENCY_REPLY, AesGcmSealer, subkey

TTL = 600
SEALER = AesGcmSealer(subkey(b"a key of this module's own, 32 bytes+", IDEMPOTENCY_REPLY))
PAIR = {"ok": True, "data": {"access_token": "secret-access", "refresh_token": "secret-refresh"}}


def worker(client: aioredis.Redis, sealer: AesGcmSealer = SEALER) -> RedisIdempotencyStore:
    """The store of one worker process (a holder of its own)."""
    return RedisIdempotencyStore(client, TTL, sealer)


async def record(client: aioredis.Redis, slot: str) -> dict[str, Any]:
    raw = await client.get(PREFIX + slot)
    assert raw is not None
    found: dict[str, Any] = orjson.loads(raw)
    return found


async def test_a_live_holders_claim_is_kept_and_a_dead_holders_is_taken_over_at_once(
    client: aioredis.Redis,
) -> None:
    holder, other = worker(client), worker(client)
    slot = unique("slot-")
    assert await holder.claim(slot, "fp") is None
    assert await other.claim(slot, "fp") == {"fp": "fp"}  # in use: its holder lives

    await client.delete(ALIVE + holder.holder)  # the holder dies: its heartbeat lapses
    assert await other.claim(slot, "another-fp") == {"fp": "fp"}  # another body takes nothing
    assert await other.claim(slot, "fp") is None  # taken over
    assert (await record(client, slot))["holder"] == other.holder
    assert await holder.claim(slot, "fp") == {"fp": "fp"}  # the taker is alive now


async def test_a_holder_whose_claim_was_taken_over_cannot_renew_complete_or_release_it(
    client: aioredis.Redis,
) -> None:
    holder, taker = worker(client), worker(client)
    slot = unique("slot-")
    assert await holder.claim(slot, "fp") is None
    await client.delete(ALIVE + holder.holder)
    assert await taker.claim(slot, "fp") is None
    await client.expire(PREFIX + slot, 5)

    await holder.renew(slot, "fp")
    assert await client.ttl(PREFIX + slot) <= 5
    await holder.complete(slot, "fp", {"ok": True, "data": "the presumed dead one's"})
    await holder.release(slot)
    assert await record(client, slot) == {"fp": "fp", "holder": taker.holder}

    await taker.renew(slot, "fp")
    assert await client.ttl(PREFIX + slot) > 5
    await taker.complete(slot, "fp", {"ok": True, "data": "the taker's"})
    assert await holder.claim(slot, "fp") == {
        "fp": "fp",
        "reply": {"ok": True, "data": "the taker's"},
    }
    await taker.release(slot)  # a kept reply is nobody's to release
    assert "reply" in await record(client, slot)


async def test_a_kept_reply_is_sealed_and_opens_only_in_its_own_slot(
    client: aioredis.Redis,
) -> None:
    store, slot, moved = worker(client), unique("slot-"), unique("slot-")
    assert await store.claim(slot, "fp") is None
    await store.complete(slot, "fp", PAIR)

    raw = await client.get(PREFIX + slot)
    assert raw is not None
    assert "secret" not in raw
    assert await worker(client).claim(slot, "fp") == {"fp": "fp", "reply": PAIR}

    await client.set(PREFIX + moved, raw, ex=60)  # a record moved to another caller's slot
    with pytest.raises(InternalError):
        await worker(client).claim(moved, "fp")


async def test_a_reply_kept_under_another_key_or_by_an_older_version_is_claimed_afresh(
    client: aioredis.Redis,
) -> None:
    other_key = AesGcmSealer(subkey(b"the key before this one, 32 bytes+", IDEMPOTENCY_REPLY))
    before, older = unique("slot-"), unique("slot-")
    earlier = worker(client, other_key)
    assert await earlier.claim(before, "fp") is None
    await earlier.complete(before, "fp", PAIR)
    plain = {"fp": "fp", "reply": PAIR}  # what the version before sealing kept
    await client.set(PREFIX + older, orjson.dumps(plain), ex=60)

    store = worker(client)
    assert await store.claim(before, "fp") is None
    assert await store.claim(older, "fp") is None
    assert "secret" not in str(await client.get(PREFIX + older))  # overwritten by the claim


async def test_claims_replies_and_heartbeats_expire(client: aioredis.Redis) -> None:
    store, slot = worker(client), unique("slot-")
    assert await store.claim(slot, "fp") is None
    assert 0 < await client.ttl(PREFIX + slot) <= PENDING_TTL
    assert 0 < await client.pttl(ALIVE + store.holder) <= HEARTBEAT_TTL_MS
    await client.delete(ALIVE + store.holder)
    await store.beat()
    assert 0 < await client.pttl(ALIVE + store.holder) <= HEARTBEAT_TTL_MS
    await store.complete(slot, "fp", PAIR)
    assert PENDING_TTL < await client.ttl(PREFIX + slot) <= TTL


async def test_an_unreachable_redis_is_service_unavailable() -> None:
    redis = make_redis(f"redis://127.0.0.1:{closed_port()}/0")
    store = worker(redis)
    try:
        calls: list[Callable[[], Awaitable[object]]] = [
            store.beat,
            lambda: store.claim("slot", "fp"),
            lambda: store.renew("slot", "fp"),
            lambda: store.complete("slot", "fp", PAIR),
            lambda: store.release("slot"),
        ]
        for call in calls:
            with pytest.raises(ServiceUnavailable):
                await call()
    finally:
        await redis.aclose()
