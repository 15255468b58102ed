"""What the edge answers by itself: bodies, media types, routes, methods and request ids."""

from __future__ import annotations

import re
from typing import Any

import aiohttp
import orjson
import pytest

from tests.conftest import PASSWORD, unique

PROBLEM_FIELDS = {"type", "title", "status", "detail", "code"}
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


async def assert_problem(
    response: aiohttp.ClientResponse, status: int, code: str
) -> dict[str, Any]:
    """The response is RFC 9457 problem details with this status and code; returns the body."""
    body: dict[str, Any] = await response.json(content_type=None)
    assert response.status == status, body
    assert response.content_type == "application/problem+json"
    assert body.keys() >= PROBLEM_FIELDS, body
    assert body["status"] == status
    assert body["code"] == code
    for field in ("type", "title", "detail"):
        assert isinstance(body[field], str), (field, body)
        assert body[field], (field, body)
    return body


def registration(name: str | None = None) -> dict[str, Any]:
    name = name or unique()
    return {"email": f"{name}@example.com", "username": name, "password": PASSWORD}


async def test_a_body_over_64_kib_is_a_413_payload_too_large(http: aiohttp.ClientSession) -> None:
    body = b'{"full_name": "' + b"x" * (64 * 1024) + b'"}'
    headers = {"Content-Type": "application/json"}
    async with http.post("/api/v1/users", data=body, headers=headers) as r:
        await assert_problem(r, 413, "payload_too_large")


@pytest.mark.parametrize(
    "body",
    [b'{"email": ', b"{'email': 'a@b.io'}", b"", b'{"username": "\xff\xfe"}'],
    ids=["truncated", "single-quotes", "empty", "invalid-utf8"],
)
async def test_a_body_that_is_not_utf8_json_is_a_400_malformed_json(
    http: aiohttp.ClientSession, body: bytes
) -> None:
    headers = {"Content-Type": "application/json"}
    async with http.post("/api/v1/users", data=body, headers=headers) as r:
        await assert_problem(r, 400, "malformed_json")


@pytest.mark.parametrize("body", [[registration()], "alice", 42, None], ids=str)
async def test_json_that_is_not_an_object_is_a_422_validation_error(
    http: aiohttp.ClientSession, body: Any
) -> None:
    headers = {"Content-Type": "application/json"}
    async with http.post("/api/v1/users", data=orjson.dumps(body), headers=headers) as r:
        problem = await assert_problem(r, 422, "validation_error")
    assert problem["errors"][0]["loc"] == ["body"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml"])
async def test_a_body_of_another_media_type_is_a_415(
    http: aiohttp.ClientSession, content_type: str
) -> None:
    data = b'{"email": "a@example.com", "username": "alice", "password": "long enough"}'
    async with http.post("/api/v1/users", data=data, headers={"Content-Type": content_type}) as r:
        await assert_problem(r, 415, "unsupported_media_type")


async def test_a_json_content_type_with_a_charset_is_accepted(
    http: aiohttp.ClientSession,
) -> None:
    headers = {"Content-Type": "application/json; charset=utf-8"}
    data = orjson.dumps(registration())
    async with http.post("/api/v1/users", data=data, headers=headers) as r:
        assert r.status == 201, await r.text()


@pytest.mark.parametrize("path", ["/nope", "/api/v1/nope", "/api/v1/users/abc", "/api/v2/users"])
async def test_an_unknown_route_is_a_404_not_found(http: aiohttp.ClientSession, path: str) -> None:
    async with http.get(path) as r:
        await assert_problem(r, 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [("DELETE", "/api/v1/auth/login", "POST"), ("PUT", "/api/v1/users/me", "GET")],
)
async def test_a_wrong_method_is_a_405_method_not_allowed_naming_the_allowed_ones(
    http: aiohttp.ClientSession, method: str, path: str, allowed: str
) -> None:
    async with http.request(method, path) as r:
        await assert_problem(r, 405, "method_not_allowed")
        assert allowed in r.headers.get("Allow", ""), r.headers


EVERY_KIND_OF_ANSWER = [
    ("GET", "/health", None, 200),
    ("POST", "/api/v1/users", "register", 201),
    ("POST", "/api/v1/users", {"email": "nope"}, 422),
    ("GET", "/api/v1/users/me", None, 401),
    ("GET", "/api/v1/nope", None, 404),
    ("DELETE", "/api/v1/auth/login", None, 405),
]


async def _answer(
    http: aiohttp.ClientSession, method: str, path: str, body: Any, headers: dict[str, str]
) -> aiohttp.ClientResponse:
    json = registration() if body == "register" else body
    async with http.request(method, path, json=json, headers=headers) as r:
        await r.read()
        return r


@pytest.mark.parametrize(("method", "path", "body", "status"), EVERY_KIND_OF_ANSWER)
async def test_a_valid_caller_request_id_is_echoed_on_every_answer(
    http: aiohttp.ClientSession, method: str, path: str, body: Any, status: int
) -> None:
    rid = f"req.{unique()}_A-z"
    r = await _answer(http, method, path, body, {"X-Request-ID": rid})
    assert r.status == status
    assert r.headers["X-Request-ID"] == rid


@pytest.mark.parametrize(("method", "path", "body", "status"), EVERY_KIND_OF_ANSWER)
async def test_an_answer_to_a_caller_without_a_request_id_carries_a_new_one(
    http: aiohttp.ClientSession, method: str, path: str, body: Any, status: int
) -> None:
    first = await _answer(http, method, path, body, {})
    second = await _answer(http, method, path, body, {})
    assert first.status == status
    assert REQUEST_ID.fullmatch(first.headers["X-Request-ID"])
    assert first.headers["X-Request-ID"] != second.headers["X-Request-ID"]


async def test_a_request_id_of_exactly_128_characters_is_echoed(
    http: aiohttp.ClientSession,
) -> None:
    rid = "a" * 120 + unique("")[:8]
    async with http.get("/health", headers={"X-Request-ID": rid}) as r:
        assert r.headers["X-Request-ID"] == rid


@pytest.mark.parametrize(
    "rid", ["a" * 129, "b" * 200, "has space", "semi;colon", "slash/es", "quote'"]
)
async def test_an_invalid_request_id_is_replaced_by_a_new_one(
    http: aiohttp.ClientSession, rid: str
) -> None:
    async with http.get("/api/v1/nope", headers={"X-Request-ID": rid}) as r:
        await assert_problem(r, 404, "not_found")
        echoed = r.headers["X-Request-ID"]
    assert echoed != rid
    assert REQUEST_ID.fullmatch(echoed)


async def test_an_idempotency_key_of_256_characters_is_a_422_validation_error(
    http: aiohttp.ClientSession,
) -> None:
    body = registration()
    headers = {"Idempotency-Key": "k" * 256}
    async with http.post("/api/v1/users", json=body, headers=headers) as r:
        problem = await assert_problem(r, 422, "validation_error")
    assert problem["errors"][0]["loc"] == ["header", "Idempotency-Key"]
    async with http.post("/api/v1/users", json=body) as r:
        assert r.status == 201, "the refused request must not have registered anyone"


async def test_an_idempotency_key_of_255_characters_is_accepted(
    http: aiohttp.ClientSession,
) -> None:
    headers = {"Idempotency-Key": unique("k") + "k" * (255 - 13)}
    assert len(headers["Idempotency-Key"]) == 255
    async with http.post("/api/v1/users", json=registration(), headers=headers) as r:
        assert r.status == 201, await r.text()
