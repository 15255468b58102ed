"""Idempotent requests: the first reply to a key is kept and replayed, the work done once."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

import orjson

from domain.errors import (
    FieldError,
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    ValidationFailed,
)

KEY_PATTERN = re.compile(r"^[\x20-\x7e]{1,255}$")
RENEW_EVERY = 3.0  # seconds; well inside the store's pending lease
Envelope = dict[str, Any]


class IdempotencyStore(Protocol):
    """Where claimed keys and their replies live."""

    async def claim(self, key: str, fingerprint: str) -> bool: ...

    async def renew(self, key: str, fingerprint: str) -> None:
        """Extend a pending claim's lease (a claim lapses soon after its worker dies)."""
        ...

    async def get(self, key: str) -> dict[str, Any] | None: ...

    async def complete(self, key: str, fingerprint: str, reply: Envelope) -> None: ...

    async def release(self, key: str) -> None: ...


def fingerprint(body: bytes) -> str:
    """Equal JSON bodies have equal fingerprints, whatever their key order or spacing."""
    try:
        canonical = orjson.dumps(orjson.loads(body), option=orjson.OPT_SORT_KEYS)
    except orjson.JSONDecodeError:
        canonical = body
    return hashlib.sha256(canonical).hexdigest()


class Idempotency:
    """Runs a request once per (caller, queue, key); repeats get the first reply."""

    def __init__(self, store: IdempotencyStore, caller_of: Callable[[str | None], str]) -> None:
        self._store = store
        self._caller_of = caller_of

    async def once(
        self,
        queue: str,
        authorization: str | None,
        key: str,
        body: bytes,
        work: Callable[[], Awaitable[Envelope]],
    ) -> Envelope:
        if not KEY_PATTERN.fullmatch(key):
            msg = "Idempotency-Key must be 1-255 printable ASCII characters"
            raise ValidationFailed([FieldError(("header", "idempotency-key"), msg, "value_error")])
        scope = self._caller_of(authorization)
        slot = f"{scope}:{queue}:{hashlib.sha256(key.encode()).hexdigest()}"
        print_ = fingerprint(body)
        if not await self._store.claim(slot, print_):
            return _replay(await self._store.get(slot), print_)
        async with _renewing(self._store, slot, print_):
            reply = await work()
        if reply["ok"] or reply["error"]["status"] < 500:
            await self._store.complete(slot, print_, reply)
        else:  # a 5xx is never kept: a retry must do the work again
            await self._store.release(slot)
        return reply


@contextlib.asynccontextmanager
async def _renewing(store: IdempotencyStore, slot: str, print_: str) -> AsyncIterator[None]:
    """Keep the claim's lease alive while the work runs; a killed worker stops renewing it."""

    async def renew() -> None:
        while True:
            await asyncio.sleep(RENEW_EVERY)
            with contextlib.suppress(Exception):
                await store.renew(slot, print_)

    task = asyncio.create_task(renew())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _replay(stored: dict[str, Any] | None, print_: str) -> Envelope:
    if stored is None:  # the first request's claim lapsed between our two reads
        raise IdempotencyKeyInUse
    if stored["fp"] != print_:
        raise IdempotencyKeyReused
    if "reply" not in stored:
        raise IdempotencyKeyInUse
    reply: Envelope = stored["reply"]
    return reply
