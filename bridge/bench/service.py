"""Service benchmark (issue 4): search latency and throughput against raw FAISS, and retrain.

    mbridge bench service --sizes 10000 100000 --clients 1 8 32 --queries 256 \\
        --json docs/benchmarks/service.json

For each collection size N it measures, with 1, 8 and 32 concurrent clients:
- query by vector (a `clip` vector, target image: native CLIP index), by audio file (a WAV
  upload, target image: decode -> CLAP -> CLAP projector -> shared image index) and by text
  (CLIP text tower -> native CLIP index; concurrent text queries are encoded in one pass);
- through the in-process facade (BridgeService.search from client threads) and through real
  HTTP (the benchmark server, `python -m app` in a child process on loopback; clients are
  keep-alive connections of a minimal asyncio HTTP/1.1 client, bridge/bench/httpclient.py);
- the floor: raw FAISS (one query at a time) on the service's own index, in the service's
  own process, with the same final query vectors (for audio: the encoded and projected
  queries); see bridge/bench/floor.py. With one client the floor is interleaved (one raw
  search of the same vector right before each service query) and scans the way the service
  does: where the service splits a lone scan over threads (bridge/index/split_scan.py, at
  100k), the floor runs raw `faiss.knn` on the same slices in as many threads. With more
  clients, a run of single-threaded raw searches right before the cell (the throughput
  target is against "raw FAISS single-threaded"). For reference, one-client rows also carry
  a single-threaded run on the served index (`floor_1thread`) and the floor of a fresh
  process that builds its own copy of the vectors (the method of earlier runs,
  `floor_fresh`).
Overhead = service p50 - floor p50. It then times a retrain job on the N items (captions ->
train -> re-project every item -> new shared indexes -> evaluate) and the swap (activate).

Items are synthetic (bridge/bench/standins.py): N random unit vectors inserted straight
into the item store as image items (plus --audio-items audio items as audio memory). Audio
queries do run the full decode + encode path. Encoders: --clip-model/--clap-model, or
(default) tiny random CLIP/CLAP stand-ins with --dim-wide projections, so vector width
matches real CLIP/CLAP (512); audio-query times therefore include a tiny CLAP tower, not a
real HTSAT (see the per-stage encode time to scale it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bridge.bench import floor as own_floor
from bridge.bench import httpclient as client
from bridge.bench.report import bench_parser, command_line, cpu_model
from bridge.bench.server import start_server, stop
from bridge.bench.service_report import table, targets, targets_table
from bridge.bench.standins import (
    K,
    audio_queries,
    build_stand_in_encoders,
    make_bridge,
    populate_store,
    unit_rows,
)
from bridge.bench.timing import floor_stats, run_interleaved, run_threads
from bridge.io import atomic_write_text
from bridge.types import SearchQuery, ServiceConfig, Upload


def log(n: int, message: str) -> None:
    print(f"[{n}] {message}", file=sys.stderr, flush=True)


def http_floor(
    base: str, spec: dict[str, Any], total: int, split: bool | None = None
) -> dict[str, float]:
    """A run of ``total`` raw searches in the server, on its own index (``split``: as
    floor.raw_search_times)."""
    body = {**spec["floor_json"], "queries_path": str(spec["floor"].queries), "total": total}
    body["split"] = split
    answer = client.post_json(f"{base}{own_floor.FLOOR_PATH}", body)
    return floor_stats(answer["seconds"])


def query_kinds(
    service: Any,
    clip: Any,
    images: np.ndarray,
    args: argparse.Namespace,
    workdir: Path,
    rng: np.random.Generator,
) -> dict[str, dict[str, Any]]:
    """Per query kind: its facade query, its HTTP requests, and its floor (the index it ends
    in and the final query vectors, for the in-server and fresh-process floors)."""
    n, dim = images.shape
    vector_queries = images[rng.choice(n, args.distinct, replace=False)] + 0.05 * unit_rows(
        rng, args.distinct, dim
    )
    vector_queries /= np.linalg.norm(vector_queries, axis=1, keepdims=True)
    wavs = audio_queries(min(args.distinct, 32))
    active = service._active
    assert active is not None
    shared_images = active.checkpoint.project("clip", images)
    audio_vectors = []
    for data in wavs:  # the final query vectors of the audio path, for the floor
        decoded = service._decode(Upload(data, "q.wav", "audio/wav"), "q")
        audio_vectors.append(
            active.checkpoint.project("clap", service._encode("audio", [decoded.media]))[0]
        )
    audio_query_vectors = np.stack(audio_vectors)
    # Text queries (text -> native CLIP image index); their final vectors for the floor.
    texts = [f"a photo of thing number {i}" for i in range(args.distinct)]
    text_query_vectors = clip.encode_text(texts)
    Floor = own_floor.FreshProcessFloor
    return {
        "vector": {
            "floor": Floor(images, vector_queries, workdir, f"vector-{n}"),
            "floor_json": {"index": "native", "target": "image"},
            "floor_queries": vector_queries,
            "query": lambda i: SearchQuery(
                "image", vector=vector_queries[i % len(vector_queries)].tolist(), space="clip", k=K
            ),
            "http": [
                {"json": {"vector": v.tolist(), "space": "clip", "target": "image", "k": K}}
                for v in vector_queries
            ],
        },
        "audio_file": {
            "floor": Floor(shared_images, audio_query_vectors, workdir, f"audio-{n}"),
            "floor_json": {"index": "shared", "target": "image"},
            "floor_queries": audio_query_vectors,
            "query": lambda i: SearchQuery(
                "image", media=Upload(wavs[i % len(wavs)], "q.wav", "audio/wav"), k=K
            ),
            "http": [
                {
                    "files": {"file": ("q.wav", w, "audio/wav")},
                    "data": {"target": "image", "k": str(K)},
                }
                for w in wavs
            ],
        },
        "text": {
            "floor": Floor(images, text_query_vectors, workdir, f"text-{n}"),
            "floor_json": {"index": "native", "target": "image"},
            "floor_queries": text_query_vectors,
            "query": lambda i: SearchQuery("image", text=texts[i % len(texts)], k=K),
            "http": [{"json": {"text": t, "target": "image", "k": K}} for t in texts],
        },
    }


def facade_cells(
    service: Any,
    kinds: dict[str, dict[str, Any]],
    args: argparse.Namespace,
    n: int,
    result: dict[str, Any],
) -> list[dict[str, Any]]:
    """The in-process rows, and each kind's per-stage times (result["stages_ms"])."""
    rows: list[dict[str, Any]] = []
    for kind, spec in kinds.items():
        stage_sums: dict[str, float] = {}
        for i in range(min(20, args.queries)):  # warm-up + per-stage breakdown
            for stage, ms in service.search(spec["query"](i)).timings_ms.items():
                stage_sums[stage] = stage_sums.get(stage, 0.0) + ms / min(20, args.queries)
        result.setdefault("stages_ms", {})[kind] = stage_sums
        index = own_floor.index_for(service, spec["floor_json"]["index"], "image")
        queries = spec["floor_queries"]
        query = spec["query"]

        def search(i: int, query: Callable[[int], SearchQuery] = query) -> Any:
            return service.search(query(i))

        for clients in args.clients:
            extra = {}
            if clients == 1:
                extra["floor_fresh"] = spec["floor"].measure(args.queries)
                one_thread = own_floor.raw_search_times(index, queries, args.queries, split=False)
                extra["floor_1thread"] = floor_stats(one_thread)
                facade, floor = run_interleaved(
                    search, own_floor.one_search(index, queries), args.queries
                )
            else:
                # the throughput target's floor: raw FAISS single-threaded
                single = own_floor.raw_search_times(index, queries, args.queries, split=False)
                floor = floor_stats(single)
                facade = run_threads(search, args.queries, clients)
            row = {"kind": kind, "via": "facade", "clients": clients, **facade, "floor": floor}
            rows.append({**row, **extra})
            log(n, f"{kind} facade c={clients}: {facade['p50_ms']:.2f} ms, {facade['qps']:.0f} q/s")
    return rows


