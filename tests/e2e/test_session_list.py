"""A user's sessions through the edge: listed, ended one by one or all but this one, ended by
a superuser; and `session.revoked` on the bus, once per session, whatever ended it."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from tests.conftest import PASSWORD
from tests.e2e.test_sessions import (
    Answer,
    admin_token,
    answer,
    assert_session_revoked,
    bearer,
    code,
    me,
    new_user,
    refresh,
    session,
    sid_of,
)
from tests.support.amqp import AmqpCaller
from tests.support.events import EventTap
from tests.support.waiting import eventually
from warden.bootstrap import Services

SESSIONS = "/api/v1/users/me/sessions"
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0"
PHONE = "WardenTestPhone/1.0 (Android 15)"
RFC3339_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


async def log_in_as(http: aiohttp.ClientSession, name: str, agent: str) -> dict[str, Any]:
    body = {"username": name, "password": PASSWORD}
    async with http.post("/api/v1/auth/login", json=body, headers={"User-Agent": agent}) as r:
        assert r.status == 200, await r.text()
        return dict(await r.json())


async def listed(http: aiohttp.ClientSession, access: str) -> Answer:
    async with http.get(SESSIONS, headers=bearer(access)) as r:
        return await answer(r)


async def end(http: aiohttp.ClientSession, path: str, access: str) -> Answer:
    async with http.delete(path, headers=bearer(access)) as r:
        return await answer(r)


async def log_out(http: aiohttp.ClientSession, access: str) -> Answer:
    async with http.post("/api/v1/auth/logout", json={}, headers=bearer(access)) as r:
        return await answer(r)


def revoked_of(revocations: EventTap, sid: str) -> list[dict[str, Any]]:
    return [a.event for a in revocations.arrivals if a.event["data"].get("session_id") == sid]


async def settled(http: aiohttp.ClientSession, revocations: EventTap) -> None:
    """Return once every event committed before now has arrived: one relay publishes in
    outbox order, so a later session's revocation arriving means none before it is coming."""
    _, name = await new_user(http)
    pair = await session(http, name)
    assert (await log_out(http, pair["access_token"]))[0] == 204
    sid = sid_of(pair["access_token"])
    await eventually(lambda: bool(revoked_of(revocations, sid)), 10, f"barrier {sid}")


async def assert_announced_once(
    http: aiohttp.ClientSession, revocations: EventTap, sids: list[str], reason: str
) -> None:
    await settled(http, revocations)
    for sid in sids:
        assert [e["data"]["reason"] for e in revoked_of(revocations, sid)] == [reason], sid


# --- the list --------------------------------------------------------------------------


async def test_two_logins_from_two_user_agents_are_listed_and_the_callers_is_marked(
    http: aiohttp.ClientSession,
) -> None:
    _, name = await new_user(http)
    laptop = await log_in_as(http, name, FIREFOX)
    phone = await log_in_as(http, name, PHONE)
    _, bob = await new_user(http)
    await log_in_as(http, bob, FIREFOX)  # someone else's session, from the same address

    status, body = await listed(http, laptop["access_token"])

    assert status == 200, body
    items = {item["id"]: item for item in body["items"]}
    assert set(items) == {sid_of(laptop["access_token"]), sid_of(phone["access_token"])}
    mine, other = items[sid_of(laptop["access_token"])], items[sid_of(phone["access_token"])]
    assert (mine["current"], mine["user_agent"]) == (True, FIREFOX)
    assert (other["current"], other["user_agent"]) == (False, PHONE)
    assert mine["ip"] == other["ip"] == http.headers["X-Forwarded-For"]
    for item in body["items"]:
        assert set(item) == {"id", "created_at", "last_used_at", "ip", "user_agent", "current"}
        assert RFC3339_Z.match(item["created_at"]), item
        assert RFC3339_Z.match(item["last_used_at"]), item
    assert body["items"][0]["id"] == sid_of(phone["access_token"])  # newest first
    assert (await listed(http, phone["access_token"]))[1]["items"][0]["current"] is True


async def test_a_refresh_is_the_sessions_last_use(http: aiohttp.ClientSession) -> None:
    _, name = await new_user(http)
    pair = await session(http, name)
    (before,) = (await listed(http, pair["access_token"]))[1]["items"]
    await asyncio.sleep(1.1)  # the timestamps are the store's, to the millisecond

    status, fresh = await refresh(http, pair["refresh_token"])

    assert status == 200, fresh
    (after,) = (await listed(http, fresh["access_token"]))[1]["items"]
    assert after["created_at"] == before["created_at"]
    assert after["last_used_at"] > before["last_used_at"]


