"""Input no store can keep, input bcrypt cannot take, and where a 422 says the fault lies.

Each case here was a 5xx, a timeout, a tell of who exists, or a 422 that named a validator
instead of the caller's input. test_fuzz.py looks for more of the kind at random.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import bcrypt
import orjson
import pytest
from prometheus_client import REGISTRY

from domain.model import NewUser
from tests.conftest import PASSWORD, fresh_ip, unique
from tests.e2e.test_edge_errors import assert_problem, registration
from tests.support.amqp import AmqpCaller
from tests.support.logs import captured_logs
from tests.support.rawhttp import raw_request
from warden.bootstrap import Services

NUL_REFUSED = "text may not contain NUL characters or lone surrogates"


def bcrypt_calls() -> float:
    """bcrypt work the worker did through to the end (the worker runs in this process)."""
    return REGISTRY.get_sample_value("warden_bcrypt_calls_total") or 0.0


async def user_and_token(http: aiohttp.ClientSession) -> tuple[dict[str, Any], str]:
    body = registration()
    async with http.post("/api/v1/users", json=body) as r:
        assert r.status == 201, await r.text()
        user = await r.json()
    login = {"username": body["username"], "password": PASSWORD}
    async with http.post("/api/v1/auth/login", json=login) as r:
        assert r.status == 200, await r.text()
        return user, (await r.json())["access_token"]


async def superuser_token(http: aiohttp.ClientSession, worker: Services) -> str:
    name = unique("root")
    hashed = await worker.hasher.hash(PASSWORD)
    await worker.accounts.create(NewUser(f"{name}@example.com", name, hashed, is_superuser=True))
    async with http.post("/api/v1/auth/login", json={"username": name, "password": PASSWORD}) as r:
        assert r.status == 200, await r.text()
        return str((await r.json())["access_token"])


def locs(problem: dict[str, Any]) -> list[list[Any]]:
    return [error["loc"] for error in problem["errors"]]


# --- login: any input is a wrong password, in the time of one -----------------------------


@pytest.mark.parametrize(
    ("username", "password"),
    [
        ("nobody", "x" * 73),  # over bcrypt's 72 bytes: was a 500 for an unknown user
        ("known", "x" * 73),
        ("nobody", "é" * 1000),
        ("known", "é" * 1000),
        ("al\x00ice", PASSWORD),  # a NUL in the name: was a 500 from Postgres
        ("known", PASSWORD + "\x00"),
        ("\x00", "\x00"),
    ],
    ids=ascii,
)
async def test_login_input_no_password_can_be_is_a_401_after_one_bcrypt_check(
    http: aiohttp.ClientSession, username: str, password: str
) -> None:
    user, _ = await user_and_token(http)
    name = user["username"] if username == "known" else username
    wrong = {"username": "nobody" + unique(), "password": "a wrong password"}
    async with http.post("/api/v1/auth/login", json=wrong) as r:  # makes the dummy hash
        expected = await assert_problem(r, 401, "invalid_credentials")

    before = bcrypt_calls()
    async with http.post("/api/v1/auth/login", json={"username": name, "password": password}) as r:
        assert await assert_problem(r, 401, "invalid_credentials") == expected

    assert bcrypt_calls() - before == 1  # as a wrong password: the time tells nothing


async def test_an_over_long_password_over_amqp_is_invalid_credentials_too(
    amqp: AmqpCaller,
) -> None:
    for name in ("nobody" + unique(), "\x00"):
        reply = await amqp.call("warden.auth.login", {"username": name, "password": "x" * 100})
        assert reply["error"]["code"] == "invalid_credentials", reply


# --- every string a request may store refuses NUL ----------------------------------------


@pytest.mark.parametrize("field", ["email", "username", "password", "full_name"])
async def test_a_nul_in_any_field_of_a_registration_is_a_422_naming_the_field(
    http: aiohttp.ClientSession, field: str
) -> None:
    body = registration() | {"full_name": "Ada"}
    body[field] = body[field][:3] + "\x00" + body[field][3:]
    async with http.post("/api/v1/users", json=body) as r:
        problem = await assert_problem(r, 422, "validation_error")
    assert problem["errors"] == [
        {"loc": ["body", field], "msg": NUL_REFUSED, "type": "value_error"}
    ]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PATCH", "/api/v1/users/me", {"full_name": "a\x00"}),  # was a 500 from Postgres
        ("PATCH", "/api/v1/users/me", {"username": "a\x00bcd"}),
        ("POST", "/api/v1/users/me/password", {"current_password": "\x00", "new_password": "x"}),
    ],
    ids=["full_name", "username", "current_password"],
)
async def test_a_nul_in_a_bearers_request_is_a_422_naming_the_field(
    http: aiohttp.ClientSession, method: str, path: str, body: dict[str, Any]
) -> None:
    _, token = await user_and_token(http)
    headers = {"Authorization": f"Bearer {token}"}
    async with http.request(method, path, json=body, headers=headers) as r:
        problem = await assert_problem(r, 422, "validation_error")
    field = next(iter(body))
    assert {"loc": ["body", field], "msg": NUL_REFUSED, "type": "value_error"} in problem["errors"]


async def test_a_nul_in_a_superusers_update_is_a_422_naming_the_field(
    http: aiohttp.ClientSession, worker: Services
) -> None:
    user, _ = await user_and_token(http)
    headers = {"Authorization": f"Bearer {await superuser_token(http, worker)}"}
    body = {"full_name": "\x00"}
    async with http.patch(f"/api/v1/users/{user['id']}", json=body, headers=headers) as r:
        problem = await assert_problem(r, 422, "validation_error")
    assert locs(problem) == [["body", "full_name"]]


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/api/v1/users?q=%00", "q"),  # was a 500 from Postgres
        ("/api/v1/users?cursor=a%00b", "cursor"),
        ("/api/v1/users?sort=%00", "sort"),
        ("/api/v1/audit?type=user.%00", "type"),
    ],
)
async def test_a_nul_in_a_query_string_is_a_422_naming_the_parameter(
    http: aiohttp.ClientSession, worker: Services, path: str, name: str
) -> None:
    headers = {"Authorization": f"Bearer {await superuser_token(http, worker)}"}
    async with http.get(path, headers=headers) as r:
        problem = await assert_problem(r, 422, "validation_error")
    assert locs(problem) == [["query", name]]


async def test_a_nul_in_a_stored_field_over_amqp_is_a_422_naming_the_field(
    amqp: AmqpCaller,
) -> None:
    body = registration() | {"full_name": "Ada\x00"}
    reply = await amqp.call("warden.users.register", body)
    assert reply["error"]["errors"] == [
        {"loc": ["body", "full_name"], "msg": NUL_REFUSED, "type": "value_error"}
    ]


async def test_an_id_beyond_a_bigint_is_a_422_not_a_database_error(amqp: AmqpCaller) -> None:
    reply = await amqp.call("warden.users.get", {"id": 2**63})
    assert reply["error"]["status"] == 422, reply
    assert [e["loc"] for e in reply["error"]["errors"]] == [["body", "id"]]


# --- JSON that is not JSON here: lone surrogates, deep nesting ----------------------------


async def test_a_lone_surrogate_escape_in_json_is_malformed_json(
    http: aiohttp.ClientSession, amqp: AmqpCaller
) -> None:
    body = json.dumps(registration() | {"full_name": "\ud800"}).encode()  # "\\ud800" escaped
    headers = {"Content-Type": "application/json"}
    async with http.post("/api/v1/users", data=body, headers=headers) as r:
        await assert_problem(r, 400, "malformed_json")

    reply = orjson.loads((await amqp.raw("warden.users.register", body)).body)
    assert reply["error"]["code"] == "malformed_message"
    assert [e["loc"] for e in reply["error"]["errors"]] == [["body"]]


def nested(depth: int) -> bytes:
    return b'{"full_name": ' + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize("depth", [33, 300, 2000])
async def test_deeply_nested_json_is_malformed_json_at_the_edge(
    http: aiohttp.ClientSession, depth: int
) -> None:
    headers = {"Content-Type": "application/json", "Idempotency-Key": unique()}
    async with http.post("/api/v1/users", data=nested(depth), headers=headers) as r:
        await assert_problem(r, 400, "malformed_json")  # 300 levels was a 500


@pytest.mark.parametrize("depth", [33, 300, 2000])
async def test_deeply_nested_json_over_amqp_is_a_422_malformed_message(
    amqp: AmqpCaller, depth: int
) -> None:
    # With an idempotency key, 300 levels got no reply at all: the caller timed out.
    headers = {"idempotency-key": unique()}
    reply = orjson.loads((await amqp.raw("warden.users.register", nested(depth), headers)).body)
    assert reply["error"]["status"] == 422
    assert reply["error"]["code"] == "malformed_message"
    assert [e["loc"] for e in reply["error"]["errors"]] == [["body"]]


async def test_json_nested_as_deep_as_a_request_may_be_is_validated_as_usual(
    http: aiohttp.ClientSession,
) -> None:
    headers = {"Content-Type": "application/json"}
    async with http.post("/api/v1/users", data=nested(31), headers=headers) as r:
        problem = await assert_problem(r, 422, "validation_error")
    assert ["body", "full_name"] in locs(problem)


# --- headers ------------------------------------------------------------------------------


async def test_an_authorization_header_of_bytes_that_are_not_utf8_is_an_invalid_token(
    edge_url: str,
) -> None:
    headers = [(b"Authorization", b"Bearer \xff\xfe\xed\xa0\x80"), (b"X-Forwarded-For", b"1.2.3.4")]
    reply = await raw_request(edge_url, "GET", b"/api/v1/users/me", headers)
    assert reply.status == 401, reply  # was a 500: the edge could not put it on the broker
    assert orjson.loads(reply.body)["code"] == "invalid_token"


async def test_a_control_character_in_a_header_is_refused_by_the_parser_and_logged_quietly(
    edge_url: str,
) -> None:
    secret = b"Bearer eyJhbGciOiJIUzI1NiJ9.very.secret"
    with captured_logs() as captured:
        reply = await raw_request(
            edge_url, "GET", b"/api/v1/users/me", [(b"Authorization", secret + b"\x00")]
        )
    assert reply.status == 400  # aiohttp's own answer: the request never reaches Warden
    lines = captured.lines()  # the worker may be logging other tests' events meanwhile
    [refusal] = [line for line in lines if line.get("logger") == "aiohttp.server"]
    assert refusal["event"] == "request refused by the HTTP parser"
    assert refusal["level"] == "warning"
    assert not [line for line in lines if "exception" in line]  # no traceback
    assert b"very.secret" not in orjson.dumps(lines)  # the raw header line is not logged


# --- every 422 says where the fault lies, as the caller wrote it --------------------------


async def test_update_errors_name_the_fields_not_the_validators(
    http: aiohttp.ClientSession, worker: Services
) -> None:
    _, token = await user_and_token(http)
    headers = {"Authorization": f"Bearer {token}"}
    body = {"email": "not-an-email", "username": "a"}
    async with http.patch("/api/v1/users/me", json=body, headers=headers) as r:
        problem = await assert_problem(r, 422, "validation_error")
    # was also ["body", "email", "function-after[...]"] and ["body", "email", "none"]
    assert locs(problem) == [["body", "email"], ["body", "username"]]

    user, _ = await user_and_token(http)
    root = {"Authorization": f"Bearer {await superuser_token(http, worker)}"}
    body = {"is_active": "maybe"}
    async with http.patch(f"/api/v1/users/{user['id']}", json=body, headers=root) as r:
        problem = await assert_problem(r, 422, "validation_error")
    assert locs(problem) == [["body", "is_active"]]


async def test_a_reused_idempotency_key_names_the_header_as_each_caller_wrote_it(
    http: aiohttp.ClientSession, amqp: AmqpCaller
) -> None:
    key = unique("key-")
    headers = {"Idempotency-Key": key, "X-Forwarded-For": fresh_ip()}
    async with http.post("/api/v1/users", json=registration(), headers=headers) as r:
        assert r.status == 201
    async with http.post("/api/v1/users", json=registration(), headers=headers) as r:
        problem = await assert_problem(r, 422, "idempotency_key_reused")
    assert locs(problem) == [["header", "Idempotency-Key"]]

    key = unique("key-")
    assert (await amqp.call("warden.users.register", registration(), idempotency_key=key))["ok"]
    reply = await amqp.call("warden.users.register", registration(), idempotency_key=key)
    assert reply["error"]["code"] == "idempotency_key_reused"
    assert [e["loc"] for e in reply["error"]["errors"]] == [["header", "idempotency-key"]]


async def test_a_bad_idempotency_key_over_amqp_names_the_amqp_header(amqp: AmqpCaller) -> None:
    reply = await amqp.call("warden.users.register", registration(), idempotency_key="a\x00b")
    assert reply["error"]["code"] == "validation_error"
    assert [e["loc"] for e in reply["error"]["errors"]] == [["header", "idempotency-key"]]


# --- passwords are normalised (NFKC) ------------------------------------------------------


async def test_a_password_is_the_same_in_any_unicode_form(http: aiohttp.ClientSession) -> None:
    body = registration() | {"password": "ｃｏｒｒｅｃｔ ｈｏｒｓｅ"}  # full-width, as typed
    async with http.post("/api/v1/users", json=body) as r:
        assert r.status == 201, await r.text()
    for typed in ("correct horse", "ｃｏｒｒｅｃｔ ｈｏｒｓｅ", "ｃorrect horse"):
        login = {"username": body["username"], "password": typed}
        async with http.post("/api/v1/auth/login", json=login) as r:
            assert r.status == 200, (typed, await r.text())


async def test_a_user_registered_before_normalisation_still_logs_in(
    http: aiohttp.ClientSession, worker: Services
) -> None:
    name = unique("old")
    typed = "ｃｏｒｒｅｃｔ ｈｏｒｓｅ"
    hashed = bcrypt.hashpw(typed.encode(), bcrypt.gensalt(4)).decode()  # as hashed before
    await worker.accounts.create(NewUser(f"{name}@example.com", name, hashed))
    async with http.post("/api/v1/auth/login", json={"username": name, "password": typed}) as r:
        assert r.status == 200, await r.text()
