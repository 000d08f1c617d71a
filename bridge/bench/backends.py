"""Vector backends side by side: `mbridge bench backends [--sizes N ...] [--milvus-uri URI]
[--variants ...] [--http]`.

One synthetic collection (bridge/bench/standins.py: N 512-d image items around 1,000
random centres, as real embeddings cluster, in the item store; stand-in encoders, no
bridge) served in turn by each backend variant, in one run: FAISS flat (exact, the baseline
of every ratio), FAISS HNSW, Milvus with HNSW on a Milvus server (`--milvus-uri`, or an
embedded standalone server that the benchmark starts itself: the `milvus-server` extra), and
two Milvus replicas on the one data directory (`--variants` picks some; FAISS flat is always
run). Per variant: the time to build the native image index from the store (opening the
service on the data directory), then vector queries (`space` clip, target image, k 10: the
native index, no encoder) from 1, 8 and 32 clients: p50/p99 latency, throughput, and
recall@10 against exact search (NumPy brute force over the same vectors). Timings are also
given as ratios to FAISS flat at the same client count.

In process (the default) the clients are threads calling `BridgeService.search`, and two
replicas are two services in this process. With `--http` every replica is a `python -m app`
server process on the data directory (as `make cluster` runs them) and the clients are
keep-alive HTTP connections, spread over the replicas. Either way everything shares this
machine's cores with the Milvus server: two replicas measure what the coordination costs,
not what a second machine adds.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from bridge.bench import httpclient
from bridge.bench.report import bench_parser, format_table, set_threads, write_report
from bridge.bench.server import start_server, stop
from bridge.bench.standins import near_queries, synthetic_service
from bridge.bench.timing import run_threads
from bridge.types import BackendName, IndexType, ServiceConfig

K = 10
# A server builds its index before it is ready: a million rows in Milvus HNSW take minutes.
READY_TIMEOUT_SECONDS = 3 * 3600.0
# name -> (backend, index kind, replicas); "faiss-flat" is every ratio's baseline.
VARIANTS: dict[str, tuple[BackendName, IndexType, int]] = {
    "faiss-flat": ("faiss", "flat", 1),
    "faiss-hnsw": ("faiss", "hnsw", 1),
    "milvus-hnsw": ("milvus", "hnsw", 1),
    "milvus-hnsw-x2": ("milvus", "hnsw", 2),
}


def exact_top_k(rows: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k nearest rows by cosine for each query (rows are unit vectors)."""
    unit = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    scores = unit @ rows.T
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def recall_at_k(found: list[list[int]], truth: np.ndarray) -> float:
    """The share of each query's true top-k (positions, (Q, k)) that its answer found."""
    hits = sum(len(set(f) & set(t.tolist())) for f, t in zip(found, truth, strict=True))
    return hits / truth.size


def measure_variant(
    config: Any,
    queries: np.ndarray,
    truth: np.ndarray,
    clients: list[int],
    total: int,
    replicas: int = 1,
) -> dict[str, Any]:
    """Open the service with `config` (the first one builds its native image index; further
    `replicas` load it), then query them, query i through replica i % replicas."""
    from bridge.service.facade import BridgeService
    from bridge.types import SearchQuery

    started = time.perf_counter()
    services = [BridgeService.open(config)]
    build_seconds = time.perf_counter() - started
    try:
        services += [BridgeService.open(config) for _ in range(replicas - 1)]
        index = services[0].catalog.native("image")
        assert index is not None
        requests = [
            SearchQuery(target="image", vector=q.tolist(), space="clip", k=K) for q in queries
        ]
        found = [
            [int(hit.metadata["n"]) for hit in services[i % replicas].search(request).results]
            for i, request in enumerate(requests)
        ]
        cells = {}
        for count in clients:
            cells[str(count)] = run_threads(
                lambda i: services[i % replicas].search(requests[i % len(requests)]),
                total,
                count,
            )
        return {
            "kind": index.kind,
            "replicas": replicas,
            "via": "process",
            "build_seconds": build_seconds,
            "recall_at_10": recall_at_k(found, truth),
            "clients": cells,
        }
    finally:
        for service in services:
            service.close()