def http_cells(
    config: ServiceConfig, kinds: dict[str, dict[str, Any]], args: argparse.Namespace, n: int
) -> list[dict[str, Any]]:
    """The rows through the benchmark server."""
    rows: list[dict[str, Any]] = []
    proc, base = start_server(config)
    try:
        for kind, spec in kinds.items():
            floors = [
                {"path": own_floor.FLOOR_PATH, "json": {**spec["floor_json"], "total": 1,
                                                       "queries": [q.tolist()]}}
                for q in spec["floor_queries"]
            ]  # fmt: skip
            for clients in args.clients:
                extra = {}
                with asyncio.Runner(loop_factory=client.loop_factory()) as runner:
                    if clients == 1:
                        extra["floor_fresh"] = spec["floor"].measure(args.queries)
                        extra["floor_1thread"] = http_floor(base, spec, args.queries, False)
                        http, floor = runner.run(
                            client.http_interleaved(base, spec["http"], floors, args.queries)
                        )
                    else:
                        floor = http_floor(base, spec, args.queries, split=False)
                        http = runner.run(
                            client.http_level(base, spec["http"], args.queries, clients)
                        )
                row = {"kind": kind, "via": "http", "clients": clients, **http, "floor": floor}
                rows.append({**row, **extra})
                log(n, f"{kind} http c={clients}: {http['p50_ms']:.2f} ms, {http['qps']:.0f} q/s")
    finally:
        stop(proc)
    return rows


