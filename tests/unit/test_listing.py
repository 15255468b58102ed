"""Listing: sort parsing, keyset positions and the signed, query-bound cursor."""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import pytest

from domain.accounts import Accounts
from domain.errors import ValidationFailed
from domain.listing import (
    DEFAULT_LIMIT,
    AuditQuery,
    CursorCodec,
    Sort,
    UserKey,
    UserQuery,
    sort_value,
)
from domain.model import Principal, User
from tests.unit.support import People

CODEC = CursorCodec(b"cursor-secret")


@pytest.mark.parametrize(
    ("text", "key", "descending"),
    [
        ("created_at", "created_at", False),
        ("-created_at", "created_at", True),
        ("username", "username", False),
        ("-username", "username", True),
        ("email", "email", False),
        ("-email", "email", True),
    ],
)
def test_a_sort_parses_its_key_and_direction_and_prints_back(
    text: str, key: str, descending: bool
) -> None:
    sort = Sort.parse(text)

    assert (sort.key, sort.descending) == (key, descending)
    assert str(sort) == text


@pytest.mark.parametrize("text", ["", "-", "id", "--email", "+email", "Email", "full_name"])
def test_an_unknown_sort_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError, match="sort must be one of"):
        Sort.parse(text)


def test_a_query_defaults_to_twenty_newest_first() -> None:
    query = UserQuery()

    assert query.limit == DEFAULT_LIMIT == 20
    assert str(query.sort) == "-created_at"
    assert query.after is None


def test_a_query_fingerprint_binds_sort_and_filters_but_not_the_page() -> None:
    base = UserQuery(q="ali", is_active=True)

    same_filters_other_page = UserQuery(limit=5, q="ali", is_active=True, after=UserKey("x", 1))

    assert same_filters_other_page.fingerprint() == base.fingerprint()
    for other in (
        UserQuery(q="bob", is_active=True),
        UserQuery(q="ali", is_active=False),
        UserQuery(q="ali", is_active=True, is_superuser=True),
        UserQuery(q="ali", is_active=True, sort=Sort.parse("username")),
    ):
        assert other.fingerprint() != base.fingerprint()


def test_an_audit_fingerprint_differs_from_a_user_listings() -> None:
    assert AuditQuery(user_id=1).fingerprint() != AuditQuery(user_id=2).fingerprint()
    assert AuditQuery(type="user.updated").fingerprint() != AuditQuery().fingerprint()
    assert AuditQuery(limit=5, after=3).fingerprint() == AuditQuery().fingerprint()
    assert AuditQuery().fingerprint() != UserQuery().fingerprint()


def test_sort_values_are_iso_times_and_lower_cased_text() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    user = User(1, "Alice@Example.com", "Alice", "h", None, True, False, when, when)

    assert sort_value(user, "created_at") == when.isoformat()
    assert sort_value(user, "username") == "alice"
    assert sort_value(user, "email") == "alice@example.com"


@pytest.mark.parametrize("position", [["alice", 7], 42, None, {"after": "2026-01-01T00:00:00Z"}])
def test_a_cursor_round_trips_its_position(position: object) -> None:
    cursor = CODEC.encode("fingerprint", position)

    assert CODEC.decode(cursor, "fingerprint") == position


def test_a_cursor_is_url_safe_and_unpadded() -> None:
    cursor = CODEC.encode(UserQuery().fingerprint(), ["2026-01-01T00:00:00+00:00", 12345])

    assert set(cursor) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def assert_bad_cursor(cursor: str, fingerprint: str = "fingerprint") -> ValidationFailed:
    with pytest.raises(ValidationFailed) as refused:
        CODEC.decode(cursor, fingerprint)
    [error] = refused.value.errors
    assert error.loc == ("body", "cursor")
    assert refused.value.as_error()["errors"][0]["loc"] == ["body", "cursor"]
    return refused.value


