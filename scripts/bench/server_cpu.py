r"""CPU time per HTTP search request, split by server thread, plus the client's own CPU.

    .venv/bin/python scripts/bench/server_cpu.py --items 10000 \
        --json docs/benchmarks/server-cpu-10k.json
    BRIDGE_INLINE_SEARCHES=false .venv/bin/python scripts/bench/server_cpu.py --items 10000 \
        --json docs/benchmarks/server-cpu-10k-no-inline.json

Starts `python -m app` on N synthetic items (as scripts/bench/service_bench.py does), sends
vector queries with the benchmark's keep-alive client at 1 and 32 concurrent connections, and
reads the server's per-thread CPU times from /proc before and after (Linux only). The event
loop is the "MainThread"; engine threads are named "engine_N". This is where the README's
per-request CPU figures come from. With lone searches inline (the default), a 1-client
search runs wholly on the event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "scripts" / "bench")]

import service_bench as sb  # noqa: E402


def thread_cpu(pid: int) -> dict[str, tuple[str, float]]:
    """thread id -> (name, user + system CPU seconds)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        out[tid] = (name, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
    return out


def batch_counts(base: str) -> dict[str, float]:
    """The server's bridge_search_batch* counters from /metrics, e.g. batches:executor."""
    import httpx

    counts: dict[str, float] = {}
    for line in httpx.get(f"{base}/metrics", timeout=10).text.splitlines():
        if line.startswith("bridge_search_batch") and "_total{" in line:
            name, value = line.rsplit(" ", 1)
            kind = "queries" if "batched_queries" in name else "batches"
            where = name.split('where="')[1].split('"')[0]
            counts[f"{kind}:{where}"] = float(value)
    return counts


def client_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="server-cpu-"))
    try:
        config, images, _ = sb.synthetic_service(work, args.items)
        requests = [
            {"json": {"vector": v.tolist(), "space": "clip", "target": "image", "k": sb.K}}
            for v in images[:64]
        ]
        proc, base = sb.start_server(config)
        rows: list[dict[str, Any]] = []
        try:

            def run(total: int, clients: int) -> dict[str, float]:
                with asyncio.Runner(loop_factory=sb._loop_factory()) as runner:
                    return runner.run(sb._http_level(base, requests, total, clients))

            run(200, 1)  # warm up
            for clients in args.clients:
                batches_before = batch_counts(base)
                before, client_before = thread_cpu(proc.pid), client_cpu()
                latency = run(args.requests, clients)
                after, client_after = thread_cpu(proc.pid), client_cpu()
                batches = {k: v - batches_before.get(k, 0.0) for k, v in batch_counts(base).items()}
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
        finally:
            proc.terminate()
            proc.wait(30)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"{args.items:,} items, {args.requests} vector queries per row, CPU ms per request")
    print("| clients | p50 ms | q/s | event loop | engine + other threads | client | batches |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        batches = ", ".join(f"{k} {v:.0f}" for k, v in sorted(r["search_batches"].items()))
        print(
            f"| {r['clients']} | {r['p50_ms']:.2f} | {r['qps']:.0f} | {r['event_loop_cpu_ms']:.2f} "
            f"| {r['other_threads_cpu_ms']:.2f} | {r['client_cpu_ms']:.2f} | {batches} |"
        )
    if args.json:
        report = {
            "items": args.items,
            "cpu": sb.cpu_model(),
            # the server inherits this environment (app/batcher.py: lone searches inline)
            "BRIDGE_INLINE_SEARCHES": os.environ.get("BRIDGE_INLINE_SEARCHES", "true"),
            "rows": rows,
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
