"""Domain objects to reply bodies, each written through the catalogue's reply model."""

from __future__ import annotations

from typing import Any

from contract.wire import (
    AuditPageOut,
    IntrospectionOut,
    SessionListOut,
    TokenPairOut,
    UserOut,
    UserPageOut,
    dump,
)
from domain.listing import AuditPage, CursorCodec, UserPage
from domain.model import Introspection, TokenPair, User, UserView
from domain.sessions import SessionEntry


def user_body(user: User | UserView) -> dict[str, Any]:
    return dump(UserOut, user)  # read from its attributes: the password hash is no field


def token_body(pair: TokenPair) -> dict[str, Any]:
    return dump(TokenPairOut, pair)


def introspection_body(result: Introspection) -> dict[str, Any]:
    if not result.active or result.claims is None or result.user is None:
        return dump(IntrospectionOut, {"active": False})
    return dump(
        IntrospectionOut,
        {
            "active": True,
            "sub": str(result.user.id),
            "sid": result.claims.session_id,
            "username": result.user.username,
            "is_superuser": result.user.is_superuser,
            "exp": result.claims.expires_at,
            "iat": result.claims.issued_at,
        },
    )


def user_page_body(page: UserPage, codec: CursorCodec, fingerprint: str) -> dict[str, Any]:
    cursor = None
    if page.next_key is not None:
        cursor = codec.encode(fingerprint, [page.next_key.value, page.next_key.id])
    return dump(UserPageOut, {"items": page.items, "next_cursor": cursor})


def audit_page_body(page: AuditPage, codec: CursorCodec, fingerprint: str) -> dict[str, Any]:
    cursor = None if page.next_after is None else codec.encode(fingerprint, page.next_after)
    return dump(AuditPageOut, {"items": page.items, "next_cursor": cursor})


def session_list_body(entries: list[SessionEntry]) -> dict[str, Any]:
    items = [
        {
            "id": e.session.id,
            "created_at": e.session.created_at,
            "last_used_at": e.session.last_used_at,
            "ip": e.session.ip,
            "user_agent": e.session.user_agent,
            "current": e.current,
        }
        for e in entries
    ]
    return dump(SessionListOut, {"items": items})
