r"""Where one HTTP vector search's time goes: server-side timestamps per request, in order.

    .venv/bin/python scripts/bench/request_timeline.py --items 100000 --queries 256 \
        --json docs/benchmarks/request-timeline-100k.json

Starts the benchmark server (`python -m app` plus the floor route, scripts/bench/own_floor.py)
on N synthetic items, with timestamps recorded on the way of a JSON search: bytes received
(uvicorn's `data_received`), the JSON fast path entered, body parsed (`_json_query`), the
quick-query check, the engine call (`search_each`), the query planned (`_plan`: checks,
vector, route), `VectorIndex.search`, the FAISS call under the index lock (`_search_batch`,
split scan included), hydration, the engine's response, JSON serialised, and each ASGI
`send` into uvicorn (which writes the socket). One client runs the interleaved pairs of
scripts/bench/http_overhead.py (a raw floor search, then the same vector as POST
/v1/search, timed by the client). `time.perf_counter` is CLOCK_MONOTONIC, one clock for both
processes, so client and server timestamps line up. Prints the p50 of every gap between
consecutive events (a `+` event is a call's start, `-` its end). Each event costs about a
microsecond, so the total runs a little above an uninstrumented server's.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "scripts" / "bench")]

import own_floor  # noqa: E402
import service_bench as sb  # noqa: E402

TIMELINE_PATH = "/_bench/timeline"
Event = tuple[str, float]


def _instrument(events: list[Event]) -> None:
    """Wrap the request path's functions so that each appends (label, perf_counter)."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

    import app.fastpath
    import app.routes.search
    import bridge.index.vectors
    import bridge.service.facade
    import bridge.service.search

    def wrap(owner: Any, name: str, label: str) -> None:
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

    received = HttpToolsProtocol.data_received

    def data_received(self: Any, data: bytes) -> None:
        events.append(("recv", time.perf_counter()))
        received(self, data)

    HttpToolsProtocol.data_received = data_received  # type: ignore[method-assign]
    wrap(RequestResponseCycle, "send", "send")
    wrap(app.fastpath.JSONSearchFastPath, "_answer", "fastpath")
    wrap(app.routes.search, "_json_query", "parse")
    wrap(app.routes.search, "search_response_json", "serialise")
    wrap(bridge.service.facade.BridgeService, "is_quick", "quick")
    wrap(bridge.service.facade.BridgeService, "search_each", "engine")
    wrap(bridge.service.search.Searcher, "_plan", "plan")
    wrap(bridge.service.search.Searcher, "_hydrate", "hydrate")
    wrap(bridge.index.vectors.VectorIndex, "search", "index")
    wrap(bridge.index.vectors.VectorIndex, "_search_batch", "faiss")


def serve_main() -> int:
    """The benchmark server, instrumented, plus GET TIMELINE_PATH (the events so far)."""
    from fastapi import FastAPI

    import app.main

    events: list[Event] = []
    _instrument(events)
    create_app = app.main.create_app

    def create_app_with_timeline(*args: Any, **kwargs: Any) -> FastAPI:
        application = create_app(*args, **kwargs)

        async def timeline() -> list[Event]:
            return list(events)

        application.add_api_route(TIMELINE_PATH, timeline, include_in_schema=False)
        application.router.routes.insert(0, application.router.routes.pop())  # before "/"
        return application

    app.main.create_app = create_app_with_timeline  # own_floor wraps it again, adding its route
    return own_floor.serve_main()


async def _run_pairs(
    base: str, searches: list[bytes], floors: list[bytes], total: int
) -> list[tuple[float, float]]:
    """Interleaved floor + search pairs on one connection: (t0, t1) of each timed search."""
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    marks = []
    try:
        for i in range(-20, total):  # 20 untimed pairs first
            status, _ = await sb._exchange(reader, writer, floors[i % len(floors)])
            t0 = time.perf_counter()
            status2, body = await sb._exchange(reader, writer, searches[i % len(searches)])
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=256)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        return serve_main()

    import httpx

    work = Path(tempfile.mkdtemp(prefix="request-timeline-"))
    try:
        config, images, rng = sb.synthetic_service(work, args.items)
        queries = images[:64] + 0.05 * sb.unit_rows(rng, 64, 512)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        proc, base = sb.start_server(config, script=[__file__, "--serve"])
        try:
            host = base.removeprefix("http://")
            searches = [
                sb.encode_request(host, {"json": {"vector": v.tolist(), "space": "clip",
                                                  "target": "image", "k": sb.K}})
                for v in queries
            ]  # fmt: skip
            floor: dict[str, Any] = {"index": "native", "target": "image", "total": 1}
            floors = [
                sb.encode_request(host, {"path": own_floor.FLOOR_PATH,
                                         "json": {**floor, "queries": [v.tolist()]}})
                for v in queries
            ]  # fmt: skip
            with asyncio.Runner(loop_factory=sb._loop_factory()) as runner:
                marks = runner.run(_run_pairs(base, searches, floors, args.queries))
            answer = httpx.get(base + TIMELINE_PATH, timeout=60).json()
            events: list[Event] = [(str(label), float(t)) for label, t in answer]
        finally:
            proc.terminate()
            proc.wait(30)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    timeline = gaps(events, marks)
    total = float(np.median([t1 - t0 for t0, t1 in marks])) * 1e3
    search = timeline.get("faiss+ -> faiss-", 0.0)
    print(f"{args.items:,} items, {args.queries} timed searches, p50 ms per gap")
    print("| from -> to | p50 ms |")
    print("| --- | ---: |")
    for name, ms in timeline.items():
        print(f"| {name} | {ms:.3f} |")
    print(f"| whole request, client-timed | {total:.3f} |")
    print(f"| outside the FAISS call (p50 total - p50 FAISS call) | {total - search:.3f} |")
    sb.write_report(
        args.json,
        "request_timeline.py",
        argv,
        items=args.items,
        p50_ms=timeline,
        request_p50_ms=total,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
