"""Overload: `mbridge bench overload [--items N] [--factor 4] [--seconds S]
[--max-queue-ms MS ...]`.

What admission control (app/admission.py: BRIDGE_MAX_PENDING, BRIDGE_MAX_QUEUE_MS) buys when
more requests arrive than the server can answer. One synthetic collection
(bridge/bench/standins.py: N 512-d images, stand-in encoders) served in turn by one server
process per `--max-queue-ms` value and one with no bound at all (the baseline: every request
waits its turn), each on its own copy of the data. For each, text searches (encode + search):

1. unloaded: one client, one request at a time: p50/p99;
2. sustainable (the unbounded server only, run first): 32 keep-alive clients back to back
   (concurrent searches share batched engine calls, so fewer clients understate it);
3. overload: requests arriving on a fixed schedule at `factor` x that throughput for
   `seconds` (an open loop: arrivals do not wait for answers), then p50/p99 of the admitted
   (200) answers as a ratio to the unloaded p99, and the count and p99 of the refusals (503).

The client runs on the same cores as the server, so the absolute numbers are this machine's;
the ratios compare the servers in one run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bridge.bench import httpclient
from bridge.bench.report import bench_parser, format_table, write_report
from bridge.bench.server import start_server, stop
from bridge.bench.standins import synthetic_service
from bridge.bench.timing import stats

UNBOUNDED = 100_000  # BRIDGE_MAX_PENDING's ceiling: admission never refuses
WORDS = ("dog", "rain", "piano", "engine", "bird", "crowd", "siren", "wave")


def text_requests(n: int = 64) -> list[dict[str, Any]]:
    texts = [f"a {WORDS[i % 8]} and a {WORDS[(i * 3 + 1) % 8]} number {i}" for i in range(n)]
    return [{"json": {"text": t, "target": "image", "k": 10}} for t in texts]


async def open_loop(
    base: str, requests: list[dict[str, Any]], rate: float, seconds: float
) -> dict[str, Any]:
    """Send requests at `rate` per second for `seconds` without waiting for answers (an open
    loop), each on an idle keep-alive connection or a new one when none is idle (opening a
    connection per request cost this machine's client more CPU than the server's refusals);
    latencies by status."""
    host, port = httpclient.host_port(base)
    encoded = [httpclient.encode_request(f"{host}:{port}", spec) for spec in requests]
    by_status: dict[int, list[float]] = {}
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    opened: list[asyncio.StreamWriter] = []
    failed = 0

    async def one(i: int) -> None:
        nonlocal failed
        started = time.perf_counter()
        try:
            if idle:
                reader, writer = idle.pop()
            else:
                reader, writer = await asyncio.open_connection(host, port)
                opened.append(writer)
            status, _ = await httpclient.exchange(reader, writer, encoded[i % len(encoded)])
        except (OSError, asyncio.IncompleteReadError):
            failed += 1
            return
        by_status.setdefault(status, []).append(time.perf_counter() - started)
        idle.append((reader, writer))

    total = int(rate * seconds)
    begun = time.perf_counter()
    tasks = []
    try:
        for i in range(total):
            delay = begun + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
    finally:
        for writer in opened:
            writer.close()
    wall = time.perf_counter() - begun
    return {
        "offered": total,
        "offered_per_s": rate,
        "wall_s": wall,
        "connections": len(opened),
        "connection_errors": failed,
        "statuses": {str(s): len(v) for s, v in sorted(by_status.items())},
        "accepted": stats(by_status.get(200, []), wall) if 200 in by_status else None,
        "refused": stats(by_status.get(503, []), wall) if 503 in by_status else None,
    }


def measure_server(
    base: str, requests: list[dict[str, Any]], factor: float, seconds: float, rate: float | None
) -> dict[str, Any]:
    """Unloaded latency, then the overload at `rate` requests per second (None: `factor` x
    the throughput this server sustains, measured first: the unbounded baseline's)."""
    httpclient.run(httpclient.http_level(base, requests, 64, 1))  # warm up
    out: dict[str, Any] = {
        "unloaded": httpclient.run(httpclient.http_level(base, requests, 300, 1))
    }
    if rate is None:
        out["sustained"] = httpclient.run(httpclient.http_level(base, requests, 1200, 32))
        rate = factor * out["sustained"]["qps"]
    out["overload"] = httpclient.run(open_loop(base, requests, rate, seconds))
    return out


def main(argv: list[str]) -> int:
    parser = bench_parser("overload", __doc__ or "")
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--factor", type=float, default=4.0, help="offered load / sustainable")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the overload")
    parser.add_argument(
        "--max-queue-ms",
        type=float,
        nargs="+",
        default=[-1],
        help="BRIDGE_MAX_QUEUE_MS values to compare (-1: the server's default)",
    )
    args = parser.parse_args(argv)
    # -1: the server's own defaults (app/settings.py; bridge/ does not import app/).
    # The unbounded baseline first: its sustained throughput sets every server's load.
    variants: dict[str, dict[str, str]] = {
        "unbounded": {"BRIDGE_MAX_PENDING": str(UNBOUNDED), "BRIDGE_MAX_QUEUE_MS": "0"}
    } | {
        f"max_queue_ms {'default' if ms < 0 else f'{ms:g}'}": (
            {} if ms < 0 else {"BRIDGE_MAX_QUEUE_MS": str(ms)}
        )
        for ms in args.max_queue_ms
    }
    work = Path(tempfile.mkdtemp(prefix="bench-overload-"))
    results: dict[str, Any] = {}
    try:
        config, _, _ = synthetic_service(work / "source", args.items)
        config = dataclasses.replace(config, initial_bridge=None)
        requests = text_requests()
        for name, env in variants.items():
            data_dir = work / f"data-{len(results)}"
            shutil.copytree(config.data_dir, data_dir)
            served = dataclasses.replace(config, data_dir=data_dir)
            proc, base = start_server(served, env)
            try:
                print(f"{name} ...", flush=True)
                rate = results["unbounded"]["overload"]["offered_per_s"] if results else None
                results[name] = {"env": env} | measure_server(
                    base, requests, args.factor, args.seconds, rate
                )
            finally:
                stop(proc)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(render(results))
    write_report(args.json, "overload", argv, items=args.items, factor=args.factor,
                 seconds=args.seconds, results=results)  # fmt: skip
    return 0


def render(results: dict[str, Any]) -> str:
    rows = []
    for name, r in results.items():
        over, base_p99 = r["overload"], r["unloaded"]["p99_ms"]
        accepted, refused = over["accepted"] or {}, over["refused"] or {}
        others = sum(n for s, n in over["statuses"].items() if s not in ("200", "503"))
        rows.append(
            [
                name,
                r["unloaded"]["p50_ms"],
                base_p99,
                r.get("sustained", {}).get("qps", np.nan),
                over["offered_per_s"],
                over["statuses"].get("200", 0),
                accepted.get("p50_ms", np.nan),
                accepted.get("p99_ms", np.nan),
                accepted.get("p99_ms", np.nan) / base_p99,
                over["statuses"].get("503", 0),
                refused.get("p99_ms", np.nan),
                others + over["connection_errors"],
            ]
        )
    headers = [
        "server",
        "unloaded p50 ms",
        "unloaded p99 ms",
        "sustained q/s",
        "offered q/s",
        "200s",
        "200 p50 ms",
        "200 p99 ms",
        "200 p99 / unloaded p99",
        "503s",
        "503 p99 ms",
        "other",
    ]
    return format_table(headers, rows)