async def test_a_user_agent_is_kept_printable_and_bounded(
    http: aiohttp.ClientSession, amqp: AmqpCaller
) -> None:
    _, name = await new_user(http)
    long = "L" * 1000
    pair = await log_in_as(http, name, long)
    # Bytes that are no UTF-8, a NUL, an escape sequence, and far too many of them.
    hostile = bytearray(b"evil\x00agent\x1b[31m\xff" + b"x" * 400)
    reply = await amqp.call(
        "warden.auth.login", {"username": name, "password": PASSWORD}, x_user_agent=hostile
    )
    assert reply["ok"], reply
    other = reply["data"]

    items = {i["id"]: i for i in (await listed(http, pair["access_token"]))[1]["items"]}

    assert items[sid_of(pair["access_token"])]["user_agent"] == "L" * 256
    agent = items[sid_of(other["access_token"])]["user_agent"]
    assert agent == ("evilagent[31m\ufffd" + "x" * 400)[:256]
    assert items[sid_of(other["access_token"])]["ip"] is None  # not vouched for by the edge


async def test_listing_needs_a_live_token(http: aiohttp.ClientSession) -> None:
    _, name = await new_user(http)
    pair = await session(http, name)
    await log_out(http, pair["access_token"])

    assert code(await listed(http, pair["access_token"])) == (401, "token_revoked")
    async with http.get(SESSIONS) as r:
        assert code(await answer(r)) == (401, "missing_token")


# --- ending sessions -------------------------------------------------------------------


async def test_ending_one_session_refuses_its_tokens_at_once_and_announces_it_once(
    http: aiohttp.ClientSession, revocations: EventTap
) -> None:
    user_id, name = await new_user(http)
    here, phone = await session(http, name), await session(http, name)
    sid = sid_of(phone["access_token"])

    assert await end(http, f"{SESSIONS}/{sid}", here["access_token"]) == (204, None)

    await assert_session_revoked(http, phone)
    assert (await me(http, here["access_token"]))[0] == 200
    assert [i["id"] for i in (await listed(http, here["access_token"]))[1]["items"]] == [
        sid_of(here["access_token"])
    ]
    await assert_announced_once(http, revocations, [sid], "user")
    (event,) = revoked_of(revocations, sid)
    assert event["subject"] == str(user_id)
    assert event["data"]["user_id"] == user_id
    expires = datetime.fromisoformat(event["data"]["expires_at"])
    # The session's only access token was issued at its login: it dies within the access TTL.
    assert 0 < (expires - datetime.now(UTC)).total_seconds() <= 1800


async def test_another_users_or_an_unknown_session_is_not_found(
    http: aiohttp.ClientSession,
) -> None:
    _, name = await new_user(http)
    _, other = await new_user(http)
    mine, theirs = await session(http, name), await session(http, other)

    for sid in (sid_of(theirs["access_token"]), "no-such-session"):
        result = await end(http, f"{SESSIONS}/{sid}", mine["access_token"])
        assert code(result) == (404, "session_not_found"), sid
    assert (await me(http, theirs["access_token"]))[0] == 200
    # An id the route does not take is no route at all.
    assert code(await end(http, f"{SESSIONS}/not%20an%20id", mine["access_token"])) == (
        404,
        "not_found",
    )


async def test_ending_the_others_keeps_only_the_callers_session(
    http: aiohttp.ClientSession, revocations: EventTap
) -> None:
    _, name = await new_user(http)
    here, *others = [await session(http, name) for _ in range(3)]

    assert await end(http, SESSIONS, here["access_token"]) == (204, None)

    for other in others:
        await assert_session_revoked(http, other)
    assert (await me(http, here["access_token"]))[0] == 200
    sids = [sid_of(o["access_token"]) for o in others]
    await assert_announced_once(http, revocations, sids, "user")
    assert revoked_of(revocations, sid_of(here["access_token"])) == []


async def test_a_superuser_ends_every_session_of_a_user(
    http: aiohttp.ClientSession, worker: Services, revocations: EventTap
) -> None:
    admin = await admin_token(worker, http)
    user_id, name = await new_user(http)
    pairs = [await session(http, name) for _ in range(2)]

    assert code(await end(http, f"/api/v1/users/{user_id}/sessions", pairs[0]["access_token"])) == (
        403,
        "forbidden",
    )
    assert await end(http, f"/api/v1/users/{user_id}/sessions", admin) == (204, None)

    for pair in pairs:
        await assert_session_revoked(http, pair)
    assert (await me(http, admin))[0] == 200
    assert code(await end(http, "/api/v1/users/999999999999/sessions", admin)) == (
        404,
        "user_not_found",
    )
    await assert_announced_once(
        http, revocations, [sid_of(p["access_token"]) for p in pairs], "admin"
    )


