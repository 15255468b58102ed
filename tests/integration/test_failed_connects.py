"""A broker connection that fails to open is closed by whoever tried, at once.

`aio_pika.connect` leaves it open, to the garbage collector: its `__del__` then schedules a
close, and collected where no loop runs, that close is a coroutine nobody awaits (a warning
that fails whichever test is running then: CI failed a verifier test so). In a retry loop
(the verifier's follower, the dead-letter gauge's scrapes) every failed attempt would hold
its objects until a collection found them.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import aio_pika
import pytest
from warden_verifier import follower

from handlers import nodes


class Recorded(aio_pika.Connection):
    made: ClassVar[list[aio_pika.Connection]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        Recorded.made.append(self)


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])  # nobody listens there once it is closed
    return f"amqp://guest:guest@127.0.0.1:{port}/"


async def after_a_failed_connect(attempt: Callable[[str], Awaitable[Any]]) -> aio_pika.Connection:
    Recorded.made.clear()
    with pytest.raises(OSError):
        await attempt(closed_port_url())
    (made,) = Recorded.made
    return made


@pytest.mark.parametrize("module", [nodes, follower], ids=["warden", "verifier"])
async def test_a_connection_that_fails_to_open_is_closed(
    module: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    if module is nodes:
        monkeypatch.setattr(nodes, "Connection", Recorded)
        made = await after_a_failed_connect(lambda url: nodes.connect(url, within=5))
    else:
        monkeypatch.setattr(aio_pika, "Connection", Recorded)  # the follower looks it up
        made = await after_a_failed_connect(lambda url: follower._connect(url, within=5))
    assert made.is_closed


async def test_aio_pikas_own_connect_leaves_it_open() -> None:
    """What the test above guards against, still true of the aio-pika in use."""
    made = await after_a_failed_connect(
        lambda url: aio_pika.connect(url, timeout=5, connection_class=Recorded)
    )
    assert not made.is_closed
    await made.close()
