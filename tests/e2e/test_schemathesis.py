"""Schemathesis against a live edge and worker: every operation of the OpenAPI document the
edge serves, with valid tokens where a route takes one. No 5xx, and every response is one
the document describes (status, content type, headers, body schema)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err, Ok
from schemathesis.errors import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from contract.routes import ID, ROUTES, SID
from domain.model import NewUser
from tests.conftest import PASSWORD, unique
from tests.conftest import fresh_ip as client_address

Operation = schemathesis.APIOperation[Any, Any, Any, Any]

API = "/api/v1"
FORM = "application/x-www-form-urlencoded"
MAX_EXAMPLES = 10
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# Bearer routes about the caller itself; every other route with a security requirement is
# the superuser's, and is run with a superuser's token.
OWN_ROUTES = {
    "auth_logout",
    "users_me",
    "users_update_me",
    "users_change_password",
    "sessions_list",
    "sessions_revoke",
    "sessions_revoke_others",
}
# Cases of these may leave the caller's token useless (logged out, renamed, demoted, deleted).
MUTATE_CALLER = {
    "auth_logout",
    "users_update_me",
    "users_change_password",
    "users_update",
    "users_delete",
    "sessions_revoke",  # its own session's id is one a case could name
    "users_revoke_sessions",  # the superuser's own id is one a case could name
}


class Identities:
    """A user and a superuser with a token valid for the next case.

    A case may log its caller out, change its password or name, demote, deactivate or delete
    it: after such a case, or a 401/403, the token is checked again and, where it no longer
    serves, replaced by a new login, or by a new account.
    """

    def __init__(self, edge_url: str, worker: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.edge_url = edge_url
        self.worker = worker
        self.loop = loop
        self.http = requests.Session()
        self.http.headers["X-Forwarded-For"] = client_address()  # a login-failure count of its own
        self.names: dict[str, str] = {}
        self.tokens: dict[str, str] = {}
        self.stale: set[str] = set()

    def token(self, role: str) -> str:
        token = self.tokens.get(role)
        if token is not None and role not in self.stale:
            return token
        if token is None or not self._serves(role, token):
            token = self._login(self.names[role]) if role in self.names else None
            if token is None or not self._serves(role, token):
                self.names[role] = self._create(role)
                token = self._login(self.names[role])
                assert token is not None, f"a new {role} cannot log in"
        self.tokens[role] = token
        self.stale.discard(role)
        return token

    def _login(self, name: str) -> str | None:
        body = {"username": name, "password": PASSWORD}
        reply = self.http.post(f"{self.edge_url}{API}/auth/login", json=body, timeout=10)
        return str(reply.json()["access_token"]) if reply.status_code == 200 else None

    def _serves(self, role: str, token: str) -> bool:
        headers = {"Authorization": f"Bearer {token}"}
        reply = self.http.get(f"{self.edge_url}{API}/users/me", headers=headers, timeout=10)
        if reply.status_code != 200:
            return False
        return role != "superuser" or bool(reply.json()["is_superuser"])

    def _create(self, role: str) -> str:
        name = unique("st")
        if role == "superuser":
            future = asyncio.run_coroutine_threadsafe(self._superuser(name), self.loop)
            future.result(timeout=10)
        else:
            body = {"email": f"{name}@example.com", "username": name, "password": PASSWORD}
            reply = self.http.post(f"{self.edge_url}{API}/users", json=body, timeout=10)
            assert reply.status_code == 201, reply.text
        return name

    async def _superuser(self, name: str) -> None:
        hashed = await self.worker.hasher.hash(PASSWORD)
        await self.worker.accounts.create(
            NewUser(f"{name}@example.com", name, hashed, is_superuser=True)
        )


def role_of(operation: Operation) -> str | None:
    definition = operation.definition.raw
    if not definition.get("security"):
        return None
    return "user" if definition.get("operationId") in OWN_ROUTES else "superuser"


@dataclass
class Findings:
    failures: list[str] = field(default_factory=list)
    statuses: dict[str, Counter[int]] = field(default_factory=dict)


def exercise(
    operation: Operation,
    mode: GenerationMode,
    identities: Identities,
    findings: Findings,
) -> None:
    """Run the operation's cases; the first failure is kept, shortened."""
    role = role_of(operation)
    mutates_caller = operation.definition.raw.get("operationId") in MUTATE_CALLER
    client_ip = client_address()  # the cases' own address: their failed logins lock out only it
    statuses = findings.statuses.setdefault(operation.label, Counter())

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,  # the same cases on every run: a red CI run can be replayed
        phases=[Phase.explicit, Phase.generate],  # no shrinking: the first failure is enough
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case[Operation]) -> None:
        headers = {"X-Forwarded-For": client_ip}
        if role is not None:
            headers["Authorization"] = f"Bearer {identities.token(role)}"
        response = case.call(base_url=identities.edge_url, headers=headers, timeout=10)
        statuses[response.status_code] += 1
        if role is not None and (mutates_caller or response.status_code in (401, 403)):
            identities.stale.add(role)
        case.validate_response(response, checks=CHECKS, headers=headers)

    try:
        run()
    except Unsatisfiable:  # nothing to make invalid: an operation without parameters or body
        pass
    except (FailureGroup, Exception) as exc:
        findings.failures.append(f"{operation.label} [{mode.value}]: {str(exc)[:3000]}")


