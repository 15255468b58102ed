"""The edge's problem details: the bearer challenge each 401 carries, and RFC 6749's error on
the routes a stock OAuth 2.0 client calls."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from aiohttp import web

from contract import errors as transport
from contract.oauth import oauth_fields
from domain import errors
from web.problems import problem

INVALID_TOKEN = 'Bearer error="invalid_token"'


@pytest.mark.parametrize(
    ("error", "challenge"),
    [
        (errors.MissingToken, "Bearer"),
        (errors.InvalidToken, INVALID_TOKEN),
        (errors.TokenExpired, INVALID_TOKEN),
        (errors.TokenRevoked, INVALID_TOKEN),
        (errors.TokenReused, INVALID_TOKEN),
        (errors.InvalidCredentials, "Bearer"),
    ],
)
def test_a_401_challenges_with_rfc_6750s_invalid_token_only_when_a_token_was_bad(
    error: type[errors.WardenError], challenge: str
) -> None:
    response = problem(error())

    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == challenge


def test_no_other_failure_challenges() -> None:
    assert "WWW-Authenticate" not in problem(errors.Forbidden()).headers


# --- RFC 6749 5.2's error on the routes a stock OAuth 2.0 client calls ---------------------


def body_of(response: web.Response) -> dict[str, Any]:
    assert isinstance(response.body, bytes)
    decoded: dict[str, Any] = orjson.loads(response.body)
    return decoded


@pytest.mark.parametrize(
    ("error", "oauth"),
    [
        (errors.InvalidCredentials(), "invalid_grant"),
        (errors.InactiveUser(), "invalid_grant"),
        (errors.TooManyAttempts(30), "invalid_grant"),
        (errors.InvalidToken(), "invalid_grant"),
        (errors.TokenExpired(), "invalid_grant"),
        (errors.TokenRevoked(), "invalid_grant"),
        (errors.TokenReused(), "invalid_grant"),
        (transport.UnsupportedGrantType(), "unsupported_grant_type"),
        (errors.ValidationFailed(), "invalid_request"),
        (transport.MalformedJson(), "invalid_request"),
        (transport.UnsupportedMediaType(), "invalid_request"),
        (transport.PayloadTooLarge(), "invalid_request"),
        (transport.IdempotencyKeyReused(), "invalid_request"),
        (transport.IdempotencyKeyInUse(), "invalid_request"),
        (errors.ServiceUnavailable(), "temporarily_unavailable"),
        (errors.UpstreamTimeout(), "temporarily_unavailable"),
        (errors.InternalError(), "server_error"),
        (errors.Forbidden(), "invalid_request"),  # no code of its own: a 4xx by its status
        (transport.MethodNotAllowed(), "invalid_request"),
    ],
    ids=lambda e: e if isinstance(e, str) else e.code,
)
def test_an_oauth_routes_problem_carries_rfc_6749s_error_beside_our_fields(
    error: errors.WardenError, oauth: str
) -> None:
    response = problem(error, oauth=True)

    body = body_of(response)
    assert body["error"] == oauth
    assert body["error_description"] == error.detail
    assert (response.status, body["status"]) == (error.status, error.status)
    assert body["code"] == error.code
    assert response.content_type == "application/problem+json"


def test_a_5xx_without_a_code_of_ours_is_a_server_error() -> None:
    assert oauth_fields({"code": "something_new", "status": 502})["error"] == "server_error"
    assert oauth_fields({"code": "something_new", "status": 500})["error"] == "server_error"
    assert oauth_fields({"code": "something_new", "status": 499})["error"] == "invalid_request"


def test_the_error_description_holds_only_the_characters_rfc_6749_allows() -> None:
    fields = oauth_fields({"code": "x", "status": 400, "detail": 'say "hi" \\ é\x00\x7f ok~'})
    assert fields["error_description"] == "say ?hi? ? ??? ok~"


def test_an_empty_detail_gives_no_error_description() -> None:
    assert oauth_fields({"code": "x", "status": 400, "detail": ""}) == {"error": "invalid_request"}


def test_other_routes_problems_carry_no_oauth_error() -> None:
    body = body_of(problem(errors.InvalidCredentials()))
    assert "error" not in body
    assert "error_description" not in body


def test_mfa_required_carries_its_mfa_token_as_an_extension_member() -> None:
    import orjson

    from contract.wire import Failure, dump

    error = errors.MfaRequired("the-token")
    assert error.as_error()["mfa_token"] == "the-token"
    assert dump(Failure, {"error": error.as_error()})["error"]["mfa_token"] == "the-token"

    response = problem(error)
    assert response.status == 403
    assert response.body is not None
    body = orjson.loads(bytes(response.body))  # type: ignore[arg-type]
    assert (body["code"], body["mfa_token"]) == ("mfa_required", "the-token")
    assert "mfa_token" not in orjson.loads(bytes(problem(errors.Forbidden()).body))  # type: ignore[arg-type]
