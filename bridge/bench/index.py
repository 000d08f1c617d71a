"""The index and storage layers: FAISS index kinds, the item store, catalog reconciliation.

    mbridge bench index [--n 100000] [--dim 512] [--kinds flat,hnsw,ivf] [--json OUT.json]

Measures, on N synthetic clustered unit vectors of dimension D (default 100,000 x 512):
- per index kind (flat, hnsw, ivf): build time, single-query latency p50/p99 through
  VectorIndex.search and through the raw FAISS index (the difference is the wrapper's cost:
  validation, normalisation, the readers-writer lock), batch throughput, recall@10 against
  exact search, save and load time;
- the readers-writer lock alone (uncontended acquire + release);
- the item store: adding N items in batches, reading every raw embedding back;
- the catalog: a full rebuild of the native flat index from the store (what a start after a
  crash costs at worst), and an incremental sync when a few hundred items are missing.

Prints a table and writes JSON (default bench-out/index_bench.json). The data are synthetic
(Gaussian clusters on the sphere); recall of hnsw/ivf on real embeddings differs.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bridge.bench.report import bench_parser, command_line
from bridge.bench.standins import K
from bridge.index.locks import ReadWriteLock
from bridge.index.threads import single_thread_if
from bridge.index.vectors import VectorIndex, gpu_available
from bridge.io import atomic_write_text
from bridge.service.catalog import IndexCatalog
from bridge.storage.items import ItemStore, NewItem


def clustered(n: int, dim: int, seed: int, clusters: int = 1000, noise: float = 0.6) -> np.ndarray:
    """Unit vectors around 1000 random centres (the same centres for every seed)."""
    centres = np.random.default_rng(12345).standard_normal((clusters, dim)).astype(np.float32)
    rng = np.random.default_rng(seed)
    points = centres[rng.integers(0, clusters, n)]
    points += noise * rng.standard_normal((n, dim)).astype(np.float32)
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    return points


def percentile_ms(samples: list[float], q: float) -> float:
    return float(np.percentile(np.array(samples) * 1000.0, q))


def single_query_latency(search: Any, queries: np.ndarray) -> list[float]:
    out = []
    for row in queries:
        q = row[None, :]
        start = time.perf_counter()
        search(q)
        out.append(time.perf_counter() - start)
    return out


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(len(set(f) & set(t)) for f, t in zip(found.tolist(), truth.tolist(), strict=True))
    return hits / truth.size


def bench_kind(
    kind: str, ids: np.ndarray, data: np.ndarray, queries: np.ndarray, truth: np.ndarray | None
) -> dict[str, Any]:
    start = time.perf_counter()
    index = VectorIndex.build(kind, ids, data, kind, fingerprint="bench", use_gpu=True)
    build_s = time.perf_counter() - start
    single = queries[:300]
    wrapped = single_query_latency(lambda q: index.search(q, K), single)
    raw_index = index._cpu  # the FAISS index itself: the floor
    params = index._hnsw_params(K) if index.kind == "hnsw" else None

    def raw_search(q: np.ndarray) -> Any:
        with single_thread_if(True):  # the same OpenMP setting VectorIndex.search uses
            return raw_index.search(q, K, params=params) if params else raw_index.search(q, K)

    raw = single_query_latency(raw_search, single)
    start = time.perf_counter()
    scores, found = index.search(queries, K)
    batch_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        index.save(Path(tmp) / "idx")
        save_s = time.perf_counter() - start
        start = time.perf_counter()
        VectorIndex.load(Path(tmp) / "idx", use_gpu=True)
        load_s = time.perf_counter() - start
    return {
        "kind": index.kind,
        "params": index.manifest.params,
        "on_gpu": index.on_gpu,
        "build_s": build_s,
        "search_p50_ms": percentile_ms(wrapped, 50),
        "search_p99_ms": percentile_ms(wrapped, 99),
        "raw_faiss_p50_ms": percentile_ms(raw, 50),
        "raw_faiss_p99_ms": percentile_ms(raw, 99),
        "wrapper_overhead_p50_ms": percentile_ms(wrapped, 50) - percentile_ms(raw, 50),
        "batch_queries": len(queries),
        "batch_qps": len(queries) / batch_s,
        "recall_at_10": None if truth is None else recall_at_k(found, truth),
        "save_s": save_s,
        "load_s": load_s,
        "sweep": [] if truth is None else sweep(index, queries, truth),
        "_found": found,
    }


SWEEPS = {"hnsw": ("ef_search", (32, 64, 128, 256, 512)), "ivf": ("nprobe", (8, 16, 32, 64, 128))}


def sweep(index: VectorIndex, queries: np.ndarray, truth: np.ndarray) -> list[dict[str, Any]]:
    """Recall@10 and single-query latency for each ef_search (hnsw) or nprobe (ivf)."""
    if index.kind not in SWEEPS:
        return []
    name, values = SWEEPS[index.kind]
    default = index.manifest.params[name]
    rows = []
    for value in values:
        index.set_search_params(**{name: value})
        latency = single_query_latency(lambda q: index.search(q, K), queries[:300])
        rows.append(
            {
                name: value,
                "recall_at_10": recall_at_k(index.search(queries, K)[1], truth),
                "search_p50_ms": percentile_ms(latency, 50),
                "search_p99_ms": percentile_ms(latency, 99),
            }
        )
    index.set_search_params(**{name: default})
    return rows


def bench_lock(rounds: int = 200_000) -> float:
    lock = ReadWriteLock()
    start = time.perf_counter()
    for _ in range(rounds):
        with lock.read():
            pass
    return (time.perf_counter() - start) / rounds * 1e6


def bench_store_and_catalog(data: np.ndarray, batch: int = 1000) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = ItemStore(Path(tmp) / "store.sqlite")
        start = time.perf_counter()
        for offset in range(0, len(data), batch):
            store.add_items(
                [
                    NewItem("image", {"n": offset + i}, row, "bench-clip")
                    for i, row in enumerate(data[offset : offset + batch])
                ]
            )
        out["store_add_s"] = time.perf_counter() - start
        out["store_add_batch"] = batch
        start = time.perf_counter()
        rowids, raw = store.raw_embeddings("image")
        out["store_read_all_s"] = time.perf_counter() - start
        assert raw.shape == data.shape
        start = time.perf_counter()
        for _ in range(200):
            store.get_by_rowids(rowids[:K])
        out["hydrate_10_ms"] = (time.perf_counter() - start) / 200 * 1000

        catalog = IndexCatalog(Path(tmp), store, "flat", use_gpu=True)
        start = time.perf_counter()
        catalog.reconcile_native({"image": "bench-clip"})
        out["reconcile_full_rebuild_flat_s"] = time.perf_counter() - start
        extra = clustered(300, data.shape[1], seed=99)
        store.add_items([NewItem("image", {}, row, "bench-clip") for row in extra])
        restarted = IndexCatalog(Path(tmp), store, "flat", use_gpu=True)
        start = time.perf_counter()
        changed = restarted.reconcile_native({"image": "bench-clip"})
        out["reconcile_sync_300_missing_s"] = time.perf_counter() - start
        assert changed == ["clip_image"]
        start = time.perf_counter()
        IndexCatalog(Path(tmp), store, "flat", use_gpu=True).reconcile_native(
            {"image": "bench-clip"}
        )
        out["reconcile_up_to_date_s"] = time.perf_counter() - start
        store.close()
    return out


def main(argv: list[str]) -> int:
    parser = bench_parser("index", __doc__, json=False)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--kinds", default="flat,hnsw,ivf")
    parser.add_argument("--noise", type=float, default=0.6, help="cluster spread (harder: more)")
    parser.add_argument("--skip-store", action="store_true")
    parser.add_argument(
        "--json", "--out", dest="json", type=Path, default=Path("bench-out/index_bench.json")
    )
    args = parser.parse_args(argv)

    import faiss

    data = clustered(args.n, args.dim, seed=0, noise=args.noise)
    queries = clustered(args.queries, args.dim, seed=1, noise=args.noise)
    ids = np.arange(1, args.n + 1, dtype=np.int64)
    results: dict[str, Any] = {
        "command": command_line("index", argv),
        "n": args.n,
        "dim": args.dim,
        "k": K,
        "noise": args.noise,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "faiss": faiss.__version__,
            "faiss_threads": faiss.omp_get_max_threads(),
            "faiss_gpus": gpu_available(),
        },
        "kinds": {},
    }
    truth = None
    for kind in ["flat"] + [k for k in args.kinds.split(",") if k != "flat"]:
        row = bench_kind(kind, ids, data, queries, truth)
        found = row.pop("_found")
        if kind == "flat":
            truth = found
            row["recall_at_10"] = 1.0
        if kind in args.kinds.split(","):
            results["kinds"][kind] = row
        print(f"built {kind} in {row['build_s']:.2f}s", file=sys.stderr, flush=True)
    results["rw_lock_read_us"] = bench_lock()
    if not args.skip_store:
        results["store"] = bench_store_and_catalog(data)

    print(f"\n{args.n} x {args.dim}, k={K}, {results['machine']}")
    header = (
        f"{'kind':6} {'build s':>8} {'p50 ms':>8} {'p99 ms':>8} {'faiss p50':>9} "
        f"{'overhead':>8} {'batch qps':>10} {'recall@10':>9} {'save s':>7} {'load s':>7}"
    )
    print(header)
    for kind, r in results["kinds"].items():
        print(
            f"{kind:6} {r['build_s']:8.2f} {r['search_p50_ms']:8.3f} {r['search_p99_ms']:8.3f} "
            f"{r['raw_faiss_p50_ms']:9.3f} {r['wrapper_overhead_p50_ms']:8.3f} "
            f"{r['batch_qps']:10.0f} {r['recall_at_10']:9.3f} {r['save_s']:7.2f} {r['load_s']:7.2f}"
        )
    for kind, r in results["kinds"].items():
        for point in r["sweep"]:
            name = SWEEPS[kind][0]
            print(
                f"{kind} {name}={point[name]:<4} recall@10 {point['recall_at_10']:.3f}  "
                f"p50 {point['search_p50_ms']:.3f} ms  p99 {point['search_p99_ms']:.3f} ms"
            )
    print(f"readers-writer lock, uncontended read: {results['rw_lock_read_us']:.2f} us")
    for key, value in results.get("store", {}).items():
        print(f"{key:32} {value:.3f}")
    atomic_write_text(args.json, json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0