def measure_variant_http(
    config: ServiceConfig,
    queries: np.ndarray,
    truth: np.ndarray,
    clients: list[int],
    total: int,
    replicas: int = 1,
) -> dict[str, Any]:
    """Start `replicas` server processes on `config`'s data directory (the first builds the
    native image index: its time to ready is "build"), then query them over HTTP."""
    env = {
        "BRIDGE_BACKEND": config.backend,
        "BRIDGE_INDEX_TYPE": config.index_type,
        "BRIDGE_MILVUS_URI": config.milvus_uri,
    }
    started = time.perf_counter()
    servers = [start_server(config, env, ready_timeout=READY_TIMEOUT_SECONDS)]
    build_seconds = time.perf_counter() - started
    try:
        servers += [
            start_server(config, env, ready_timeout=READY_TIMEOUT_SECONDS)
            for _ in range(replicas - 1)
        ]
        bases = [base for _, base in servers]
        bodies = [
            {"target": "image", "vector": q.tolist(), "space": "clip", "k": K} for q in queries
        ]
        found = [
            [
                int(hit["metadata"]["n"])
                for hit in httpclient.post_json(f"{bases[i % replicas]}/v1/search", body)["results"]
            ]
            for i, body in enumerate(bodies)
        ]
        requests = [{"json": body} for body in bodies]
        cells = {
            str(count): httpclient.run(httpclient.http_level(bases, requests, total, count))
            for count in clients
        }
        return {
            "kind": config.index_type,  # a Milvus server builds HNSW as asked (Lite would not)
            "replicas": replicas,
            "via": "http",
            "build_seconds": build_seconds,
            "recall_at_10": recall_at_k(found, truth),
            "clients": cells,
        }
    finally:
        for proc, _ in servers:
            stop(proc)


def main(argv: list[str]) -> int:
    parser = bench_parser("backends", __doc__ or "")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--queries", type=int, default=512, help="queries per measurement")
    parser.add_argument("--milvus-uri", default="", help="a Milvus server (default: embedded)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=list(VARIANTS),
        default=list(VARIANTS),
        help="which to run (FAISS flat, the baseline, always runs)",
    )
    parser.add_argument(
        "--http", action="store_true", help="replicas as server processes, clients over HTTP"
    )
    args = parser.parse_args(argv)
    set_threads(args.threads)
    from bridge.index.milvus_server import EmbeddedMilvus

    work = Path(tempfile.mkdtemp(prefix="bench-backends-"))
    embedded = None
    try:
        uri = args.milvus_uri
        if not uri:
            embedded = EmbeddedMilvus(work / "milvus")
            embedded.start()
            uri = embedded.uri
        names = ["faiss-flat", *(v for v in VARIANTS if v in args.variants and v != "faiss-flat")]
        measure = measure_variant_http if args.http else measure_variant
        results: list[dict[str, Any]] = []

        def report(complete: bool) -> None:
            write_report(args.json, "backends", argv, results=results, clients=args.clients,
                         http=args.http, complete=complete)  # fmt: skip

        for size in args.sizes:
            config, images, rng = synthetic_service(work / f"n{size}", size, clustered=True)
            config = replace(config, initial_bridge=None)  # native searches only: no bridge
            queries = near_queries(rng, images)
            truth = exact_top_k(images, queries, K)
            for name in names:
                backend, kind, replicas = VARIANTS[name]
                variant = replace(config, backend=backend, index_type=kind, milvus_uri=uri)
                print(f"N={size}: {name} ...", flush=True)
                measured = measure(variant, queries, truth, args.clients, args.queries, replicas)
                results.append({"size": size, "backend": backend, "requested": kind, **measured})
                report(complete=False)  # a long run that fails keeps what it measured
            shutil.rmtree(work / f"n{size}", ignore_errors=True)
    finally:
        if embedded is not None:
            embedded.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(render(results, args.clients))
    report(complete=True)
    return 0


def render(results: list[dict[str, Any]], clients: list[int]) -> str:
    """One row per (size, variant, clients); ratios against FAISS flat of the same size and
    client count."""
    baseline = {
        (r["size"], c): r["clients"][str(c)]
        for r in results
        if r["backend"] == "faiss" and r["kind"] == "flat" and r.get("replicas", 1) == 1
        for c in clients
    }
    rows = []
    for r in results:
        for c in clients:
            cell, base = r["clients"][str(c)], baseline[(r["size"], c)]
            rows.append(
                [
                    r["size"],
                    f"{r['backend']} {r['kind']}"
                    + (f" x{r['replicas']} replicas" if r.get("replicas", 1) > 1 else ""),
                    c,
                    r["build_seconds"],
                    cell["p50_ms"],
                    cell["p99_ms"],
                    cell["qps"],
                    cell["p50_ms"] / base["p50_ms"],
                    cell["qps"] / base["qps"],
                    r["recall_at_10"],
                ]
            )
    headers = [
        "items",
        "backend",
        "clients",
        "build s",
        "p50 ms",
        "p99 ms",
        "q/s",
        "p50 / flat",
        "q/s / flat",
        "recall@10",
    ]
    return format_table(headers, rows)
