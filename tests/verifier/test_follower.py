"""The follower of `session.revoked` on the real RabbitMQ (a vhost of this module's own)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import aio_pika
import pytest
import pytest_asyncio
from warden_verifier import RevokedSessions, VerificationError, Verifier
from warden_verifier.follower import SessionRevokedFollower

from contract.protocol import broker_user
from tests.support.infra import (
    _ctl,
    another_broker_user,
    base_urls,
    can_manage_users,
    own_vhost,
)
from tests.support.proxy import TcpProxy
from tests.support.verifier import ISSUER, KeySetServer, SigningKey

WITHIN = 1.0  # the contract: a revoked session is refused within a second


@pytest_asyncio.fixture(loop_scope="session")
async def keys() -> AsyncIterator[KeySetServer]:
    server = await KeySetServer(SigningKey("EdDSA")).start()
    yield server
    await server.close()


def cloud_event(session_id: object, expires_at: object, **data: Any) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": uuid.uuid4().hex,
        "source": "warden",
        "type": "session.revoked",
        "time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "subject": "42",
        "datacontenttype": "application/json",
        "data": {"session_id": session_id, "user_id": 42, "reason": "logout"}
        | {"expires_at": expires_at}
        | data,
    }


def rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


async def publish(
    url: str, body: bytes, *, as_user: bool = True, key: str = "session.revoked"
) -> None:
    """Publish as Warden does: persistent, CloudEvents JSON, its broker user as user_id."""
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            "warden.events", aio_pika.ExchangeType.TOPIC, durable=True
        )
        message = aio_pika.Message(
            body,
            content_type="application/cloudevents+json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            user_id=broker_user(url) if as_user else None,
        )
        await exchange.publish(message, routing_key=key)


async def refused_within(verifier: Verifier, token: str, seconds: float) -> float:
    """How long until `verifier` refuses `token` as revoked (fails after `seconds`)."""
    started = time.perf_counter()
    async with asyncio.timeout(seconds):
        while True:
            code = await verdict(verifier, token)
            if code is not None:
                assert code == "token_revoked", code
                return time.perf_counter() - started
            await asyncio.sleep(0.005)


async def verdict(verifier: Verifier, token: str) -> str | None:
    """The code `verifier` refuses `token` with; None: it accepts it."""
    try:
        await verifier.verify_async(token)
    except VerificationError as error:
        return error.code
    return None


async def test_a_revoked_session_is_refused_within_a_second_of_the_event(
    amqp: str, keys: KeySetServer
) -> None:
    revoked = RevokedSessions()
    verifier = Verifier(keys.jwks_url, issuer=ISSUER, revoked=revoked)
    (key,) = keys.keys
    sid, other = uuid.uuid4().hex, uuid.uuid4().hex
    token = key.sign(sid=sid)
    follower = SessionRevokedFollower(amqp, revoked, trusted_publisher=broker_user(amqp))
    async with follower:
        await follower.wait_ready()
        await verifier.verify_async(token)
        # Within a second of the broker taking the event (publish returns on its confirm).
        await publish(amqp, json.dumps(cloud_event(sid, rfc3339(time.time() + 60))).encode())
        took = await refused_within(verifier, token, WITHIN)
        assert took < WITHIN
        await verifier.verify_async(key.sign(sid=other))  # another session is untouched
    # Stopped: its queue is gone from the broker.
    async with await aio_pika.connect(amqp) as connection:
        channel = await connection.channel()
        with pytest.raises(aio_pika.exceptions.ChannelClosed):
            await channel.declare_queue(follower.queue_name, passive=True)


async def test_a_revocation_is_forgotten_after_its_expires_at(
    amqp: str, keys: KeySetServer
) -> None:
    revoked = RevokedSessions(grace=0)
    verifier = Verifier(keys.jwks_url, issuer=ISSUER, revoked=revoked, leeway=0)
    (key,) = keys.keys
    sid = uuid.uuid4().hex
    token = key.sign(sid=sid)
    async with SessionRevokedFollower(
        amqp, revoked, trusted_publisher=broker_user(amqp), purge_interval=0.1
    ) as follower:
        await follower.wait_ready()
        ends = time.time() + 3  # a margin for a loaded machine to publish and deliver
        await publish(amqp, json.dumps(cloud_event(sid, rfc3339(ends))).encode())
        await refused_within(verifier, token, WITHIN)
        assert len(revoked) == 1
        await asyncio.sleep(ends + 0.3 - time.time())
        # Forgotten: the follower's purge dropped it (memory bounded), the token passes again.
        assert revoked._until == {}
        await verifier.verify_async(token)


BAD_BODIES: list[bytes] = [
    b"",
    b"not json",
    b"\xff\xfe",
    b"[]",
    b"null",
    json.dumps({"type": "session.revoked"}).encode(),
    json.dumps(cloud_event("s", "2030-01-01T00:00:00Z") | {"type": "user.deleted"}).encode(),
    json.dumps(cloud_event("s", "2030-01-01T00:00:00Z") | {"specversion": "0.3"}).encode(),
    json.dumps(cloud_event("s", "2030-01-01T00:00:00Z") | {"data": "s"}).encode(),
    json.dumps(cloud_event(None, "2030-01-01T00:00:00Z")).encode(),
    json.dumps(cloud_event(7, "2030-01-01T00:00:00Z")).encode(),
    json.dumps(cloud_event("", "2030-01-01T00:00:00Z")).encode(),
    json.dumps(cloud_event("a\x00b", "2030-01-01T00:00:00Z")).encode(),
    json.dumps(cloud_event("s" * 300, "2030-01-01T00:00:00Z")).encode(),
    json.dumps(cloud_event("s", "2030-01-01T00:00:00")).encode(),  # no time zone
    json.dumps(cloud_event("s", "tomorrow")).encode(),
    json.dumps(cloud_event("s", 1893456000)).encode(),
    json.dumps(cloud_event("s", "9999-99-99T00:00:00Z")).encode(),
    json.dumps(cloud_event("s", "2030-01-01T00:00:00Z", pad="x" * 70_000)).encode(),
    b'{"type": "session.revoked", "specversion": "1.0", "data": {"session_id": "\\ud800"',
]


async def test_malformed_and_foreign_events_are_dropped_and_the_follower_goes_on(
    amqp: str, keys: KeySetServer
) -> None:
    revoked = RevokedSessions()
    verifier = Verifier(keys.jwks_url, issuer=ISSUER, revoked=revoked)
    (key,) = keys.keys
    sid = uuid.uuid4().hex
    follower = SessionRevokedFollower(amqp, revoked, trusted_publisher=broker_user(amqp))
    async with follower:
        await follower.wait_ready()
        for body in BAD_BODIES:
            await publish(amqp, body)
        good = json.dumps(cloud_event(sid, rfc3339(time.time() + 60))).encode()
        foreign = 1
        await publish(amqp, good, as_user=False)  # no user_id: not Warden's word
        if can_manage_users(amqp):
            with another_broker_user(amqp) as stranger:
                await publish(stranger, good)  # user_id is the stranger, as RabbitMQ checks
            foreign += 1
        await publish(amqp, good)
        await refused_within(verifier, key.sign(sid=sid), 5.0)
        assert (follower.dropped, follower.connections) == (len(BAD_BODIES) + foreign, 1)
        assert len(revoked) == 1


def _through(proxy: TcpProxy, amqp: str) -> str:
    parts = urlsplit(amqp)
    credentials = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=f"{credentials}@127.0.0.1:{proxy.port}"))


async def test_the_follower_reconnects_and_hears_what_was_published_meanwhile(
    amqp: str, keys: KeySetServer
) -> None:
    revoked = RevokedSessions()
    verifier = Verifier(keys.jwks_url, issuer=ISSUER, revoked=revoked)
    (key,) = keys.keys
    parts = urlsplit(amqp)
    async with TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5672) as proxy:
        follower = SessionRevokedFollower(
            _through(proxy, amqp), revoked, trusted_publisher=broker_user(amqp)
        )
        async with follower:
            await follower.wait_ready()
            proxy.cut("refuse")
            await follower.wait_disconnected(10)
            during = uuid.uuid4().hex
            await publish(amqp, json.dumps(cloud_event(during, rfc3339(time.time() + 60))).encode())
            await asyncio.sleep(0.5)
            proxy.restore()
            await follower.wait_ready(15)
            await refused_within(verifier, key.sign(sid=during), 5.0)
            after = uuid.uuid4().hex
            await publish(amqp, json.dumps(cloud_event(after, rfc3339(time.time() + 60))).encode())
            await refused_within(verifier, key.sign(sid=after), WITHIN)
            assert follower.connections == 2


async def test_a_consumer_with_only_the_readmes_permissions_can_follow(
    amqp: str, keys: KeySetServer
) -> None:
    if not can_manage_users(amqp):
        pytest.skip("needs rabbitmqctl on a local broker to make a user")
    revoked = RevokedSessions()
    verifier = Verifier(keys.jwks_url, issuer=ISSUER, revoked=revoked)
    (key,) = keys.keys
    sid = uuid.uuid4().hex
    with consumer_user(amqp) as url:
        async with SessionRevokedFollower(
            url, revoked, trusted_publisher=broker_user(amqp)
        ) as follower:
            await follower.wait_ready()
            await publish(amqp, json.dumps(cloud_event(sid, rfc3339(time.time() + 60))).encode())
            await refused_within(verifier, key.sign(sid=sid), WITHIN)
            assert follower.connections == 1


@contextlib.contextmanager
def consumer_user(amqp: str) -> Iterator[str]:
    """Another service's broker user, with the permissions verifier/README.md lists."""
    parts = urlsplit(amqp)
    vhost = unquote(parts.path[1:])
    user, password = f"consumer_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    _ctl("add_user", user, password)
    try:
        own = r"^warden-verifier\..*"
        reads = r"^(warden-verifier\..*|warden\.events)$"
        _ctl("set_permissions", "-p", vhost, user, own, own, reads)
        yield urlunsplit(parts._replace(netloc=f"{user}:{password}@{parts.hostname}:{parts.port}"))
    finally:
        _ctl("delete_user", user)


async def test_the_follower_waits_for_wardens_exchange_to_exist(keys: KeySetServer) -> None:
    with base_urls() as base, own_vhost(base.amqp, prefix="verifier_test") as fresh:
        revoked = RevokedSessions()
        verifier = Verifier(keys.jwks_url, issuer=ISSUER, revoked=revoked)
        follower = SessionRevokedFollower(
            fresh, revoked, trusted_publisher=broker_user(fresh), reconnect_delay=0.1
        )
        async with follower:
            await follower.wait_disconnected(5)  # no warden.events on this broker yet
            assert not follower.ready.is_set()
            await publish(fresh, b"{}")  # declares the exchange, as Warden does at its start
            await follower.wait_ready(5)
            sid = uuid.uuid4().hex
            await publish(fresh, json.dumps(cloud_event(sid, rfc3339(time.time() + 60))).encode())
            await refused_within(verifier, keys.keys[0].sign(sid=sid), WITHIN)