def time_retrain(
    config: ServiceConfig, clip: Any, clap: Any, args: argparse.Namespace, n: int
) -> dict[str, Any]:
    """A retrain job on the stored items (captions -> train -> re-project -> indexes ->
    evaluate), then the swap (activate)."""
    from bridge.service.facade import BridgeService
    from bridge.types import RetrainRequest

    service = BridgeService.open(config, clip=clip, clap=clap)
    try:
        words = ["red", "loud", "small", "bright"]
        captions = [f"caption {i}: a {words[i % 4]} thing {i % 97}" for i in range(args.captions)]
        t0 = time.perf_counter()
        job = service.start_retrain(
            RetrainRequest(
                captions=captions,
                train_overrides={"epochs": args.retrain_epochs, "batch_size": 1024},
            )
        )
        while (job := service.get_job(job.id)).status not in ("succeeded", "failed"):
            time.sleep(0.2)
        job_wall = time.perf_counter() - t0
        if job.status != "succeeded":
            raise RuntimeError(f"retrain failed: {job.error}")
        t1 = time.perf_counter()
        service.activate(job.version or "")
        swap_s = time.perf_counter() - t1
    finally:
        service.close()
    log(n, f"retrain {job_wall:.1f} s {job.metrics.get('timings_s')}, swap {swap_s:.3f} s")
    return {
        "captions": len(captions),
        "epochs": args.retrain_epochs,
        "job_wall_s": job_wall,
        "stages_s": job.metrics.get("timings_s", {}),
        "activate_s": swap_s,
        "reprojected_items": n + args.audio_items,
    }


def bench_size(
    args: argparse.Namespace, n: int, models: tuple[str, str], workdir: Path
) -> dict[str, Any]:
    """Every cell of one collection size."""
    from bridge.encode.encoders import load_encoder
    from bridge.service.facade import BridgeService

    clip = load_encoder("clip", models[0], "cpu")
    clap = load_encoder("clap", models[1], "cpu")
    data_dir = workdir / f"var-{n}"
    shutil.rmtree(data_dir, ignore_errors=True)
    rng = np.random.default_rng(n)
    images = unit_rows(rng, n, clip.dim)
    audio = unit_rows(rng, args.audio_items, clap.dim)
    result: dict[str, Any] = {"items": n, "audio_items": args.audio_items, "dim": clip.dim}
    result["insert_s"] = populate_store(data_dir, images, audio, clip.model_id, clap.model_id)
    bridge = args.bridge or make_bridge(
        workdir / "bridge", clip.dim, clap.dim, args.hidden, args.shared
    )
    config = ServiceConfig(
        data_dir=data_dir,
        clip_model=models[0],
        clap_model=models[1],
        initial_bridge=Path(bridge),
        device="cpu",
        samples_dir=None,
    )
    t0 = time.perf_counter()
    service = BridgeService.open(config, clip=clip, clap=clap)
    result["open_with_index_builds_s"] = time.perf_counter() - t0
    opened = result["open_with_index_builds_s"]
    log(n, f"inserted in {result['insert_s']:.1f} s, opened in {opened:.1f} s")
    kinds = query_kinds(service, clip, images, args, workdir, rng)
    rows = facade_cells(service, kinds, args, n, result)
    service.close()
    if not args.no_http:
        rows += http_cells(config, kinds, args, n)
    result["rows"] = rows
    if not args.no_retrain:
        result["retrain"] = time_retrain(config, clip, clap, args, n)
    shutil.rmtree(data_dir, ignore_errors=True)
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = bench_parser("service", __doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--queries", type=int, default=256, help="queries per measurement")
    parser.add_argument("--distinct", type=int, default=64, help="distinct query vectors")
    parser.add_argument("--audio-items", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=512, help="stand-in encoder width")
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--shared", type=int, default=512)
    parser.add_argument("--clip-model", default=None)
    parser.add_argument("--clap-model", default=None)
    parser.add_argument("--bridge", default=None, help="checkpoint folder (default: random)")
    parser.add_argument("--captions", type=int, default=2000)
    parser.add_argument("--retrain-epochs", type=int, default=5)
    parser.add_argument("--no-http", action="store_true")
    parser.add_argument("--no-retrain", action="store_true")
    parser.add_argument(
        "--table-from", type=Path, default=None, help="print the tables of a saved --json report"
    )
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.table_from is not None:
        saved = json.loads(args.table_from.read_text())
        print(table(saved["results"]))
        print()
        print(targets_table(targets(saved["results"])))
        return 0

    workdir = Path(tempfile.mkdtemp(prefix="service-bench-"))
    try:
        if args.clip_model and args.clap_model:
            models = (args.clip_model, args.clap_model)
        else:
            models = build_stand_in_encoders(workdir, args.dim)
        results = [bench_size(args, n, models, workdir) for n in args.sizes]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    found = targets(results)
    report = {
        "command": command_line("service", argv),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "cpu": cpu_model(),
            "loadavg_at_end": os.getloadavg(),
            "python": platform.python_version(),
        },
        "encoders": "stand-ins" if not args.clip_model else list(models),
        "k": K,
        "results": results,
        "targets": found,
    }
    print(table(results))
    print()
    print(targets_table(found))
    if args.json:
        atomic_write_text(args.json, json.dumps(report, indent=2) + "\n")
    return 0