# --- session.revoked for every other way a session ends ---------------------------------


async def test_a_logout_is_announced_once(
    http: aiohttp.ClientSession, revocations: EventTap
) -> None:
    _, name = await new_user(http)
    pair = await session(http, name)

    await log_out(http, pair["access_token"])
    await log_out(http, pair["access_token"])  # 401: ended already

    await assert_announced_once(http, revocations, [sid_of(pair["access_token"])], "logout")


async def test_a_refresh_token_reuse_is_announced_once(
    http: aiohttp.ClientSession, revocations: EventTap
) -> None:
    _, name = await new_user(http)
    pair = await session(http, name)
    await refresh(http, pair["refresh_token"])

    assert code(await refresh(http, pair["refresh_token"])) == (401, "token_reused")
    assert code(await refresh(http, pair["refresh_token"])) == (401, "token_revoked")

    await assert_announced_once(http, revocations, [sid_of(pair["access_token"])], "token_reuse")


async def test_a_password_change_announces_each_other_session_once(
    http: aiohttp.ClientSession, revocations: EventTap
) -> None:
    _, name = await new_user(http)
    here, *others = [await session(http, name) for _ in range(3)]
    body = {"current_password": PASSWORD, "new_password": "another-password-1"}
    headers = bearer(here["access_token"])

    async with http.post("/api/v1/users/me/password", json=body, headers=headers) as r:
        assert r.status == 204, await r.text()

    sids = [sid_of(o["access_token"]) for o in others]
    await assert_announced_once(http, revocations, sids, "password_changed")
    assert revoked_of(revocations, sid_of(here["access_token"])) == []


@pytest.mark.parametrize(
    ("change", "reason"), [("deactivate", "deactivated"), ("delete", "deleted")]
)
async def test_a_deactivation_or_deletion_announces_each_session_once(
    http: aiohttp.ClientSession,
    amqp: AmqpCaller,
    worker: Services,
    revocations: EventTap,
    change: str,
    reason: str,
) -> None:
    admin = await admin_token(worker, http)
    user_id, name = await new_user(http)
    pairs = [await session(http, name) for _ in range(2)]

    if change == "delete":
        reply = await amqp.call("warden.users.delete", {"id": user_id}, admin)
    else:
        reply = await amqp.call("warden.users.update", {"id": user_id, "is_active": False}, admin)
    assert reply["ok"], reply

    sids = [sid_of(p["access_token"]) for p in pairs]
    await assert_announced_once(http, revocations, sids, reason)


async def test_revocations_racing_for_the_same_sessions_announce_each_once(
    http: aiohttp.ClientSession, worker: Services, revocations: EventTap
) -> None:
    admin = await admin_token(worker, http)
    user_id, name = await new_user(http)
    here, phone, laptop = [await session(http, name) for _ in range(3)]
    phone_sid = sid_of(phone["access_token"])

    results = await asyncio.gather(
        *(log_out(http, phone["access_token"]) for _ in range(3)),
        *(end(http, f"{SESSIONS}/{phone_sid}", here["access_token"]) for _ in range(3)),
        *(end(http, SESSIONS, here["access_token"]) for _ in range(3)),
        *(end(http, f"/api/v1/users/{user_id}/sessions", admin) for _ in range(3)),
    )

    assert all(status in (204, 401, 404) for status, _ in results), results
    await settled(http, revocations)
    for pair in (here, phone, laptop):
        assert len(revoked_of(revocations, sid_of(pair["access_token"]))) == 1


# --- over the broker -------------------------------------------------------------------


async def test_the_session_queues_answer_over_amqp(
    http: aiohttp.ClientSession, amqp: AmqpCaller
) -> None:
    _, name = await new_user(http)
    here, other = await session(http, name), await session(http, name)
    token = here["access_token"]

    listing = await amqp.call("warden.sessions.list", {}, token)
    assert listing["ok"], listing
    assert len(listing["data"]["items"]) == 2
    bad = await amqp.call("warden.sessions.revoke", {"id": "x" * 65}, token)
    assert (bad["ok"], bad["error"]["code"]) == (False, "validation_error")
    gone = await amqp.call("warden.sessions.revoke", {"id": sid_of(other["access_token"])}, token)
    assert gone == {"ok": True, "data": None}
    again = await amqp.call("warden.sessions.revoke", {"id": sid_of(other["access_token"])}, token)
    assert (again["ok"], again["error"]["code"]) == (False, "session_not_found")
    assert await amqp.call("warden.sessions.revoke_others", {}, token) == {"ok": True, "data": None}
