"""HTTP/1.1 over a plain socket: bytes an HTTP client library would refuse or re-encode."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

from yarl import URL


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes


async def raw_request(
    base: str,
    method: str,
    target: bytes,
    headers: Sequence[tuple[bytes, bytes]] = (),
    body: bytes = b"",
    wait: float = 15,
) -> RawResponse:
    """Send exactly these bytes (request line, headers, body) and read the whole answer."""
    url = URL(base)
    assert url.host is not None
    assert url.port is not None
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        lines = [
            method.encode() + b" " + target + b" HTTP/1.1",
            b"Host: " + url.host.encode(),
            b"Connection: close",
            *(name + b": " + value for name, value in headers),
            b"Content-Length: " + str(len(body)).encode(),
        ]
        writer.write(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        async with asyncio.timeout(wait):
            await writer.drain()
            data = await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    head, _, payload = data.partition(b"\r\n\r\n")
    status_line, *fields = head.decode("latin-1").split("\r\n")
    parsed = (field.partition(":") for field in fields)
    return RawResponse(
        int(status_line.split()[1]), {k.strip().lower(): v.strip() for k, _, v in parsed}, payload
    )
