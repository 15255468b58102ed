"""The edge's OpenAPI 3.1 document, generated from the route table and the wire models."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from contract import wire
from contract.catalog import RPC
from contract.routes import ROUTES, Route

REF = "#/components/schemas/{model}"

# Over HTTP the id of PATCH /users/{id} is in the path, not in the body.
HTTP_BODIES: dict[str, type[BaseModel]] = {"warden.users.update": wire.UpdateUserRequest}


def _request_model(route: Route) -> type[BaseModel] | None:
    if route.body in ("none", "query"):
        return None
    return HTTP_BODIES.get(route.queue, RPC[route.queue].request)


BEARER_ROUTES = {
    q for q, spec in RPC.items() if spec.caller in ("bearer", "superuser", "superuser or self")
}

PROBLEM = {
    "type": "object",
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["loc", "msg", "type"],
                "properties": {
                    "loc": {"type": "array", "items": {"type": ["string", "integer"]}},
                    "msg": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
    },
}
HEALTH = {"type": "object", "required": ["status"], "properties": {"status": {"enum": ["pass"]}}}
CHECK = {
    "type": "object",
    "required": ["status", "latency_ms"],
    "properties": {
        "status": {"enum": ["pass", "fail"]},
        "latency_ms": {"type": "number"},
        "error": {"type": "string"},
    },
}
READY = {
    "type": "object",
    "required": ["status", "checks"],
    "properties": {
        "status": {"enum": ["pass", "fail"]},
        "checks": {
            "type": "object",
            "required": ["broker", "postgres", "redis", "workers"],
            "additionalProperties": {"$ref": "#/components/schemas/Check"},
        },
    },
}


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        },
    }


def _errors(route: Route) -> dict[str, Any]:
    codes = {
        "400": "Malformed JSON, unsupported grant type or wrong password",
        "413": "Body over 64 KiB",
        "415": "Wrong Content-Type",
        "422": "Validation error",
        "500": "Internal error",
        "503": "A dependency is unavailable",
        "504": "No reply in time",
    }
    if route.method == "GET" and route.body != "query" and "{id" not in route.path:
        del codes["422"]  # nothing to validate
    if route.queue in BEARER_ROUTES:
        codes |= {"401": "Missing, invalid, expired or revoked token", "403": "Forbidden"}
    if route.queue == "warden.auth.login":
        codes |= {"401": "Invalid credentials", "403": "Inactive user", "429": "Too many attempts"}
    if route.queue in {"warden.users.register", "warden.users.change_password"}:
        codes |= {"429": "Too many attempts (registrations per address; a locked account)"}
    if route.queue == "warden.auth.refresh":
        codes |= {"401": "Invalid, expired, revoked or reused token"}
    if "{id" in route.path:
        codes |= {"404": "User not found"}
    if (
        route.queue
        in {
            "warden.users.register",
            "warden.users.update_me",
            "warden.users.update",
            "warden.users.delete",
        }
        or route.method == "POST"
    ):
        codes |= {"409": "Conflict"}
    responses = {code: _problem(text) for code, text in sorted(codes.items())}
    # The HTTP server itself refuses a request line or a header over 8 KiB, before any route
    # or middleware sees the request, and answers it as plain text.
    responses["400"]["description"] += "; or, as text/plain, a request line or header over 8 KiB"
    responses["400"]["content"]["text/plain"] = {"schema": {"type": "string"}}
    return responses


def _operation(route: Route) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {
            "name": "X-Request-ID",
            "in": "header",
            "required": False,
            # Not a constraint: a value of another shape is not refused but replaced.
            "description": "Kept when it is 1-128 characters of [A-Za-z0-9._-]; otherwise "
            "the edge makes a new one. Either way the response carries it as X-Request-ID.",
            "schema": {"type": "string"},
        },
    ]
    op: dict[str, Any] = {
        "operationId": route.queue.removeprefix("warden.").replace(".", "_"),
        "summary": route.summary,
        "description": f"Translated to the RPC queue `{route.queue}`.",
        "parameters": parameters,
        "responses": _errors(route),
    }
    if route.method == "POST":
        op["parameters"].append(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "description": "1-255 printable ASCII characters; any other is a 422.",
                "schema": {"type": "string", "pattern": "^[\\x20-\\x7e]{1,255}$"},
            }
        )
    if "{id" in route.path:
        op["parameters"].append(
            {
                "name": "id",
                "in": "path",
                "required": True,
                # The route takes 1-18 digits; any other id is a 404 not_found.
                "schema": {"type": "integer", "minimum": 1, "maximum": 10**18 - 1},
            }
        )
    if route.body == "query":
        schema = RPC[route.queue].request.model_json_schema()
        for name, prop in schema["properties"].items():
            op["parameters"].append(
                {"name": name, "in": "query", "required": False, "schema": prop}
            )
    model = _request_model(route)
    if model is not None:
        content: dict[str, Any] = {
            "application/json": {"schema": {"$ref": REF.format(model=model.__name__)}}
        }
        if route.body == "login":
            content["application/x-www-form-urlencoded"] = {
                "schema": {
                    "type": "object",
                    "required": ["username", "password"],
                    "properties": {
                        "grant_type": {"type": "string", "enum": ["password"]},
                        "username": {"type": "string"},
                        "password": {"type": "string"},
                    },
                }
            }
        op["requestBody"] = {"required": route.body != "optional_json", "content": content}
    if route.queue in BEARER_ROUTES:
        op["security"] = [{"bearer": []}]
    reply = RPC[route.queue].reply
    if reply is None:
        op["responses"][str(route.success)] = {"description": "Done"}
    else:
        ok: dict[str, Any] = {
            "description": "Success",
            "content": {"application/json": {"schema": {"$ref": REF.format(model=reply.__name__)}}},
        }
        if route.location:
            ok["headers"] = {"Location": {"schema": {"type": "string"}}}
        op["responses"][str(route.success)] = ok
    return op


def _path(route: Route) -> str:
    return route.path.replace("{id:[0-9]{1,18}}", "{id}")


def openapi_document() -> dict[str, Any]:
    models = {m for r in ROUTES for m in (_request_model(r), RPC[r.queue].reply) if m is not None}
    pairs: list[tuple[type[BaseModel], Literal["validation"]]] = [
        (m, "validation") for m in sorted(models, key=lambda m: m.__name__)
    ]
    _, defs = models_json_schema(pairs, ref_template=REF)
    schemas = defs.get("$defs", {}) | {
        "Problem": PROBLEM,
        "Health": HEALTH,
        "Check": CHECK,
        "Ready": READY,
    }
    paths: dict[str, Any] = {}
    for route in ROUTES:
        paths.setdefault(_path(route), {})[route.method.lower()] = _operation(route)

    def plain(schema: str, description: str, *statuses: str) -> dict[str, Any]:
        return {
            "get": {
                "summary": description,
                "responses": {
                    s: {
                        "description": description,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": f"#/components/schemas/{schema}"}
                            }
                        },
                    }
                    for s in statuses
                },
            }
        }

    paths["/health"] = plain("Health", "Liveness", "200")
    paths["/health/live"] = plain("Health", "Liveness", "200")
    paths["/health/ready"] = plain("Ready", "Readiness", "200", "503")
    paths["/api/v1/openapi.json"] = {
        "get": {
            "summary": "This document",
            "responses": {
                "200": {
                    "description": "OpenAPI 3.1",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            },
        }
    }
    paths["/metrics"] = {
        "get": {
            "summary": "Prometheus metrics",
            "responses": {
                "200": {
                    "description": "Prometheus text exposition",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Warden",
            "version": "1.0.0",
            "description": "Authentication and user service; every route is an RPC over RabbitMQ.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }
