"""The benchmarks' keep-alive HTTP client against a real HTTP/1.1 server (the standard
library's), which echoes what it received."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bridge.bench import httpclient as client


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, Content-Length framed
    connections: set[int] = set()

    def do_POST(self) -> None:  # noqa: N802 (the standard library's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Echo.connections.add(id(self.connection))
        if self.path == "/fail":
            self._answer(500, b"no")
            return
        if self.path == "/floor":
            self._answer(200, json.dumps({"seconds": [0.002]}).encode())
            return
        echo = {"path": self.path, "type": self.headers["Content-Type"], "body": body.decode()}
        self._answer(200, json.dumps(echo).encode())

    def do_GET(self) -> None:  # noqa: N802
        self._answer(404 if self.path == "/missing" else 200, b"ok")

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def base() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    Echo.connections.clear()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


async def _one(base: str, spec: dict) -> tuple[int, dict]:
    import asyncio

    host, port = client.host_port(base)
    reader, writer = await asyncio.open_connection(host, port)
    try:
        status, body = await client.exchange(reader, writer, client.encode_request(host, spec))
        return status, json.loads(body)
    finally:
        writer.close()


def test_a_json_request_arrives_as_sent(base: str) -> None:
    status, echo = client.run(_one(base, {"json": {"vector": [0.5], "k": 3}}))
    assert status == 200
    assert echo == {"path": "/v1/search", "type": "application/json",
                    "body": '{"vector": [0.5], "k": 3}'}  # fmt: skip


def test_a_multipart_upload_parses_back_into_its_fields_and_file(base: str) -> None:
    from email.parser import BytesParser
    from email.policy import HTTP

    spec = {"files": {"file": ("q.wav", b"RIFF\x00bytes", "audio/wav")},
            "data": {"target": "image", "k": "10"}, "path": "/v1/other"}  # fmt: skip
    status, echo = client.run(_one(base, spec))
    assert status == 200 and echo["path"] == "/v1/other"
    message = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {echo['type']}\r\n\r\n".encode() + echo["body"].encode("latin-1")
    )
    parts = {p.get_param("name", header="content-disposition"): p for p in message.iter_parts()}
    assert parts["target"].get_content() == "image" and parts["k"].get_content() == "10"
    assert parts["file"].get_filename() == "q.wav"
    assert parts["file"].get_content_type() == "audio/wav"


def test_http_level_sends_every_request_over_that_many_connections(base: str) -> None:
    requests = [{"json": {"i": i}} for i in range(4)]
    s = client.run(client.http_level(base, requests, total=20, clients=3))
    assert s["n"] == 20 and s["qps"] > 0
    assert len(Echo.connections) == 3  # keep-alive: one connection per client


def test_http_interleaved_pairs_floors_with_searches(base: str) -> None:
    floors = [{"path": "/floor", "json": {}}]
    service, floor = client.run(client.http_interleaved(base, [{"json": {}}], floors, 5))
    assert service["n"] == floor["n"] == 5
    assert floor["p50_ms"] == pytest.approx(2.0)  # the seconds the server reported


def test_a_failed_request_stops_the_run_with_its_status(base: str) -> None:
    with pytest.raises(RuntimeError, match="HTTP 500"):
        client.run(client.http_level(base, [{"json": {}, "path": "/fail"}], 2, 1))


def test_blocking_helpers(base: str) -> None:
    assert client.get(f"{base}/readyz") == (200, b"ok")
    assert client.get(f"{base}/missing")[0] == 404
    assert client.post_json(f"{base}/floor", {"total": 1}) == {"seconds": [0.002]}
