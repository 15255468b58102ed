"""The worker's broker connection over several nodes of one RabbitMQ cluster (CONTRACT §10).

FastStream connects with aio-pika's `connect_robust`, which takes one URL and, when the link
drops, reconnects to that same URL for ever: a worker whose node died would wait for that node.
`failover_connection` is the robust connection class we hand it instead. It keeps every
robust behaviour (its channels, queues, bindings and consumers are declared again on the new
link) but each connection attempt after the first goes to the next node of a shuffled list,
so a worker moves to a live node within about one reconnect interval, and a fleet of workers
spreads over the nodes.

How an attempt is recognised: aio-pika's connection factory clears `transport` before every
attempt (robust_connection.RobustConnection.__connect_transport, aio-pika 9 and 10). That
assignment is the one hook it offers; tests/cluster/ shows the move on a real cluster, so an
aio-pika upgrade that changes it fails there.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import structlog
from aio_pika import Connection, RobustConnection
from aio_pika.abc import AbstractConnection
from faststream.rabbit import RabbitBroker
from yarl import URL

from contract.protocol import node_address

log = structlog.get_logger("warden.broker")

# Seconds between losing a node and using the next one. A channel opened at once, while the
# cluster is still electing new leaders for the quorum queues the lost node led, can address
# the dead leader: RabbitMQ 3.10 then holds what it publishes or consumes for about 15 s
# (seen in tests/cluster). Elections take well under a second here; the edge waits as long.
LOSS_SETTLE = 2.0


async def connect(url: str, within: float) -> AbstractConnection:
    """A plain (not robust) connection to `url`; one that fails to open is closed at once.

    `aio_pika.connect` leaves a connection that failed to open to the garbage collector,
    whose `__del__` schedules a close: outside a running loop nobody awaits it (a warning,
    and a test that fails for another's leak), inside one each failed attempt of a retry
    loop holds its objects until a collection finds them.
    """
    connection = Connection(URL(url))
    try:
        await connection.connect(timeout=within)
    except BaseException:
        await connection.close()
        raise
    return connection


class FailoverConnection(RobustConnection):
    """A robust connection that tries the next node at every reconnection attempt."""

    nodes: tuple[str, ...] = ()

    def __init__(self, url: URL, *args: Any, **kwargs: Any) -> None:
        self._index = 0
        super().__init__(URL(self.nodes[0]) if self.nodes else url, *args, **kwargs)

    @property
    def node(self) -> str:
        """host:port of the node this connection is on (or trying)."""
        return node_address(str(self.url))

    @property
    def transport(self) -> Any:
        return self.__dict__.get("_failover_transport")

    @transport.setter
    def transport(self, value: Any) -> None:
        if value is None and self._attempted_before():
            self._next_node()
        self.__dict__["_failover_transport"] = value

    async def _on_connection_close(self, closing: asyncio.Future[Any]) -> None:
        if not (self._close_called or self.is_closed):
            self.__dict__["_failover_lost_at"] = time.monotonic()
        await super()._on_connection_close(closing)

    async def _on_connected(self) -> None:
        # Connected to the next node; its channels (consumers, publishers) are restored in
        # super()._on_connected, once the cluster had LOSS_SETTLE to elect new leaders.
        lost_at = self.__dict__.pop("_failover_lost_at", None)
        if lost_at is not None:
            await asyncio.sleep(max(0.0, LOSS_SETTLE - (time.monotonic() - lost_at)))
        await super()._on_connected()

    def _attempted_before(self) -> bool:
        # The first clearing is Connection.__init__'s; the second precedes the first attempt,
        # which goes to the first node; every later one precedes a reconnection.
        attempted: int = self.__dict__.get("_failover_clears", 0)
        self.__dict__["_failover_clears"] = attempted + 1
        return attempted >= 2

    def _next_node(self) -> None:
        if len(self.nodes) < 2:
            return
        self._index = (self._index + 1) % len(self.nodes)
        self.url = URL(self.nodes[self._index])
        log.info("broker: trying the next node", node=self.node)


def failover_connection(
    nodes: tuple[str, ...], rng: random.Random | None = None
) -> type[FailoverConnection]:
    """A FailoverConnection class over `nodes`, shuffled so that workers spread."""
    shuffled = list(nodes)
    (rng or random.SystemRandom()).shuffle(shuffled)
    return type("FailoverConnection", (FailoverConnection,), {"nodes": tuple(shuffled)})


def _connection_class(broker: RabbitBroker) -> type[FailoverConnection] | None:
    cls = broker._connection_kwargs.get("connection_class")
    return cls if isinstance(cls, type) and issubclass(cls, FailoverConnection) else None


def node_of(broker: RabbitBroker) -> str | None:
    """host:port of the node `broker` is connected to (or will try first), None if unknown."""
    connection = broker._connection
    if isinstance(connection, FailoverConnection):
        return connection.node if connection.connected.is_set() else None
    cls = _connection_class(broker)
    return node_address(cls.nodes[0]) if cls is not None and cls.nodes else None


def next_first_node(broker: RabbitBroker) -> None:
    """Make the next connection of `broker` start at the next node (its first one failed)."""
    cls = _connection_class(broker)
    if cls is not None and len(cls.nodes) > 1:
        cls.nodes = (*cls.nodes[1:], cls.nodes[0])
