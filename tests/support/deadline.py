"""Every async test has a deadline: a hung await fails its test, it never hangs the run.

`tests/support/waiting.py` bounds what a test waits for on purpose; this bounds everything
else (a broker call that never returns, a lock never released). Past `TEST_DEADLINE`
seconds the test's task is cancelled where it waits, so the failure's traceback names the
await that hung, and the fixtures' teardown still runs. pytest-timeout (pyproject) is the
last resort behind it, for a hang outside the event loop or in a fixture: it dumps every
thread's stack and ends the run.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

# The slowest test takes under a minute on this machine; three minutes is a hang.
TEST_DEADLINE = float(os.environ.get("WARDEN_TEST_DEADLINE", "180"))


def bounded(test: Callable[..., Coroutine[Any, Any, Any]]) -> Callable[..., Any]:
    @functools.wraps(test)  # keeps the signature: pytest still injects the same fixtures
    async def run(*args: Any, **kwargs: Any) -> Any:
        try:
            async with asyncio.timeout(TEST_DEADLINE):
                return await test(*args, **kwargs)
        except TimeoutError as hung:
            raise AssertionError(f"hung: still running after {TEST_DEADLINE} s") from hung

    return run


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        test = getattr(item, "obj", None)
        if (
            isinstance(item, pytest.Function)
            and inspect.iscoroutinefunction(test)
            and not getattr(test, "is_hypothesis_test", False)
        ):
            item.obj = bounded(test)
