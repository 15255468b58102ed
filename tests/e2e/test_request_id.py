"""Logs a person can follow: one request id on the edge's line, the worker's line and the event
it caused; and no password, hash or token in any line. Logging is configured as the `warden`
command configures it (JSON lines through the redacting processors) and read back."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import aio_pika
import aiohttp
import orjson
import pytest
from sqlalchemy import text

from tests.conftest import unique
from tests.support.amqp import AmqpCaller
from tests.support.logs import captured_logs
from tests.support.waiting import eventually
from warden.settings import Settings

API = "/api/v1"
WAIT = 15.0  # generous: only to avoid hanging


@dataclass
class LogLines:
    """What the configured logging wrote, and whatever else reached stdout or stderr."""

    stream: io.StringIO
    capsys: pytest.CaptureFixture[str]

    def read(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.stream.getvalue().splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    lines.append(record)
        return lines

    def find(self, **fields: Any) -> list[dict[str, Any]]:
        return [r for r in self.read() if fields.items() <= r.items()]

    def everything(self) -> str:
        captured = self.capsys.readouterr()
        return "\n".join((self.stream.getvalue(), captured.out, captured.err))


@pytest.fixture
def json_logs(capsys: pytest.CaptureFixture[str]) -> Iterator[LogLines]:
    """`warden.logs.configure("json")` for one test, read back; what it changed is put back."""
    with captured_logs() as captured:
        yield LogLines(captured.stream, capsys)


@dataclass
class Delivered:
    event: dict[str, Any]
    headers: dict[str, Any]


@contextlib.asynccontextmanager
async def events_of(settings: Settings, *routing_keys: str) -> AsyncIterator[list[Delivered]]:
    """A queue of the test's own bound to warden.events: the events, with their headers."""
    received: list[Delivered] = []
    connection = await aio_pika.connect(settings.amqp_url.get_secret_value(), timeout=10)
    try:
        channel = await connection.channel()
        exchange = await channel.get_exchange("warden.events", ensure=False)
        queue = await channel.declare_queue(exclusive=True)
        for routing_key in routing_keys:
            await queue.bind(exchange, routing_key)

        async def on_event(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with message.process():
                received.append(Delivered(orjson.loads(message.body), dict(message.headers)))

        await queue.consume(on_event)
        yield received
    finally:
        await connection.close()


async def event_about(received: list[Delivered], username: str) -> Delivered:
    def about() -> list[Delivered]:
        return [d for d in received if d.event["data"]["user"]["username"] == username]

    await eventually(lambda: bool(about()), WAIT, f"no event about {username}")
    return about()[0]


async def lines_with(json_logs: LogLines, **fields: Any) -> list[dict[str, Any]]:
    """The lines with `fields`; the worker may write its line a moment after the reply."""
    await eventually(lambda: bool(json_logs.find(**fields)), WAIT, f"no line with {fields}")
    return json_logs.find(**fields)


def registration(name: str, password: str) -> dict[str, str]:
    return {"email": f"{name}@example.com", "username": name, "password": password}


async def test_one_request_id_is_on_the_edge_line_the_worker_line_and_the_event(
    http: aiohttp.ClientSession, settings: Settings, json_logs: LogLines
) -> None:
    request_id = unique("trace-")
    name = unique("rid")
    async with events_of(settings, "user.registered") as received:
        headers = {"X-Request-ID": request_id}
        body = registration(name, unique("pw-"))
        async with http.post(f"{API}/users", json=body, headers=headers) as r:
            assert r.status == 201
            assert r.headers["X-Request-ID"] == request_id
        delivered = await event_about(received, name)

    (edge,) = await lines_with(json_logs, event="request", request_id=request_id)
    assert edge | {"route": "/api/v1/users", "method": "POST", "status": 201} == edge
    assert edge["logger"] == "warden.edge"
    (handled,) = await lines_with(json_logs, event="message handled", request_id=request_id)
    assert handled | {"queue": "warden.users.register", "status": 200} == handled
    assert handled["logger"] == "warden.worker"
    assert delivered.event["requestid"] == request_id
    assert delivered.headers["x-request-id"] == request_id


async def test_a_request_id_sent_over_amqp_reaches_the_worker_line_and_the_event(
    amqp: AmqpCaller, settings: Settings, json_logs: LogLines
) -> None:
    request_id = unique("amqp-trace-")
    name = unique("rid")
    async with events_of(settings, "user.registered") as received:
        body = registration(name, unique("pw-"))
        reply = await amqp.call("warden.users.register", body, x_request_id=request_id)
        assert reply["ok"], reply
        delivered = await event_about(received, name)

    (handled,) = await lines_with(json_logs, event="message handled", request_id=request_id)
    assert handled["queue"] == "warden.users.register"
    assert delivered.event["requestid"] == request_id
    assert delivered.headers["x-request-id"] == request_id


async def test_the_edge_makes_a_request_id_when_the_caller_sends_none_or_a_bad_one(
    http: aiohttp.ClientSession, json_logs: LogLines
) -> None:
    for given in (None, "not a valid id!", "x" * 129):
        headers = {"X-Request-ID": given} if given is not None else {}
        async with http.get(f"{API}/users/me", headers=headers) as r:
            assert r.status == 401
            made = r.headers["X-Request-ID"]
        assert made != given
        assert len(made) >= 1
        (edge,) = await lines_with(json_logs, event="request", request_id=made)
        assert edge["status"] == 401
        await lines_with(json_logs, event="message handled", request_id=made)


async def test_no_log_line_holds_a_password_a_hash_or_a_token(
    http: aiohttp.ClientSession, worker: Any, json_logs: LogLines
) -> None:
    name = unique("secret")
    password, new_password = unique("pw-first-"), unique("pw-second-")
    async with http.post(f"{API}/users", json=registration(name, password)) as r:
        assert r.status == 201
        user_id = (await r.json())["id"]
    login = {"username": name, "password": password}
    async with http.post(f"{API}/auth/login", json=login) as r:
        assert r.status == 200
        pair = await r.json()
    async with http.post(f"{API}/auth/login", json=login | {"password": "wrong-" + password}) as r:
        assert r.status == 401
    bearer = {"Authorization": f"Bearer {pair['access_token']}"}
    async with http.get(f"{API}/users/me", headers=bearer) as r:
        assert r.status == 200
    async with http.post(f"{API}/auth/refresh", json={"refresh_token": pair["refresh_token"]}) as r:
        assert r.status == 200
        second = await r.json()
    change = {"current_password": password, "new_password": new_password}
    bearer = {"Authorization": f"Bearer {second['access_token']}"}
    async with http.post(f"{API}/users/me/password", json=change, headers=bearer) as r:
        assert r.status == 204
    async with worker.engine.connect() as conn:
        hashed = (
            await conn.execute(
                text("SELECT hashed_password FROM users WHERE id = :id"), {"id": user_id}
            )
        ).scalar_one()

    await lines_with(json_logs, event="message handled", queue="warden.users.change_password")
    output = json_logs.everything()
    secrets = [
        password,
        new_password,
        hashed,
        pair["access_token"],
        pair["refresh_token"],
        second["access_token"],
        second["refresh_token"],
    ]
    leaked = [s for s in secrets if s in output]
    assert not leaked, leaked
    # The lines were there to leak into: the test read the real output.
    assert json_logs.find(event="request", route="/api/v1/auth/login", status=200)


CAUSES = (
    "user.registered",
    "user.login_failed",
    "user.logged_in",
    "user.updated",
    "user.password_changed",
    "user.token_reuse_detected",
    "user.logged_out",
)


async def test_every_event_carries_the_id_of_the_request_that_caused_it(
    amqp: AmqpCaller, settings: Settings
) -> None:
    """Each use case that writes runs on its own request's units of work: the event of a
    login, a profile or password change, a refresh token's reuse or a logout carries that
    request's id, never another's."""
    name, password = unique("rid"), unique("pw-")
    ids = {kind: unique("trace-") for kind in CAUSES}

    async def call(kind: str, queue: str, body: dict[str, Any], token: str | None = None) -> Any:
        reply = await amqp.call(queue, body, token, x_request_id=ids[kind])
        return reply.get("data")

    async with events_of(settings, *CAUSES) as received:
        await call("user.registered", "warden.users.register", registration(name, password))
        await call("user.login_failed", "warden.auth.login", {"username": name, "password": "no"})
        login = {"username": name, "password": password}
        untraced = await amqp.call("warden.auth.login", login)  # a session to spend a token of
        spent = {"refresh_token": untraced["data"]["refresh_token"]}
        await amqp.call("warden.auth.refresh", spent)  # rotated: that token is spent now
        await call("user.token_reuse_detected", "warden.auth.refresh", spent)
        token = (await call("user.logged_in", "warden.auth.login", login))["access_token"]
        await call("user.updated", "warden.users.update_me", {"full_name": "Traced"}, token)
        change = {"current_password": password, "new_password": unique("pw-")}
        await call("user.password_changed", "warden.users.change_password", change, token)
        await call("user.logged_out", "warden.auth.logout", {}, token)

        def caused() -> list[tuple[str, str | None]]:
            about = [d.event for d in received if d.event["data"]["user"]["username"] == name]
            return [(e["type"], e.get("requestid")) for e in about]

        def arrived() -> bool:  # the logout's comes last: events go out in commit order
            return {kind for kind, _ in caused()} == set(CAUSES)

        await eventually(arrived, WAIT, "not every kind of event came")
    # Each traced id is on the one event its request caused (the untraced ones have their own).
    traced = set(ids.values())
    assert sorted(e for e in caused() if e[1] in traced) == sorted(ids.items())
