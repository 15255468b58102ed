"""Subscribers of the user and audit queues."""

from __future__ import annotations

from typing import Any

from faststream.rabbit import RabbitRouter

from contract.wire import (
    AuditListQuery,
    ChangePasswordRequest,
    Empty,
    ListUsersQuery,
    RegisterRequest,
    UpdateMeRequest,
    UpdateUserMessage,
    UserIdMessage,
)
from domain.accounts import ChangePassword, RegisterUser
from domain.errors import FieldError, ValidationFailed
from domain.listing import AuditQuery, Sort, UserKey, UserQuery
from domain.model import User, UserChanges
from handlers.deps import WorkerDeps
from handlers.envelope import Call, no_content
from handlers.views import audit_page_body, user_body, user_page_body


def changes_of(body: UpdateMeRequest, *, exclude: set[str] | None = None) -> UserChanges:
    """Only the fields the caller sent; `null` is a value only for full_name (it clears it)."""
    given = body.model_dump(exclude_unset=True, exclude=exclude)
    refused_nulls = [k for k, v in given.items() if v is None and k != "full_name"]
    if refused_nulls:
        raise ValidationFailed(
            [FieldError(("body", k), "may not be null", "none_forbidden") for k in refused_nulls]
        )
    return UserChanges(**given)


def router(deps: WorkerDeps) -> RabbitRouter:
    r = RabbitRouter()
    auth, accounts, cursors = deps.auth, deps.accounts, deps.cursors

    @deps.rpc(r, "warden.users.register", bcrypt=True, reply=user_body, changes=True)
    async def register(call: Call[RegisterRequest]) -> User:
        """Register a new user (anyone)."""
        b = call.body
        return await accounts.using(call.units).register(
            RegisterUser(str(b.email), b.username, b.password, b.full_name, call.origin)
        )

    @deps.rpc(r, "warden.users.me", reply=user_body)
    async def me(call: Call[Empty]) -> User:
        """The caller's own user (bearer)."""
        return (await auth.authenticate(call.authorization)).user

    @deps.rpc(r, "warden.users.update_me", reply=user_body, changes=True)
    async def update_me(call: Call[UpdateMeRequest]) -> User:
        """Change the caller's email, username or full name (bearer)."""
        principal = await auth.authenticate(call.authorization)
        return await accounts.using(call.units).update_me(principal, changes_of(call.body))

    @deps.rpc(r, "warden.users.change_password", bcrypt=True, reply=no_content, changes=True)
    async def change_password(call: Call[ChangePasswordRequest]) -> None:
        """Change the caller's password; the caller's other sessions end (bearer)."""
        principal = await auth.authenticate(call.authorization)
        b = call.body
        await accounts.using(call.units).change_password(
            principal, ChangePassword(b.current_password, b.new_password)
        )

    @deps.rpc(r, "warden.users.list")
    async def list_users(call: Call[ListUsersQuery]) -> dict[str, Any]:
        """A page of users, keyset-paged, filtered and sorted (superuser)."""
        principal = await auth.authenticate(call.authorization)
        b = call.body
        query = UserQuery(b.limit, Sort.parse(b.sort), b.q or None, b.is_active, b.is_superuser)
        if b.cursor:
            value, last_id = cursors.decode(b.cursor, query.fingerprint())
            query = UserQuery(**(query.__dict__ | {"after": UserKey(value, last_id)}))
        page = await accounts.list_users(principal, query)
        return user_page_body(page, cursors, query.fingerprint())

    @deps.rpc(r, "warden.users.get", reply=user_body)
    async def get_user(call: Call[UserIdMessage]) -> User:
        """One user by id (superuser, or the user itself)."""
        principal = await auth.authenticate(call.authorization)
        return await accounts.get_user(principal, call.body.id)

    @deps.rpc(r, "warden.users.update", reply=user_body, changes=True)
    async def update_user(call: Call[UpdateUserMessage]) -> User:
        """Change any user, including is_active and is_superuser (superuser)."""
        principal = await auth.authenticate(call.authorization)
        changes = changes_of(call.body, exclude={"id"})
        return await accounts.using(call.units).update_user(principal, call.body.id, changes)

    @deps.rpc(r, "warden.users.delete", reply=no_content, changes=True)
    async def delete_user(call: Call[UserIdMessage]) -> None:
        """Delete a user; its sessions end at once (superuser)."""
        principal = await auth.authenticate(call.authorization)
        await accounts.using(call.units).delete_user(principal, call.body.id)

    @deps.rpc(r, "warden.audit.list")
    async def list_audit(call: Call[AuditListQuery]) -> dict[str, Any]:
        """A page of the audit log, newest first (superuser)."""
        principal = await auth.authenticate(call.authorization)
        b = call.body
        query = AuditQuery(b.limit, b.user_id, b.type)
        if b.cursor:
            query = AuditQuery(
                b.limit, b.user_id, b.type, cursors.decode(b.cursor, query.fingerprint())
            )
        page = await accounts.list_audit(principal, query)
        return audit_page_body(page, cursors, query.fingerprint())

    return r
