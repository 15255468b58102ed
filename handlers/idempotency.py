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


class ReplyLedger(Protocol):
    """Replies of changes, kept in the transaction of the change they answer."""

    async def get(self, key: str) -> dict[str, Any] | None:
        """`{"fp", "reply"}` for a change committed under this key, else None."""
        ...

    def recording(
        self, key: str, fingerprint: str, keep: Callable[[Any], Envelope]
    ) -> contextlib.AbstractContextManager[None]:
        """While open, a unit of work that commits writes `keep(outcome)` under the key."""
        ...


def fingerprint(body: bytes) -> str:
    """Equal JSON bodies have equal fingerprints, whatever their key order or spacing."""
    try:
        canonical = orjson.dumps(orjson.loads(body), option=orjson.OPT_SORT_KEYS)
    except orjson.JSONDecodeError:
        canonical = body
    return hashlib.sha256(canonical).hexdigest()


class Idempotency:
    """Runs a request once per (caller, queue, key); repeats get the first reply."""

    def __init__(
        self,
        store: IdempotencyStore,
        caller_of: Callable[[str | None], str],
        ledger: ReplyLedger | None = None,
    ) -> None:
        self._store = store
        self._caller_of = caller_of
        self._ledger = ledger

    async def once(
        self,
        queue: str,
        authorization: str | None,
        key: str,
        body: bytes,
        work: Callable[[], Awaitable[Envelope]],
        keep: Callable[[Any], Envelope] | None = None,
    ) -> Envelope:
        """Do `work` once per key; `keep` (for a change in Postgres) renders its outcome.

        Redis holds the claim and the replies of every queue. A change's reply is also
        written in the change's own transaction (the ledger), so a worker killed after the
        commit but before Redis heard of it leaves the reply behind: the retry, which finds
        the claim lapsed and no reply in Redis, replays it instead of doing the work again.
        """
        if not KEY_PATTERN.fullmatch(key):
            msg = "Idempotency-Key must be 1-255 printable ASCII characters"
            raise ValidationFailed([FieldError(("header", "idempotency-key"), msg, "value_error")])
        scope = self._caller_of(authorization)
        slot = f"{scope}:{queue}:{hashlib.sha256(key.encode()).hexdigest()}"
        print_ = fingerprint(body)
        if not await self._store.claim(slot, print_):
            return _replay(await self._store.get(slot), print_)
        recording: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
        if self._ledger is not None and keep is not None:
            if (kept := await self._ledger.get(slot)) is not None:
                # The change committed, but its reply never reached Redis.
                await self._store.complete(slot, kept["fp"], kept["reply"])
                return _replay(kept, print_)
            recording = self._ledger.recording(slot, print_, keep)
        async with _renewing(self._store, slot, print_):
            with recording:
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
        # Waits for its end without `await task`, which would throw CancelledError in here:
        # suppressing it could swallow a cancellation of this task too, and CPython 3.11
        # traces no resume of a frame thrown into, so coverage lost the lines after this.
        await asyncio.wait([task])


def _replay(stored: dict[str, Any] | None, print_: str) -> Envelope:
    if stored is None:  # the first request's claim lapsed between our two reads
        raise IdempotencyKeyInUse
    if stored["fp"] != print_:
        raise IdempotencyKeyReused
    if "reply" not in stored:
        raise IdempotencyKeyInUse
    reply: Envelope = stored["reply"]
    return reply
