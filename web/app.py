"""The edge's app factory: routes from the one table, the RPC client in a cleanup_ctx."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import structlog
from aiohttp import web

from contract.errors import MethodNotAllowed, NotFound, PayloadTooLarge
from contract.protocol import HTTP_REQUEST_ID, MAX_BODY_BYTES
from contract.routes import (
    JWKS_PATH,
    METADATA_PATH,
    REVOCATION_PATH,
    ROUTES,
    TOKEN_PATH,
    Route,
)
from domain.errors import InternalError, WardenError
from web import console, health, metrics
from web.openapi import openapi_document
from web.problems import problem
from web.rpc_client import RpcClient
from web.translate import Networks, http_response, message, request_id, rpc_headers

log = structlog.get_logger("warden.edge")

RPC_CLIENT = web.AppKey("rpc_client", RpcClient)
REQUEST_ID = web.RequestKey("request_id", str)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Paths whose problems carry RFC 6749's `error` too, whoever refuses the request (see
# contract.oauth): the edge's own refusals of a body as much as a worker's.
OAUTH_PATHS = frozenset(route.path for route in ROUTES if route.oauth)


@web.middleware
async def edge_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id, one log line per request, and problem details for every failure."""
    rid = request_id(request)
    request[REQUEST_ID] = rid
    structlog.contextvars.bind_contextvars(request_id=rid)
    started = time.perf_counter()
    route = _route_name(request)
    metrics.IN_FLIGHT.inc()
    try:
        response = await _guarded(request, handler, route in OAUTH_PATHS)
    finally:
        metrics.IN_FLIGHT.dec()
    response.headers[HTTP_REQUEST_ID] = rid
    elapsed = time.perf_counter() - started
    metrics.observe(request.method, route, response.status, elapsed)
    log.info(
        "request",
        method=request.method,
        route=route,
        status=response.status,
        duration_ms=round(elapsed * 1000, 2),
    )
    structlog.contextvars.unbind_contextvars("request_id")
    return response


async def _guarded(request: web.Request, handler: Handler, oauth: bool) -> web.StreamResponse:
    try:
        return await handler(request)
    except WardenError as exc:
        return problem(exc, oauth)
    except web.HTTPException as exc:
        response = problem(_http_error(exc), oauth)
        if "Allow" in exc.headers:  # RFC 9110: a 405 names the methods the route takes
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("edge fault")
        return problem(InternalError(), oauth)


def _http_error(exc: web.HTTPException) -> WardenError:
    if exc.status == 404:
        return NotFound()
    if exc.status == 405:
        return MethodNotAllowed()
    if exc.status == 413:
        return PayloadTooLarge()
    error = InternalError(exc.reason)
    error.status = exc.status  # type: ignore[misc]
    return error


def _route_name(request: web.Request) -> str:
    info = request.match_info
    resource = info.route.resource if info.http_exception is None else None
    return resource.canonical if resource is not None else "unmatched"


def _forward(route: Route, timeout: float, trusted: Networks, max_age: int = 0) -> Handler:
    async def view(request: web.Request) -> web.Response:
        queue, body = await message(request, route)
        headers = rpc_headers(request, request[REQUEST_ID], trusted)
        envelope = await request.app[RPC_CLIENT].call(queue, orjson.dumps(body), headers, timeout)
        return http_response(route, envelope, max_age)

    view.__name__ = route.queue
    return view


def create_app(
    amqp_urls: str | tuple[str, ...],
    rpc_timeout: float,
    trusted: Networks = (),
    jwks_max_age: int = 300,
    metadata: dict[str, Any] | None = None,
) -> web.Application:
    """One edge: the contract's routes, health checks, metrics, the OpenAPI document and the
    authorization server's metadata (RFC 8414, from `authorization_server_metadata`).

    `amqp_urls`: the broker's node (or the nodes of one cluster, see RpcClient).
    """
    app = web.Application(middlewares=[edge_middleware], client_max_size=MAX_BODY_BYTES)
    app[RPC_CLIENT] = RpcClient(amqp_urls)

    async def rpc_client_ctx(app: web.Application) -> AsyncIterator[None]:
        await app[RPC_CLIENT].start()
        yield
        await app[RPC_CLIENT].stop()

    app.cleanup_ctx.append(rpc_client_ctx)
    for route in ROUTES:
        view = _forward(route, rpc_timeout, trusted, jwks_max_age)
        app.router.add_route(route.method, route.path, view)
    document = openapi_document()

    async def openapi(_: web.Request) -> web.Response:
        return web.json_response(document, dumps=lambda d: orjson.dumps(d).decode())

    app.router.add_get("/api/v1/openapi.json", openapi)
    about = orjson.dumps(metadata or authorization_server_metadata("http://127.0.0.1:8080"))

    async def authorization_server(_: web.Request) -> web.Response:
        headers = {"Cache-Control": f"public, max-age={jwks_max_age}"}
        return web.Response(body=about, content_type="application/json", headers=headers)

    app.router.add_get(METADATA_PATH, authorization_server)
    health.add_routes(app, lambda: app[RPC_CLIENT])
    app.router.add_get("/metrics", metrics.handler)
    console.add_routes(app)
    return app


def authorization_server_metadata(public_url: str, issuer: str = "warden") -> dict[str, Any]:
    """RFC 8414's document: where a client gets and revokes tokens and finds the keys.

    `issuer` is the `iss` of Warden's tokens (WARDEN_JWT_ISSUER), which a client compares
    with its tokens'; the links are absolute, from WARDEN_PUBLIC_URL.
    """
    base = public_url.rstrip("/")
    return {
        "issuer": issuer,
        "token_endpoint": base + TOKEN_PATH,
        "jwks_uri": base + JWKS_PATH,
        "revocation_endpoint": base + REVOCATION_PATH,
        "grant_types_supported": ["password", "refresh_token"],
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": ["none"],
        "revocation_endpoint_auth_methods_supported": ["none"],
    }


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")
