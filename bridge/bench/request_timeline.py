r"""Where one HTTP vector search's time goes: server-side timestamps per request, in order.

    mbridge bench request-timeline --items 100000 --queries 256 \
        --json docs/benchmarks/request-timeline-100k.json

Starts the benchmark server (`python -m app` plus the floor route, bridge/bench/appserver.py
``--timeline``) on N synthetic items, with timestamps recorded on the way of a JSON search:
bytes received (uvicorn's `data_received`), the JSON fast path entered, body parsed
(`_json_query`), the quick-query check, the engine call (`search_each`), the query planned
(`_plan`: checks, vector, route), `VectorIndex.search`, the FAISS call under the index lock
(`_search_batch`, split scan included), hydration, the engine's response, JSON serialised,
and each ASGI `send` into uvicorn (which writes the socket). One client runs the interleaved
pairs of `mbridge bench http-overhead` (a raw floor search, then the same vector as POST
/v1/search, timed by the client). `time.perf_counter` is CLOCK_MONOTONIC, one clock for both
processes, so client and server timestamps line up. Prints the p50 of every gap between
consecutive events (a `+` event is a call's start, `-` its end). Each event costs about a
microsecond, so the total runs a little above an uninstrumented server's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bridge.bench import httpclient as client
from bridge.bench.floor import FLOOR_PATH
from bridge.bench.report import bench_parser, markdown_table, write_report
from bridge.bench.server import serving
from bridge.bench.standins import K, near_queries, synthetic_service

if TYPE_CHECKING:
    from fastapi import FastAPI

TIMELINE_PATH = "/_bench/timeline"
Event = tuple[str, float]

# Functions timed on the request path: (owner, attribute, label). The app's are named
# (bridge/ does not import app/) and looked up in the benchmark server's process.
APP_PROBES = (
    ("app.fastpath:JSONSearchFastPath", "_answer", "fastpath"),
    ("app.routes.search", "_json_query", "parse"),
    ("app.routes.search", "search_response_json", "serialise"),
)


def _wrap(events: list[Event], owner: Any, name: str, label: str) -> None:
    """Replace ``owner.name`` by a version that appends (label+/-, perf_counter) around it."""
    original = getattr(owner, name)
    if asyncio.iscoroutinefunction(original):

        async def timed_async(*args: Any, **kwargs: Any) -> Any:
            events.append((label + "+", time.perf_counter()))
            try:
                return await original(*args, **kwargs)
            finally:
                events.append((label + "-", time.perf_counter()))

        setattr(owner, name, timed_async)
        return

    def timed(*args: Any, **kwargs: Any) -> Any:
        events.append((label + "+", time.perf_counter()))
        try:
            return original(*args, **kwargs)
        finally:
            events.append((label + "-", time.perf_counter()))

    setattr(owner, name, timed)


def instrument(events: list[Event]) -> None:
    """Wrap the request path's functions so that each appends (label, perf_counter)."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

    from bridge.bench.appserver import app_object
    from bridge.index.vectors import VectorIndex
    from bridge.service.facade import BridgeService
    from bridge.service.search import Searcher

    received = HttpToolsProtocol.data_received

    def data_received(self: Any, data: bytes) -> None:
        events.append(("recv", time.perf_counter()))
        received(self, data)

    HttpToolsProtocol.data_received = data_received  # type: ignore[method-assign]
    _wrap(events, RequestResponseCycle, "send", "send")
    for owner, name, label in APP_PROBES:
        _wrap(events, app_object(owner), name, label)
    _wrap(events, BridgeService, "is_quick", "quick")
    _wrap(events, BridgeService, "search_each", "engine")
    _wrap(events, Searcher, "_plan", "plan")
    _wrap(events, Searcher, "_hydrate", "hydrate")
    _wrap(events, VectorIndex, "search", "index")
    _wrap(events, VectorIndex, "_search_batch", "faiss")


