"""The user listing through the edge: order, filters, limits and the keyset cursor.

The database is shared with every other test, so each test scopes its listing with `q` set to
a token only its own users carry.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from sqlalchemy import text

from domain.model import NewUser, User
from tests.conftest import PASSWORD, unique
from tests.support.amqp import AmqpCaller
from tests.support.waiting import eventually

LIST = "/api/v1/users"
MAX_PAGES = 500


@dataclass(frozen=True)
class Admin:
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


class Seeder:
    """Stores users straight through the use case, with one hash for all: listing needs many."""

    def __init__(self, worker: Any, hashed: str) -> None:
        self.worker = worker
        self.hashed = hashed

    async def add(
        self, username: str, email: str | None = None, full_name: str | None = None
    ) -> User:
        email = email or f"{username.lower()}@example.com"
        new = NewUser(email, username, self.hashed, full_name)
        user: User = await self.worker.accounts.create(new)
        return user

    async def set(self, user_ids: list[int], **columns: Any) -> None:
        """Set columns the API cannot (created_at) or that would need a superuser round trip."""
        assignments = ", ".join(f"{name} = :{name}" for name in columns)
        async with self.worker.engine.begin() as conn:
            await conn.execute(
                text(f"UPDATE users SET {assignments} WHERE id = ANY(:ids)"),
                columns | {"ids": user_ids},
            )


@pytest.fixture(scope="module")
async def seeder(worker: Any) -> Seeder:
    return Seeder(worker, await worker.hasher.hash(PASSWORD))


@pytest.fixture(scope="module")
async def admin(seeder: Seeder, edge_url: str) -> Admin:
    name = unique("lister")
    await seeder.add(name)
    async with seeder.worker.engine.begin() as conn:
        await conn.execute(
            text("UPDATE users SET is_superuser = true WHERE username = :name"), {"name": name}
        )
    async with (
        aiohttp.ClientSession(edge_url) as http,
        http.post("/api/v1/auth/login", json={"username": name, "password": PASSWORD}) as r,
    ):
        assert r.status == 200, await r.text()
        return Admin((await r.json())["access_token"])


def token() -> str:
    return uuid.uuid4().hex[:10]


async def page(
    http: aiohttp.ClientSession, admin: Admin, **params: Any
) -> tuple[int, dict[str, Any]]:
    query = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in params.items()}
    async with http.get(LIST, params=query, headers=admin.auth) as r:
        return r.status, await r.json(content_type=None)


async def walk(http: aiohttp.ClientSession, admin: Admin, **params: Any) -> list[dict[str, Any]]:
    """Every item of every page, following next_cursor to the end."""
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(MAX_PAGES):
        status, body = await page(http, admin, **params, **({"cursor": cursor} if cursor else {}))
        assert status == 200, body
        assert len(body["items"]) <= params.get("limit", 20)
        items += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("the walk did not end")


def ids(items: list[dict[str, Any]]) -> list[int]:
    return [item["id"] for item in items]


# --- ordering -----------------------------------------------------------------------------------

# Punctuation and case chosen so that byte order of the lower-cased value differs from both
# case-sensitive order and a locale's dictionary order.
USERNAME_PREFIXES = ["b", "A", "_a", "a-", "a.", "Z9", "a0", "C", "aa"]
EMAIL_PREFIXES = ["m", "b_", "a_", "a-", "z", "a.", "0", "q", "a0"]


@pytest.fixture(scope="module")
async def ordered(seeder: Seeder) -> tuple[str, list[User]]:
    """Nine users of one token, created_at shuffled against id with two of them tied."""
    tok = token()
    users = [
        await seeder.add(f"{u}{tok}", f"{e}{tok}@example.com")
        for u, e in zip(USERNAME_PREFIXES, EMAIL_PREFIXES, strict=True)
    ]
    base = datetime(2020, 1, 1, tzinfo=UTC)
    offsets = [5, 3, 8, 3, 1, 7, 0, 3, 2]  # three share offset 3: ties broken by id
    for user, offset in zip(users, offsets, strict=True):
        await seeder.set([user.id], created_at=base + timedelta(minutes=offset))
    async with seeder.worker.engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT id, created_at FROM users WHERE id = ANY(:ids)"),
            {"ids": [u.id for u in users]},
        )
        created = {row.id: row.created_at for row in rows}
    return tok, [replace(u, created_at=created[u.id]) for u in users]


def expected_order(users: list[User], sort: str) -> list[int]:
    key = sort.lstrip("-")

    def position(user: User) -> tuple[Any, int]:
        value = getattr(user, key)
        return (value.lower().encode() if isinstance(value, str) else value), user.id

    return [u.id for u in sorted(users, key=position, reverse=sort.startswith("-"))]


@pytest.mark.parametrize(
    "sort", ["created_at", "-created_at", "username", "-username", "email", "-email"]
)
async def test_every_sort_orders_by_its_key_with_ties_broken_by_id_in_the_same_direction(
    http: aiohttp.ClientSession, admin: Admin, ordered: tuple[str, list[User]], sort: str
) -> None:
    tok, users = ordered

    in_one_page = await page(http, admin, q=tok, sort=sort, limit=100)
    walked = await walk(http, admin, q=tok, sort=sort, limit=2)

    assert ids(in_one_page[1]["items"]) == expected_order(users, sort)
    assert ids(walked) == expected_order(users, sort)


async def test_the_default_is_twenty_newest_first(
    http: aiohttp.ClientSession, admin: Admin, seeder: Seeder
) -> None:
    tok = token()
    users = [await seeder.add(f"d{i:02d}{tok}") for i in range(21)]

    status, first = await page(http, admin, q=tok)
    _, rest = await page(http, admin, q=tok, cursor=first["next_cursor"])

    assert status == 200
    assert ids(first["items"] + rest["items"]) == expected_order(users, "-created_at")
    assert (len(first["items"]), rest["next_cursor"]) == (20, None)


# --- filters ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Crowd:
    tok: str
    by_email: User
    by_username: User
    by_full_name: User
    inactive: User
    superuser: User
    unrelated: User


@pytest.fixture(scope="module")
async def crowd(seeder: Seeder) -> Crowd:
    tok = token()
    crowd = Crowd(
        tok,
        by_email=await seeder.add(unique("e"), f"x.{tok}@example.com"),
        by_username=await seeder.add(f"{tok}x"),
        by_full_name=await seeder.add(unique("f"), full_name=f"Ada {tok.upper()} Lovelace"),
        inactive=await seeder.add(f"in{tok}"),
        superuser=await seeder.add(f"su{tok}"),
        unrelated=await seeder.add(unique("z"), full_name="Nobody"),
    )
    await seeder.set([crowd.inactive.id], is_active=False)
    await seeder.set([crowd.superuser.id], is_superuser=True)
    return crowd


async def listed(http: aiohttp.ClientSession, admin: Admin, **params: Any) -> set[int]:
    return set(ids(await walk(http, admin, limit=100, **params)))


async def test_q_is_a_case_insensitive_substring_of_email_username_or_full_name(
    http: aiohttp.ClientSession, admin: Admin, crowd: Crowd
) -> None:
    c = crowd
    everyone = {c.by_email.id, c.by_username.id, c.by_full_name.id, c.inactive.id, c.superuser.id}

    assert await listed(http, admin, q=c.tok.upper()[1:8]) == everyone
    assert await listed(http, admin, q=f"x.{c.tok}@EXAMPLE") == {c.by_email.id}
    assert await listed(http, admin, q=f"{c.tok}X") == {c.by_username.id}
    assert await listed(http, admin, q=f"ada {c.tok}") == {c.by_full_name.id}
    assert await listed(http, admin, q=f"{c.tok}@example.com {c.by_email.username}") == set()
    assert await listed(http, admin, q=c.unrelated.username) == {c.unrelated.id}


@pytest.mark.parametrize("wildcard", ["%", "_"])
async def test_like_wildcards_in_q_match_only_themselves(
    http: aiohttp.ClientSession, admin: Admin, crowd: Crowd, wildcard: str
) -> None:
    assert await listed(http, admin, q=f"{crowd.tok}{wildcard}") == set()
    assert await listed(http, admin, q=f"{wildcard}{crowd.tok}x") == set()


async def test_is_active_and_is_superuser_filter_and_combine_with_q(
    http: aiohttp.ClientSession, admin: Admin, crowd: Crowd
) -> None:
    c = crowd
    plain = {c.by_email.id, c.by_username.id, c.by_full_name.id}

    assert await listed(http, admin, q=c.tok, is_active=False) == {c.inactive.id}
    assert await listed(http, admin, q=c.tok, is_active=True) == plain | {c.superuser.id}
    assert await listed(http, admin, q=c.tok, is_superuser=True) == {c.superuser.id}
    assert await listed(http, admin, q=c.tok, is_superuser=False) == plain | {c.inactive.id}
    assert await listed(http, admin, q=c.tok, is_active=True, is_superuser=False) == plain
    assert await listed(http, admin, q=c.tok, is_active=False, is_superuser=True) == set()


async def test_a_filter_holds_on_every_page_of_the_whole_listing(
    http: aiohttp.ClientSession, admin: Admin, crowd: Crowd
) -> None:
    items = await walk(http, admin, is_active=False, sort="username", limit=100)

    assert items
    assert all(item["is_active"] is False for item in items)
    assert crowd.inactive.id in ids(items)
    names = [item["username"].lower().encode() for item in items]
    assert names == sorted(names)


# --- bad parameters -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"sort": "full_name"}, "sort"),
        ({"sort": "+email"}, "sort"),
        ({"is_active": "maybe"}, "is_active"),
        ({"is_superuser": "2"}, "is_superuser"),
    ],
)
async def test_a_parameter_out_of_bounds_is_a_422(
    http: aiohttp.ClientSession, admin: Admin, params: dict[str, Any], field: str
) -> None:
    status, problem = await page(http, admin, **params)

    assert (status, problem["code"]) == (422, "validation_error")
    assert problem["errors"][0]["loc"] == ["query", field]


@pytest.mark.parametrize("limit", [1, 100])
async def test_the_limit_bounds_themselves_are_allowed(
    http: aiohttp.ClientSession, admin: Admin, limit: int
) -> None:
    status, body = await page(http, admin, limit=limit)

    assert status == 200
    assert len(body["items"]) <= limit


async def test_a_garbled_or_forged_cursor_is_a_422(
    http: aiohttp.ClientSession, admin: Admin, ordered: tuple[str, list[User]]
) -> None:
    tok, _ = ordered
    _, first = await page(http, admin, q=tok, limit=2)
    good = first["next_cursor"]
    flipped = good[:10] + ("A" if good[10] != "A" else "B") + good[11:]

    for cursor in ["garbage", "!!!", "", good[:-3], flipped, good + "AAAA", "e30"]:
        status, problem = await page(http, admin, q=tok, limit=2, cursor=cursor)
        if cursor == "":
            assert status == 200  # an empty cursor is the first page
            continue
        assert (status, problem["code"]) == (422, "validation_error"), cursor
        assert problem["errors"][0]["loc"] == ["query", "cursor"]


@pytest.mark.parametrize(
    "other",
    [{"sort": "username"}, {"q": "someone-else"}, {"is_active": True}, {"is_superuser": False}],
    ids=["sort", "q", "is_active", "is_superuser"],
)
async def test_a_cursor_of_another_sort_or_filter_is_a_422(
    http: aiohttp.ClientSession, admin: Admin, ordered: tuple[str, list[User]], other: Any
) -> None:
    tok, _ = ordered
    _, first = await page(http, admin, q=tok, limit=2)

    status, problem = await page(
        http, admin, **({"q": tok, "limit": 2} | other), cursor=first["next_cursor"]
    )

    assert (status, problem["code"]) == (422, "validation_error")


async def test_a_cursor_from_the_audit_log_is_a_422_on_the_user_listing(
    http: aiohttp.ClientSession, admin: Admin
) -> None:
    cursors: list[str] = []

    async def audit_has_a_second_page() -> bool:
        async with http.get("/api/v1/audit", params={"limit": "1"}, headers=admin.auth) as r:
            cursor = (await r.json())["next_cursor"]
        if cursor is not None:
            cursors.append(cursor)
        return bool(cursors)

    # Audit entries arrive through the broker, a moment after the changes.
    await eventually(audit_has_a_second_page, 10)
    status, problem = await page(http, admin, cursor=cursors[-1])

    assert (status, problem["code"]) == (422, "validation_error")


async def test_the_limit_changes_freely_between_pages(
    http: aiohttp.ClientSession, admin: Admin, ordered: tuple[str, list[User]]
) -> None:
    tok, users = ordered
    _, first = await page(http, admin, q=tok, limit=2, sort="email")

    _, rest = await page(http, admin, q=tok, limit=50, sort="email", cursor=first["next_cursor"])

    assert ids(first["items"] + rest["items"]) == expected_order(users, "email")
    assert rest["next_cursor"] is None


async def test_a_service_walks_the_listing_over_the_queue(
    amqp: AmqpCaller, admin: Admin, ordered: tuple[str, list[User]]
) -> None:
    tok, users = ordered
    seen: list[int] = []
    body: dict[str, Any] = {"q": tok, "limit": 4, "sort": "-username"}
    while True:
        reply = await amqp.call("warden.users.list", body, token=admin.token)
        assert reply["ok"] is True, reply
        seen += ids(reply["data"]["items"])
        if reply["data"]["next_cursor"] is None:
            break
        body["cursor"] = reply["data"]["next_cursor"]

    bad = await amqp.call("warden.users.list", body | {"cursor": "x"}, token=admin.token)
    assert seen == expected_order(users, "-username")
    assert (bad["error"]["status"], bad["error"]["code"]) == (422, "validation_error")


# --- the keyset walk while users are being added ----------------------------------------------


@pytest.mark.parametrize("sort", ["username", "-username", "created_at", "-email"])
async def test_a_walk_during_registrations_sees_every_earlier_user_exactly_once(
    http: aiohttp.ClientSession, admin: Admin, seeder: Seeder, sort: str
) -> None:
    tok = token()
    rng = random.Random(tok)

    def name() -> str:  # random prefixes: newcomers land before and after the walk's position
        return f"{rng.choice('abcdefghijklmnopqrstuvwxyz')}{uuid.uuid4().hex[:6]}{tok}"

    existing = {u.id for u in await asyncio.gather(*(seeder.add(name()) for _ in range(30)))}
    # 30 users in pages of 3: at least 9 more pages are asked for, so all 8 batches land
    turned: asyncio.Queue[bool] = asyncio.Queue()
    added: list[int] = []

    async def register_meanwhile() -> None:
        while await turned.get():  # while the walker fetches its next page
            if len(added) < 24:  # bounded: newcomers ahead of an ascending walk prolong it
                batch = [seeder.add(name()) for _ in range(3)]
                added.extend(u.id for u in await asyncio.gather(*batch))

    async def walker() -> list[int]:
        seen: list[int] = []
        cursor = None
        for _ in range(MAX_PAGES):
            extra: dict[str, str] = {"cursor": cursor} if cursor else {}
            status, body = await page(http, admin, q=tok, sort=sort, limit=3, **extra)
            assert status == 200, body
            seen += ids(body["items"])
            cursor = body["next_cursor"]
            turned.put_nowait(cursor is not None)
            if cursor is None:
                return seen
        raise AssertionError("the walk did not end")

    seen, _ = await asyncio.gather(walker(), register_meanwhile())

    assert len(seen) == len(set(seen)), "a user was listed twice"
    assert existing <= set(seen), "a user that existed when the walk began was skipped"
    assert len(added) == 24
