r"""CPU time per HTTP search request, split by server thread, plus the client's own CPU.

    mbridge bench server-cpu --items 10000 --json docs/benchmarks/server-cpu-10k.json
    BRIDGE_INLINE_SEARCHES=false mbridge bench server-cpu --items 10000 \
        --json docs/benchmarks/server-cpu-10k-no-inline.json

Starts the benchmark server (`python -m app`, bridge/bench/appserver.py) on N synthetic items
as `mbridge bench service` does, sends vector queries with the benchmark's keep-alive client
at 1 and 32 concurrent connections, and reads the server's per-thread CPU times from /proc
before and after (Linux only). The event loop is the "MainThread"; engine threads are named
"engine_N". With lone searches inline (the default), a 1-client search runs wholly on the
event loop.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
from pathlib import Path
from typing import Any

from bridge.bench import httpclient as client
from bridge.bench.report import bench_parser, markdown_table, write_report
from bridge.bench.server import serving
from bridge.bench.standins import K, synthetic_service


def thread_cpu(pid: int) -> dict[str, tuple[str, float]]:
    """thread id -> (name, user + system CPU seconds)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        out[tid] = (name, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
    return out


def batch_counts(metrics: str) -> dict[str, float]:
    """The bridge_search_batch* counters of a /metrics page, e.g. batches:executor."""
    counts: dict[str, float] = {}
    for line in metrics.splitlines():
        if line.startswith("bridge_search_batch") and "_total{" in line:
            name, value = line.rsplit(" ", 1)
            kind = "queries" if "batched_queries" in name else "batches"
            where = name.split('where="')[1].split('"')[0]
            counts[f"{kind}:{where}"] = float(value)
    return counts


def client_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    config, images, _ = synthetic_service(work, args.items)
    requests = [
        {"json": {"vector": v.tolist(), "space": "clip", "target": "image", "k": K}}
        for v in images[:64]
    ]
    rows: list[dict[str, Any]] = []
    with serving(config) as (proc, base):

        def counters() -> dict[str, float]:
            return batch_counts(client.get(f"{base}/metrics", timeout=10)[1].decode())

        client.run(client.http_level(base, requests, 200, 1))  # warm up
        for clients in args.clients:
            batches_before = counters()
            before, client_before = thread_cpu(proc.pid), client_cpu()
            latency = client.run(client.http_level(base, requests, args.requests, clients))
            after, client_after = thread_cpu(proc.pid), client_cpu()
            batches = {k: v - batches_before.get(k, 0.0) for k, v in counters().items()}
            per_thread: dict[str, float] = {}
            for tid, (name, seconds) in after.items():
                used = seconds - before.get(tid, (name, 0.0))[1]
                key = "event loop" if tid == str(proc.pid) else "other"
                per_thread[key] = per_thread.get(key, 0.0) + used
            n = args.requests
            rows.append(
                {
                    "clients": clients,
                    "p50_ms": latency["p50_ms"],
                    "qps": latency["qps"],
                    "event_loop_cpu_ms": per_thread.get("event loop", 0.0) / n * 1000,
                    "other_threads_cpu_ms": per_thread.get("other", 0.0) / n * 1000,
                    "client_cpu_ms": (client_after - client_before) / n * 1000,
                    # includes each connection's untimed first request (one at a time)
                    "search_batches": batches,
                }
            )
    return rows


def main(argv: list[str]) -> int:
    parser = bench_parser("server-cpu", __doc__)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 32])
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="server-cpu-", ignore_cleanup_errors=True) as work:
        rows = measure(args, Path(work))

    print(f"{args.items:,} items, {args.requests} vector queries per row, CPU ms per request")
    head = ["clients", "p50 ms", "q/s", "event loop", "engine + other threads", "client"]
    cells = [
        [
            r["clients"],
            f"{r['p50_ms']:.2f}",
            f"{r['qps']:.0f}",
            f"{r['event_loop_cpu_ms']:.2f}",
            f"{r['other_threads_cpu_ms']:.2f}",
            f"{r['client_cpu_ms']:.2f}",
            ", ".join(f"{k} {v:.0f}" for k, v in sorted(r["search_batches"].items())),
        ]
        for r in rows
    ]
    print(markdown_table([*head, "batches"], ["---:"] * 6 + ["---"], cells))
    write_report(
        args.json,
        "server-cpu",
        argv,
        items=args.items,
        # the server inherits this environment (app/batcher.py: lone searches inline)
        BRIDGE_INLINE_SEARCHES=os.environ.get("BRIDGE_INLINE_SEARCHES", "true"),
        rows=rows,
    )
    return 0
