"""Errors: each carries its contract code and status, and renders the envelope's error object."""

from __future__ import annotations

import pytest

from contract import errors as transport
from domain import errors
from domain.errors import FieldError, TooManyAttempts, ValidationFailed, WardenError

CONTRACT = [
    (errors.ValidationFailed, 422, "validation_error"),
    (transport.MalformedJson, 400, "malformed_json"),
    (transport.MalformedMessage, 422, "malformed_message"),
    (errors.EmailTaken, 409, "email_taken"),
    (errors.UsernameTaken, 409, "username_taken"),
    (errors.InvalidCredentials, 401, "invalid_credentials"),
    (errors.InactiveUser, 403, "inactive_user"),
    (errors.TooManyAttempts, 429, "too_many_attempts"),
    (errors.WrongPassword, 400, "wrong_password"),
    (errors.MissingToken, 401, "missing_token"),
    (errors.InvalidToken, 401, "invalid_token"),
    (errors.TokenExpired, 401, "token_expired"),
    (errors.TokenRevoked, 401, "token_revoked"),
    (errors.TokenReused, 401, "token_reused"),
    (transport.UnsupportedGrantType, 400, "unsupported_grant_type"),
    (errors.Forbidden, 403, "forbidden"),
    (errors.UserNotFound, 404, "user_not_found"),
    (errors.LastSuperuser, 409, "last_superuser"),
    (errors.SessionNotFound, 404, "session_not_found"),
    (transport.NotFound, 404, "not_found"),
    (transport.MethodNotAllowed, 405, "method_not_allowed"),
    (transport.IdempotencyKeyReused, 422, "idempotency_key_reused"),
    (transport.IdempotencyKeyInUse, 409, "idempotency_key_in_use"),
    (transport.PayloadTooLarge, 413, "payload_too_large"),
    (transport.UnsupportedMediaType, 415, "unsupported_media_type"),
    (errors.UpstreamTimeout, 504, "upstream_timeout"),
    (errors.ServiceUnavailable, 503, "service_unavailable"),
    (errors.InternalError, 500, "internal_error"),
    # v2, CONTRACT §7
    (errors.InvalidEmailToken, 400, "invalid_email_token"),
    (errors.EmailNotVerified, 403, "email_not_verified"),
]


@pytest.mark.parametrize(("error", "status", "code"), CONTRACT)
def test_each_error_carries_the_contracts_status_and_code(
    error: type[WardenError], status: int, code: str
) -> None:
    assert (error.status, error.code) == (status, code)
    assert issubclass(error, WardenError)


def test_every_contract_code_has_exactly_one_error() -> None:
    codes = [code for _, _, code in CONTRACT]

    assert len(codes) == len(set(codes)) == 30


def test_bearer_failures_share_one_base_for_www_authenticate() -> None:
    bearer = {errors.MissingToken, errors.InvalidToken, errors.TokenExpired}
    bearer |= {errors.TokenRevoked, errors.TokenReused}

    for error, _, _ in CONTRACT:
        assert issubclass(error, errors.BearerError) == (error in bearer)


def test_an_error_renders_status_code_title_and_default_detail() -> None:
    assert errors.EmailTaken().as_error() == {
        "status": 409,
        "code": "email_taken",
        "title": "Email taken",
        "detail": "A user with this email already exists.",
    }


def test_an_error_takes_a_detail_of_its_own() -> None:
    error = errors.InvalidToken("The Authorization header must be 'Bearer <access token>'.")

    assert error.as_error()["detail"] == error.detail == str(error)
    assert error.detail.startswith("The Authorization header")


def test_a_validation_error_lists_its_field_errors() -> None:
    error = ValidationFailed(
        [
            FieldError(("body", "email"), "not an email", "value_error"),
            FieldError(("body", 0), "x", "t"),
        ]
    )

    assert error.as_error() == {
        "status": 422,
        "code": "validation_error",
        "title": "Validation error",
        "detail": "The request is not valid.",
        "errors": [
            {"loc": ["body", "email"], "msg": "not an email", "type": "value_error"},
            {"loc": ["body", 0], "msg": "x", "type": "t"},
        ],
    }


def test_a_validation_error_without_field_errors_names_the_body() -> None:
    assert ValidationFailed(detail="Bad query.").as_error()["errors"] == [
        {"loc": ["body"], "msg": "Bad query.", "type": "value_error"}
    ]


@pytest.mark.parametrize(
    "error", [error for error, status, _ in CONTRACT if status == 422], ids=lambda e: e.__name__
)
def test_every_422_names_at_least_one_input_from_the_callers_side(
    error: type[WardenError],
) -> None:
    rendered = error().as_error()

    assert rendered["errors"], rendered
    assert all(e["loc"][0] in ("body", "header") for e in rendered["errors"]), rendered


def test_a_reused_idempotency_key_names_the_header() -> None:
    assert transport.IdempotencyKeyReused().as_error()["errors"] == [
        {
            "loc": ["header", "idempotency-key"],
            "msg": "This Idempotency-Key was used with a different request body.",
            "type": "idempotency_key_reused",
        }
    ]


def test_too_many_attempts_carries_retry_after() -> None:
    error = TooManyAttempts(42)

    assert error.as_error() == {
        "status": 429,
        "code": "too_many_attempts",
        "title": "Too many attempts",
        "detail": "Too many failed logins; try again later.",
        "retry_after": 42,
    }


@pytest.mark.parametrize(("given", "kept"), [(0, 1), (-5, 1), (0.4, 1), (42.1, 43), (900, 900)])
def test_retry_after_is_a_whole_number_of_seconds_and_at_least_one(given: float, kept: int) -> None:
    assert TooManyAttempts(given).retry_after == kept  # type: ignore[arg-type]


def test_other_errors_carry_no_retry_after_or_errors() -> None:
    error = errors.InvalidCredentials().as_error()

    assert "retry_after" not in error
    assert "errors" not in error


def test_an_unexpected_error_names_no_internals() -> None:
    assert WardenError().as_error() == {
        "status": 500,
        "code": "internal_error",
        "title": "Internal error",
        "detail": "An unexpected error occurred.",
    }
