"""Work a request starts and its reply does not wait for (the two mail requests of §7).

Both answer the same 202 whatever the address. Replying before the lookup and the writes
makes the answer's timing independent of them: no timing oracle, whether the address is an
account's, verified, inactive or over its hourly limit. The work is bounded (at most `limit`
at once; past that a request waits for a slot before its reply, as under any overload) and
drained when the worker stops.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

import structlog

log = structlog.get_logger("warden.worker")


class Background:
    """Runs coroutines after the reply; a failure is logged, never raised to anyone."""

    def __init__(self, limit: int = 64) -> None:
        self._slots = asyncio.Semaphore(limit)
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self, work: Coroutine[Any, Any, None], what: str) -> None:
        """Start `work` once a slot is free; return without waiting for it."""
        await self._slots.acquire()
        task = asyncio.create_task(self._guarded(work, what), name=what)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _guarded(self, work: Coroutine[Any, Any, None], what: str) -> None:
        try:
            await work
        except Exception as exc:  # the caller has its 202; this is for the operator
            log.warning("background work failed", work=what, error=type(exc).__name__)
        finally:
            self._slots.release()

    async def drain(self, within: float) -> None:
        """Wait for the running work (the worker is stopping), at most `within` seconds."""
        if self._tasks:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(within):
                    await asyncio.gather(*self._tasks, return_exceptions=True)
