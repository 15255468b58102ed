"""Idempotency-Key when things go wrong: a fault is not kept (the retry does the work), a bad
key is a 422 that names the header, and a body that is not JSON is answered the same twice."""

from __future__ import annotations

import uuid
from typing import Any

import aiohttp
import orjson
import pytest

from domain.accounts import Accounts
from tests.conftest import PASSWORD, unique
from tests.support.amqp import AmqpCaller


def registration() -> dict[str, str]:
    name = unique()
    return {"email": f"{name}@example.com", "username": name, "password": PASSWORD}


async def post(http: aiohttp.ClientSession, body: Any, key: str, **headers: str) -> tuple[int, Any]:
    headers = {"Idempotency-Key": key, **headers}
    async with http.post("/api/v1/users", json=body, headers=headers) as r:
        return r.status, await r.json(content_type=None)


async def test_a_fault_is_not_kept_and_the_retry_with_the_key_does_the_work(
    http: aiohttp.ClientSession, worker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    body, key = registration(), unique("key-")

    async def fault(*_: Any, **__: Any) -> None:
        raise RuntimeError("a bug, this once")

    monkeypatch.setattr(Accounts, "register", fault)
    status, problem = await post(http, body, key)
    assert (status, problem["code"]) == (500, "internal_error")
    monkeypatch.undo()

    status, user = await post(http, body, key)
    assert status == 201, user  # neither the 500 again nor a 409 idempotency_key_in_use
    assert user["email"] == body["email"]
    assert await post(http, body, key) == (201, user)


async def test_a_malformed_key_over_amqp_is_a_422_that_names_the_header(
    amqp: AmqpCaller,
) -> None:
    reply = await amqp.call("warden.users.register", registration(), idempotency_key="tab\there")

    assert (reply["ok"], reply["error"]["status"]) == (False, 422)
    [error] = reply["error"]["errors"]
    assert (error["loc"], error["type"]) == (["header", "idempotency-key"], "value_error")
    assert isinstance(error["msg"], str)
    assert error["msg"]


async def test_a_body_that_is_not_json_gets_the_same_answer_with_its_key_twice(
    amqp: AmqpCaller,
) -> None:
    headers = {"idempotency-key": unique("key-"), "x-request-id": str(uuid.uuid4())}

    first = await amqp.raw("warden.users.register", b"{not json", headers)
    again = await amqp.raw("warden.users.register", b"{not json", headers)

    reply = orjson.loads(first.body)
    assert reply["ok"] is False
    assert 400 <= reply["error"]["status"] < 500, reply
    assert orjson.loads(again.body) == reply
