"""Idempotent requests: the first reply to a key is kept and replayed, the work done once."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

import orjson

from contract.errors import IdempotencyKeyInUse, IdempotencyKeyReused, InvalidIdempotencyKey
from contract.protocol import valid_idempotency_key
from storage.idempotency import Render, ReplyRecorder

RENEW_EVERY = 3.0  # seconds; well inside the store's pending lease
HEARTBEAT_EVERY = 0.5  # seconds; a third of the store's heartbeat TTL
Envelope = dict[str, Any]
# A queue's check of a kept reply before a repeat gets it: the envelope to answer with, or
# None to do the work again (it may raise a WardenError to answer that instead).
Replay = Callable[[Envelope], Awaitable[Envelope | None]]
# A request's work: an idempotent change's runs with the recorder of its reply, to open its
# units of work with (see storage.uow); anything else with None.
Work = Callable[[ReplyRecorder | None], Awaitable[Envelope]]


class IdempotencyStore(Protocol):
    """Where claimed keys and their replies live."""

    async def claim(self, key: str, fingerprint: str) -> dict[str, Any] | None:
        """Claim the key (or take over the claim of a holder that died): None when it is ours
        now, else what the key holds: `{"fp"}` while worked on, `{"fp", "reply"}` after."""
        ...

    async def renew(self, key: str, fingerprint: str) -> None:
        """Extend a pending claim's lease (a claim lapses soon after its worker dies)."""
        ...

    async def complete(self, key: str, fingerprint: str, reply: Envelope) -> None:
        """Keep the reply, unless another holder took the claim over meanwhile."""
        ...

    async def release(self, key: str) -> None: ...

    async def beat(self) -> None:
        """Say this process is alive, so its claims are not taken over."""
        ...


class ReplyLedger(Protocol):
    """Replies of changes, kept in the transaction of the change they answer."""

    async def get(self, key: str) -> dict[str, Any] | None:
        """`{"fp", "reply"}` for a change committed under this key, else None."""
        ...

    def recorder(self, key: str, fingerprint: str, render: Render) -> ReplyRecorder:
        """The recorder of one change's reply: a unit of work opened with it that commits
        writes `render(the user it changed)` under the key, in the same transaction."""
        ...


def fingerprint(key: bytes, body: bytes) -> str:
    """A keyed digest (HMAC-SHA256) of the body, equal for equal JSON bodies whatever their key
    order or spacing; keyed, so a kept one cannot be tested against guessed passwords."""
    try:
        canonical = orjson.dumps(orjson.loads(body), option=orjson.OPT_SORT_KEYS)
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):  # not JSON, or nested too deep
        canonical = body
    return hmac.new(key, canonical, hashlib.sha256).hexdigest()


class Idempotency:
    """Runs a request once per (caller, queue, key); repeats get the first reply."""

    def __init__(
        self,
        store: IdempotencyStore,
        caller_of: Callable[[str | None], Awaitable[str]],
        fingerprint_key: bytes,
        ledger: ReplyLedger | None = None,
    ) -> None:
        self._store = store
        self._caller_of = caller_of
        self._fingerprint_key = fingerprint_key
        self._ledger = ledger

    async def once(
        self,
        queue: str,
        authorization: str | None,
        key: str,
        body: bytes,
        work: Work,
        render: Render | None = None,
        replay: Replay | None = None,
    ) -> Envelope:
        """Do `work` once per key; `render` (for a change in Postgres) renders its reply.

        Redis holds the claim and the replies of every queue. A change's reply is also
        written in the change's own transaction, by the recorder made here and handed to
        `work`, so a worker killed after the commit but before Redis heard of it leaves the
        reply behind: the retry, which takes the dead worker's claim over and finds no reply
        in Redis, replays it instead of doing the work again. `replay` checks a kept reply
        before a repeat gets it.
        """
        if not valid_idempotency_key(key):
            raise InvalidIdempotencyKey
        scope = await self._caller_of(authorization)
        slot = f"{scope}:{queue}:{hashlib.sha256(key.encode()).hexdigest()}"
        print_ = fingerprint(self._fingerprint_key, body)
        if (found := await self._store.claim(slot, print_)) is not None:
            return await _replayed(found, print_, work, replay)
        try:
            if self._ledger is not None and render is not None:
                if (kept := await self._ledger.get(slot)) is not None:
                    # The change committed, but its reply never reached Redis.
                    await self._store.complete(slot, kept["fp"], kept["reply"])
                    return await _replayed(kept, print_, work, replay)
                reply = await _recorded(self._store, self._ledger, slot, print_, work, render)
            else:
                async with _renewing(self._store, slot, print_):
                    reply = await work(None)
        except BaseException:
            # Cancelled (the request's channel was lost with its broker node, the worker is
            # stopping) or failed: the claim goes, so the caller's retry is worked at once
            # rather than answered idempotency_key_in_use until the lease lapses while this
            # worker lives on. A change committed before that left its reply in the ledger,
            # which the retry replays.
            with contextlib.suppress(Exception):
                await self._store.release(slot)
            raise
        if reply["ok"] or reply["error"]["status"] < 500:
            await self._store.complete(slot, print_, reply)
        else:  # a 5xx is never kept: a retry must do the work again
            await self._store.release(slot)
        return reply

    async def heartbeat(self) -> None:
        """Say every HEARTBEAT_EVERY seconds that this process lives (one task per process)."""
        while True:
            with contextlib.suppress(Exception):  # Redis away: beat again when it is back
                await self._store.beat()
            await asyncio.sleep(HEARTBEAT_EVERY)


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


async def _recorded(
    store: IdempotencyStore,
    ledger: ReplyLedger,
    slot: str,
    print_: str,
    work: Work,
    render: Render,
) -> Envelope:
    """Do a change whose reply is kept in its own transaction, by the recorder it is given.

    A refusal defers to a change committed meanwhile under the same key, by a holder taken
    for dead while it was not (a registration then meets its own email): its reply wins.
    """
    async with _renewing(store, slot, print_):
        reply = await work(ledger.recorder(slot, print_, render))
        refused = not reply["ok"] and reply["error"]["status"] < 500
        if refused and (kept := await ledger.get(slot)) is not None:
            committed: Envelope = kept["reply"]
            return committed
    return reply


async def _replayed(
    stored: dict[str, Any],
    print_: str,
    work: Work,
    replay: Replay | None,
) -> Envelope:
    if stored["fp"] != print_:
        raise IdempotencyKeyReused
    if "reply" not in stored:
        raise IdempotencyKeyInUse
    reply: Envelope = stored["reply"]
    if replay is None:
        return reply
    checked = await replay(reply)
    return await work(None) if checked is None else checked
