"""Replies and events are written through their wire models: what leaves is what they say."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from contract.events import EVENT_DATA, cloudevent
from contract.wire import UserOut, dump
from domain import events
from domain.events import Event
from domain.listing import AuditEntry, AuditPage, CursorCodec, UserPage
from domain.model import AccessClaims, Introspection, TokenPair, User
from handlers.views import (
    audit_page_body,
    introspection_body,
    token_body,
    user_body,
    user_page_body,
)

PLUS_TWO = timezone(timedelta(hours=2))
WHEN = datetime(2026, 1, 1, 14, 0, 0, 250000, tzinfo=PLUS_TWO)
ALICE = User(7, "alice@example.com", "alice", "hashed:secret", None, True, False, WHEN, WHEN)
CODEC = CursorCodec(b"k" * 32)


def test_a_user_is_written_without_its_hash_and_in_utc() -> None:
    body = user_body(ALICE)

    assert set(body) == set(UserOut.model_fields)
    assert "hashed:secret" not in str(body)
    assert body["created_at"] == "2026-01-01T12:00:00.250000Z"


def test_a_token_pair_is_written_as_the_contracts_token_pair() -> None:
    assert token_body(TokenPair("a", "r", 1800, 604800)) == {
        "access_token": "a",
        "refresh_token": "r",
        "token_type": "bearer",
        "expires_in": 1800,
        "refresh_expires_in": 604800,
    }


def test_an_inactive_token_is_introspected_as_active_false_and_nothing_else() -> None:
    assert introspection_body(Introspection(active=False)) == {"active": False}


def test_an_active_token_is_introspected_with_every_member() -> None:
    claims = AccessClaims(7, "s1", "t1", 100, 200)

    assert introspection_body(Introspection(True, claims, ALICE)) == {
        "active": True,
        "sub": "7",
        "sid": "s1",
        "username": "alice",
        "is_superuser": False,
        "exp": 200,
        "iat": 100,
    }


def test_pages_are_written_item_by_item_through_the_item_model() -> None:
    users = user_page_body(UserPage([ALICE], None), CODEC, "fp")
    entry = AuditEntry(1, "e1", events.USER_REGISTERED, 7, WHEN, {"user": None})
    audit = audit_page_body(AuditPage([entry], 1), CODEC, "fp")

    assert users == {"items": [user_body(ALICE)], "next_cursor": None}
    assert audit["items"] == [
        {
            "id": 1,
            "event_id": "e1",
            "type": "user.registered",
            "user_id": 7,
            "time": "2026-01-01T12:00:00.250000Z",
            "data": {"user": None},
        }
    ]
    assert CODEC.decode(audit["next_cursor"], "fp") == 1


def test_a_reply_member_no_model_names_is_refused_not_dropped() -> None:
    with pytest.raises(ValidationError):
        dump(UserOut, user_body(ALICE) | {"hashed_password": "x"})


def test_an_event_member_no_data_model_names_is_refused_not_dropped() -> None:
    event = Event(events.USER_LOGGED_OUT, WHEN, ALICE.view(), {"session_id": "s", "token": "t"})

    with pytest.raises(ValidationError):
        cloudevent(event)


def test_an_event_leaves_out_what_it_does_not_have_rather_than_writing_null() -> None:
    lockout = {"reason": "too_many_attempts", "attempts": 10, "limited_by": "account"}
    locked = Event(events.USER_LOGIN_FAILED, WHEN, None, lockout)
    logged_in = Event(
        events.USER_LOGGED_IN, WHEN, ALICE.view(), {"session_id": "s", "amr": ["pwd"]}
    )

    assert cloudevent(locked)["data"] == {"user": None, **lockout}
    assert cloudevent(logged_in)["data"] == {
        "user": user_body(ALICE),
        "session_id": "s",
        "amr": ["pwd"],
    }
    assert cloudevent(logged_in, "")["time"] == "2026-01-01T12:00:00.250000Z"
    assert "requestid" not in cloudevent(logged_in, "")


def test_every_event_type_of_the_domain_has_its_data_model() -> None:
    assert set(EVENT_DATA) == set(events.EVENT_TYPES)
