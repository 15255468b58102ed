"""The OAuth 2.0 forms at the edge, sent as an attacker would rather than as a client library
does: repeated parameters, NULs, bodies too large or of the wrong type, and the errors each
gets — the contract's problem details with RFC 6749's `error` beside them."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.conftest import PASSWORD, make_settings
from tests.e2e.test_edge_errors import assert_problem, registration
from tests.e2e.test_worker_outage import CLOSED_PORT_AMQP, edge
from tests.support.infra import Urls

FORM = "application/x-www-form-urlencoded"
TOKEN = "/api/v1/auth/login"
REFRESH = "/api/v1/auth/refresh"
REVOKE = "/api/v1/auth/revoke"
OAUTH_ROUTES = [TOKEN, REFRESH, REVOKE]


async def oauth_problem(
    response: aiohttp.ClientResponse, status: int, code: str, error: str
) -> dict[str, Any]:
    """Our problem details with this status and code, and RFC 6749's `error`."""
    problem = await assert_problem(response, status, code)
    assert problem["error"] == error, problem
    assert problem["error_description"] == problem["detail"]
    return problem


def locs(problem: dict[str, Any]) -> list[list[Any]]:
    return [e["loc"] for e in problem["errors"]]


def post_form(http: aiohttp.ClientSession, path: str, body: bytes | str) -> Any:
    data = body.encode() if isinstance(body, str) else body
    return http.post(path, data=data, headers={"Content-Type": FORM})


@pytest.fixture
async def pair(http: aiohttp.ClientSession) -> dict[str, Any]:
    body = registration()
    async with http.post("/api/v1/users", json=body) as r:
        assert r.status == 201, await r.text()
    form = {"username": body["username"], "password": PASSWORD}
    async with http.post(TOKEN, data=form) as r:
        assert r.status == 200, await r.text()
        token_pair: dict[str, Any] = await r.json()
    return token_pair


async def live(http: aiohttp.ClientSession, access_token: str) -> bool:
    headers = {"Authorization": f"Bearer {access_token}"}
    async with http.get("/api/v1/users/me", headers=headers) as r:
        return r.status == 200


# --- what each form forwards ---------------------------------------------------------------


async def test_the_token_endpoint_forwards_only_the_parameters_of_the_grant_sent(
    http: aiohttp.ClientSession, pair: dict[str, Any]
) -> None:
    # A login's fields beside a refresh grant are not a login: only refresh_token is read.
    form = (
        f"grant_type=refresh_token&refresh_token={pair['refresh_token']}"
        "&username=someone&password=x&client_id=app&scope=openid+profile"
    )
    async with post_form(http, TOKEN, form) as r:
        assert r.status == 200, await r.text()
        assert r.headers["Cache-Control"] == "no-store"
        renewed = await r.json()
    assert await live(http, renewed["access_token"])


async def test_the_refresh_route_takes_the_form_without_a_grant_type_too(
    http: aiohttp.ClientSession, pair: dict[str, Any]
) -> None:
    async with post_form(http, REFRESH, f"refresh_token={pair['refresh_token']}") as r:
        assert r.status == 200, await r.text()


async def test_the_refresh_route_takes_no_other_grant(
    http: aiohttp.ClientSession, pair: dict[str, Any]
) -> None:
    form = f"grant_type=password&refresh_token={pair['refresh_token']}"
    async with post_form(http, REFRESH, form) as r:
        problem = await oauth_problem(r, 400, "unsupported_grant_type", "unsupported_grant_type")
    assert "refresh_token" in problem["detail"]


async def test_revocation_takes_json_as_every_route_does(
    http: aiohttp.ClientSession, pair: dict[str, Any]
) -> None:
    async with http.post(REVOKE, json={"token": pair["access_token"]}) as r:
        assert (r.status, await r.read()) == (200, b"")
    assert not await live(http, pair["access_token"])


