"""Keyset paging: queries, pages and the opaque, signed cursor."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from domain.errors import FieldError, ValidationFailed
from domain.model import User

SORT_KEYS = ("created_at", "username", "email")
DEFAULT_SORT = "-created_at"
DEFAULT_LIMIT = 20
MAX_LIMIT = 100


@dataclass(frozen=True)
class Sort:
    """A sort key and direction; ties are broken by id in the same direction."""

    key: str
    descending: bool

    @classmethod
    def parse(cls, text: str) -> Sort:
        descending = text.startswith("-")
        key = text[1:] if descending else text
        if key not in SORT_KEYS:
            raise ValueError(
                f"sort must be one of {', '.join(SORT_KEYS)}, optionally prefixed by '-'"
            )
        return cls(key, descending)

    def __str__(self) -> str:
        return ("-" if self.descending else "") + self.key


@dataclass(frozen=True)
class UserKey:
    """Where a page ended: the sort key's value and the id."""

    value: str
    id: int


@dataclass(frozen=True)
class UserQuery:
    """A page of the user listing."""

    limit: int = DEFAULT_LIMIT
    sort: Sort = field(default_factory=lambda: Sort.parse(DEFAULT_SORT))
    q: str | None = None
    is_active: bool | None = None
    is_superuser: bool | None = None
    after: UserKey | None = None

    def fingerprint(self) -> str:
        """What a cursor is bound to: the same sort and filters."""
        return json.dumps([str(self.sort), self.q, self.is_active, self.is_superuser])


def sort_value(user: User, key: str) -> str:
    """The keyset value of `user` for sort `key`, as stored in a cursor."""
    if key == "created_at":
        return user.created_at.isoformat()
    return str(getattr(user, key)).lower()


@dataclass(frozen=True)
class UserPage:
    items: list[User]
    next_key: UserKey | None


@dataclass(frozen=True)
class AuditEntry:
    id: int
    event_id: str
    type: str
    user_id: int | None
    time: datetime
    data: dict[str, Any]


@dataclass(frozen=True)
class AuditQuery:
    limit: int = DEFAULT_LIMIT
    user_id: int | None = None
    type: str | None = None
    after: int | None = None

    def fingerprint(self) -> str:
        return json.dumps(["audit", self.user_id, self.type])


@dataclass(frozen=True)
class AuditPage:
    items: list[AuditEntry]
    next_after: int | None


class CursorCodec:
    """Encodes page positions as opaque tokens signed with HMAC, so a forged one is refused."""

    def __init__(self, secret: bytes) -> None:
        self._key = hashlib.sha256(b"warden-cursor:" + secret).digest()

    def encode(self, fingerprint: str, position: Any) -> str:
        payload = json.dumps([fingerprint, position], separators=(",", ":")).encode()
        mac = hmac.new(self._key, payload, hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(mac + payload).decode().rstrip("=")

    def decode(self, cursor: str, fingerprint: str) -> Any:
        """The position in `cursor`; ValidationFailed if forged, garbled or for another query."""
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
            mac, payload = raw[:16], raw[16:]
            expected = hmac.new(self._key, payload, hashlib.sha256).digest()[:16]
            if not hmac.compare_digest(mac, expected):
                raise ValueError("bad signature")
            bound_to, position = json.loads(payload)
        except (ValueError, binascii.Error, TypeError):
            raise _bad_cursor("cursor is not valid") from None
        if bound_to != fingerprint:
            raise _bad_cursor("cursor belongs to another query")
        return position


def _bad_cursor(msg: str) -> ValidationFailed:
    # Where an RPC caller wrote it; the edge says "query" for a cursor of a query string.
    return ValidationFailed([FieldError(("body", "cursor"), msg, "value_error")])
