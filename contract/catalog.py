"""The catalogue of RPC queues: request and reply model of each, once.

The subscribers take their request model from here, and both interface documents (the
AsyncAPI document of the worker, the OpenAPI document of the edge) are generated from it.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from contract import wire


@dataclass(frozen=True)
class RpcSpec:
    request: type[BaseModel]
    reply: type[BaseModel] | None  # None: the reply's data is null (HTTP 204)
    caller: str  # who may call, as the contract says


RPC: dict[str, RpcSpec] = {
    "warden.users.register": RpcSpec(wire.RegisterRequest, wire.UserOut, "anyone"),
    "warden.auth.login": RpcSpec(wire.LoginRequest, wire.TokenPairOut, "anyone"),
    "warden.auth.refresh": RpcSpec(wire.RefreshRequest, wire.TokenPairOut, "anyone"),
    "warden.auth.logout": RpcSpec(wire.Empty, None, "bearer"),
    "warden.auth.introspect": RpcSpec(wire.IntrospectRequest, wire.IntrospectionOut, "any service"),
    "warden.users.me": RpcSpec(wire.Empty, wire.UserOut, "bearer"),
    "warden.users.update_me": RpcSpec(wire.UpdateMeRequest, wire.UserOut, "bearer"),
    "warden.users.change_password": RpcSpec(wire.ChangePasswordRequest, None, "bearer"),
    "warden.users.list": RpcSpec(wire.ListUsersQuery, wire.UserPageOut, "superuser"),
    "warden.users.get": RpcSpec(wire.UserIdMessage, wire.UserOut, "superuser or self"),
    "warden.users.update": RpcSpec(wire.UpdateUserMessage, wire.UserOut, "superuser"),
    "warden.users.delete": RpcSpec(wire.UserIdMessage, None, "superuser"),
    "warden.audit.list": RpcSpec(wire.AuditListQuery, wire.AuditPageOut, "superuser"),
    "warden.ping": RpcSpec(wire.Empty, wire.PingOut, "the edge's readiness check"),
}
