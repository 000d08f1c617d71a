r"""What one JSON vector search costs at each layer, warm and right after a big FAISS scan.

    mbridge bench cold-path --rounds 300 --json docs/benchmarks/cold-path.json

In one process, the app that `python -m app` builds (bridge/bench/appserver.py, ``--job
cold-path``) on 1,000 synthetic items (stand-in encoders, as `mbridge bench service` builds
them), driven as ASGI without a server. Each round, for each layer and each condition, the
condition runs and then one call through that layer is timed:

- layers: ``app`` (the whole ASGI app: middlewares, the JSON fast path, batcher, engine,
  serialiser), ``fastpath`` (app/fastpath.py alone, no middlewares), ``engine``
  (`BridgeService.search_each` on a parsed query), ``index`` (`VectorIndex.search`), ``raw``
  (raw FAISS `search` on the same index);
- conditions: ``scan`` (a single-query search of a separate 100,000 x 512 flat index, as the
  service's previous request would have streamed), ``sleep`` (20 ms idle, as a server waits
  between requests), ``warm`` (nothing: the previous timed call was the same path).

The scan and sleep columns against warm show how much of the HTTP overhead at 100,000 items
is the machine's state after a scan rather than the code's own cost; the rows show which
layer it lands in. Only the 1,000-item index is searched in the timed calls.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bridge.bench.report import bench_parser, markdown_table, write_report
from bridge.bench.standins import K, near_queries, synthetic_service, unit_rows

LAYERS = ("app", "fastpath", "engine", "index", "raw")
CONDITIONS = ("scan", "sleep", "warm")


def http_scope(method: str, path: str, body: bytes) -> dict[str, Any]:
    length = str(len(body)).encode()
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"content-length", length)],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def call_asgi(
    app: Any, body: bytes, scope_app: Any, method: str = "POST", path: str = "/v1/search"
) -> int:
    """One request through ``app``; answers its status, raises unless ``method`` is GET or
    the answer is 200."""
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)  # never asked for: the body came in one message
        raise AssertionError

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = http_scope(method, path, body)
    scope["app"] = scope_app
    await app(scope, receive, send)
    status = int(sent[0]["status"])
    if method == "POST" and status != 200:
        raise RuntimeError(f"HTTP {status}: {sent[1].get('body', b'')[:300]!r}")
    return status


async def measure(
    app: Any, service: Callable[[], Any], job: dict[str, Any]
) -> dict[str, dict[str, float]]:
    """p50 µs per layer and condition, on the app `python -m app` built (not yet started):
    ``job`` names the stored image vectors (a .npy file), the state of the generator they
    came from (for the draws that follow them) and the rounds."""
    import faiss

    from bridge.bench.appserver import app_object
    from bridge.types import SearchQuery

    images = np.load(job["images"])
    rng = np.random.default_rng()
    rng.bit_generator.state = job["rng_state"]
    rounds = int(job["rounds"])
    lifespan_in: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    lifespan_out: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    await lifespan_in.put({"type": "lifespan.startup"})
    lifespan = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
            lifespan_in.get, lifespan_out.put)
    )  # fmt: skip
    started = await lifespan_out.get()
    if started["type"] != "lifespan.startup.complete":
        raise RuntimeError(f"app start-up failed: {started}")
    try:
        while await call_asgi(app, b"", app, "GET", "/readyz") != 200:  # the engine loads
            await asyncio.sleep(0.05)
        big = faiss.IndexFlatIP(512)
        big.add(unit_rows(rng, 100_000, 512))
        faiss.omp_set_num_threads(1)
        queries = near_queries(rng, images)
        bodies = [
            json.dumps({"vector": v.tolist(), "space": "clip", "target": "image", "k": K}).encode()
            for v in queries
        ]
        parsed = [SearchQuery("image", vector=v.tolist(), space="clip", k=K) for v in queries]
        engine = service()
        index = engine.catalog.native("image")
        fast_path = app_object("app.fastpath:JSONSearchFastPath")(app.router)

        async def through(layer: str, i: int) -> None:
            if layer == "app":
                await call_asgi(app, bodies[i], app)
            elif layer == "fastpath":
                await call_asgi(fast_path, bodies[i], app)
            elif layer == "engine":
                engine.search_each([parsed[i]])
            elif layer == "index":
                index.search(queries[i], K)
            else:
                index._cpu.search(queries[i][None, :], K)

        def scan(i: int) -> None:
            big.search(queries[i][None, :], K)

        conditions: dict[str, Callable[[int], None]] = {
            "scan": scan,
            "sleep": lambda i: time.sleep(0.02),
            "warm": lambda i: None,
        }
        times: dict[str, dict[str, list[float]]] = {
            layer: {c: [] for c in CONDITIONS} for layer in LAYERS
        }
        for i in range(30):  # warm up, and let the batcher see lone searches
            await through("app", i % 64)
        for r in range(rounds):
            i = r % 64
            for condition in CONDITIONS:
                for layer in LAYERS:
                    await through(layer, i)  # the "warm" state: this same path just ran
                    conditions[condition](i)
                    t0 = time.perf_counter()
                    await through(layer, i)
                    times[layer][condition].append(time.perf_counter() - t0)
    finally:
        await lifespan_in.put({"type": "lifespan.shutdown"})
        await lifespan_out.get()
        await lifespan
    return {
        layer: {c: float(np.median(v)) * 1e6 for c, v in by.items()} for layer, by in times.items()
    }


def measure_app(app: Any, service: Callable[[], Any], job: dict[str, Any]) -> dict[str, Any]:
    """In the benchmark server's process (appserver ``--job cold-path``)."""
    from bridge.bench.httpclient import loop_factory

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return {"p50_us": runner.run(measure(app, service, job))}


def main(argv: list[str]) -> int:
    parser = bench_parser("cold-path", __doc__)
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args(argv)
    from bridge.bench.server import run_job

    work = Path(tempfile.mkdtemp(prefix="cold-path-"))
    try:
        config, images, rng = synthetic_service(work, 1000)
        np.save(work / "images.npy", images)
        job = {
            "rounds": args.rounds,
            "images": str(work / "images.npy"),
            "rng_state": rng.bit_generator.state,
        }
        p50_us = run_job("cold-path", job, config)["p50_us"]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"p50 µs per call, {args.rounds} rounds, 1,000-item flat index")
    head = ["layer", "after a 100k scan", "after 20 ms idle", "warm"]
    rows = [
        [layer, *(f"{by[c]:.0f}" for c in ("scan", "sleep", "warm"))]
        for layer, by in p50_us.items()
    ]
    print(markdown_table(head, ["---", "---:", "---:", "---:"], rows))
    write_report(args.json, "cold-path", argv, p50_us=p50_us)
    return 0
