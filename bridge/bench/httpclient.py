"""The benchmarks' HTTP client: keep-alive connections over asyncio streams, requests encoded
up front, so that the client's own CPU, which shares the machine's cores with the server,
stays small (httpx costs about 1 ms of CPU per request, which would be billed to the
service). Plus three blocking helpers (urllib) for untimed calls: readiness, metrics, floors.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from bridge.bench.timing import floor_stats, stats

BOUNDARY = "benchboundary7MA4YWxkTrZu0gW"


def encode_request(host: str, spec: dict[str, Any]) -> bytes:
    """One request (spec["method"], default POST, to spec["path"], default /v1/search, with
    spec["headers"]) as raw HTTP/1.1 bytes (keep-alive): a JSON body (spec["json"]), a
    multipart form (spec["data"] fields and spec["files"]["file"] = (filename, bytes, content
    type)), or none."""
    if "json" not in spec and "files" not in spec:
        body, content_type = b"", "application/json"
    elif "json" in spec:
        body = json.dumps(spec["json"]).encode()
        content_type = "application/json"
    else:
        parts = []
        for name, value in spec["data"].items():
            parts.append(
                f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                f"{value}\r\n".encode()
            )
        filename, data, mime = spec["files"]["file"]
        parts.append(
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{filename}"\r\nContent-Type: {mime}\r\n\r\n'.encode()
            + data
            + b"\r\n"
        )
        body = b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()
        content_type = f"multipart/form-data; boundary={BOUNDARY}"
    extra = "".join(f"{name}: {value}\r\n" for name, value in spec.get("headers", {}).items())
    head = (
        f"{spec.get('method', 'POST')} {spec.get('path', '/v1/search')} HTTP/1.1\r\n"
        f"Host: {host}\r\nContent-Type: {content_type}\r\n{extra}"
        f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n"
    )
    return head.encode() + body


def host_port(base: str) -> tuple[str, int]:
    host, port = base.removeprefix("http://").split(":")
    return host, int(port)


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bytes]:
    """Send one request and read one response (Content-Length framed, as uvicorn sends)."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    return status, await reader.readexactly(length)


def _check(status: int, body: bytes, what: str = "") -> None:
    if status != 200:
        raise RuntimeError(f"{what}HTTP {status}: {body[:300]!r}")


async def http_level(
    base: str | list[str], requests: list[dict[str, Any]], total: int, clients: int
) -> dict[str, float]:
    """``clients`` keep-alive connections, each sending one request at a time, ``total``
    requests between them (cycling through ``requests``); each connection is warmed by one
    untimed request first. Several bases (replicas): connection i goes to base i % len."""
    bases = [base] if isinstance(base, str) else base
    encoded = [encode_request(f"{bases[0].removeprefix('http://')}", spec) for spec in requests]
    latencies: list[float] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(total):
        queue.put_nowait(i)
    connections = [
        await asyncio.open_connection(*host_port(bases[i % len(bases)])) for i in range(clients)
    ]
    for reader, writer in connections:  # warm each connection
        _check(*await exchange(reader, writer, encoded[0]))

    async def worker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            t0 = time.perf_counter()
            status, body = await exchange(reader, writer, encoded[i % len(encoded)])
            latencies.append(time.perf_counter() - t0)
            _check(status, body)

    try:
        started = time.perf_counter()
        await asyncio.gather(*(worker(r, w) for r, w in connections))
        wall = time.perf_counter() - started
    finally:
        for _, writer in connections:
            writer.close()
    return stats(latencies, wall)


async def http_interleaved(
    base: str, requests: list[dict[str, Any]], floors: list[dict[str, Any]], total: int
) -> tuple[dict[str, float], dict[str, float]]:
    """One keep-alive connection: for each i, the server's raw floor search of query i
    (``floors[i]``, a POST to the floor route; its seconds as the server timed them), then
    search request i, timed here. Answers (service stats, floor stats)."""
    host, port = host_port(base)
    encoded = [encode_request(f"{host}:{port}", spec) for spec in requests]
    encoded_floors = [encode_request(f"{host}:{port}", spec) for spec in floors]
    reader, writer = await asyncio.open_connection(host, port)
    latencies: list[float] = []
    floor: list[float] = []
    try:
        for i in range(-1, total):  # i = -1: warm the connection, untimed
            status, floor_body = await exchange(reader, writer, encoded_floors[i % len(floors)])
            _check(status, floor_body, "floor: ")
            t0 = time.perf_counter()
            status, body = await exchange(reader, writer, encoded[i % len(encoded)])
            dt = time.perf_counter() - t0
            _check(status, body)
            if i >= 0:
                latencies.append(dt)
                floor.extend(json.loads(floor_body)["seconds"])
    finally:
        writer.close()
    return stats(latencies, sum(latencies)), floor_stats(floor)


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop for the client too when it is installed (it is a service dependency)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(coroutine: Any) -> Any:
    """Run one client coroutine on a fresh (uvloop) event loop."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(coroutine)


def get(url: str, timeout: float = 60) -> tuple[int, bytes]:
    """A blocking GET: (status, body); an HTTP error status is answered, not raised."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def post_json(url: str, body: dict[str, Any], timeout: float = 900) -> Any:
    """A blocking JSON POST; raises unless the answer is 200, answers the decoded body."""
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())
