"""The broker is a trust boundary: anything on it may publish to any queue, so the worker
believes a message's `user_id` (RabbitMQ checks it against the publishing connection's user)
and nothing else a publisher wrote.

"A stranger" is another service on the same broker: a RabbitMQ user of its own with every
permission on this session's vhost, made with rabbitmqctl and deleted afterwards.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import aio_pika
import aiohttp
import orjson
import pytest
import pytest_asyncio
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from contract.protocol import MAX_BODY_BYTES, REQUEST_ID_PATTERN, broker_user
from storage.tables import audit_log, users
from tests.conftest import PASSWORD, fresh_ip, make_settings, unique
from tests.support import waiting
from tests.support.amqp import AmqpCaller
from tests.support.infra import (
    Urls,
    another_broker_user,
    can_manage_users,
    own_redis_db,
    own_vhost,
)
from warden.bootstrap import Services, running_worker
from warden.settings import Settings

LOGIN = "warden.auth.login"
LOGIN_PATH = "/api/v1/auth/login"
REGISTER = "warden.users.register"
DLQ = "warden.dlq"
WRONG = "not the password"
WITHIN = 10.0  # generous: only to keep a broken test from hanging


@dataclass(frozen=True)
class Stranger:
    """Another service on the broker, connected as a broker user that is not Warden's."""

    user: str
    amqp: AmqpCaller
    connection: aio_pika.abc.AbstractConnection

    async def log_in(self, username: str, password: str, ip: str | None = None) -> dict[str, Any]:
        """A login naming this service as its user_id (so its count is of its own)."""
        return await log_in(self.amqp, username, password, ip, self.user)


@pytest_asyncio.fixture
async def stranger(urls: Urls, worker: Services) -> AsyncIterator[Stranger]:
    """A broker user of this test's own, so its per-publisher count starts at zero."""
    if not can_manage_users(urls.amqp):
        pytest.skip("needs rabbitmqctl of a local RabbitMQ to add a broker user")
    with another_broker_user(urls.amqp) as url:
        connection = await aio_pika.connect(url, timeout=10)
        try:
            caller = AmqpCaller(await connection.channel())
            await caller.start()
            yield Stranger(broker_user(url), caller, connection)
        finally:
            await connection.close()


# --- helpers -------------------------------------------------------------------------------


def registration() -> dict[str, Any]:
    name = unique()
    return {"email": f"{name}@example.com", "username": name, "password": PASSWORD}


async def registered(amqp: AmqpCaller) -> dict[str, Any]:
    reply = await amqp.call(REGISTER, registration())
    assert reply["ok"] is True, reply
    user: dict[str, Any] = reply["data"]
    return user


async def log_in(
    caller: AmqpCaller,
    username: str,
    password: str,
    ip: str | None = None,
    user_id: str | None = None,
) -> dict[str, Any]:
    """One login over AMQP: the envelope. `ip` as x-client-ip, `user_id` as published."""
    headers = {"x_client_ip": ip} if ip else {}
    body = {"username": username, "password": password}
    return await caller.call(LOGIN, body, user_id=user_id, **headers)


def code_of(envelope: dict[str, Any]) -> str | None:
    return None if envelope["ok"] else envelope["error"]["code"]


async def fail_as_strangers(
    caller: AmqpCaller, times: int, ip: Callable[[], str | None], user_id: str | None = None
) -> None:
    """`times` logins of unknown users at once, each with the x-client-ip `ip()` gives."""
    replies = await asyncio.gather(
        *(log_in(caller, unique("nobody"), WRONG, ip(), user_id) for _ in range(times))
    )
    assert {code_of(r) for r in replies} == {"invalid_credentials"}


def refused(queue: str, reason: str) -> float:
    sample = REGISTRY.get_sample_value(
        "warden_worker_messages_refused_total", {"queue": queue, "reason": reason}
    )
    return sample or 0.0


