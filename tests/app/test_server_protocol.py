"""app/server.py: a response's header block goes out with its body in one write, and a held
block never waits past the loop iteration, a close, or the next write (order kept)."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

import httpx
import pytest
import uvicorn

from app.server import HeadersWithBodyProtocol, HeadersWithBodyTransport

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"


class CountingProtocol(asyncio.Protocol):
    """The peer end: collects what arrives."""

    def __init__(self) -> None:
        self.received = bytearray()

    def data_received(self, data: bytes) -> None:
        self.received += data


async def _pair() -> tuple[HeadersWithBodyTransport, list[bytes], CountingProtocol, Any]:
    """A real socket-pair transport wrapped for the test; ``writes`` records each write that
    reaches the real transport."""
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, ours)
    peer_transport, peer = await loop.connect_accepted_socket(CountingProtocol, theirs)
    writes: list[bytes] = []
    real_write = transport.write

    def recording_write(data: Any) -> None:
        writes.append(bytes(data))
        real_write(data)

    transport.write = recording_write  # type: ignore[method-assign]
    return HeadersWithBodyTransport(transport, loop), writes, peer, peer_transport


async def _settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


def test_header_block_and_body_go_out_in_one_write() -> None:
    async def scenario() -> None:
        wrapped, writes, peer, peer_transport = await _pair()
        wrapped.write(HEAD)
        assert writes == []  # held
        wrapped.write(b"hello")
        assert writes == [HEAD + b"hello"]
        await _settle()
        assert bytes(peer.received) == HEAD + b"hello"
        wrapped.close()
        peer_transport.close()

    asyncio.run(scenario())


def test_a_lone_header_block_goes_out_at_the_end_of_the_iteration() -> None:
    """A streaming response whose body comes later: the headers do not wait for it."""

    async def scenario() -> None:
        wrapped, writes, peer, peer_transport = await _pair()
        wrapped.write(HEAD)
        await _settle()
        assert writes == [HEAD]
        wrapped.write(b"hello")  # later body chunks pass straight through
        assert writes == [HEAD, b"hello"]
        await _settle()
        assert bytes(peer.received) == HEAD + b"hello"
        wrapped.close()
        peer_transport.close()

    asyncio.run(scenario())


def test_close_sends_a_held_block_first_and_other_writes_pass_through() -> None:
    async def scenario() -> None:
        wrapped, writes, peer, peer_transport = await _pair()
        wrapped.write(b"not a header block")
        assert writes == [b"not a header block"]
        wrapped.write(HEAD)
        wrapped.close()
        assert writes == [b"not a header block", HEAD]
        await _settle()
        assert bytes(peer.received) == b"not a header block" + HEAD
        assert wrapped.is_closing()  # delegated to the real transport
        peer_transport.close()

    asyncio.run(scenario())


def test_abort_drops_a_held_block() -> None:
    async def scenario() -> None:
        wrapped, writes, _, peer_transport = await _pair()
        wrapped.write(HEAD)
        wrapped.abort()
        await _settle()
        assert writes == []
        peer_transport.close()

    asyncio.run(scenario())


@pytest.fixture
def served() -> Any:
    """A real uvicorn server with the protocol, on a free loopback port, in a thread."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await receive()
        if scope["path"] == "/stream":  # headers, then body chunks in later iterations
            await send({"type": "http.response.start", "status": 200, "headers": []})
            for chunk in (b"one ", b"two ", b"three"):
                await asyncio.sleep(0.01)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        body = b'{"ok":true}'
        headers = [(b"content-type", b"application/json"), (b"content-length", b"11")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, http=HeadersWithBodyProtocol, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        threading.Event().wait(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def test_real_server_answers_keep_alive_and_streaming_responses(served: str) -> None:
    with httpx.Client(base_url=served) as client:
        for _ in range(3):  # one keep-alive connection, several responses
            response = client.get("/")
            assert response.status_code == 200 and response.json() == {"ok": True}
        streamed = client.get("/stream")
        assert streamed.status_code == 200 and streamed.text == "one two three"
        assert streamed.headers["transfer-encoding"] == "chunked"
