"""Registration over HTTP: POST /api/v1/users through the edge to the worker."""

from __future__ import annotations

import re
from typing import Any

import aiohttp
import pytest

from tests.conftest import PASSWORD, USER_FIELDS, unique
from tests.e2e.test_edge_errors import assert_problem

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
SECRET_PASSWORD = "s3cret-never-echoed"


def body(name: str | None = None, **fields: Any) -> dict[str, Any]:
    name = name or unique()
    return {"email": f"{name}@example.com", "username": name, "password": PASSWORD} | fields


def keys_anywhere(data: Any) -> set[str]:
    if isinstance(data, dict):
        return set(data).union(*(keys_anywhere(v) for v in data.values()))
    if isinstance(data, list):
        return set().union(*(keys_anywhere(v) for v in data))
    return set()


async def test_registration_answers_201_with_the_user_and_its_location(
    http: aiohttp.ClientSession,
) -> None:
    name = unique()
    sent = body(name, full_name="Alice Liddell")
    async with http.post("/api/v1/users", json=sent) as r:
        assert r.status == 201, await r.text()
        assert r.content_type == "application/json"
        text = await r.text()
        user = await r.json()
        location = r.headers["Location"]
    assert set(user) == USER_FIELDS
    assert location == f"/api/v1/users/{user['id']}"
    assert isinstance(user["id"], int)
    assert user["email"] == f"{name}@example.com"
    assert user["username"] == name
    assert user["full_name"] == "Alice Liddell"
    assert user["is_active"] is True
    assert user["is_superuser"] is False
    assert RFC3339_UTC.fullmatch(user["created_at"]), user["created_at"]
    assert RFC3339_UTC.fullmatch(user["updated_at"]), user["updated_at"]
    assert PASSWORD not in text
    assert "$2" not in text, "no bcrypt hash in the reply"


async def test_a_registered_user_has_no_password_or_hash_field_anywhere(
    http: aiohttp.ClientSession,
) -> None:
    async with http.post("/api/v1/users", json=body()) as r:
        assert r.status == 201
        user = await r.json()
    leaked = {k for k in keys_anywhere(user) if "password" in k.lower() or "hash" in k.lower()}
    assert leaked == set()


async def test_the_email_is_stored_lower_cased(http: aiohttp.ClientSession) -> None:
    name = unique()
    async with http.post("/api/v1/users", json=body(name, email=f"{name}@EXAMPLE.Com")) as r:
        assert r.status == 201
        assert (await r.json())["email"] == f"{name}@example.com"


async def test_an_email_taken_in_another_case_is_a_409_email_taken(
    http: aiohttp.ClientSession,
) -> None:
    name = unique()
    async with http.post("/api/v1/users", json=body(name)) as r:
        assert r.status == 201
    again = body(email=f"{name.upper()}@Example.COM")
    async with http.post("/api/v1/users", json=again) as r:
        await assert_problem(r, 409, "email_taken")


async def test_a_username_taken_in_another_case_is_a_409_username_taken(
    http: aiohttp.ClientSession,
) -> None:
    name = unique("alice")
    async with http.post("/api/v1/users", json=body(name)) as r:
        assert r.status == 201
    other = unique()
    again = body(other, username=name.capitalize())
    assert again["username"] != name
    async with http.post("/api/v1/users", json=again) as r:
        await assert_problem(r, 409, "username_taken")


INVALID = [
    ("email", "not-an-email"),
    ("email", "two@@example.com"),
    ("username", "ab"),
    ("username", "a" * 33),
    ("username", "al ice"),
    ("username", "alice!"),
    ("username", "ålice"),
    ("password", "short7!"),
    ("password", "é" * 37),  # 37 characters but 74 bytes: refused, never cut to 72
    ("password", "x" * 73),
]


@pytest.mark.parametrize(("field", "value"), INVALID)
async def test_an_invalid_field_is_a_422_naming_it(
    http: aiohttp.ClientSession, field: str, value: str
) -> None:
    sent = body(password=SECRET_PASSWORD) | {field: value}
    async with http.post("/api/v1/users", json=sent) as r:
        problem = await assert_problem(r, 422, "validation_error")
    assert ["body", field] in [e["loc"] for e in problem["errors"]], problem
    for error in problem["errors"]:
        assert {"loc", "msg", "type"} <= error.keys()


@pytest.mark.parametrize("password", ["é" * 37, "short7!", "x" * 73, SECRET_PASSWORD])
async def test_a_422_never_echoes_the_password(http: aiohttp.ClientSession, password: str) -> None:
    sent = body(username="no", password=password)
    async with http.post("/api/v1/users", json=sent) as r:
        assert r.status == 422
        text = await r.text()
    assert password not in text


async def test_a_password_of_exactly_72_bytes_is_accepted_and_logs_in(
    http: aiohttp.ClientSession,
) -> None:
    password = "é" * 36
    assert len(password.encode()) == 72
    name = unique()
    async with http.post("/api/v1/users", json=body(name, password=password)) as r:
        assert r.status == 201, await r.text()
    login = {"username": name, "password": password}
    async with http.post("/api/v1/auth/login", json=login) as r:
        assert r.status == 200


async def test_a_password_of_73_bytes_registers_nobody(http: aiohttp.ClientSession) -> None:
    name = unique()
    async with http.post("/api/v1/users", json=body(name, password="é" * 36 + "x")) as r:
        await assert_problem(r, 422, "validation_error")
    async with http.post("/api/v1/users", json=body(name)) as r:
        assert r.status == 201, "the refused registration must not have created the user"


async def test_is_superuser_is_refused_as_an_unknown_field(http: aiohttp.ClientSession) -> None:
    name = unique()
    async with http.post("/api/v1/users", json=body(name, is_superuser=True)) as r:
        problem = await assert_problem(r, 422, "validation_error")
    assert [e["loc"] for e in problem["errors"]] == [["body", "is_superuser"]]
    async with http.post("/api/v1/users", json=body(name)) as r:
        assert r.status == 201
        assert (await r.json())["is_superuser"] is False


@pytest.mark.parametrize("extra", [{"id": 1}, {"is_active": False}, {"hashed_password": "x"}])
async def test_any_other_unknown_field_is_refused_too(
    http: aiohttp.ClientSession, extra: dict[str, Any]
) -> None:
    async with http.post("/api/v1/users", json=body() | extra) as r:
        problem = await assert_problem(r, 422, "validation_error")
    assert [e["loc"] for e in problem["errors"]] == [["body", *extra]]
