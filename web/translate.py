"""HTTP request -> RPC message, RPC envelope -> HTTP response. No business rule lives here."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from typing import Any
from urllib.parse import parse_qsl

import orjson
from aiohttp import web

from contract import protocol
from contract.errors import (
    InvalidIdempotencyKey,
    MalformedJson,
    PayloadTooLarge,
    UnsupportedGrantType,
    UnsupportedMediaType,
)
from contract.routes import USER_LOCATION, Form, Grant, Route
from contract.wire import json_object, load_json
from domain.errors import FieldError, ValidationFailed
from web.problems import problem_from_error

FORM = "application/x-www-form-urlencoded"
# RPC header -> the HTTP header the edge reads it from, for the locations of errors.

Networks = tuple[IPv4Network | IPv6Network, ...]


async def message(request: web.Request, route: Route) -> tuple[str, dict[str, Any]]:
    """The RPC queue and body for this request, or the contract's 400/413/415/422.

    A route that takes an OAuth 2.0 form may send it to another queue than its JSON (the
    token endpoint's refresh grant goes to warden.auth.refresh).
    """
    if route.form is not None and request.content_type == FORM:
        grant, body = await _oauth_form(request, route.form)
        return grant.queue, body
    return route.queue, await message_body(request, route)


async def message_body(request: web.Request, route: Route) -> dict[str, Any]:
    """The RPC body of a request that is not an OAuth 2.0 form."""
    if route.body == "query":
        return dict(request.query)
    body: dict[str, Any] = {}
    if route.body != "none":
        optional = route.body == "optional_json"
        body = await _json_object(request, optional, route.form is not None)
    if "id" in request.match_info:
        if "id" in body:
            raise ValidationFailed(
                [FieldError(("body", "id"), "id may not be changed", "extra_forbidden")]
            )
        body["id"] = int(request.match_info["id"])
    if "sid" in request.match_info:
        body["id"] = request.match_info["sid"]
    return body


async def _json_object(request: web.Request, optional: bool, form: bool) -> dict[str, Any]:
    raw = await _read(request)
    if optional and not raw.strip():
        return {}
    if request.content_type != "application/json":
        if form:
            raise UnsupportedMediaType(f"The request body must be application/json or {FORM}.")
        raise UnsupportedMediaType
    try:
        data = load_json(raw)
    except ValueError as exc:
        raise MalformedJson(str(exc) or None) from None
    return json_object(data)


async def _oauth_form(request: web.Request, form: Form) -> tuple[Grant, dict[str, str]]:
    """An OAuth 2.0 form's grant and the parameters it forwards (RFC 6749 3.1, 3.2).

    A parameter sent without a value counts as not sent; one of those the grant reads that is
    sent twice is a 422 (which of the two would be meant?); any other is ignored.
    """
    raw = await _read(request)
    try:
        pairs = parse_qsl(raw.decode("utf-8", "strict"))
    except (UnicodeDecodeError, ValueError):
        raise MalformedJson("The form body is not valid UTF-8.") from None
    sent: dict[str, list[str]] = {}
    for name, value in pairs:
        sent.setdefault(name, []).append(value)
    grant = form.grant(_once(sent, "grant_type") if form.grants else None)
    if grant is None:
        taken = " or ".join(name for name, _ in form.grants)
        raise UnsupportedGrantType(f"This endpoint takes grant_type {taken}.")
    return grant, {k: v for k in grant.fields if (v := _once(sent, k)) is not None}


def _once(sent: dict[str, list[str]], name: str) -> str | None:
    values = sent.get(name, [])
    if len(values) > 1:
        msg = f"{name} may be sent only once"
        raise ValidationFailed([FieldError(("body", name), msg, "value_error")])
    return values[0] if values else None


async def _read(request: web.Request) -> bytes:
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge from None


def request_id(request: web.Request) -> str:
    return protocol.request_id_or_new(request.headers.get(protocol.HTTP_REQUEST_ID))


def client_ip(request: web.Request, trusted: Networks) -> str | None:
    """The TCP peer, or the first untrusted hop of X-Forwarded-For when the peer is trusted."""
    peer = request.remote
    if not peer or not trusted or not _trusted(_address(peer), trusted):
        return peer
    # A proxy may add its own header line instead of appending to the last one: every line
    # counts, in order (RFC 9110 5.3), or the hop it added would be missed.
    forwarded = ",".join(request.headers.getall("X-Forwarded-For", []))
    hops = [h.strip() for h in forwarded.split(",") if h.strip()]
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:  # a header we cannot read names nobody: the peer answers for it
            return peer
        if not _trusted(address, trusted):
            return hop
    return peer


def _address(text: str) -> IPv4Address | IPv6Address | None:
    try:
        return ip_address(text)
    except ValueError:
        return None


def _trusted(address: IPv4Address | IPv6Address | None, trusted: Networks) -> bool:
    return address is not None and any(address in net for net in trusted)


def rpc_headers(request: web.Request, rid: str, trusted: Networks) -> dict[str, str]:
    headers = {protocol.REQUEST_ID: rid}
    if auth := request.headers.get(protocol.HTTP_AUTHORIZATION):
        headers[protocol.AUTHORIZATION] = _sent_text(auth)
    if ip := client_ip(request, trusted):
        headers[protocol.CLIENT_IP] = ip
    if agent := protocol.user_agent_text(request.headers.get(protocol.HTTP_USER_AGENT)):
        headers[protocol.USER_AGENT] = agent
    if protocol.HTTP_IDEMPOTENCY_KEY in request.headers:
        key = request.headers[protocol.HTTP_IDEMPOTENCY_KEY]
        if not protocol.valid_idempotency_key(key):
            raise InvalidIdempotencyKey(protocol.HTTP_IDEMPOTENCY_KEY)
        headers[protocol.IDEMPOTENCY_KEY] = key
    return headers


def _sent_text(value: str) -> str:
    """A header value as text an AMQP header can carry.

    aiohttp keeps bytes that are not UTF-8 as lone surrogates, which have no UTF-8 form;
    here they become U+FFFD, as the worker reads such bytes (and a token never holds one).
    """
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def http_response(route: Route, envelope: dict[str, Any], max_age: int = 0) -> web.Response:
    """Map a reply envelope onto HTTP one to one; a public route's success may be cached
    for `max_age` seconds."""
    if not envelope.get("ok"):
        error = dict(envelope.get("error") or {})
        if error.get("errors"):
            error["errors"] = [_relocate(e, route) for e in error["errors"]]
        return problem_from_error(error, route.oauth)
    data = envelope.get("data")
    if data is None:  # 204, or RFC 7009's 200 with an empty body
        return web.Response(status=route.success)
    headers = {}
    if route.tokens:
        headers["Cache-Control"] = "no-store"
        headers["Pragma"] = "no-cache"
    if route.public:
        headers["Cache-Control"] = f"public, max-age={max_age}"
    if route.location and isinstance(data, dict) and "id" in data:
        headers["Location"] = USER_LOCATION.format(id=data["id"])
    return web.Response(
        body=orjson.dumps(data),
        status=route.success,
        content_type="application/json",
        headers=headers,
    )


def _relocate(error: dict[str, Any], route: Route) -> dict[str, Any]:
    """Worker locations say "body" and name RPC headers; over HTTP a field may come from the
    query or the path, and a header has its HTTP name."""
    loc = list(error.get("loc") or [])
    if loc and loc[0] == "body" and len(loc) > 1:
        if route.body == "query":
            loc[0] = "query"
        elif loc[1] == "id" and "{id" in route.path:
            loc[0] = "path"
    if loc[:1] == ["header"] and len(loc) > 1:
        loc[1] = protocol.HTTP_NAMES.get(str(loc[1]), loc[1])
    return {**error, "loc": loc}
