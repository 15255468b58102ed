"""What the worker makes of a request body: refused text, JSON limits, and where errors point."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from contract.catalog import RPC
from contract.errors import MalformedMessage
from contract.wire import MAX_JSON_DEPTH, LoginRequest, UpdateUserMessage, load_json
from domain.errors import FieldError, ValidationFailed
from handlers.decoding import caller_path, parse, validation_errors

NUL_REFUSED = "text may not contain NUL characters or lone surrogates"
# Every field of every request the worker takes, but the login's (whose any input is a
# wrong password).
FIELDS = [
    (queue, name)
    for queue, spec in RPC.items()
    if spec.request is not LoginRequest
    for name in spec.request.model_fields
]


@pytest.mark.parametrize(("queue", "name"), FIELDS)
@pytest.mark.parametrize("text", ["\x00", "ab\x00cd", "\ud800", "ab\udfffcd"], ids=ascii)
def test_every_field_of_every_request_refuses_text_no_store_can_keep(
    queue: str, name: str, text: str
) -> None:
    data = {name: text}
    with pytest.raises(ValidationError) as refused:
        RPC[queue].request.model_validate(data)

    errors = validation_errors(refused.value, "body", data)
    assert FieldError(("body", name), NUL_REFUSED, "value_error") in errors


def test_a_nul_sent_as_json_is_refused_where_it_was_written() -> None:
    with pytest.raises(ValidationFailed) as refused:
        parse(RPC["warden.users.update_me"].request, b'{"full_name": "Ada\\u0000"}')

    assert refused.value.errors == (FieldError(("body", "full_name"), NUL_REFUSED, "value_error"),)


@pytest.mark.parametrize("text", ["al\x00ice", "\x00", "x" * 4096], ids=len)
def test_a_login_takes_any_name_and_any_password_to_fail_them_as_wrong(text: str) -> None:
    login = LoginRequest.model_validate({"username": text, "password": text + "\ud800" * 100})
    assert (login.username, login.password) == (text, text + "\ud800" * 100)


def test_update_errors_name_the_fields_never_the_validators_of_their_types() -> None:
    body = {"id": 1, "email": "x", "username": "a", "is_active": "maybe"}
    with pytest.raises(ValidationFailed) as refused:
        parse(UpdateUserMessage, json.dumps(body).encode())

    assert [e.loc for e in refused.value.errors] == [
        ("body", "email"),
        ("body", "username"),
        ("body", "is_active"),
    ]


class Unioned(BaseModel):
    value: int | list[int]
    other: str


@pytest.mark.parametrize(
    ("data", "raw", "expected"),
    [
        (
            {"value": "x", "other": "y"},
            [("value", "int"), ("value", "list[int]")],
            [("value",), ("value",)],
        ),
        (
            {"value": [1, "x"], "other": "y"},
            [("value", "int"), ("value", "list[int]", 1)],
            [("value",), ("value", 1)],
        ),
        ({"value": 1}, [("other",)], [("other",)]),  # missing: where it should have been
        ({"value": 1, "other": {"k": 1}}, [("other",)], [("other",)]),
    ],
)
def test_a_location_keeps_only_what_names_the_callers_input(
    data: dict[str, Any], raw: list[tuple[Any, ...]], expected: list[tuple[Any, ...]]
) -> None:
    with pytest.raises(ValidationError) as refused:
        Unioned.model_validate(data)

    errors = refused.value.errors()
    assert [e["loc"] for e in errors] == raw  # as pydantic names them
    assert [caller_path(e["loc"], data, e["type"]) for e in errors] == expected


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def test_json_as_deep_as_the_limit_is_read() -> None:
    assert load_json(nested(MAX_JSON_DEPTH)) == json.loads(nested(MAX_JSON_DEPTH))
    assert load_json(b'{"a": {"b": [1, {"c": null}]}}') == {"a": {"b": [1, {"c": None}]}}


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 300, 100_000])
def test_json_deeper_than_the_limit_is_malformed(depth: int) -> None:
    with pytest.raises(MalformedMessage) as refused:
        parse(RPC["warden.users.register"].request, nested(depth))

    assert refused.value.errors[0].loc == ("body",)


def test_a_lone_surrogate_escape_is_not_json_here() -> None:
    with pytest.raises(ValueError) as refused:
        load_json(b'{"full_name": "\\ud800"}')
    assert str(refused.value) == ""  # nothing of the input is echoed

    with pytest.raises(MalformedMessage) as malformed:
        parse(RPC["warden.users.register"].request, b'{"full_name": "\\ud800"}')
    assert malformed.value.as_error()["errors"] == [
        {
            "loc": ["body"],
            "msg": "The message body is not valid UTF-8 JSON.",
            "type": "json_invalid",
        }
    ]
