"""Two tabs refreshing the same token at once: with WARDEN_REFRESH_REUSE_INTERVAL=0 one wins and
the other is reuse (the session ends); with N > 0 both come away with a working pair of the
same session, and after N seconds the spent token is reuse again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import aiohttp
import pytest_asyncio

from tests.conftest import PASSWORD, make_settings, own_world, unique
from tests.e2e.test_sessions import (
    Answer,
    assert_session_revoked,
    code,
    new_user,
    refresh,
    session,
    sid_of,
)
from tests.support.amqp import AmqpCaller
from tests.support.infra import Urls
from warden.bootstrap import running_worker

INTERVAL = 2  # seconds: short, so the test waits it out; long next to two racing requests


@pytest_asyncio.fixture(scope="module")
async def lenient(urls: Urls) -> AsyncIterator[AmqpCaller]:
    """A worker with the reuse interval, in a database and vhost of its own, and a caller."""
    async with own_world(urls, "reuse") as own:
        settings = make_settings(own, refresh_reuse_interval=INTERVAL)
        async with running_worker(settings):
            connection = await aio_pika.connect(own.amqp)
            caller = AmqpCaller(await connection.channel())
            await caller.start()
            yield caller
            await connection.close()


async def call(amqp: AmqpCaller, queue: str, body: Any, token: str | None = None) -> Answer:
    reply = await amqp.call(queue, body, token)
    if reply["ok"]:
        return 200, reply["data"]
    return reply["error"]["status"], reply["error"]


async def signed_in(amqp: AmqpCaller) -> dict[str, Any]:
    name = unique()
    user = {"email": f"{name}@example.com", "username": name, "password": PASSWORD}
    assert (await call(amqp, "warden.users.register", user))[0] == 200
    status, pair = await call(amqp, "warden.auth.login", {"username": name, "password": PASSWORD})
    assert status == 200, pair
    return dict(pair)


async def works(amqp: AmqpCaller, pair: dict[str, Any]) -> bool:
    return (await call(amqp, "warden.users.me", {}, pair["access_token"]))[0] == 200


async def test_without_an_interval_one_tab_wins_and_the_other_ends_the_session(
    http: aiohttp.ClientSession,
) -> None:
    _, name = await new_user(http)
    pair = await session(http, name)

    tabs = await asyncio.gather(*(refresh(http, pair["refresh_token"]) for _ in range(2)))

    assert sorted(code(tab) for tab in tabs) == [(200, None), (401, "token_reused")]
    winner = next(body for status, body in tabs if status == 200)
    await assert_session_revoked(http, winner)


async def test_within_the_interval_both_tabs_come_away_with_a_working_pair(
    lenient: AmqpCaller,
) -> None:
    pair = await signed_in(lenient)
    body = {"refresh_token": pair["refresh_token"]}

    tabs = await asyncio.gather(*(call(lenient, "warden.auth.refresh", body) for _ in range(2)))

    assert [status for status, _ in tabs] == [200, 200], tabs
    first, second = (dict(b) for _, b in tabs)
    assert sid_of(first["access_token"]) == sid_of(second["access_token"])
    assert await works(lenient, first)
    assert await works(lenient, second)
    # Both hold the session's current refresh token: the tab that refreshes next goes on,
    # and the other, a moment later, is forgiven in the same way.
    later = await call(lenient, "warden.auth.refresh", {"refresh_token": second["refresh_token"]})
    assert later[0] == 200, later
    again = await call(lenient, "warden.auth.refresh", {"refresh_token": first["refresh_token"]})
    assert again[0] == 200, again
    assert await works(lenient, dict(later[1]))


async def test_after_the_interval_the_spent_token_is_reuse_and_ends_the_session(
    lenient: AmqpCaller,
) -> None:
    pair = await signed_in(lenient)
    body = {"refresh_token": pair["refresh_token"]}
    status, fresh = await call(lenient, "warden.auth.refresh", body)
    assert status == 200, fresh
    await asyncio.sleep(INTERVAL + 0.2)

    late = await call(lenient, "warden.auth.refresh", body)

    assert (late[0], late[1]["code"]) == (401, "token_reused")
    assert not await works(lenient, dict(fresh))
    gone = await call(lenient, "warden.auth.refresh", {"refresh_token": fresh["refresh_token"]})
    assert (gone[0], gone[1]["code"]) == (401, "token_revoked")
