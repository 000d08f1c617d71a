r"""Issue 4's latency target alone, repeated: one-client HTTP vector-query p50 over the floor.

    mbridge bench http-overhead --items 100000 --rounds 3 \
        --json docs/benchmarks/http-overhead-100k.json
    BRIDGE_INLINE_SEARCHES=false mbridge bench http-overhead ...

Starts the benchmark server (`python -m app` plus the floor route, bridge/bench/appserver.py)
on N synthetic items as `mbridge bench service` does, then runs ``--rounds`` rounds of
``--queries`` interleaved pairs (a raw FAISS search of the served index, timed in the server,
then the same vector as POST /v1/search, timed by the client). Each round prints its service
p50, floor p50 and their difference; the spread between rounds is the measurement's noise on
this machine, which a single cell of the full benchmark cannot show. The server inherits
this environment (so BRIDGE_INLINE_SEARCHES and the like apply).

A/B in one run: ``--baseline-env BRIDGE_SEARCH_THREADS=1`` also serves a copy of the data with
that setting (``--baseline-repo PATH``: with the code of another checkout, such as a ``git
worktree`` of an earlier commit), rounds alternate between the two servers (order flipped
every round), and the median per-round ratios service / baseline are printed (this machine
drifts 10-20% within minutes, so only same-run ratios compare).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bridge.bench import httpclient as client
from bridge.bench.floor import FLOOR_PATH
from bridge.bench.report import bench_parser, markdown_table, write_report
from bridge.bench.server import server_command, start_server, stop
from bridge.bench.standins import K, near_queries, synthetic_service
from bridge.bench.timing import median_ratio


def one_round(
    runner: asyncio.Runner, base: str, searches: list[dict[str, Any]], floors: list[Any], n: int
) -> dict[str, float]:
    http, floor = runner.run(client.http_interleaved(base, searches, floors, n))
    return {
        "p50_ms": http["p50_ms"],
        "floor_p50_ms": floor["p50_ms"],
        "overhead_p50_ms": http["p50_ms"] - floor["p50_ms"],
    }


def build_parser() -> argparse.ArgumentParser:
    parser = bench_parser("http-overhead", __doc__)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--queries", type=int, default=128, help="pairs per round")
    parser.add_argument(
        "--baseline-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="also serve a copy with these environment settings (e.g. BRIDGE_SEARCH_THREADS=1) "
        "and alternate rounds between the two servers; repeatable",
    )
    parser.add_argument(
        "--baseline-repo",
        type=Path,
        default=None,
        metavar="PATH",
        help="serve the baseline from another checkout (e.g. `git worktree add /tmp/base "
        "HEAD~1`): a same-run A/B of two versions of the code",
    )
    return parser


def measure(args: argparse.Namespace, work: Path) -> dict[str, list[dict[str, float]]]:
    """Rounds per server ("service", and "baseline" when there is one)."""
    baseline_env = dict(item.split("=", 1) for item in args.baseline_env)
    has_baseline = bool(baseline_env) or args.baseline_repo is not None
    servers = {"service": {}, "baseline": baseline_env} if has_baseline else {"service": {}}
    repos = {name: None for name in servers} | (
        {"baseline": args.baseline_repo} if args.baseline_repo is not None else {}
    )
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in servers}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        config, images, rng = synthetic_service(work, args.items)
        queries = near_queries(rng, images)
        searches = [
            {"json": {"vector": v.tolist(), "space": "clip", "target": "image", "k": K}}
            for v in queries
        ]
        floor_body: dict[str, Any] = {"index": "native", "target": "image", "total": 1}
        floors = [
            {"path": FLOOR_PATH, "json": {**floor_body, "queries": [v.tolist()]}} for v in queries
        ]
        bases: dict[str, str] = {}
        for name, env in servers.items():
            # each server its own copy of the data directory: one store per process
            data_dir = work / f"data-{name}"
            shutil.copytree(config.data_dir, data_dir)
            served = dataclasses.replace(config, data_dir=data_dir)
            proc, bases[name] = start_server(served, env, repo=repos[name])
            procs.append(proc)
        with asyncio.Runner(loop_factory=client.loop_factory()) as runner:
            for base in bases.values():
                runner.run(client.http_level(base, searches, 100, 1))  # warm up
            for r in range(args.rounds):
                order = list(bases) if r % 2 == 0 else list(reversed(bases))
                for name in order:
                    row = one_round(runner, bases[name], searches, floors, args.queries)
                    rounds[name].append(row)
                    print(
                        f"round {r + 1} {name}: service {row['p50_ms']:.2f} ms, floor "
                        f"{row['floor_p50_ms']:.2f} ms, overhead {row['overhead_p50_ms']:.2f} ms",
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        for proc in procs:
            stop(proc)
    return rounds


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.baseline_repo is not None:
        try:
            server_command(args.baseline_repo.resolve())
        except FileNotFoundError as exc:
            parser.error(f"--baseline-repo: {exc}")
    work = Path(tempfile.mkdtemp(prefix="http-overhead-"))
    try:
        rounds = measure(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    inline = os.environ.get("BRIDGE_INLINE_SEARCHES", "true")
    print(f"{args.items:,} items, {args.queries} interleaved pairs per round, inline {inline}")
    names = list(rounds)
    head = ["round"] + [
        f"{n} {col}" for n in names for col in ("p50 ms", "floor p50 ms", "overhead p50 ms")
    ]
    cells = [
        [i + 1]
        + [
            f"{rounds[n][i][key]:.2f}"
            for n in names
            for key in ("p50_ms", "floor_p50_ms", "overhead_p50_ms")
        ]
        for i in range(args.rounds)
    ]
    print(markdown_table(head, ["---:"] * len(head), cells))
    baseline_env = dict(item.split("=", 1) for item in args.baseline_env)
    if "baseline" in rounds:
        label = args.baseline_env or str(args.baseline_repo)
        pairs = list(zip(rounds["service"], rounds["baseline"], strict=True))
        for key in ("p50_ms", "overhead_p50_ms"):
            ratio = median_ratio(pairs, key)
            print(f"median {key} ratio, service / baseline ({label}): {ratio:.2f}")
    write_report(
        args.json,
        "http-overhead",
        argv,
        items=args.items,
        BRIDGE_INLINE_SEARCHES=inline,
        baseline_env=baseline_env,
        baseline_repo=None if args.baseline_repo is None else str(args.baseline_repo),
        rounds=rounds["service"],
        **({"baseline_rounds": rounds["baseline"]} if "baseline" in rounds else {}),
    )
    return 0
