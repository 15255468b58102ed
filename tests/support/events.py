"""The events Warden publishes, as a subscriber of the test's own sees them."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import aio_pika
import orjson

WITHIN = 10.0  # seconds an awaited event may take; only keeps a broken test from hanging


@dataclass(frozen=True)
class Arrival:
    message: aio_pika.abc.AbstractIncomingMessage
    event: dict[str, Any]
    at: float  # time.perf_counter() when it arrived


class EventTap:
    """An exclusive queue of the test's own, bound to `user.#` on the events exchange."""

    def __init__(self) -> None:
        self.arrivals: list[Arrival] = []
        self._changed = asyncio.Event()

    async def on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        self.arrivals.append(Arrival(message, orjson.loads(message.body), time.perf_counter()))
        self._changed.set()

    async def wait_for(self, kind: str, subject: str) -> Arrival:
        async with asyncio.timeout(WITHIN):
            while True:
                self._changed.clear()
                for arrival in self.arrivals:
                    if (arrival.event["type"], arrival.event.get("subject")) == (kind, subject):
                        return arrival
                await self._changed.wait()

    async def kinds_until(self, barrier: str, user_id: int) -> list[str]:
        """The kinds of the user's events up to `barrier`, once `barrier` arrived: one
        publisher sends a user's events in commit order, so none before it is still coming."""
        await self.wait_for(barrier, str(user_id))
        kinds = [a.event["type"] for a in self.arrivals if a.event.get("subject") == str(user_id)]
        return kinds[: kinds.index(barrier) + 1]
