"""Waiting for something to happen, bounded: the tests' one way of lining events up.

A fixed sleep is either too short on a loaded machine (the test fails for nothing) or too
long everywhere else; a test waits for the condition it needs instead, up to a bound that
is only there so that a broken build fails rather than hangs.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

Check = Callable[[], bool | Awaitable[bool]]
INTERVAL = 0.02  # seconds between two looks; small next to anything a test waits for


async def eventually(
    check: Check,
    within: float,
    failure: str | Callable[[], str] = "",
    interval: float = INTERVAL,
) -> None:
    """Return as soon as `check()` is true; fail the test if it is still false after `within` s.

    `check` may be a plain or an async function. `failure` says what did not happen (a
    callable is asked only then, e.g. for the tail of a log).
    """
    if not await came_true(check, within, interval):
        what = failure() if callable(failure) else failure
        raise AssertionError(f"not within {within} s: {what or _name(check)}")


async def came_true(check: Check, within: float, interval: float = INTERVAL) -> bool:
    """Whether `check()` became true within `within` seconds (looked at once more at the end)."""
    deadline = time.monotonic() + within
    while True:
        outcome = check()
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if outcome:
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(interval)


def _name(check: Check) -> str:
    return getattr(check, "__qualname__", repr(check))
