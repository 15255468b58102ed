"""The signing key store on a real Postgres: the timeline, --now, races, sealing, the event."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
import pytest
import pytest_asyncio

from storage.db import asyncpg_dsn
from storage.signing_keys import PostgresSigningKeyStore, UnreadableKey
from tests.conftest import make_settings, own_world
from tests.support.infra import Urls
from tests.support.waiting import eventually
from warden.bootstrap import key_store
from warden.settings import Settings
from warden.signing import KeyRing, KeyRingFollower

FAST = {"jwks_max_age": 1, "access_token_ttl": 2, "jwt_leeway": 0}


@pytest_asyncio.fixture
async def world(urls: Urls) -> AsyncIterator[Urls]:
    async with own_world(urls, "keys") as own:
        yield own


def store_of(world: Urls, **overrides: Any) -> PostgresSigningKeyStore:
    return key_store(make_settings(world, **(FAST | overrides)))


async def states(world: Urls) -> dict[str, str]:
    conn = await asyncpg.connect(asyncpg_dsn(world.database))
    try:
        rows = await conn.fetch("SELECT kid, state FROM signing_keys")
    finally:
        await conn.close()
    return {r["kid"]: r["state"] for r in rows}


async def key_events(world: Urls) -> list[list[str]]:
    """The `kids` of every signing_keys.changed event in the outbox, oldest first."""
    conn = await asyncpg.connect(asyncpg_dsn(world.database))
    try:
        rows = await conn.fetch(
            "SELECT payload::text AS p FROM outbox WHERE type = 'signing_keys.changed' ORDER BY id"
        )
    finally:
        await conn.close()
    payloads = [orjson.loads(r["p"]) for r in rows]
    assert all("subject" not in p for p in payloads)  # about no user
    return [p["data"]["kids"] for p in payloads]


async def test_the_first_advance_makes_one_active_key_and_says_so(world: Urls) -> None:
    store = store_of(world)
    assert await store.advance() is True
    assert await store.advance() is False  # nothing more to do
    [key] = await store.published()
    assert (key.state, key.algorithm) == ("active", "EdDSA")
    assert key.private_der is not None
    assert key.public_jwk == key.public_jwk | {"kid": key.kid, "use": "sig", "alg": "EdDSA"}
    assert "d" not in key.public_jwk  # the private half is never published
    assert await key_events(world) == [[key.kid]]


async def test_a_rotation_publishes_a_key_that_signs_after_the_max_age(world: Urls) -> None:
    store = store_of(world, jwks_max_age=60)
    await store.advance()
    [old] = await store.published()
    new = await store.rotate()
    assert await store.rotate() == new  # one pending rotation at a time
    active, pending = await store.published()
    assert (active.kid, active.state) == (old.kid, "active")
    assert (pending.kid, pending.state, pending.private_der) == (new, "next", None)
    assert 59 <= (pending.activates_at - pending.created_at).total_seconds() <= 60
    assert await store.advance() is False  # not yet its time
    assert await key_events(world) == [[old.kid], [old.kid, new]]


async def test_a_retired_key_verifies_until_its_tokens_expired_then_leaves(world: Urls) -> None:
    store = store_of(world)
    await store.advance()
    [old] = await store.published()
    new = await store.rotate()
    await asyncio.sleep(1.1)  # the max-age
    assert await store.advance() is True
    active, retired = await store.published()
    assert (active.kid, retired.kid, retired.state) == (new, old.kid, "retired")
    assert retired.removes_at is not None
    assert retired.retired_at is not None
    assert (retired.removes_at - retired.retired_at).total_seconds() == 2  # TTL + leeway
    await asyncio.sleep(2.1)
    assert await store.advance() is True
    assert [k.kid for k in await store.published()] == [new]
    assert (await states(world))[old.kid] == "gone"
    assert await key_events(world) == [[old.kid], [old.kid, new], [new]]


async def test_rotate_now_signs_with_a_new_key_and_revokes_the_old_one_at_once(
    world: Urls,
) -> None:
    store = store_of(world, jwks_max_age=60)
    await store.advance()
    [old] = await store.published()
    pending = await store.rotate()
    new = await store.rotate(now=True)
    [key] = await store.published()
    assert (key.kid, key.state) == (new, "active")
    assert (await states(world)) == {old.kid: "revoked", pending: "gone", new: "active"}


async def test_a_key_is_due_for_rotation_after_the_rotation_days(world: Urls) -> None:
    store = store_of(world)
    await store.advance()
    conn = await asyncpg.connect(asyncpg_dsn(world.database))
    try:
        await conn.execute("UPDATE signing_keys SET activates_at = now() - interval '31 days'")
    finally:
        await conn.close()
    assert await store.advance() is True
    assert sorted((await states(world)).values()) == ["active", "next"]


async def test_another_configured_algorithm_rotates_to_a_key_of_it(world: Urls) -> None:
    await store_of(world).advance()
    es256 = store_of(world, jwt_algorithm="ES256")
    assert await es256.advance() is True
    active, pending = await es256.published()
    assert (active.algorithm, pending.algorithm, pending.state) == ("EdDSA", "ES256", "next")
    assert {"kty": "EC", "crv": "P-256"}.items() <= pending.public_jwk.items()


async def test_racing_rotations_on_separate_connections_make_one_new_key(world: Urls) -> None:
    stores = [store_of(world, jwks_max_age=60) for _ in range(6)]
    await asyncio.gather(*(s.advance() for s in stores))  # six first starts at once
    assert list((await states(world)).values()) == ["active"]
    kids = await asyncio.gather(*(s.rotate() for s in stores))
    assert len(set(kids)) == 1
    assert sorted((await states(world)).values()) == ["active", "next"]


async def test_racing_leaked_key_rotations_leave_exactly_one_active_key(world: Urls) -> None:
    stores = [store_of(world) for _ in range(4)]
    await stores[0].advance()
    await asyncio.gather(*(s.rotate(now=True) for s in stores))
    assert sorted((await states(world)).values()) == ["active"] + ["revoked"] * 4


async def test_a_private_key_does_not_open_under_another_encryption_key(world: Urls) -> None:
    await store_of(world).advance()
    other = store_of(world, key_encryption_key="another key of at least thirty-two bytes!")
    with pytest.raises(UnreadableKey):
        await other.published()


async def test_a_sealed_key_bound_to_another_kid_does_not_open(world: Urls) -> None:
    store = store_of(world)
    await store.advance()
    conn = await asyncpg.connect(asyncpg_dsn(world.database))
    try:  # an attacker with write access swaps in the private half stored for another kid
        await conn.execute("UPDATE signing_keys SET kid = 'swapped'")
    finally:
        await conn.close()
    with pytest.raises(UnreadableKey):
        await store.published()


async def test_a_follower_learns_a_rotation_at_once(world: Urls) -> None:
    settings: Settings = make_settings(world, **(FAST | {"jwks_max_age": 60}))
    ring = KeyRing()
    follower = KeyRingFollower(key_store(settings), ring)
    await follower.start()
    try:
        [active] = ring.keys
        new = await key_store(settings).rotate()
        await eventually(lambda: len(ring.keys) == 2, 2, "the new key did not reach the ring")
        assert ring.signing().kid == active.kid
        leaked = await key_store(settings).rotate(now=True)
        await eventually(lambda: ring.signing().kid == leaked, 2, "--now did not reach the ring")
        assert ring.verifying(active.kid) is None
        assert ring.verifying(new) is None
    finally:
        await follower.stop()


async def test_a_follower_activates_the_next_key_when_its_time_comes(world: Urls) -> None:
    settings: Settings = make_settings(world, **FAST)
    ring = KeyRing()
    follower = KeyRingFollower(key_store(settings), ring)
    await follower.start()
    try:
        old = ring.signing().kid
        new = await key_store(settings).rotate()
        await eventually(lambda: ring.signing().kid == new, 4, "the next key never signed")
        assert ring.verifying(old) is not None  # retired, still verifying
        await eventually(lambda: ring.verifying(old) is None, 5, "the retired key stayed")
    finally:
        await follower.stop()


async def test_two_workers_that_find_a_rotation_due_at_once_make_one_key(world: Urls) -> None:
    settings: Settings = make_settings(world, **(FAST | {"jwks_max_age": 60}))
    rings = [KeyRing(), KeyRing()]
    followers = [KeyRingFollower(key_store(settings), ring) for ring in rings]
    await asyncio.gather(*(f.start() for f in followers))  # two first starts at once
    try:
        assert rings[0].signing().kid == rings[1].signing().kid
        conn = await asyncpg.connect(asyncpg_dsn(world.database))
        try:  # the active key turns 31 days old for both at the same moment
            await conn.execute("UPDATE signing_keys SET activates_at = now() - interval '31 days'")
            await conn.execute("SELECT pg_notify('warden_signing_keys', '')")
        finally:
            await conn.close()
        await eventually(
            lambda: all(len(r.keys) == 2 for r in rings), 5, "no worker made the next key"
        )
        assert sorted((await states(world)).values()) == ["active", "next"]
        assert rings[0].jwks() == rings[1].jwks()
    finally:
        await asyncio.gather(*(f.stop() for f in followers))
