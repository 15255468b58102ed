"""The edge's OpenAPI 3.1 document, generated from the route table and the wire models."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from contract import protocol, wire
from contract.catalog import IDEMPOTENCY, RPC, Errors
from contract.errors import (
    MalformedJson,
    MalformedMessage,
    NotFound,
    PayloadTooLarge,
    UnsupportedGrantType,
    UnsupportedMediaType,
)
from contract.routes import ID, ROUTES, SID, Route
from domain.errors import (
    InternalError,
    ServiceUnavailable,
    UpstreamTimeout,
    ValidationFailed,
    WardenError,
)

REF = "#/components/schemas/{model}"

# Over HTTP the id of PATCH /users/{id} is in the path, not in the body.
HTTP_BODIES: dict[str, type[BaseModel]] = {"warden.users.update": wire.UpdateUserRequest}


def _request_model(route: Route) -> type[BaseModel] | None:
    if route.body in ("none", "query"):
        return None
    return HTTP_BODIES.get(route.queue, RPC[route.queue].request)


# What the edge answers by itself, beside its queue's replies: the broker unreachable, no
# reply in time, a fault of its own; and, where it reads a body, one it cannot forward.
EDGE_EVERY_ROUTE: Errors = (ServiceUnavailable, UpstreamTimeout, InternalError)
EDGE_READING_A_BODY: Errors = (
    MalformedJson,
    UnsupportedMediaType,
    PayloadTooLarge,
    ValidationFailed,  # JSON that is not an object
)
READS_BODY = ("json", "optional_json", "login")
# What a worker never answers the edge, which forwards only JSON objects within the limit.
NEVER_OVER_HTTP: Errors = (MalformedMessage, PayloadTooLarge)

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


def route_errors(route: Route) -> list[type[WardenError]]:
    """Every error this route may answer with: its queue's, as the catalogue lists them, and
    the edge's own, each once."""
    left_out = set(NEVER_OVER_HTTP)
    if route.method != "POST":
        left_out |= set(IDEMPOTENCY)  # Idempotency-Key is a parameter of POST routes only
    if route.body == "none" and not _path_parameter(route):
        left_out.add(ValidationFailed)  # the edge sends `{}`: nothing to validate
    kinds = [e for e in RPC[route.queue].every_error if e not in left_out]
    kinds += EDGE_EVERY_ROUTE
    if route.body in READS_BODY:
        kinds += EDGE_READING_A_BODY
    if route.body == "login":
        kinds.append(UnsupportedGrantType)
    if _path_parameter(route):
        kinds.append(NotFound)  # an id the route's pattern does not take
    return list(dict.fromkeys(kinds))


def _errors(route: Route) -> dict[str, Any]:
    by_status: dict[int, list[type[WardenError]]] = {}
    for error in route_errors(route):
        by_status.setdefault(error.status, []).append(error)
    responses = {
        str(status): _problem("; ".join(f"{e.title} (`{e.code}`)" for e in kinds))
        for status, kinds in sorted(by_status.items())
    }
    # The HTTP server itself refuses a request line or a header over 8 KiB, before any route
    # or middleware sees the request, and answers it as plain text.
    plain = "A request line or header over 8 KiB, as text/plain"
    bad = responses.setdefault("400", _problem(plain))
    if bad["description"] != plain:
        bad["description"] += f"; or {plain[0].lower()}{plain[1:]}"
    bad["content"]["text/plain"] = {"schema": {"type": "string"}}
    return dict(sorted(responses.items()))


def _operation(route: Route) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {
            "name": protocol.HTTP_REQUEST_ID,
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
                "name": protocol.HTTP_IDEMPOTENCY_KEY,
                "in": "header",
                "required": False,
                "description": "1-255 printable ASCII characters; any other is a 422.",
                "schema": {"type": "string", "pattern": protocol.IDEMPOTENCY_KEY_PATTERN},
            }
        )
    if (parameter := _path_parameter(route)) is not None:
        op["parameters"].append(parameter)
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
    if RPC[route.queue].bearer:
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


def _path_parameter(route: Route) -> dict[str, Any] | None:
    """The route's path parameter: any value its pattern does not take is a 404 not_found."""
    if ID in route.path:
        # The route takes 1-18 digits.
        schema: dict[str, Any] = {"type": "integer", "minimum": 1, "maximum": 10**18 - 1}
        return {"name": "id", "in": "path", "required": True, "schema": schema}
    if SID in route.path:
        schema = {"type": "string", "pattern": wire.SESSION_ID_PATTERN}
        return {"name": "sid", "in": "path", "required": True, "schema": schema}
    return None


def _path(route: Route) -> str:
    return route.path.replace(ID, "{id}").replace(SID, "{sid}")


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
