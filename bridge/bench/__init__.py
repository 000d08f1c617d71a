"""Every benchmark, run as `mbridge bench NAME [OPTIONS]`: each prints a table and, with
--json, writes its report. `BENCHMARKS` names them; each module has `main(argv) -> int`
and imports its heavy libraries when it runs, so this registry stays cheap to import.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Benchmark:
    name: str  # `mbridge bench NAME`
    module: str  # under bridge.bench
    summary: str  # one line for `mbridge bench --help`


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark("synthetic", "synthetic", "C-MCR quality and ablations on a synthetic world"),
        Benchmark("digits", "digits", "C-MCR on real data: spoken vs handwritten digits"),
        Benchmark("speed", "speed", "training throughput: memory retrieval once vs per step"),
        Benchmark("service", "service", "search latency and q/s vs raw FAISS, and retrain time"),
        Benchmark("backends", "backends", "FAISS vs Milvus: build, latency, q/s, recall@10"),
        Benchmark("overload", "overload", "admission control: latency at 4x the sustainable rate"),
        Benchmark("soak", "soak", "a long mixed load: p50/p99, errors and RSS per minute"),
        Benchmark("retrain-memory", "retrain_memory", "RSS of retrains in a serving process"),
        Benchmark(
            "http-overhead", "http_overhead", "one-client HTTP p50 over the floor, in rounds"
        ),
        Benchmark("server-cpu", "server_cpu", "server CPU per HTTP search, by thread"),
        Benchmark("request-timeline", "request_timeline", "where one HTTP search's time goes"),
        Benchmark("cold-path", "cold_path", "a search per layer, warm and after a big scan"),
        Benchmark("split-scan", "split_scan", "split vs one-thread scans through the facade"),
        Benchmark("index", "index", "FAISS index kinds, item store and catalog rebuilds"),
        Benchmark("scan-spread", "scan_spread", "scan time spread between copies of one index"),
        Benchmark("scan-cache", "scan_cache", "request-path Python after a FAISS scan vs warm"),
        Benchmark("image-decode", "image_decode", "memory and time of decoding one big image"),
    )
}


def run(name: str, argv: Sequence[str]) -> int:
    """Run benchmark ``name`` with its own options ``argv``."""
    module = importlib.import_module(f"bridge.bench.{BENCHMARKS[name].module}")
    return int(module.main(list(argv)))
