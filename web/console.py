"""The console in a browser (CONTRACT §9) and the API documents rendered for people.

The edge only serves files here: the pages are static HTML, plain JavaScript modules and CSS
from `web/console/static/`, which talk to the public API like any other client. Two routes
compute something, and neither touches the domain: `POST /account/qr` draws an otpauth URI
the browser sends as a QR code (SVG, with segno), and `GET /api/v1/docs/messaging.json`
lists the RPC queues and events from the contract package.

Every response of the edge carries the security headers below: the pages run under a
Content-Security-Policy without 'unsafe-inline' or 'unsafe-eval' and with no origin but
Warden's own, and nothing of Warden's may be framed.
"""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import segno
from aiohttp import web
from pydantic import BaseModel

from contract.catalog import CALLER_ERRORS, EVERY_QUEUE, IDEMPOTENCY, PING_QUEUE, RPC, Errors
from contract.errors import MalformedJson, NotFound, PayloadTooLarge, UnsupportedMediaType
from contract.events import EVENT_DATA
from domain.errors import FieldError, ValidationFailed

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

STATIC = Path(__file__).parent / "console" / "static"
ASSETS = "/console/"  # where the pages' scripts, styles and vendored files are served

# data: images only for Swagger UI's stylesheet, whose icons are inline SVG URLs; no script,
# style, frame or connection may come from anywhere but Warden itself.
CSP = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}

PAGES = {
    "/admin/": "admin.html",
    "/account/": "account.html",
    "/api/v1/docs": "docs.html",
    "/api/v1/docs/messaging": "messaging.html",
}
# An otpauth URI is about 150 bytes (issuer, account, a 32-character secret); a body of more
# than this is refused before segno sees it, so nobody makes the edge draw large codes.
MAX_QR_BODY = 1024
MAX_QR_URI = 512
OTPAUTH = "otpauth://totp/"


async def security_headers(_: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every response, pages, files, API replies and errors alike."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


def _page(name: str) -> Handler:
    path = STATIC / name

    async def view(_: web.Request) -> web.FileResponse:
        # The pages change with the code, not per user: revalidate, never serve a stale one.
        return web.FileResponse(path, headers={"Cache-Control": "no-cache"})

    return view


def _redirect(to: str) -> Handler:
    async def view(_: web.Request) -> web.Response:
        # Returned, not raised: the edge's middleware turns a raised HTTPException into a
        # problem, which would lose the Location.
        return web.Response(status=308, headers={"Location": to})

    return view


def _bad_uri(detail: str) -> ValidationFailed:
    return ValidationFailed([FieldError(("body", "uri"), detail, "value_error")], detail)


async def qr_code(request: web.Request) -> web.Response:
    """The QR code of an otpauth URI, as SVG. The URI (it holds the TOTP secret) comes in a
    POST body, never in a URL that a log or a proxy would keep; the answer is not stored."""
    if request.content_type != "application/json":
        raise UnsupportedMediaType()
    if request.content_length is not None and request.content_length > MAX_QR_BODY:
        raise PayloadTooLarge()
    raw = await request.content.read(MAX_QR_BODY + 1)
    if len(raw) > MAX_QR_BODY:
        raise PayloadTooLarge()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise MalformedJson() from None
    uri = body.get("uri") if isinstance(body, dict) else None
    if not isinstance(uri, str) or not uri.startswith(OTPAUTH) or len(uri) > MAX_QR_URI:
        raise _bad_uri(f"`uri` must be an {OTPAUTH} URI of at most {MAX_QR_URI} characters.")
    if not uri.isprintable() or not uri.isascii():
        raise _bad_uri("`uri` must be printable ASCII (percent-encode the rest).")
    out = io.BytesIO()
    # A viewBox and no fixed size: the page scales it; a white quiet zone for dark themes.
    segno.make(uri, error="m").save(
        out, kind="svg", border=4, omitsize=True, light="#fff", xmldecl=False, title="TOTP QR code"
    )
    return web.Response(
        body=out.getvalue(),
        content_type="image/svg+xml",
        headers={"Cache-Control": "no-store"},
    )


def _schema_name(model: type[BaseModel] | None) -> str | None:
    return None if model is None else model.__name__


def messaging_summary() -> dict[str, Any]:
    """The RPC queues and the events, for the docs' companion page: the same catalogue the
    worker subscribes from and the AsyncAPI document is generated from."""
    queues = [
        {
            "queue": name,
            "caller": spec.caller,
            "request": _schema_name(spec.request),
            "reply": _schema_name(spec.reply),
            "idempotent": spec.idempotent,
            # Its own and its caller's; EVERY_QUEUE's (and IDEMPOTENCY's) are listed once.
            "errors": _codes((*CALLER_ERRORS[spec.caller], *spec.errors)),
        }
        for name, spec in RPC.items()
        if name != PING_QUEUE
    ]
    events = [
        {
            "type": kind,
            "routing_key": kind,
            "data": model.__name__,
            "fields": sorted(model.model_json_schema().get("properties", {})),
        }
        for kind, model in EVENT_DATA.items()
    ]
    return {
        "exchange": "warden.events",
        "every_queue_errors": _codes(EVERY_QUEUE),
        "idempotency_errors": _codes(IDEMPOTENCY),
        "queues": queues,
        "events": events,
    }


def _codes(errors: Errors) -> list[str]:
    return sorted({f"{e.status} {e.code}" for e in errors})


def add_routes(app: web.Application) -> None:
    """The console's pages, its files, the QR route and the docs pages."""
    app.on_response_prepare.append(security_headers)
    for path, name in PAGES.items():
        app.router.add_get(path, _page(name))
    app.router.add_get("/admin", _redirect("/admin/"))
    app.router.add_get("/account", _redirect("/account/"))
    app.router.add_post("/account/qr", qr_code)
    summary = orjson.dumps(messaging_summary())

    async def messaging(_: web.Request) -> web.Response:
        return web.Response(body=summary, content_type="application/json")

    app.router.add_get("/api/v1/docs/messaging.json", messaging)
    app.router.add_get(ASSETS + "{name:.+}", _assets())


def _assets() -> Handler:
    """The console's files, by name from a list made at start-up: a path that is not one of
    them is a 404 `not_found` like any unknown route, and nothing outside can be reached."""
    files = {p.relative_to(STATIC).as_posix(): p for p in STATIC.rglob("*") if p.is_file()}

    async def view(request: web.Request) -> web.FileResponse:
        path = files.get(request.match_info["name"])
        if path is None:
            raise NotFound()
        # Revalidated on every use (ETag, Last-Modified): a new release is never half-cached.
        return web.FileResponse(path, headers={"Cache-Control": "no-cache"})

    return view
