"""Domain objects to reply bodies (JSON-ready dicts)."""

from __future__ import annotations

from typing import Any

from domain.listing import AuditPage, CursorCodec, UserPage
from domain.model import Introspection, TokenPair, User, rfc3339


def user_body(user: User) -> dict[str, Any]:
    return user.view().to_dict()


def token_body(pair: TokenPair) -> dict[str, Any]:
    return {
        "access_token": pair.access_token,
        "refresh_token": pair.refresh_token,
        "token_type": pair.token_type,
        "expires_in": pair.expires_in,
        "refresh_expires_in": pair.refresh_expires_in,
    }


def introspection_body(result: Introspection) -> dict[str, Any]:
    if not result.active or result.claims is None or result.user is None:
        return {"active": False}
    return {
        "active": True,
        "sub": str(result.user.id),
        "sid": result.claims.session_id,
        "username": result.user.username,
        "is_superuser": result.user.is_superuser,
        "exp": result.claims.expires_at,
        "iat": result.claims.issued_at,
    }


def user_page_body(page: UserPage, codec: CursorCodec, fingerprint: str) -> dict[str, Any]:
    cursor = None
    if page.next_key is not None:
        cursor = codec.encode(fingerprint, [page.next_key.value, page.next_key.id])
    return {"items": [user_body(u) for u in page.items], "next_cursor": cursor}


def audit_page_body(page: AuditPage, codec: CursorCodec, fingerprint: str) -> dict[str, Any]:
    items = [
        {
            "id": e.id,
            "event_id": e.event_id,
            "type": e.type,
            "user_id": e.user_id,
            "time": rfc3339(e.time),
            "data": e.data,
        }
        for e in page.items
    ]
    cursor = None if page.next_after is None else codec.encode(fingerprint, page.next_after)
    return {"items": items, "next_cursor": cursor}
