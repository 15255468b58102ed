"""The Redis side of Idempotency-Key: claims and sealed replies."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from domain.errors import InternalError, ServiceUnavailable
from storage.idempotency import PENDING_TTL, PREFIX, RedisIdempotencyStore
from storage.redis_store import make_redis
from tests.conftest import unique
from tests.integration.test_redis_store import closed_port
from tests.support.infra import Urls
from warden.keys import IDEMPOTENCY_REPLY, AesGcmSealer, subkey

TTL = 600
SEALER = AesGcmSealer(subkey(b"a key of this module's own, 32 bytes+", IDEMPOTENCY_REPLY))
PAIR = {"ok": True, "data": {"access_token": "secret-access", "refresh_token": "secret-refresh"}}


@pytest_asyncio.fixture
async def client(urls: Urls) -> AsyncIterator[aioredis.Redis]:
    redis = make_redis(urls.redis)
    yield redis
    await redis.aclose()


def worker(client: aioredis.Redis, sealer: AesGcmSealer = SEALER) -> RedisIdempotencyStore:
    """The store of one worker process."""
    return RedisIdempotencyStore(client, TTL, sealer)


async def record(client: aioredis.Redis, slot: str) -> dict[str, Any]:
    raw = await client.get(PREFIX + slot)
    assert raw is not None
    found: dict[str, Any] = orjson.loads(raw)
    return found


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


async def test_claims_and_replies_expire(client: aioredis.Redis) -> None:
    store, slot = worker(client), unique("slot-")
    assert await store.claim(slot, "fp") is None
    assert 0 < await client.ttl(PREFIX + slot) <= PENDING_TTL
    await store.complete(slot, "fp", PAIR)
    assert PENDING_TTL < await client.ttl(PREFIX + slot) <= TTL


async def test_an_unreachable_redis_is_service_unavailable() -> None:
    redis = make_redis(f"redis://127.0.0.1:{closed_port()}/0")
    store = worker(redis)
    try:
        calls: list[Callable[[], Awaitable[object]]] = [
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
