"""uvicorn's httptools protocol with each response's header block and body in one send().

uvicorn writes a response in two `transport.write` calls: the status line and headers on
`http.response.start`, then the body. Each write is a `send()` syscall and, on loopback or a
fast network, a TCP segment the client wakes up for; a client that reads the headers and
then the body (asyncio streams, http.client) wakes twice. On this project's 2-core VM the
two writes were ~0.24 ms of a one-client search request (py-spy, README "Service latency and
throughput"). Here the header block waits for the first body write and goes out with it.

The wait is bounded: a held header block goes out with the next write on the connection, at
`close()`, or at the end of the current event-loop iteration (`call_soon`), whichever comes
first, so a streaming response whose body comes later is not delayed past one iteration.
Writes keep their order in every case.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


def _is_header_block(data: bytes | bytearray | memoryview) -> bool:
    """uvicorn's response-start write: ``HTTP/1.1 <status> ...\\r\\n\\r\\n`` (1xx included)."""
    return bytes(data[:5]) == b"HTTP/" and bytes(data[-4:]) == b"\r\n\r\n"


class HeadersWithBodyTransport:
    """Wraps a connection's transport: holds a header block until the next write (module
    docstring); every other attribute is the wrapped transport's."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None
        self._flush_handle: asyncio.Handle | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._held is not None:
            held, self._held = self._held, None
            self._cancel_flush()
            self._transport.write(held + bytes(data))
            return
        if _is_header_block(data) and not self._transport.is_closing():
            self._held = bytes(data)
            self._flush_handle = self._loop.call_soon(self.flush)
            return
        self._transport.write(data)

    def flush(self) -> None:
        """Write a held header block now (no-op when none is held)."""
        self._cancel_flush()
        if self._held is not None:
            held, self._held = self._held, None
            self._transport.write(held)

    def close(self) -> None:
        self.flush()  # close() still sends what was written before it
        self._transport.close()

    def abort(self) -> None:
        self._held = None  # abort() drops buffered data by definition
        self._cancel_flush()
        self._transport.abort()

    def _cancel_flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class HeadersWithBodyProtocol(HttpToolsProtocol):
    """uvicorn's httptools HTTP/1.1 protocol writing through HeadersWithBodyTransport.
    Flow control and address lookups keep the raw transport."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = HeadersWithBodyTransport(transport, self.loop)  # type: ignore[assignment]


# What `python -m app` passes to uvicorn as `http` (a benchmark may set "httptools" for A/B).
PROTOCOL: type[asyncio.Protocol] | str = HeadersWithBodyProtocol
