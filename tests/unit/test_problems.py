"""The edge's problem details: the bearer challenge each 401 carries."""

from __future__ import annotations

import pytest

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