def run_schemathesis(edge_url: str, identities: Identities) -> tuple[list[str], Findings]:
    schema = schemathesis.openapi.from_url(f"{edge_url}{API}/openapi.json", timeout=10)
    results = list(schema.get_all_operations())
    invalid = [str(result.err()) for result in results if isinstance(result, Err)]
    assert not invalid, f"operations the document describes wrongly: {invalid}"
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    findings = Findings()
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            exercise(operation, mode, identities, findings)
    return [op.label for op in operations if role_of(op)], findings


async def test_schemathesis_finds_no_server_error_and_no_response_outside_the_document(
    edge_url: str, worker: Any
) -> None:
    identities = Identities(edge_url, worker, asyncio.get_running_loop())
    with contextlib.closing(identities.http):
        # requests blocks, and the edge and the worker run on this loop: schemathesis gets a
        # thread of its own.
        bearer, findings = await asyncio.to_thread(run_schemathesis, edge_url, identities)
    assert not findings.failures, "\n\n".join(findings.failures)
    expected = {f"{r.method} {r.path.replace(ID, '{id}').replace(SID, '{sid}')}" for r in ROUTES}
    assert expected <= set(findings.statuses), "an operation of the contract was not exercised"
    # The tokens worked: every bearer operation got past authentication at least once.
    refused = [op for op in bearer if not set(findings.statuses[op]) - {401, 403}]
    assert not refused, f"only 401/403 for {refused}: {findings.statuses}"


class Walk:
    """Chosen valid requests, validated by the same checks: every success reply is seen."""

    def __init__(self, edge_url: str, schema: Any) -> None:
        self.edge_url = edge_url
        self.schema = schema
        self.client_ip = client_address()

    def __call__(
        self, method: str, path: str, status: int, token: str | None = None, **parts: Any
    ) -> Any:
        headers = {"X-Forwarded-For": self.client_ip}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if "body" in parts:
            parts.setdefault("media_type", "application/json")
        case = self.schema[path][method].Case(**parts)
        response = case.call(base_url=self.edge_url, headers=headers, timeout=10)
        case.validate_response(response, checks=CHECKS, headers=headers)
        assert response.status_code == status, (method, path, response.text)
        return response.json() if response.content else None


def walk_every_operation(edge_url: str, identities: Identities) -> None:
    schema = schemathesis.openapi.from_url(f"{edge_url}{API}/openapi.json", timeout=10)
    call = Walk(edge_url, schema)
    root = identities.token("superuser")
    name = unique("walk")
    body = {"email": f"{name}@example.com", "username": name, "password": PASSWORD}
    user = call("POST", "/api/v1/users", 201, body=body)
    call("POST", "/api/v1/users", 409, body=body)
    login = {"username": name, "password": PASSWORD}
    call("POST", "/api/v1/auth/login", 200, body=login, media_type=FORM)
    pair = call("POST", "/api/v1/auth/login", 200, body=login)
    pair = call("POST", "/api/v1/auth/refresh", 200, body={"refresh_token": pair["refresh_token"]})
    token = pair["access_token"]
    call("GET", "/api/v1/users/me", 200, token)
    call("PATCH", "/api/v1/users/me", 200, token, body={"full_name": "Walker"})
    new = {"current_password": PASSWORD, "new_password": PASSWORD + "!"}
    call("POST", "/api/v1/users/me/password", 204, token, body=new)
    page = call("GET", "/api/v1/users", 200, root, query={"limit": 1})
    assert page["next_cursor"], "a second page exists: the walker and its superuser"
    call("GET", "/api/v1/users", 200, root, query={"limit": 1, "cursor": page["next_cursor"]})
    this_user = {"id": user["id"]}
    call("GET", "/api/v1/users/{id}", 200, root, path_parameters=this_user)
    patch = {"is_active": False, "full_name": None}
    call("PATCH", "/api/v1/users/{id}", 200, root, path_parameters=this_user, body=patch)
    call("GET", "/api/v1/audit", 200, root, query={"limit": 2, "user_id": user["id"]})
    call("POST", "/api/v1/auth/logout", 401, token)  # deactivated: its tokens are dead
    call("DELETE", "/api/v1/users/{id}", 204, root, path_parameters=this_user)
    call("GET", "/api/v1/users/{id}", 404, root, path_parameters=this_user)
    call("POST", "/api/v1/auth/logout", 204, root)


async def test_a_walk_through_every_operation_gets_the_replies_the_document_describes(
    edge_url: str, worker: Any
) -> None:
    identities = Identities(edge_url, worker, asyncio.get_running_loop())
    with contextlib.closing(identities.http):
        await asyncio.to_thread(walk_every_operation, edge_url, identities)