def add_timeline(app: FastAPI) -> None:
    """In the benchmark server: instrument the request path, and serve the events so far at
    ``GET /_bench/timeline``."""
    events: list[Event] = []
    instrument(events)

    async def timeline() -> list[Event]:
        return list(events)

    app.add_api_route(TIMELINE_PATH, timeline, include_in_schema=False)
    app.router.routes.insert(0, app.router.routes.pop())  # before the page mounted at "/"


async def run_pairs(
    base: str, searches: list[bytes], floors: list[bytes], total: int
) -> list[tuple[float, float]]:
    """Interleaved floor + search pairs on one connection: (t0, t1) of each timed search."""
    host, port = client.host_port(base)
    reader, writer = await asyncio.open_connection(host, port)
    marks = []
    try:
        for i in range(-20, total):  # 20 untimed pairs first
            status, _ = await client.exchange(reader, writer, floors[i % len(floors)])
            t0 = time.perf_counter()
            status2, body = await client.exchange(reader, writer, searches[i % len(searches)])
            t1 = time.perf_counter()
            if status != 200 or status2 != 200:
                raise RuntimeError(f"HTTP {status}/{status2}: {body[:300]!r}")
            if i >= 0:
                marks.append((t0, t1))
    finally:
        writer.close()
    return marks


def gaps(events: list[Event], marks: list[tuple[float, float]]) -> dict[str, float]:
    """p50 ms of each 'a -> b' gap between consecutive events inside the timed requests
    (client send first, client receive last), in request order; only gaps seen in most
    requests are kept (a first-of-a-kind event is not a pattern)."""
    seen: dict[str, list[float]] = {}
    places: dict[str, list[int]] = {}  # where in its request each gap came
    for t0, t1 in marks:
        inside = sorted((e for e in events if t0 <= e[1] <= t1), key=lambda e: e[1])
        previous: Event = ("client send", t0)
        for place, event in enumerate([*inside, ("client receive", t1)]):
            name = f"{previous[0]} -> {event[0]}"
            seen.setdefault(name, []).append(event[1] - previous[1])
            places.setdefault(name, []).append(place)
            previous = event
    common = [k for k, v in seen.items() if len(v) >= 0.9 * len(marks)]
    common.sort(key=lambda k: float(np.median(places[k])))
    return {k: float(np.median(seen[k])) * 1e3 for k in common}


def measure(args: argparse.Namespace, work: Path) -> tuple[list[Event], list[tuple[float, float]]]:
    config, images, rng = synthetic_service(work, args.items)
    queries = near_queries(rng, images)
    with serving(config, options=["--timeline"]) as (_, base):
        host = base.removeprefix("http://")
        searches = [
            client.encode_request(
                host, {"json": {"vector": v.tolist(), "space": "clip", "target": "image", "k": K}}
            )
            for v in queries
        ]
        floor: dict[str, Any] = {"index": "native", "target": "image", "total": 1}
        floors = [
            client.encode_request(
                host, {"path": FLOOR_PATH, "json": {**floor, "queries": [v.tolist()]}}
            )
            for v in queries
        ]
        marks = client.run(run_pairs(base, searches, floors, args.queries))
        answer = json.loads(client.get(base + TIMELINE_PATH)[1])
    return [(str(label), float(t)) for label, t in answer], marks


def main(argv: list[str]) -> int:
    parser = bench_parser("request-timeline", __doc__)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=256)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="request-timeline-"))
    try:
        events, marks = measure(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    timeline = gaps(events, marks)
    total = float(np.median([t1 - t0 for t0, t1 in marks])) * 1e3
    search = timeline.get("faiss+ -> faiss-", 0.0)
    print(f"{args.items:,} items, {args.queries} timed searches, p50 ms per gap")
    rows = [[name, f"{ms:.3f}"] for name, ms in timeline.items()]
    rows.append(["whole request, client-timed", f"{total:.3f}"])
    rows.append(["outside the FAISS call (p50 total - p50 FAISS call)", f"{total - search:.3f}"])
    print(markdown_table(["from -> to", "p50 ms"], ["---", "---:"], rows))
    write_report(
        args.json, "request-timeline", argv, items=args.items, p50_ms=timeline,
        request_p50_ms=total,
    )  # fmt: skip
    return 0