async def test_a_revocation_form_reads_no_grant_type(
    http: aiohttp.ClientSession, pair: dict[str, Any]
) -> None:
    form = f"grant_type=nonsense&grant_type=twice&token={pair['refresh_token']}"
    async with post_form(http, REVOKE, form) as r:
        assert r.status == 200, await r.text()
    assert not await live(http, pair["access_token"])


async def test_a_repeated_revocation_with_its_idempotency_key_is_a_200_again(
    http: aiohttp.ClientSession, pair: dict[str, Any]
) -> None:
    headers = {"Content-Type": FORM, "Idempotency-Key": "revoke-once"}
    body = f"token={pair['refresh_token']}".encode()
    for _ in range(2):
        async with http.post(REVOKE, data=body, headers=headers) as r:
            assert (r.status, await r.read()) == (200, b"")
    async with http.post(REVOKE, data=b"token=another", headers=headers) as r:
        await oauth_problem(r, 422, "idempotency_key_reused", "invalid_request")


# --- parameters missing, empty, repeated, or holding what no token holds -------------------


@pytest.mark.parametrize(
    ("path", "form", "field"),
    [
        (TOKEN, "grant_type=refresh_token", "refresh_token"),
        (TOKEN, "grant_type=refresh_token&refresh_token=", "refresh_token"),  # RFC 6749 3.1
        (REFRESH, "grant_type=refresh_token", "refresh_token"),
        (REVOKE, "token_type_hint=access_token", "token"),
        (REVOKE, "token=", "token"),
        (REVOKE, "", "token"),
    ],
    ids=["token-endpoint", "token-endpoint-empty", "refresh", "revoke", "revoke-empty", "none"],
)
async def test_a_missing_parameter_is_a_422_invalid_request_naming_it(
    http: aiohttp.ClientSession, path: str, form: str, field: str
) -> None:
    async with post_form(http, path, form) as r:
        problem = await oauth_problem(r, 422, "validation_error", "invalid_request")
    assert locs(problem) == [["body", field]]


@pytest.mark.parametrize(
    ("path", "form", "field"),
    [
        (TOKEN, "grant_type=refresh_token&refresh_token=a&refresh_token=b", "refresh_token"),
        (TOKEN, "grant_type=refresh_token&grant_type=password&username=u", "grant_type"),
        (TOKEN, "username=a&username=b&password=x", "username"),
        (REFRESH, "refresh_token=a&refresh_token=a", "refresh_token"),
        (REVOKE, "token=a&token=b", "token"),
        (REVOKE, "token=a&token_type_hint=x&token_type_hint=y", "token_type_hint"),
    ],
)
async def test_a_parameter_sent_twice_is_a_422_invalid_request(
    http: aiohttp.ClientSession, path: str, form: str, field: str
) -> None:
    # RFC 6749 3.2: parameters MUST NOT repeat. Taking either would let a proxy that reads
    # the first and Warden that reads the last disagree about the request.
    async with post_form(http, path, form) as r:
        problem = await oauth_problem(r, 422, "validation_error", "invalid_request")
    assert locs(problem) == [["body", field]]


async def test_a_parameter_warden_does_not_read_may_repeat(
    http: aiohttp.ClientSession, pair: dict[str, Any]
) -> None:
    form = f"refresh_token={pair['refresh_token']}&scope=a&scope=b&client_id=x&client_id=y"
    async with post_form(http, REFRESH, form) as r:
        assert r.status == 200, await r.text()


@pytest.mark.parametrize(
    ("path", "form", "field"),
    [
        (TOKEN, "grant_type=refresh_token&refresh_token=a%00b", "refresh_token"),
        (REFRESH, "refresh_token=%00", "refresh_token"),
        (REVOKE, "token=a%00", "token"),
        (REVOKE, "token=a&token_type_hint=%00", "token_type_hint"),
        (REVOKE, "token=" + "x" * 8193, "token"),
        (REFRESH, "refresh_token=" + "x" * 4097, "refresh_token"),
    ],
    ids=["nul-token-endpoint", "nul-refresh", "nul-revoke", "nul-hint", "long-token", "long-rt"],
)
async def test_a_value_no_token_can_have_is_a_422_naming_it(
    http: aiohttp.ClientSession, path: str, form: str, field: str
) -> None:
    async with post_form(http, path, form) as r:
        problem = await oauth_problem(r, 422, "validation_error", "invalid_request")
    assert locs(problem) == [["body", field]]


