"""An in-test TCP proxy whose link can be cut and restored, to make a real service unreachable."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Literal

CutMode = Literal["refuse", "hang"]


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target; `cut()` drops every link until `restore()`.

    While cut, a new connection is either closed at once ("refuse": the client sees a reset)
    or accepted and never answered ("hang": the client waits for its own timeout).
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self._server: asyncio.Server | None = None
        self._mode: CutMode | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.connections = 0  # accepted connections, forwarded or not

    @property
    def port(self) -> int:
        assert self._server is not None, "start() the proxy first"
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def is_cut(self) -> bool:
        return self._mode is not None

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self._drop_all()
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def cut(self, mode: CutMode = "refuse") -> None:
        """Close every live connection; new ones are refused or left hanging until restore()."""
        self._mode = mode
        self._drop_all()

    def restore(self) -> None:
        """Forward new connections again (hanging ones are dropped, so clients reconnect)."""
        self._mode = None
        self._drop_all()

    async def __aenter__(self) -> TcpProxy:
        return await self.start()

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    def _drop_all(self) -> None:
        for writer in list(self._writers):
            _abort(writer)
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self._mode == "refuse":
            _abort(writer)
            return
        self._writers.add(writer)
        if self._mode == "hang":
            return  # kept open, never answered; dropped by restore() or close()
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            self._writers.discard(writer)
            _abort(writer)
            return
        self._writers.add(up_writer)
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink, (writer, up_writer)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
    ) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except (OSError, ConnectionError):
            pass
        finally:
            for writer in pair:
                self._writers.discard(writer)
                _abort(writer)


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close at once (RST, no graceful flush): a cut link, not a polite goodbye."""
    transport = writer.transport
    if not transport.is_closing():
        transport.abort()