async def eventually(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    """Wait until `condition()` holds, within WITHIN seconds."""
    await waiting.eventually(condition, WITHIN, what)


async def audit_data(worker: Services, user_id: int, kind: str) -> list[dict[str, Any]]:
    query = select(audit_log.c.data).where(audit_log.c.user_id == user_id, audit_log.c.type == kind)
    async with worker.engine.connect() as conn:
        return [row.data for row in await conn.execute(query)]


async def audited(worker: Services, event_id: str) -> int:
    query = select(func.count()).select_from(audit_log).where(audit_log.c.event_id == event_id)
    async with worker.engine.connect() as conn:
        return int(await conn.scalar(query) or 0)


async def users_named(worker: Services, username: str) -> int:
    query = select(func.count()).select_from(users).where(users.c.username == username)
    async with worker.engine.connect() as conn:
        return int(await conn.scalar(query) or 0)


async def message_count(amqp: AmqpCaller, queue: str) -> int:
    declared = await amqp.channel.declare_queue(queue, passive=True)
    count = declared.declaration_result.message_count
    assert count is not None
    return count


# --- the premise: RabbitMQ checks user_id ----------------------------------------------------


async def test_the_broker_refuses_a_user_id_that_is_not_the_publishers_own(
    stranger: Stranger, warden_user: str
) -> None:
    channel = await stranger.connection.channel()  # publisher confirms: the refusal is seen
    message = aio_pika.Message(b"{}", user_id=warden_user)
    with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed):
        await channel.default_exchange.publish(message, routing_key="warden.ping")


# --- a) x-client-ip is believed from the edge's broker user only ---------------------------


async def test_a_publisher_that_leaves_x_client_ip_out_is_counted_as_one_address(
    stranger: Stranger, amqp: AmqpCaller, settings: Settings, warden_user: str
) -> None:
    user = await registered(amqp)
    limit = settings.login_ip_max_failures
    await fail_as_strangers(stranger.amqp, limit, lambda: None, stranger.user)

    locked = await stranger.log_in(user["username"], PASSWORD)
    assert code_of(locked) == "too_many_attempts"
    assert locked["error"]["retry_after"] >= 1
    # The count is the publisher's own: the user still logs in through the edge.
    through_edge = await log_in(amqp, user["username"], PASSWORD, fresh_ip(), warden_user)
    assert through_edge["ok"] is True, through_edge


async def test_a_forged_x_client_ip_neither_locks_that_address_out_nor_escapes_the_limit(
    stranger: Stranger, amqp: AmqpCaller, settings: Settings, warden_user: str
) -> None:
    user, victim = await registered(amqp), fresh_ip()
    limit = settings.login_ip_max_failures
    await fail_as_strangers(stranger.amqp, limit, lambda: victim, stranger.user)

    # The end user at that address, through the edge, is not locked out by the forgery...
    through_edge = await log_in(amqp, user["username"], PASSWORD, victim, warden_user)
    assert through_edge["ok"] is True, through_edge
    # ...and the forger, whatever address it claims next, is.
    forged = await stranger.log_in(user["username"], PASSWORD, fresh_ip())
    assert code_of(forged) == "too_many_attempts"


@pytest_asyncio.fixture
async def isolated(urls: Urls, database: str) -> AsyncIterator[AmqpCaller]:
    """A caller of a worker of this test's own (vhost and Redis db): its counts start at zero.

    Every publisher that names no user_id shares one count; this test fills it, so it does so
    where no other test counts.
    """
    with own_vhost(urls.amqp) as amqp_url, own_redis_db(urls.redis) as redis_url:
        async with running_worker(make_settings(urls, amqp_url=amqp_url, redis_url=redis_url)):
            connection = await aio_pika.connect(amqp_url, timeout=10)
            try:
                caller = AmqpCaller(await connection.channel())
                await caller.start()
                yield caller
            finally:
                await connection.close()


async def test_publishers_that_name_no_user_id_are_counted_as_one_address(
    isolated: AmqpCaller, settings: Settings, warden_user: str
) -> None:
    user = await registered(isolated)
    await fail_as_strangers(isolated, settings.login_ip_max_failures, fresh_ip)

    locked = await log_in(isolated, user["username"], PASSWORD, fresh_ip())
    assert code_of(locked) == "too_many_attempts"
    through_edge = await log_in(isolated, user["username"], PASSWORD, fresh_ip(), warden_user)
    assert through_edge["ok"] is True, through_edge