async def test_a_nul_in_a_password_of_the_form_is_a_wrong_password(
    http: aiohttp.ClientSession,
) -> None:
    async with post_form(http, TOKEN, "username=al%00ice&password=x%00") as r:
        await oauth_problem(r, 401, "invalid_credentials", "invalid_grant")


async def test_an_escape_that_is_not_utf8_revokes_nothing_and_is_a_200(
    http: aiohttp.ClientSession, pair: dict[str, Any]
) -> None:
    async with post_form(http, REVOKE, "token=%FF%FE") as r:
        assert r.status == 200
    assert await live(http, pair["access_token"])


# --- bodies the edge refuses itself ---------------------------------------------------------


@pytest.mark.parametrize("path", OAUTH_ROUTES)
async def test_a_form_that_is_not_utf8_is_a_400_invalid_request(
    http: aiohttp.ClientSession, path: str
) -> None:
    async with post_form(http, path, b"grant_type=refresh_token&refresh_token=\xff") as r:
        await oauth_problem(r, 400, "malformed_json", "invalid_request")


@pytest.mark.parametrize("path", OAUTH_ROUTES)
async def test_a_form_over_64_kib_is_a_413_invalid_request(
    http: aiohttp.ClientSession, path: str
) -> None:
    async with post_form(http, path, "token=" + "x" * (64 * 1024)) as r:
        await oauth_problem(r, 413, "payload_too_large", "invalid_request")


@pytest.mark.parametrize("path", OAUTH_ROUTES)
async def test_a_form_of_thousands_of_parameters_is_answered(
    http: aiohttp.ClientSession, path: str
) -> None:
    async with post_form(http, path, "&".join(["a=b"] * 15000)) as r:
        await oauth_problem(r, 422, "validation_error", "invalid_request")


@pytest.mark.parametrize("path", OAUTH_ROUTES)
@pytest.mark.parametrize(
    "content_type", ["text/plain", "multipart/form-data; boundary=x", "application/xml"]
)
async def test_a_body_neither_json_nor_a_form_is_a_415_invalid_request(
    http: aiohttp.ClientSession, path: str, content_type: str
) -> None:
    headers = {"Content-Type": content_type}
    async with http.post(path, data=b"token=x", headers=headers) as r:
        problem = await oauth_problem(r, 415, "unsupported_media_type", "invalid_request")
    assert FORM in problem["detail"]


@pytest.mark.parametrize("path", OAUTH_ROUTES)
async def test_json_that_is_not_an_object_is_a_422_invalid_request(
    http: aiohttp.ClientSession, path: str
) -> None:
    async with http.post(path, json=["token"]) as r:
        await oauth_problem(r, 422, "validation_error", "invalid_request")


async def test_other_routes_problems_carry_no_oauth_error(http: aiohttp.ClientSession) -> None:
    async with http.post("/api/v1/users", data=b"x", headers={"Content-Type": FORM}) as r:
        problem = await assert_problem(r, 415, "unsupported_media_type")
    assert "error" not in problem
    assert FORM not in problem["detail"]


async def test_without_a_broker_an_oauth_route_is_a_503_temporarily_unavailable(
    urls: Urls,
) -> None:
    settings = make_settings(urls, amqp_url=CLOSED_PORT_AMQP)
    async with edge(settings) as http, post_form(http, REVOKE, "token=x") as r:
        await oauth_problem(r, 503, "service_unavailable", "temporarily_unavailable")
