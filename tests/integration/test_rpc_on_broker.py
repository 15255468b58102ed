"""The RPC machinery on the real RabbitMQ, through the in-process worker: every request is
answered with the contract's envelope and acknowledged, whatever it carried."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aio_pika
import orjson
import pytest
from sqlalchemy import func, select

from contract.protocol import DEADLINE as DEADLINE_HEADER
from storage.tables import users
from tests.conftest import PASSWORD, unique
from tests.support.amqp import AmqpCaller
from tests.support.waiting import eventually
from warden.bootstrap import Services

REGISTER = "warden.users.register"
DLQ = "warden.dlq"


def registration(**extra: Any) -> dict[str, Any]:
    name = unique()
    return {"email": f"{name}@example.com", "username": name, "password": PASSWORD} | extra


async def message_count(amqp: AmqpCaller, queue: str) -> int:
    declared = await amqp.channel.declare_queue(queue, passive=True)
    result = declared.declaration_result
    assert result.message_count is not None
    return result.message_count


async def dead_letters(amqp: AmqpCaller) -> int:
    return await message_count(amqp, DLQ)


async def assert_settled(amqp: AmqpCaller, dead_before: int) -> None:
    """The request left its queue, was not dead-lettered, and the worker answers the next one."""
    assert await message_count(amqp, REGISTER) == 0
    reply = await amqp.call(REGISTER, registration())
    assert reply["ok"] is True, reply
    assert await dead_letters(amqp) == dead_before


def count_users(username: str) -> Any:
    return select(func.count()).select_from(users).where(users.c.username == username)


def error_of(body: bytes) -> dict[str, Any]:
    envelope = orjson.loads(body)
    assert envelope["ok"] is False, envelope
    assert set(envelope) == {"ok", "error"}
    error: dict[str, Any] = envelope["error"]
    return error


@pytest.mark.parametrize(
    "body",
    [b"not json", b'{"email": "a@b.io", ', b"\xff\xfe\x00", b"{'single': 'quotes'}"],
    ids=["text", "truncated", "not-utf8", "python-repr"],
)
async def test_a_body_that_is_not_json_gets_a_422_malformed_message_and_is_acknowledged(
    amqp: AmqpCaller, body: bytes
) -> None:
    dead_before = await dead_letters(amqp)
    reply = await amqp.raw(REGISTER, body)
    error = error_of(reply.body)
    assert (error["status"], error["code"]) == (422, "malformed_message")
    assert reply.content_type == "application/json"
    await assert_settled(amqp, dead_before)


@pytest.mark.parametrize("body", [[], [1, 2], "text", 42, None], ids=repr)
async def test_json_that_is_not_an_object_gets_a_422_validation_error(
    amqp: AmqpCaller, body: Any
) -> None:
    dead_before = await dead_letters(amqp)
    error = error_of((await amqp.raw(REGISTER, orjson.dumps(body))).body)
    assert (error["status"], error["code"]) == (422, "validation_error")
    assert error["errors"] == [
        {"loc": ["body"], "msg": "the body must be a JSON object", "type": "dict_type"}
    ]
    await assert_settled(amqp, dead_before)


async def test_an_unknown_field_is_a_422_validation_error_that_echoes_no_input(
    amqp: AmqpCaller,
) -> None:
    dead_before = await dead_letters(amqp)
    body = registration(is_superuser=True)
    reply = await amqp.raw(REGISTER, orjson.dumps(body))
    error = error_of(reply.body)
    assert (error["status"], error["code"]) == (422, "validation_error")
    assert error["errors"], error
    for item in error["errors"]:
        assert set(item) == {"loc", "msg", "type"}
    assert ["body", "is_superuser"] in [item["loc"] for item in error["errors"]]
    assert PASSWORD.encode() not in reply.body
    assert body["username"].encode() not in reply.body
    await assert_settled(amqp, dead_before)


async def test_invalid_fields_are_each_named_and_their_values_never_echoed(
    amqp: AmqpCaller,
) -> None:
    too_long = "p" * 73
    body = {"email": "no-at-sign.example", "username": "x!", "password": too_long}
    reply = await amqp.raw(REGISTER, orjson.dumps(body))
    error = error_of(reply.body)
    assert (error["status"], error["code"]) == (422, "validation_error")
    located = {tuple(item["loc"]) for item in error["errors"]}
    assert located == {("body", "email"), ("body", "username"), ("body", "password")}
    for secret in (too_long, "no-at-sign.example", "x!"):
        assert secret.encode() not in reply.body


async def test_a_handler_fault_is_a_500_naming_no_internals_and_the_worker_goes_on(
    amqp: AmqpCaller, worker: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret internals")

    dead_before = await dead_letters(amqp)
    monkeypatch.setattr(worker.accounts, "register", broken)
    reply = await amqp.raw(REGISTER, orjson.dumps(registration()))
    error = error_of(reply.body)
    assert (error["status"], error["code"]) == (500, "internal_error")
    assert b"secret internals" not in reply.body
    assert b"RuntimeError" not in reply.body
    assert b"Traceback" not in reply.body
    monkeypatch.undo()
    await assert_settled(amqp, dead_before)


async def test_a_request_past_its_deadline_is_answered_504_without_doing_the_work(
    amqp: AmqpCaller, worker: Services
) -> None:
    body = registration()
    past = int((time.time() - 60) * 1000)
    reply = await amqp.raw(REGISTER, orjson.dumps(body), {DEADLINE_HEADER: past})
    error = error_of(reply.body)
    assert (error["status"], error["code"]) == (504, "upstream_timeout")
    async with worker.engine.connect() as conn:
        assert await conn.scalar(count_users(body["username"])) == 0
    # Nobody took the name: the same registration, in time, succeeds.
    future = int((time.time() + 60) * 1000)
    in_time = await amqp.raw(REGISTER, orjson.dumps(body), {DEADLINE_HEADER: future})
    again = orjson.loads(in_time.body)
    assert again["ok"] is True, again
    assert again["data"]["username"] == body["username"]


async def test_racing_registrations_of_one_email_give_one_user_and_409s_never_a_500(
    amqp: AmqpCaller,
) -> None:
    email = f"{unique()}@example.com"
    bodies = [registration(email=email if i % 2 else email.upper()) for i in range(6)]
    replies = await asyncio.gather(*(amqp.call(REGISTER, body) for body in bodies))
    assert sum(reply["ok"] for reply in replies) == 1, replies
    refused = [reply["error"] for reply in replies if not reply["ok"]]
    assert {(e["status"], e["code"]) for e in refused} == {(409, "email_taken")}


async def test_the_request_id_comes_back_on_the_reply_headers(amqp: AmqpCaller) -> None:
    request_id = unique("req-")
    reply = await amqp.raw("warden.ping", b"{}", {"x-request-id": request_id})
    assert reply.headers["x-request-id"] == request_id
    assert reply.correlation_id is not None
    failed = await amqp.raw(REGISTER, b"not json", {"x-request-id": request_id})
    assert failed.headers["x-request-id"] == request_id


async def test_the_readiness_ping_reports_postgres_and_redis(amqp: AmqpCaller) -> None:
    reply = await amqp.call("warden.ping", {})
    assert reply["ok"] is True, reply
    checks = reply["data"]
    assert {"postgres", "redis"} <= set(checks)
    for name in ("postgres", "redis"):
        assert checks[name]["status"] == "pass", checks[name]
        assert checks[name]["latency_ms"] >= 0


async def test_many_bad_requests_at_once_are_all_answered_and_none_loops(
    amqp: AmqpCaller,
) -> None:
    dead_before = await dead_letters(amqp)
    bodies = [b"not json", b"[]", orjson.dumps(registration(is_superuser=True))] * 10
    replies = await asyncio.gather(*(amqp.raw(REGISTER, body) for body in bodies))
    assert {error_of(r.body)["status"] for r in replies} == {422}
    await assert_settled(amqp, dead_before)


async def test_a_request_without_reply_to_is_worked_on_acknowledged_and_the_worker_goes_on(
    amqp: AmqpCaller, worker: Services
) -> None:
    dead_before = await dead_letters(amqp)
    body = registration()
    message = aio_pika.Message(orjson.dumps(body), content_type="application/json")
    await amqp.channel.default_exchange.publish(message, routing_key=REGISTER)
    stored = count_users(body["username"])

    async def registered() -> bool:  # the fire-and-forget registration
        async with worker.engine.connect() as conn:
            return bool(await conn.scalar(stored) == 1)

    await eventually(registered, 10, "the registration without reply_to was not stored")
    await assert_settled(amqp, dead_before)