async def test_a_forged_x_client_ip_never_reaches_the_login_events(
    stranger: Stranger, amqp: AmqpCaller, worker: Services, warden_user: str
) -> None:
    forger, vouched = await registered(amqp), await registered(amqp)
    failed = await stranger.log_in(forger["username"], WRONG, fresh_ip())
    assert code_of(failed) == "invalid_credentials"
    assert (await stranger.log_in(forger["username"], PASSWORD, fresh_ip()))["ok"]
    # A user_id of Warden's own with the header: the edge's word, believed.
    ip = fresh_ip()
    assert (await log_in(amqp, vouched["username"], PASSWORD, ip, warden_user))["ok"]

    async def all_audited() -> bool:
        kinds = ("user.login_failed", "user.logged_in")
        found = [await audit_data(worker, forger["id"], kind) for kind in kinds]
        return all(found) and bool(await audit_data(worker, vouched["id"], "user.logged_in"))

    await eventually(all_audited, "the three login events audited")
    [failed] = await audit_data(worker, forger["id"], "user.login_failed")
    [logged_in] = await audit_data(worker, forger["id"], "user.logged_in")
    assert "client_ip" not in failed
    assert failed["reason"] == "invalid_credentials"
    assert "client_ip" not in logged_in
    [believed] = await audit_data(worker, vouched["id"], "user.logged_in")
    assert believed["client_ip"] == ip


async def test_the_edge_vouches_for_the_address_it_saw(
    http: aiohttp.ClientSession, amqp: AmqpCaller, worker: Services
) -> None:
    """The edge names its broker user on every request, so its x-client-ip is believed."""
    user, ip = await registered(amqp), fresh_ip()
    body = {"username": user["username"], "password": PASSWORD}
    async with http.post(LOGIN_PATH, json=body, headers={"X-Forwarded-For": ip}) as r:
        assert r.status == 200, await r.text()

    async def logged_in() -> bool:
        return bool(await audit_data(worker, user["id"], "user.logged_in"))

    await eventually(logged_in, "user.logged_in audited")
    [data] = await audit_data(worker, user["id"], "user.logged_in")
    assert data["client_ip"] == ip


async def test_an_x_client_ip_without_a_user_id_is_not_believed(
    amqp: AmqpCaller, worker: Services
) -> None:
    """Warden's own connection, but no user_id: nobody vouched for the header."""
    user = await registered(amqp)
    assert (await log_in(amqp, user["username"], PASSWORD, fresh_ip()))["ok"]

    async def logged_in() -> bool:
        return bool(await audit_data(worker, user["id"], "user.logged_in"))

    await eventually(logged_in, "user.logged_in audited")
    [data] = await audit_data(worker, user["id"], "user.logged_in")
    assert "client_ip" not in data


# --- b) only Warden's own events become audit rows -----------------------------------------


def cloudevent(user_id: int) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": "warden",
        "type": "user.deleted",
        "time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "subject": str(user_id),
        "datacontenttype": "application/json",
        "data": {"user": None},
    }


async def publish_event(
    channel: aio_pika.abc.AbstractChannel, event: dict[str, Any], user_id: str | None
) -> None:
    exchange = await channel.get_exchange("warden.events", ensure=False)
    message = aio_pika.Message(
        orjson.dumps(event),
        content_type="application/cloudevents+json",
        message_id=event["id"],
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        user_id=user_id,
    )
    await exchange.publish(message, routing_key=event["type"])


async def take_dead_letter(channel: aio_pika.abc.AbstractChannel, message_id: str) -> bool:
    """Take the message with this id off warden.dlq if it is there; put the others back."""
    queue = await channel.get_queue(DLQ, ensure=False)
    held, found = [], False
    try:
        while (message := await queue.get(fail=False, no_ack=False)) is not None:
            if message.message_id == message_id:
                await message.ack()
                found = True
                break
            held.append(message)
    finally:
        for other in held:
            await other.nack(requeue=True)
    return found


