r"""Issue 4's latency target alone, repeated: one-client HTTP vector-query p50 over the floor.

    .venv/bin/python scripts/bench/http_overhead.py --items 100000 --rounds 3 \
        --json docs/benchmarks/http-overhead-100k.json
    BRIDGE_INLINE_SEARCHES=false .venv/bin/python scripts/bench/http_overhead.py ...

Starts the benchmark server (`python -m app` plus the floor route, own_floor.py) on N
synthetic items as scripts/bench/service_bench.py does, then runs ``--rounds`` rounds of
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
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "scripts" / "bench")]

import own_floor  # noqa: E402
import service_bench as sb  # noqa: E402


def one_round(
    runner: asyncio.Runner, base: str, searches: list[dict[str, Any]], floors: list[Any], n: int
) -> dict[str, float]:
    http, floor = runner.run(sb._http_interleaved(base, searches, floors, n))
    return {
        "p50_ms": http["p50_ms"],
        "floor_p50_ms": floor["p50_ms"],
        "overhead_p50_ms": http["p50_ms"] - floor["p50_ms"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
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
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="http-overhead-"))
    baseline_env = dict(item.split("=", 1) for item in args.baseline_env)
    has_baseline = bool(baseline_env) or args.baseline_repo is not None
    servers = {"service": {}, "baseline": baseline_env} if has_baseline else {"service": {}}
    scripts: dict[str, list[str] | None] = {name: None for name in servers}
    if args.baseline_repo is not None:
        floor_script = args.baseline_repo.resolve() / "scripts" / "bench" / "own_floor.py"
        if not floor_script.is_file():
            parser.error(f"--baseline-repo: {floor_script} not found")
        scripts["baseline"] = [str(floor_script)]  # it puts its own checkout first on sys.path
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in servers}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        config, images, rng = sb.synthetic_service(work, args.items)
        queries = images[:64] + 0.05 * sb.unit_rows(rng, 64, 512)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        searches = [
            {"json": {"vector": v.tolist(), "space": "clip", "target": "image", "k": sb.K}}
            for v in queries
        ]
        floor_body: dict[str, Any] = {"index": "native", "target": "image", "total": 1}
        floors = [
            {"path": own_floor.FLOOR_PATH, "json": {**floor_body, "queries": [v.tolist()]}}
            for v in queries
        ]
        bases: dict[str, str] = {}
        for name, env in servers.items():
            # each server its own copy of the data directory: one store per process
            data_dir = work / f"data-{name}"
            shutil.copytree(config.data_dir, data_dir)
            served = dataclasses.replace(config, data_dir=data_dir)
            proc, bases[name] = sb.start_server(served, env, scripts[name])
            procs.append(proc)
        with asyncio.Runner(loop_factory=sb._loop_factory()) as runner:
            for base in bases.values():
                runner.run(sb._http_level(base, searches, 100, 1))  # warm up
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
            proc.terminate()
            proc.wait(30)
        shutil.rmtree(work, ignore_errors=True)

    inline = os.environ.get("BRIDGE_INLINE_SEARCHES", "true")
    print(f"{args.items:,} items, {args.queries} interleaved pairs per round, inline {inline}")
    names = list(rounds)
    print("| round | " + " | ".join(
        f"{n} p50 ms | {n} floor p50 ms | {n} overhead p50 ms" for n in names
    ) + " |")  # fmt: skip
    print("| ---: " * (1 + 3 * len(names)) + "|")
    for i in range(args.rounds):
        cells = [
            f"{rounds[n][i]['p50_ms']:.2f} | {rounds[n][i]['floor_p50_ms']:.2f} "
            f"| {rounds[n][i]['overhead_p50_ms']:.2f}"
            for n in names
        ]
        print(f"| {i + 1} | " + " | ".join(cells) + " |")
    if has_baseline:
        label = args.baseline_env or str(args.baseline_repo)
        for key in ("p50_ms", "overhead_p50_ms"):
            ratio = statistics.median(
                s[key] / b[key] for s, b in zip(rounds["service"], rounds["baseline"], strict=True)
            )
            print(f"median {key} ratio, service / baseline ({label}): {ratio:.2f}")
    sb.write_report(
        args.json,
        "http_overhead.py",
        argv,
        items=args.items,
        BRIDGE_INLINE_SEARCHES=inline,
        baseline_env=baseline_env,
        baseline_repo=None if args.baseline_repo is None else str(args.baseline_repo),
        rounds=rounds["service"],
        **({"baseline_rounds": rounds["baseline"]} if "baseline" in rounds else {}),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
