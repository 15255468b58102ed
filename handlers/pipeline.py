"""One request from arrival to its envelope: admit, decode, run the use case, log.

A request here never raises: FastStream publishes no reply when a handler does, and the
caller would only time out. Every outcome, a fault included, is the contract's envelope.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any, TypeVar

import structlog
from aio_pika import IncomingMessage
from pydantic import BaseModel

from contract import protocol
from contract.errors import PayloadTooLarge
from domain.errors import InternalError, UpstreamTimeout, WardenError
from handlers import metrics
from handlers.decoding import parse
from handlers.envelope import Call, Keep, RequestUnits, UseCase, failure, success
from handlers.idempotency import Idempotency, Replay
from handlers.trust import header_text, origin_of
from storage.idempotency import ReplyRecorder

log = structlog.get_logger("warden.worker")

M = TypeVar("M", bound=BaseModel)


def received(raw: IncomingMessage, edge_user: str, units: RequestUnits) -> Call[bytes]:
    """A request as it arrived, its body unparsed: headers read as text, its origin decided."""
    headers = raw.headers or {}
    request_id = protocol.request_id_or_new(headers.get(protocol.REQUEST_ID))
    return Call(
        body=raw.body,
        origin=origin_of(
            raw.user_id,
            headers.get(protocol.CLIENT_IP),
            edge_user,
            headers.get(protocol.USER_AGENT),
        ),
        authorization=header_text(headers.get(protocol.AUTHORIZATION)),
        request_id=request_id,
        units=units.for_request(request_id),
        idempotency_key=header_text(headers.get(protocol.IDEMPOTENCY_KEY)),
    )


async def serve(
    queue: str,
    model: type[M],
    use_case: UseCase,
    call: Call[bytes],
    headers: Mapping[str, Any],
    idempotency: Idempotency | None = None,
    keep: Keep | None = None,
    replay: Replay | None = None,
) -> dict[str, Any]:
    """Run one request to its envelope, logging one line with its outcome.

    `keep` renders the user a change left as its envelope, for an idempotent request's
    reply to be written in the change's own transaction, by the recorder the work is then
    given; `replay` checks a kept reply before a repeat gets it (see Idempotency.once).
    """
    structlog.contextvars.bind_contextvars(request_id=call.request_id, queue=queue)
    started = time.perf_counter()

    async def work(recorder: ReplyRecorder | None) -> dict[str, Any]:
        if recorder is None:
            return await _answer(model, use_case, call)
        recorded = dataclasses.replace(call, units=call.units.recording(recorder))
        return await _answer(model, use_case, recorded)

    try:
        _admit(call, headers)
        if idempotency is not None and call.idempotency_key is not None:
            key = call.idempotency_key
            envelope = await idempotency.once(
                queue, call.authorization, key, call.body, work, keep, replay
            )
        else:
            envelope = await work(None)
    except WardenError as exc:
        envelope = failure(exc)
    except Exception:  # every request gets a reply: a caller never waits out its timeout
        log.exception("handler fault")
        envelope = failure(InternalError())
    status = 200 if envelope["ok"] else envelope["error"]["status"]
    elapsed = time.perf_counter() - started
    metrics.MESSAGES.labels(queue, str(status)).inc()
    metrics.HANDLING.labels(queue).observe(elapsed)
    log.info("message handled", status=status, duration_ms=round(elapsed * 1000, 2))
    return envelope


def _admit(call: Call[bytes], headers: Mapping[str, Any]) -> None:
    """Refuse, before any parsing or work, a request that came too late or is too large."""
    if _past_deadline(headers):
        raise UpstreamTimeout("The caller's deadline passed before a worker took the request.")
    if len(call.body) > protocol.MAX_BODY_BYTES:
        raise PayloadTooLarge


async def _answer(model: type[M], use_case: UseCase, raw: Call[bytes]) -> dict[str, Any]:
    """Validate and run the use case; every outcome, a fault included, is an envelope."""
    try:
        body = parse(model, raw.body)
        call = Call(
            body, raw.origin, raw.request_id, raw.units, raw.authorization, raw.idempotency_key
        )
        return success(await use_case(call))
    except WardenError as exc:
        return failure(exc)
    except Exception:
        log.exception("handler fault")
        return failure(InternalError())


def _past_deadline(headers: Mapping[str, Any]) -> bool:
    deadline = headers.get(protocol.DEADLINE)
    try:
        return deadline is not None and time.time() * 1000 > float(deadline)
    except (TypeError, ValueError):
        return False
