"""Entities, partial updates and the CloudEvents form of domain events."""

from __future__ import annotations

import typing
from datetime import UTC, datetime, timedelta, timezone

from contract.events import SessionRevokedData
from contract.events import cloudevent as to_cloudevent
from contract.wire import UserOut, dump, rfc3339
from domain import events
from domain.events import Event
from domain.model import EndedSession, RevokeReason, TokenPair, User, UserChanges

WHEN = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
ALICE = User(7, "alice@example.com", "alice", "hashed:secret", None, True, False, WHEN, WHEN)


def test_a_partial_update_holds_only_the_fields_given() -> None:
    assert UserChanges(full_name=None).as_dict() == {"full_name": None}  # None clears, not skips
    assert UserChanges(email="a@b.io", is_active=False).as_dict() == {
        "email": "a@b.io",
        "is_active": False,
    }


def test_an_empty_update_is_falsy_and_changes_nothing() -> None:
    assert not UserChanges()
    assert UserChanges(is_superuser=False)
    assert ALICE.with_changes(UserChanges()) == ALICE


def test_an_update_applies_to_a_user_as_a_new_value() -> None:
    changed = ALICE.with_changes(UserChanges(username="alicia", is_superuser=True))

    assert (changed.username, changed.is_superuser, changed.email) == (
        "alicia",
        True,
        ALICE.email,
    )
    assert ALICE.username == "alice"


def test_only_an_active_superuser_counts_as_one() -> None:
    assert ALICE.with_changes(UserChanges(is_superuser=True)).is_active_superuser
    inactive = UserChanges(is_superuser=True, is_active=False)
    assert not ALICE.with_changes(inactive).is_active_superuser
    assert not ALICE.is_active_superuser


def test_secrets_stay_out_of_reprs() -> None:
    pair = TokenPair("access-secret", "refresh-secret", 1800, 604800)

    assert "hashed:secret" not in repr(ALICE)
    assert "secret" not in repr(pair)
    assert "secret" not in repr(UserChanges(hashed_password="hashed:secret"))


def test_times_are_written_in_utc_with_a_z() -> None:
    plus_two = timezone(timedelta(hours=2))

    assert rfc3339(WHEN) == "2026-01-01T12:00:00Z"
    assert rfc3339(datetime(2026, 1, 1, 14, 0, tzinfo=plus_two)) == "2026-01-01T12:00:00Z"


def test_a_user_view_is_the_contracts_user_object() -> None:
    assert dump(UserOut, ALICE.view()) == {
        "id": 7,
        "email": "alice@example.com",
        "username": "alice",
        "full_name": None,
        "is_active": True,
        "is_superuser": False,
        "created_at": "2026-01-01T12:00:00Z",
        "updated_at": "2026-01-01T12:00:00Z",
        "is_verified": False,
    }


def test_the_event_types_are_the_contracts() -> None:
    assert set(events.EVENT_TYPES) == {
        "user.registered",
        "user.updated",
        "user.deleted",
        "user.password_changed",
        "user.logged_in",
        "user.logged_out",
        "user.login_failed",
        "user.token_reuse_detected",
        "signing_keys.changed",
        "user.mfa_enabled",
        "user.mfa_disabled",
        "user.verification_requested",
        "user.verified",
        "user.password_reset_requested",
        "user.password_reset",
        "user.email_changed",
        "session.revoked",
    }


def test_every_event_has_its_own_id() -> None:
    first = Event(events.USER_UPDATED, WHEN, ALICE.view())
    second = Event(events.USER_UPDATED, WHEN, ALICE.view())

    assert first.id != second.id


def test_an_event_about_a_user_is_a_cloudevent_with_a_subject() -> None:
    extra = {"session_id": "s1", "amr": ["pwd", "otp"]}
    event = Event(events.USER_LOGGED_IN, WHEN, ALICE.view(), extra)

    assert to_cloudevent(event, request_id="req-1") == {
        "specversion": "1.0",
        "id": event.id,
        "source": "warden",
        "type": "user.logged_in",
        "time": "2026-01-01T12:00:00Z",
        "subject": "7",
        "datacontenttype": "application/json",
        "data": {"user": dump(UserOut, ALICE.view()), "session_id": "s1", "amr": ["pwd", "otp"]},
        "requestid": "req-1",
    }


def test_an_event_about_no_user_has_no_subject_and_a_null_user() -> None:
    event = Event(events.USER_LOGIN_FAILED, WHEN, None, {"reason": "invalid_credentials"})

    cloudevent = to_cloudevent(event)

    assert "subject" not in cloudevent
    assert "requestid" not in cloudevent
    assert cloudevent["data"] == {"user": None, "reason": "invalid_credentials"}
    assert (event.subject, event.user_id) == (None, None)


def test_a_session_revoked_event_carries_the_session_not_the_user() -> None:
    ended = EndedSession("s1", 7, datetime(2026, 1, 1, 12, 30, tzinfo=UTC))
    event = events.session_revoked(ended, RevokeReason.LOGOUT, WHEN)

    cloudevent = to_cloudevent(event)

    assert cloudevent["type"] == "session.revoked"
    assert cloudevent["subject"] == "7"
    assert event.user_id == 7
    assert cloudevent["data"] == {
        "session_id": "s1",
        "user_id": 7,
        "reason": "logout",
        "expires_at": "2026-01-01T12:30:00Z",
    }


def test_a_session_ends_once_so_its_event_has_one_id_whatever_ended_it() -> None:
    ended = EndedSession("s1", 7, WHEN)
    other = EndedSession("s2", 7, WHEN)

    first = events.session_revoked(ended, RevokeReason.LOGOUT, WHEN)
    again = events.session_revoked(ended, RevokeReason.ADMIN, WHEN)

    assert first.id == again.id != events.session_revoked(other, RevokeReason.LOGOUT, WHEN).id


def test_every_reason_a_session_ends_for_is_one_the_event_documents() -> None:
    documented = SessionRevokedData.model_fields["reason"].annotation
    assert set(typing.get_args(documented)) == {r.value for r in RevokeReason}
