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
from contract.oauth import ERRORS as OAUTH_ERRORS
from contract.routes import ID, METADATA_PATH, ROUTES, SID, Form, Route
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
READS_BODY = ("json", "optional_json")
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
        "mfa_token": {
            "type": "string",
            "description": "On mfa_required only: send it with a code to POST /auth/mfa.",
        },
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
# The problems of the routes a stock OAuth 2.0 client calls: RFC 6749 5.2's fields beside ours.
OAUTH_PROBLEM = {
    "allOf": [
        {"$ref": "#/components/schemas/Problem"},
        {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "enum": sorted({*OAUTH_ERRORS.values(), "invalid_request", "server_error"}),
                    "description": "RFC 6749 5.2's error code for `code` (see the README).",
                },
                "error_description": {"type": "string"},
            },
        },
    ]
}
HEALTH = {"type": "object", "required": ["status"], "properties": {"status": {"enum": ["pass"]}}}
CHECK = {
    "type": "object",
    "required": ["status", "latency_ms"],
    "properties": {
        "status": {"enum": ["pass", "fail"]},
        "latency_ms": {"type": "number"},
        "error": {"type": "string"},
        # broker: the edge's node; workers: the answering worker's node (host:port)
        "node": {"type": "string"},
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


def _problem(description: str, schema: str = "Problem") -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/problem+json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}
        },
    }


def _queues(route: Route) -> tuple[str, ...]:
    """Every queue a request of the route may go to: its JSON's, then its forms'."""
    forms = route.form.queues if route.form is not None else ()
    return tuple(dict.fromkeys([route.queue, *forms]))


def route_errors(route: Route) -> list[type[WardenError]]:
    """Every error this route may answer with: its queue's, as the catalogue lists them, and
    the edge's own, each once."""
    left_out = set(NEVER_OVER_HTTP)
    if route.method != "POST":
        left_out |= set(IDEMPOTENCY)  # Idempotency-Key is a parameter of POST routes only
    if route.body == "none" and not _path_parameter(route):
        left_out.add(ValidationFailed)  # the edge sends `{}`: nothing to validate
    kinds = [e for q in _queues(route) for e in RPC[q].every_error if e not in left_out]
    kinds += EDGE_EVERY_ROUTE
    if route.body in READS_BODY:
        kinds += EDGE_READING_A_BODY
    if route.form is not None and route.form.grants:
        kinds.append(UnsupportedGrantType)
    if _path_parameter(route):
        kinds.append(NotFound)  # an id the route's pattern does not take
    return list(dict.fromkeys(kinds))


def _errors(route: Route) -> dict[str, Any]:
    by_status: dict[int, list[type[WardenError]]] = {}
    for error in route_errors(route):
        by_status.setdefault(error.status, []).append(error)
    schema = "OAuthProblem" if route.oauth else "Problem"
    responses = {
        str(status): _problem("; ".join(f"{e.title} (`{e.code}`)" for e in kinds), schema)
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
    queues = _queues(route)
    described = f"the RPC queue `{route.queue}`"
    if len(queues) > 1:
        described = "the RPC queues " + ", ".join(f"`{q}`" for q in queues) + " (see the body)"
    op: dict[str, Any] = {
        "operationId": route.queue.removeprefix("warden.").replace(".", "_"),
        "summary": route.summary,
        "description": f"Translated to {described}.",
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
        if route.form is not None:
            content["application/x-www-form-urlencoded"] = {"schema": _form_schema(route.form)}
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
        if route.public:
            ok["headers"] = {CACHE_CONTROL: PUBLIC_CACHE}
        op["responses"][str(route.success)] = ok
    return op


CACHE_CONTROL = "Cache-Control"
PUBLIC_CACHE = {
    "description": "public, max-age=WARDEN_JWKS_MAX_AGE (300 by default): a new key is "
    "published at least this long before it signs.",
    "schema": {"type": "string", "examples": ["public, max-age=300"]},
}
# RFC 8414: the authorization server's metadata, served by the edge itself.
AUTHORIZATION_SERVER = {
    "type": "object",
    "required": [
        "issuer",
        "token_endpoint",
        "jwks_uri",
        "revocation_endpoint",
        "grant_types_supported",
    ],
    "properties": {
        "issuer": {"type": "string", "description": "The `iss` of every token."},
        "token_endpoint": {"type": "string", "format": "uri"},
        "jwks_uri": {"type": "string", "format": "uri"},
        "revocation_endpoint": {"type": "string", "format": "uri"},
        "grant_types_supported": {"type": "array", "items": {"type": "string"}},
        "response_types_supported": {"type": "array", "items": {"type": "string"}},
        "token_endpoint_auth_methods_supported": {"type": "array", "items": {"type": "string"}},
        "revocation_endpoint_auth_methods_supported": {
            "type": "array",
            "items": {"type": "string"},
        },
    },
}


def _form_schema(form: Form) -> dict[str, Any]:
    """The OAuth 2.0 forms a route takes: one variant per grant_type, with the parameters
    its queue reads (any other is ignored)."""
    variants = []
    grants = form.grants or ((None, form.implied),)
    for grant_type, grant in grants:
        schema = RPC[grant.queue].request.model_json_schema()
        properties = {name: schema["properties"][name] for name in grant.fields}
        required = [name for name in grant.fields if name in schema.get("required", ())]
        if grant_type is not None:
            properties = {"grant_type": {"const": grant_type}} | properties
            if grant is not form.implied:  # the implied grant may leave grant_type out
                required.insert(0, "grant_type")
        variants.append({"type": "object", "required": required, "properties": properties})
    return variants[0] if len(variants) == 1 else {"anyOf": variants}


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
        "OAuthProblem": OAUTH_PROBLEM,
        "Health": HEALTH,
        "Check": CHECK,
        "Ready": READY,
        "AuthorizationServer": AUTHORIZATION_SERVER,
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
    metadata = plain("AuthorizationServer", "Authorization server metadata (RFC 8414)", "200")
    metadata["get"]["responses"]["200"]["headers"] = {CACHE_CONTROL: PUBLIC_CACHE}
    paths[METADATA_PATH] = metadata
    paths["/api/v1/docs"] = {
        "get": {
            "summary": "This document in Swagger UI (every asset served by Warden)",
            "responses": {
                "200": {
                    "description": "An HTML page",
                    "content": {"text/html": {"schema": {"type": "string"}}},
                }
            },
        }
    }
    paths["/api/v1/docs/messaging.json"] = {
        "get": {
            "summary": "The RPC queues and the events, as the docs' companion page lists them",
            "responses": {
                "200": {
                    "description": "Queues (name, caller, request, reply, errors) and events",
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