@pytest.mark.parametrize("publisher", ["stranger", "warden_without_user_id"])
async def test_an_event_warden_did_not_publish_never_becomes_an_audit_row(
    stranger: Stranger, amqp: AmqpCaller, worker: Services, publisher: str
) -> None:
    victim = await registered(amqp)
    forged = cloudevent(victim["id"])
    refused_before = refused("warden.audit", "foreign_publisher")
    if publisher == "stranger":  # under its own, RabbitMQ-checked name
        await publish_event(stranger.amqp.channel, forged, stranger.user)
    else:  # on Warden's own connection, but without saying so
        await publish_event(amqp.channel, forged, None)

    dead_lettered = False

    async def settled() -> bool:
        nonlocal dead_lettered
        dead_lettered = await take_dead_letter(amqp.channel, forged["id"])
        return dead_lettered or await audited(worker, forged["id"]) > 0

    await eventually(settled, "the forged event dead-lettered or audited")
    assert await audited(worker, forged["id"]) == 0
    assert dead_lettered
    assert refused("warden.audit", "foreign_publisher") == refused_before + 1


async def test_an_event_warden_published_still_becomes_an_audit_row(
    amqp: AmqpCaller, worker: Services
) -> None:
    user = await registered(amqp)

    async def registered_audited() -> bool:
        return bool(await audit_data(worker, user["id"], "user.registered"))

    await eventually(registered_audited, "user.registered audited")


# --- c) no reply is written to one of Warden's own queues ----------------------------------


@pytest.mark.parametrize("reply_to", [DLQ, "warden.audit"])
async def test_a_request_whose_reply_to_names_a_warden_queue_is_refused_unworked(
    amqp: AmqpCaller, worker: Services, reply_to: str
) -> None:
    body = registration()
    dead_before = await message_count(amqp, DLQ)
    refused_before = refused(REGISTER, "reply_to_reserved")
    message = aio_pika.Message(
        orjson.dumps(body),
        content_type="application/json",
        correlation_id=uuid.uuid4().hex,
        reply_to=reply_to,
    )
    await amqp.channel.default_exchange.publish(message, routing_key=REGISTER)

    async def done_with() -> bool:  # refused now; worked on and answered there before
        return (
            refused(REGISTER, "reply_to_reserved") > refused_before
            or await users_named(worker, body["username"]) > 0
        )

    await eventually(done_with, "the request refused or worked on")
    assert await users_named(worker, body["username"]) == 0
    assert await message_count(amqp, REGISTER) == 0  # acknowledged, not left to loop
    # A reply written to warden.audit is refused as malformed and dead-lettered in turn.
    assert await message_count(amqp, DLQ) == dead_before
    assert refused(REGISTER, "reply_to_reserved") == refused_before + 1


async def test_every_queue_the_worker_declares_is_one_no_reply_may_name(
    settings: Settings, worker: Services
) -> None:
    from contract.protocol import reserved
    from handlers.queues import DLQ as DEAD_LETTERS
    from warden.bootstrap import build_broker

    broker = build_broker(settings, worker)  # not connected: its subscribers name the queues
    names = {sub.queue.name for sub in broker.subscribers} | {DEAD_LETTERS.name}  # type: ignore[attr-defined]
    assert len(names) > 2
    assert [name for name in names if not reserved(name)] == []


@pytest.mark.parametrize("named", [False, True], ids=["server-named", "named-by-the-caller"])
async def test_a_reply_goes_to_a_queue_of_the_callers_own(amqp: AmqpCaller, named: bool) -> None:
    name = f"billing.replies.{uuid.uuid4().hex}" if named else ""
    queue = await amqp.channel.declare_queue(name, exclusive=True, auto_delete=True)
    replies: asyncio.Queue[aio_pika.abc.AbstractIncomingMessage] = asyncio.Queue()
    tag = await queue.consume(replies.put, no_ack=True)
    try:
        correlation_id = uuid.uuid4().hex
        message = aio_pika.Message(b"{}", correlation_id=correlation_id, reply_to=queue.name)
        await amqp.channel.default_exchange.publish(message, routing_key="warden.ping")
        async with asyncio.timeout(WITHIN):
            reply = await replies.get()
        assert reply.correlation_id == correlation_id
        assert orjson.loads(reply.body)["ok"] is True
    finally:
        await queue.cancel(tag)
        await queue.delete(if_unused=False, if_empty=False)


# --- d) a body over the limit is a 413, unparsed -------------------------------------------


