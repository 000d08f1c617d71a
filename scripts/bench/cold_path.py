r"""What one JSON vector search costs at each layer, warm and right after a big FAISS scan.

    .venv/bin/python scripts/bench/cold_path.py --rounds 300 --json docs/benchmarks/cold-path.json

In one process: a service on 1,000 synthetic items (stand-in encoders, as
scripts/bench/service_bench.py builds them) and the app over it, driven as ASGI without a
server. Each round, for each layer and each condition, the condition runs and then one call
through that layer is timed:

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

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "scripts" / "bench")]

import service_bench as sb  # noqa: E402

LAYERS = ("app", "fastpath", "engine", "index", "raw")
CONDITIONS = ("scan", "sleep", "warm")


def http_scope(body: bytes) -> dict[str, Any]:
    length = str(len(body)).encode()
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/search",
        "raw_path": b"/v1/search",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"content-length", length)],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def call_asgi(app: Any, body: bytes, scope_app: Any) -> None:
    """One request through ``app``; raises unless it answered 200."""
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

    scope = http_scope(body)
    scope["app"] = scope_app
    await app(scope, receive, send)
    if sent[0]["status"] != 200:
        raise RuntimeError(f"HTTP {sent[0]['status']}: {sent[1].get('body', b'')[:300]!r}")


async def measure(args: argparse.Namespace, work: Path) -> dict[str, dict[str, float]]:
    import faiss

    from app.fastpath import JSONSearchFastPath
    from app.main import create_app
    from app.settings import Settings
    from bridge.service.facade import BridgeService
    from bridge.types import SearchQuery

    config, images, rng = sb.synthetic_service(work, 1000)
    service = BridgeService.open(config)
    app = create_app(
        Settings(
            data_dir=config.data_dir,
            clip_model=config.clip_model,
            clap_model=config.clap_model,
            seed_samples=False,
        ),
        service=service,
    )
    big = faiss.IndexFlatIP(512)
    big.add(sb.unit_rows(rng, 100_000, 512))
    faiss.omp_set_num_threads(1)
    queries = images[:64] + 0.05 * sb.unit_rows(rng, 64, 512)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    bodies = [
        json.dumps({"vector": v.tolist(), "space": "clip", "target": "image", "k": sb.K}).encode()
        for v in queries
    ]
    parsed = [SearchQuery("image", vector=v.tolist(), space="clip", k=sb.K) for v in queries]
    index = service.catalog.native("image")
    assert index is not None
    fast_path = JSONSearchFastPath(app.router)

    async def through(layer: str, i: int) -> None:
        if layer == "app":
            await call_asgi(app, bodies[i], app)
        elif layer == "fastpath":
            await call_asgi(fast_path, bodies[i], app)
        elif layer == "engine":
            service.search_each([parsed[i]])
        elif layer == "index":
            index.search(queries[i], sb.K)
        else:
            index._cpu.search(queries[i][None, :], sb.K)

    def scan(i: int) -> None:
        big.search(queries[i][None, :], sb.K)

    conditions: dict[str, Callable[[int], None]] = {
        "scan": scan,
        "sleep": lambda i: time.sleep(0.02),
        "warm": lambda i: None,
    }
    times: dict[str, dict[str, list[float]]] = {
        layer: {c: [] for c in CONDITIONS} for layer in LAYERS
    }
    lifespan_in: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    lifespan_out: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    await lifespan_in.put({"type": "lifespan.startup"})
    lifespan = asyncio.create_task(
        app(
            {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
            lifespan_in.get,
            lifespan_out.put,
        )  # fmt: skip
    )
    started = await lifespan_out.get()
    if started["type"] != "lifespan.startup.complete":
        raise RuntimeError(f"app start-up failed: {started}")
    try:
        for i in range(30):  # warm up, and let the batcher see lone searches
            await through("app", i % 64)
        for r in range(args.rounds):
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
        service.close()
    return {
        layer: {c: float(np.median(v)) * 1e6 for c, v in by.items()} for layer, by in times.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="cold-path-"))
    try:
        loop_factory = sb._loop_factory()
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            p50_us = runner.run(measure(args, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"p50 µs per call, {args.rounds} rounds, 1,000-item flat index")
    print("| layer | after a 100k scan | after 20 ms idle | warm |")
    print("| --- | ---: | ---: | ---: |")
    for layer, by in p50_us.items():
        print(f"| {layer} | {by['scan']:.0f} | {by['sleep']:.0f} | {by['warm']:.0f} |")
    sb.write_report(args.json, "cold_path.py", argv, p50_us=p50_us)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
