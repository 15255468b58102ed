"""Several broker nodes in WARDEN_AMQP_URL, on one real broker: two in-test TCP proxies in
front of it stand for two nodes. Cutting the one a worker and the edge are on moves both to
the other: the worker declares its queues and consumers again there and serves, the edge
answers 503 while it has no node and names the new one in readiness.

(tests/cluster does the same on a real three-node cluster, with `kill -9`.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import pytest_asyncio
from aiohttp.test_utils import TestServer

from tests.conftest import make_settings
from tests.support.infra import Urls, own_vhost
from tests.support.proxy import TcpProxy
from tests.support.waiting import eventually
from warden.bootstrap import build_edge, running_worker
from warden.settings import Settings
from web.app import RPC_CLIENT

WITHIN = 20.0


def via(url: str, proxy: TcpProxy) -> str:
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=f"{credentials}@127.0.0.1:{proxy.port}"))


@pytest_asyncio.fixture
async def two_nodes(urls: Urls, database: str) -> AsyncIterator[tuple[Settings, list[TcpProxy]]]:
    with own_vhost(urls.amqp) as amqp_url:
        target = urlsplit(amqp_url)
        async with (
            TcpProxy(target.hostname or "127.0.0.1", target.port or 5672) as a,
            TcpProxy(target.hostname or "127.0.0.1", target.port or 5672) as b,
        ):
            nodes = f"{via(amqp_url, a)},{via(amqp_url, b)}"
            yield make_settings(urls, amqp_url=nodes), [a, b]


async def test_the_worker_and_the_edge_move_to_the_other_node_when_theirs_goes(
    two_nodes: tuple[Settings, list[TcpProxy]],
) -> None:
    settings, proxies = two_nodes
    async with running_worker(settings):
        server = TestServer(build_edge(settings), host="127.0.0.1")
        await server.start_server()
        assert server.app is not None
        client = server.app[RPC_CLIENT]
        try:
            assert await client.wait_connected(10)
            edge_node = client.node
            (edge_proxy,) = [p for p in proxies if edge_node.endswith(f":{p.port}")]
            async with aiohttp.ClientSession(str(server.make_url(""))) as http:
                async with http.get("/health/ready") as r:
                    ready = await r.json()
                assert ready["checks"]["broker"]["node"] == edge_node
                worker_node = ready["checks"]["workers"]["node"]
                (worker_proxy,) = [p for p in proxies if worker_node.endswith(f":{p.port}")]

                # Both lose their node at once if they share one; else one each, in turn.
                for lost in {id(edge_proxy): edge_proxy, id(worker_proxy): worker_proxy}.values():
                    lost.cut("refuse")
                    other = next(p for p in proxies if p is not lost)

                    async def moved(lost: TcpProxy = lost, other: TcpProxy = other) -> bool:
                        async with http.get("/health/ready") as r:
                            checks = (await r.json())["checks"]
                        return r.status == 200 and all(
                            checks[c]["node"].endswith(f":{other.port}")
                            for c in ("broker", "workers")
                        )

                    await eventually(moved, WITHIN, "edge and worker did not move")
                    # The worker serves from the other node: its queues and consumers are back.
                    async with http.get("/api/v1/users/me") as r:
                        assert r.status == 401
                    lost.restore()
        finally:
            await server.close()