def test_a_cursor_for_another_query_is_refused() -> None:
    cursor = CODEC.encode(UserQuery(q="a").fingerprint(), ["alice", 1])

    refused = assert_bad_cursor(cursor, UserQuery(q="b").fingerprint())

    assert refused.errors[0].msg == "cursor belongs to another query"


def test_a_tampered_cursor_is_refused() -> None:
    raw = bytearray(base64.urlsafe_b64decode(CODEC.encode("fingerprint", ["alice", 1]) + "=="))
    raw[-3] ^= 0x01  # flip one bit of the payload, keep the signature

    tampered = base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")

    assert assert_bad_cursor(tampered).errors[0].msg == "cursor is not valid"


def test_a_cursor_signed_with_another_secret_is_refused() -> None:
    forged = CursorCodec(b"another-secret").encode("fingerprint", ["alice", 1])

    assert_bad_cursor(forged)


@pytest.mark.parametrize(
    "garbage",
    ["", "x", "abc", "!!!!", "é", "a" * 30, base64.urlsafe_b64encode(b"\xff" * 40).decode()],
)
def test_a_garbled_cursor_is_refused(garbage: str) -> None:
    assert_bad_cursor(garbage)


async def test_walking_every_page_yields_every_user_once_in_order(
    accounts: Accounts, people: People
) -> None:
    root = await people.add("root", superuser=True)
    for name in ("Carol", "alice", "Bob", "dave", "erin"):
        await people.add(name)
    admin = (await people.sign_in(root)).principal
    query = UserQuery(limit=2, sort=Sort.parse("username"))

    seen = await walk(accounts, admin, query)

    assert seen == ["alice", "Bob", "Carol", "dave", "erin", "root"]


async def test_pages_filter_by_text_and_flags(accounts: Accounts, people: People) -> None:
    root = await people.add("root", superuser=True, full_name="The Admin")
    await people.add("alice", full_name="Alice Adams")
    await people.add("bob", active=False, email="bob@adams.example")
    await people.add("carol")
    admin = (await people.sign_in(root)).principal

    assert await walk(accounts, admin, UserQuery(q="ADAMS", sort=Sort.parse("email"))) == [
        "alice",
        "bob",
    ]
    assert await walk(accounts, admin, UserQuery(is_active=False)) == ["bob"]
    assert await walk(accounts, admin, UserQuery(is_superuser=True)) == ["root"]
    assert await walk(accounts, admin, UserQuery(limit=1)) == ["carol", "bob", "alice", "root"]


@pytest.mark.parametrize("sort", ["-created_at", "created_at", "username", "-email"])
async def test_users_added_during_a_walk_never_make_it_skip_or_repeat_anyone(
    accounts: Accounts, people: People, sort: str
) -> None:
    root = await people.add("root", superuser=True)
    for n in range(6):
        await people.add(f"user{n}")
    admin = (await people.sign_in(root)).principal
    newcomers = iter(f"new{n}" for n in range(10))

    async def add_one() -> None:
        await people.add(next(newcomers))

    seen = await walk(accounts, admin, UserQuery(limit=2, sort=Sort.parse(sort)), add_one)

    existing = [n for n in seen if not n.startswith("new")]
    assert sorted(existing) == sorted(["root", *(f"user{n}" for n in range(6))])
    assert len(seen) == len(set(seen))


async def walk(
    accounts: Accounts,
    admin: Principal,
    query: UserQuery,
    between_pages: Callable[[], Awaitable[object]] | None = None,
) -> list[str]:
    """Every page of `query`, passing each position through a cursor as a client would."""
    names: list[str] = []
    cursor: str | None = None
    while True:
        after = None
        if cursor is not None:
            value, uid = CODEC.decode(cursor, query.fingerprint())
            after = UserKey(value, uid)
        page = await accounts.list_users(admin, dataclasses.replace(query, after=after))
        names += [u.username for u in page.items]
        if page.next_key is None:
            return names
        cursor = CODEC.encode(query.fingerprint(), [page.next_key.value, page.next_key.id])
        if between_pages is not None:
            await between_pages()