@pytest.mark.parametrize("json", [True, False], ids=["json", "not-json"])
async def test_a_body_over_the_limit_is_a_413_before_it_is_parsed(
    amqp: AmqpCaller, worker: Services, json: bool
) -> None:
    body = registration()
    if json:
        raw = orjson.dumps(body | {"full_name": "x" * MAX_BODY_BYTES})
    else:
        raw = b"x" * (MAX_BODY_BYTES + 1)
    reply = orjson.loads((await amqp.raw(REGISTER, raw, {"idempotency-key": unique()})).body)
    assert reply["ok"] is False
    assert (reply["error"]["status"], reply["error"]["code"]) == (413, "payload_too_large")
    assert await users_named(worker, body["username"]) == 0


async def test_a_body_at_the_limit_is_parsed(amqp: AmqpCaller) -> None:
    reply = orjson.loads((await amqp.raw(REGISTER, b"x" * MAX_BODY_BYTES)).body)
    assert (reply["error"]["status"], reply["error"]["code"]) == (422, "malformed_message")


# --- e) request ids and headers of any type -------------------------------------------------


@pytest.mark.parametrize(
    "given",
    ["has space", "x" * 129, "", "naïve", "nul\x00", 42, bytearray(b"id"), {"a": "b"}, ["c"]],
    ids=repr,
)
async def test_a_request_id_that_breaks_the_pattern_is_replaced(
    amqp: AmqpCaller, given: object
) -> None:
    reply = await amqp.raw(REGISTER, orjson.dumps(registration()), {"x-request-id": given})
    assert orjson.loads(reply.body)["ok"] is True
    assert reply.headers is not None
    echoed = reply.headers["x-request-id"]
    assert isinstance(echoed, str)
    assert re.fullmatch(REQUEST_ID_PATTERN, echoed)
    assert echoed != given


# Every other type an AMQP table holds (a byte array arrives as a bytearray).
NOT_TEXT = [
    42,
    3.5,
    Decimal("1.5"),
    True,
    {"k": "v"},
    ["a", 1],
    bytearray(b"\xff\xfe\x00"),
    datetime(2026, 1, 1, tzinfo=UTC),
]


@pytest.mark.parametrize("value", NOT_TEXT, ids=repr)
async def test_an_authorization_header_that_is_not_text_is_a_401(
    amqp: AmqpCaller, value: object
) -> None:
    reply = orjson.loads((await amqp.raw("warden.users.me", b"{}", {"authorization": value})).body)
    assert reply["ok"] is False
    assert reply["error"]["status"] == 401
    assert reply["error"]["code"] in {"missing_token", "invalid_token"}


@pytest.mark.parametrize("value", [*NOT_TEXT, "", "nul\x00", "k" * 256, "naïve"], ids=repr)
async def test_an_idempotency_key_that_is_not_1_to_255_printable_characters_is_a_422(
    amqp: AmqpCaller, worker: Services, value: object
) -> None:
    body = registration()
    raw = await amqp.raw(REGISTER, orjson.dumps(body), {"idempotency-key": value})
    reply = orjson.loads(raw.body)
    assert reply["ok"] is False, reply
    assert (reply["error"]["status"], reply["error"]["code"]) == (422, "validation_error")
    assert [e["loc"] for e in reply["error"]["errors"]] == [["header", "idempotency-key"]]
    assert await users_named(worker, body["username"]) == 0


@pytest.mark.parametrize("value", NOT_TEXT, ids=repr)
async def test_an_x_client_ip_that_is_not_text_counts_as_none_even_from_the_edge(
    amqp: AmqpCaller, worker: Services, warden_user: str, value: object
) -> None:
    user = await registered(amqp)
    reply = await amqp.call(
        LOGIN,
        {"username": user["username"], "password": PASSWORD},
        user_id=warden_user,
        x_client_ip=value,
    )
    assert reply["ok"] is True, reply

    async def logged_in() -> bool:
        return bool(await audit_data(worker, user["id"], "user.logged_in"))

    await eventually(logged_in, "user.logged_in audited")
    [data] = await audit_data(worker, user["id"], "user.logged_in")
    assert "client_ip" not in data
