"""Profiles and administration through the edge and the queues: who may do what, and the
last active superuser, who survives even two superusers demoting each other at once."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from sqlalchemy import text

from domain.model import NewUser
from tests.conftest import PASSWORD, unique
from tests.support.amqp import AmqpCaller

API = "/api/v1"
MISSING_ID = 987_654_321_012


@dataclass(frozen=True)
class Account:
    id: int
    username: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def log_in(http: aiohttp.ClientSession, username: str) -> str:
    body = {"username": username, "password": PASSWORD}
    async with http.post(f"{API}/auth/login", json=body) as r:
        assert r.status == 200, await r.text()
        return str((await r.json())["access_token"])


async def registered(http: aiohttp.ClientSession, **extra: Any) -> Account:
    name = unique("adm")
    body = {"email": f"{name}@example.com", "username": name, "password": PASSWORD} | extra
    async with http.post(f"{API}/users", json=body) as r:
        assert r.status == 201, await r.text()
        user = await r.json()
    return Account(user["id"], name, await log_in(http, name))


async def superuser(http: aiohttp.ClientSession, worker: Any) -> Account:
    name = unique("root")
    hashed = await worker.hasher.hash(PASSWORD)
    user = await worker.accounts.create(
        NewUser(f"{name}@example.com", name, hashed, is_superuser=True)
    )
    return Account(user.id, name, await log_in(http, name))


async def call(
    http: aiohttp.ClientSession, method: str, path: str, who: Account | None, body: Any = None
) -> tuple[int, Any]:
    headers = who.auth if who else {}
    async with http.request(method, f"{API}{path}", json=body, headers=headers) as r:
        payload = await r.json(content_type=None) if r.status != 204 else None
        return r.status, payload


async def active_superusers(worker: Any) -> list[int]:
    async with worker.engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT id FROM users WHERE is_superuser AND is_active ORDER BY id")
        )
        return list(rows.scalars())


@contextlib.asynccontextmanager
async def only_superusers(worker: Any, *keep: int) -> AsyncIterator[None]:
    """Other tests share this database and make superusers too: demote theirs for the duration
    of the block, so the accounts in `keep` are the only active superusers, then restore."""
    async with worker.engine.begin() as conn:
        rows = await conn.execute(
            text(
                "UPDATE users SET is_superuser = false "
                "WHERE is_superuser AND is_active AND NOT (id = ANY(:keep)) RETURNING id"
            ),
            {"keep": list(keep)},
        )
        demoted = list(rows.scalars())
    try:
        yield
    finally:
        async with worker.engine.begin() as conn:
            await conn.execute(
                text("UPDATE users SET is_superuser = true WHERE id = ANY(:ids)"), {"ids": demoted}
            )


# --- PATCH /users/me -------------------------------------------------------------------------


async def test_a_user_changes_its_email_username_and_full_name(
    http: aiohttp.ClientSession,
) -> None:
    me = await registered(http)
    new = unique("ren")

    status, user = await call(
        http,
        "PATCH",
        "/users/me",
        me,
        {"email": f"{new}@Example.COM", "username": new.upper(), "full_name": "Ada Lovelace"},
    )

    assert status == 200, user
    assert (user["email"], user["username"], user["full_name"]) == (
        f"{new}@example.com",
        new.upper(),
        "Ada Lovelace",
    )
    assert user["updated_at"] >= user["created_at"]
    assert await call(http, "GET", "/users/me", me) == (200, user)
    assert await log_in(http, f"{new}@example.com")


async def test_a_null_full_name_clears_it_and_absent_fields_stay(
    http: aiohttp.ClientSession,
) -> None:
    me = await registered(http, full_name="Grace Hopper")

    status, user = await call(http, "PATCH", "/users/me", me, {"full_name": None})

    assert status == 200
    assert user["full_name"] is None
    assert user["username"] == me.username


@pytest.mark.parametrize(
    "body",
    [
        {"nickname": "x"},
        {"id": 1},
        {"is_superuser": True},
        {"is_active": False},
        {"hashed_password": "x"},
        {"email": None},
        {"username": "a b"},
        {"email": "not-an-email"},
    ],
    ids=[
        "unknown",
        "id",
        "is_superuser",
        "is_active",
        "hash",
        "null_email",
        "bad_name",
        "bad_email",
    ],
)
async def test_a_profile_change_outside_the_rules_is_a_422_and_changes_nothing(
    http: aiohttp.ClientSession, body: dict[str, Any]
) -> None:
    me = await registered(http)
    _, before = await call(http, "GET", "/users/me", me)

    status, problem = await call(http, "PATCH", "/users/me", me, body)

    assert status == 422
    assert problem["code"] == "validation_error"
    assert problem["errors"][0]["loc"][:2] == ["body", next(iter(body))]
    assert await call(http, "GET", "/users/me", me) == (200, before)


async def test_taking_someone_elses_email_or_username_is_a_409(
    http: aiohttp.ClientSession,
) -> None:
    me, other = await registered(http), await registered(http)

    email = await call(http, "PATCH", "/users/me", me, {"email": f"{other.username}@EXAMPLE.com"})
    name = await call(http, "PATCH", "/users/me", me, {"username": other.username.upper()})

    assert (email[0], email[1]["code"]) == (409, "email_taken")
    assert (name[0], name[1]["code"]) == (409, "username_taken")


async def test_a_user_may_keep_its_own_email_and_recase_its_username(
    http: aiohttp.ClientSession,
) -> None:
    me = await registered(http)
    body = {"email": f"{me.username}@example.com", "username": me.username.upper()}

    status, user = await call(http, "PATCH", "/users/me", me, body)

    assert status == 200, user
    assert user["username"] == me.username.upper()


async def test_a_service_updates_a_user_over_the_queue(
    http: aiohttp.ClientSession, amqp: AmqpCaller
) -> None:
    me = await registered(http)

    ok = await amqp.call("warden.users.update_me", {"full_name": "Queued"}, token=me.token)
    refused = await amqp.call("warden.users.update_me", {"is_superuser": True}, token=me.token)

    assert ok["ok"] is True
    assert ok["data"]["full_name"] == "Queued"
    assert refused["ok"] is False
    assert refused["error"]["status"] == 422
    assert refused["error"]["code"] == "validation_error"


# --- the permission matrix -------------------------------------------------------------------

ADMIN_ROUTES = [
    ("GET", "/users", None, 200),
    ("GET", "/users/{id}", None, 200),
    ("PATCH", "/users/{id}", {"full_name": "Changed"}, 200),
    ("DELETE", "/users/{id}", None, 204),
    ("GET", "/audit", None, 200),
]
ROUTE_IDS = ["list", "get", "update", "delete", "audit"]


@pytest.mark.parametrize(("method", "path", "body", "_"), ADMIN_ROUTES, ids=ROUTE_IDS)
async def test_an_anonymous_caller_is_a_401_missing_token(
    http: aiohttp.ClientSession, method: str, path: str, body: Any, _: int
) -> None:
    target = await registered(http)

    async with http.request(method, f"{API}{path.format(id=target.id)}", json=body) as r:
        assert r.status == 401
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
        assert (await r.json(content_type=None))["code"] == "missing_token"


@pytest.mark.parametrize(("method", "path", "body", "_"), ADMIN_ROUTES, ids=ROUTE_IDS)
async def test_an_ordinary_user_is_a_403_on_admin_routes_and_changes_nothing(
    http: aiohttp.ClientSession, worker: Any, method: str, path: str, body: Any, _: int
) -> None:
    me, other = await registered(http), await registered(http)

    status, problem = await call(http, method, path.format(id=other.id), me, body)

    assert (status, problem["code"]) == (403, "forbidden")
    root = await superuser(http, worker)
    status, user = await call(http, "GET", f"/users/{other.id}", root)
    assert (status, user["full_name"]) == (200, None)


@pytest.mark.parametrize(("method", "path", "body", "success"), ADMIN_ROUTES, ids=ROUTE_IDS)
async def test_a_superuser_may_call_every_admin_route(
    http: aiohttp.ClientSession, worker: Any, method: str, path: str, body: Any, success: int
) -> None:
    root, other = await superuser(http, worker), await registered(http)

    status, reply = await call(http, method, path.format(id=other.id), root, body)

    assert status == success, reply


async def test_a_user_reads_itself_by_id_but_not_another(http: aiohttp.ClientSession) -> None:
    me, other = await registered(http), await registered(http)

    own = await call(http, "GET", f"/users/{me.id}", me)
    theirs = await call(http, "GET", f"/users/{other.id}", me)

    assert own == (200, (await call(http, "GET", "/users/me", me))[1])
    assert (theirs[0], theirs[1]["code"]) == (403, "forbidden")


async def test_a_user_may_neither_promote_nor_delete_itself_by_id(
    http: aiohttp.ClientSession,
) -> None:
    me = await registered(http)

    promote = await call(http, "PATCH", f"/users/{me.id}", me, {"is_superuser": True})
    delete = await call(http, "DELETE", f"/users/{me.id}", me)

    assert (promote[0], delete[0]) == (403, 403)
    assert (await call(http, "GET", "/users/me", me))[1]["is_superuser"] is False


async def test_the_admin_queues_check_the_caller_too(
    http: aiohttp.ClientSession, worker: Any, amqp: AmqpCaller
) -> None:
    me, root = await registered(http), await superuser(http, worker)
    other = await registered(http)
    queues = {
        "warden.users.list": {},
        "warden.users.get": {"id": other.id},
        "warden.users.update": {"id": other.id, "full_name": "Q"},
        "warden.users.delete": {"id": other.id},
        "warden.audit.list": {},
    }
    for queue, body in queues.items():
        anonymous = await amqp.call(queue, body)
        plain = await amqp.call(queue, body, token=me.token)
        assert anonymous["error"]["code"] == "missing_token", queue
        assert (plain["error"]["status"], plain["error"]["code"]) == (403, "forbidden"), queue
    for queue, body in queues.items():
        reply = await amqp.call(queue, body, token=root.token)
        assert reply["ok"] is True, (queue, reply)
    gone = await amqp.call("warden.users.get", {"id": other.id}, token=root.token)
    assert gone["error"]["code"] == "user_not_found"


# --- a superuser administers ------------------------------------------------------------------


@pytest.mark.parametrize(("method", "body"), [("GET", None), ("PATCH", {}), ("DELETE", None)])
async def test_an_unknown_user_id_is_a_404_user_not_found(
    http: aiohttp.ClientSession, worker: Any, method: str, body: Any
) -> None:
    root = await superuser(http, worker)

    status, problem = await call(http, method, f"/users/{MISSING_ID}", root, body)

    assert (status, problem["code"]) == (404, "user_not_found")


async def test_a_superuser_changes_any_field_of_a_user(
    http: aiohttp.ClientSession, worker: Any
) -> None:
    root, other = await superuser(http, worker), await registered(http)
    new = unique("set")
    body = {
        "email": f"{new}@EXAMPLE.com",
        "username": new,
        "full_name": "Set By Admin",
        "is_superuser": True,
    }

    status, user = await call(http, "PATCH", f"/users/{other.id}", root, body)

    assert status == 200, user
    assert user == (await call(http, "GET", f"/users/{other.id}", root))[1]
    assert user["email"] == f"{new}@example.com"
    assert (user["username"], user["full_name"], user["is_superuser"]) == (
        new,
        body["full_name"],
        True,
    )
    promoted = await call(http, "GET", "/users", Account(other.id, new, other.token))
    assert promoted[0] == 200


@pytest.mark.parametrize(
    "body",
    [
        {"id": 5},
        {"password": "x" * 10},
        {"is_active": None},
        {"created_at": "2020-01-01T00:00:00Z"},
    ],
    ids=["id", "password", "null_is_active", "created_at"],
)
async def test_an_admin_update_outside_the_rules_is_a_422(
    http: aiohttp.ClientSession, worker: Any, body: dict[str, Any]
) -> None:
    root, other = await superuser(http, worker), await registered(http)

    status, problem = await call(http, "PATCH", f"/users/{other.id}", root, body)

    assert (status, problem["code"]) == (422, "validation_error")
    assert problem["errors"][0]["loc"][1] == next(iter(body))


async def test_an_admin_update_to_a_taken_name_is_a_409(
    http: aiohttp.ClientSession, worker: Any
) -> None:
    root, a, b = await superuser(http, worker), await registered(http), await registered(http)

    email = await call(
        http, "PATCH", f"/users/{a.id}", root, {"email": f"{b.username}@example.com"}
    )
    name = await call(http, "PATCH", f"/users/{a.id}", root, {"username": b.username.upper()})

    assert (email[0], email[1]["code"]) == (409, "email_taken")
    assert (name[0], name[1]["code"]) == (409, "username_taken")


async def test_a_deleted_user_is_gone_and_its_tokens_are_revoked_at_once(
    http: aiohttp.ClientSession, worker: Any
) -> None:
    root, other = await superuser(http, worker), await registered(http)

    assert (await call(http, "DELETE", f"/users/{other.id}", root))[0] == 204

    status, problem = await call(http, "GET", "/users/me", other)
    assert (status, problem["code"]) == (401, "token_revoked")
    assert (await call(http, "GET", f"/users/{other.id}", root))[0] == 404
    assert (await call(http, "DELETE", f"/users/{other.id}", root))[0] == 404


async def test_a_deactivated_user_loses_its_tokens_at_once_and_for_good(
    http: aiohttp.ClientSession, worker: Any
) -> None:
    root, other = await superuser(http, worker), await registered(http)
    async with http.post(
        f"{API}/auth/login", json={"username": other.username, "password": PASSWORD}
    ) as r:
        refresh = (await r.json())["refresh_token"]

    status, user = await call(http, "PATCH", f"/users/{other.id}", root, {"is_active": False})
    assert (status, user["is_active"]) == (200, False)

    assert (await call(http, "GET", "/users/me", other))[1]["code"] == "token_revoked"
    async with http.post(f"{API}/auth/refresh", json={"refresh_token": refresh}) as r:
        assert (r.status, (await r.json())["code"]) == (401, "token_revoked")
    async with http.post(
        f"{API}/auth/login", json={"username": other.username, "password": PASSWORD}
    ) as r:
        assert (r.status, (await r.json())["code"]) == (403, "inactive_user")
    await call(http, "PATCH", f"/users/{other.id}", root, {"is_active": True})
    assert (await call(http, "GET", "/users/me", other))[1]["code"] == "token_revoked"
    again = Account(other.id, other.username, await log_in(http, other.username))
    assert (await call(http, "GET", "/users/me", again))[0] == 200


async def test_a_demoted_superuser_loses_admin_rights_at_once(
    http: aiohttp.ClientSession, worker: Any
) -> None:
    root, other = await superuser(http, worker), await superuser(http, worker)

    assert (await call(http, "PATCH", f"/users/{other.id}", root, {"is_superuser": False}))[
        0
    ] == 200

    status, problem = await call(http, "GET", "/users", other)
    assert (status, problem["code"]) == (403, "forbidden")


# --- the last active superuser ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "body"),
    [("PATCH", {"is_superuser": False}), ("PATCH", {"is_active": False}), ("DELETE", None)],
    ids=["demote", "deactivate", "delete"],
)
async def test_the_last_active_superuser_cannot_be_removed(
    http: aiohttp.ClientSession, worker: Any, method: str, body: Any
) -> None:
    root = await superuser(http, worker)

    async with only_superusers(worker, root.id):
        status, problem = await call(http, method, f"/users/{root.id}", root, body)
        assert await active_superusers(worker) == [root.id]

    assert (status, problem["code"]) == (409, "last_superuser")
    assert (await call(http, "GET", "/users/me", root))[0] == 200


async def test_an_inactive_superuser_does_not_count_as_the_one_left(
    http: aiohttp.ClientSession, worker: Any
) -> None:
    root, dormant = await superuser(http, worker), await superuser(http, worker)
    await call(http, "PATCH", f"/users/{dormant.id}", root, {"is_active": False})

    async with only_superusers(worker, root.id):
        status, _ = await call(http, "PATCH", "/users/me", root, {"full_name": "Still here"})
        demote = await call(http, "PATCH", f"/users/{root.id}", root, {"is_superuser": False})
        fine = await call(http, "PATCH", f"/users/{dormant.id}", root, {"is_superuser": False})

    assert status == 200
    assert (demote[0], demote[1]["code"]) == (409, "last_superuser")
    assert fine[0] == 200


async def test_one_of_two_superusers_may_step_down(
    http: aiohttp.ClientSession, worker: Any
) -> None:
    a, b = await superuser(http, worker), await superuser(http, worker)

    async with only_superusers(worker, a.id, b.id):
        first = await call(http, "PATCH", f"/users/{a.id}", a, {"is_superuser": False})
        second = await call(http, "DELETE", f"/users/{b.id}", b)
        assert await active_superusers(worker) == [b.id]

    assert first[0] == 200
    assert (second[0], second[1]["code"]) == (409, "last_superuser")


@pytest.mark.parametrize(
    ("method", "body", "loser_statuses"),
    [
        # the loser either waited on the lock (409) or was checked after the winner committed
        ("PATCH", {"is_superuser": False}, {403, 409}),
        ("PATCH", {"is_active": False}, {401, 409}),
        ("DELETE", None, {401, 409}),
    ],
    ids=["demote", "deactivate", "delete"],
)
async def test_two_superusers_removing_each_other_at_once_leave_one(
    http: aiohttp.ClientSession, worker: Any, method: str, body: Any, loser_statuses: set[int]
) -> None:
    for _ in range(3):
        a, b = await superuser(http, worker), await superuser(http, worker)
        async with only_superusers(worker, a.id, b.id):
            replies = await asyncio.gather(
                call(http, method, f"/users/{b.id}", a, body),
                call(http, method, f"/users/{a.id}", b, body),
            )
            left = await active_superusers(worker)

        statuses = sorted(status for status, _ in replies)
        assert len(left) == 1, replies
        assert left[0] in (a.id, b.id)
        assert statuses[0] in (200, 204), replies
        assert statuses[1] in loser_statuses, replies
