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
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "scripts" / "bench")]

import own_floor  # noqa: E402
import service_bench as sb  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--queries", type=int, default=128, help="pairs per round")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="http-overhead-"))
    rounds: list[dict[str, float]] = []
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
        proc, base = sb.start_server(config)
        try:
            with asyncio.Runner(loop_factory=sb._loop_factory()) as runner:
                runner.run(sb._http_level(base, searches, 100, 1))  # warm up
                for r in range(args.rounds):
                    http, floor = runner.run(
                        sb._http_interleaved(base, searches, floors, args.queries)
                    )
                    row = {
                        "p50_ms": http["p50_ms"],
                        "floor_p50_ms": floor["p50_ms"],
                        "overhead_p50_ms": http["p50_ms"] - floor["p50_ms"],
                    }
                    rounds.append(row)
                    print(
                        f"round {r + 1}: service {row['p50_ms']:.2f} ms, floor "
                        f"{row['floor_p50_ms']:.2f} ms, overhead {row['overhead_p50_ms']:.2f} ms",
                        file=sys.stderr,
                        flush=True,
                    )
        finally:
            proc.terminate()
            proc.wait(30)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    inline = os.environ.get("BRIDGE_INLINE_SEARCHES", "true")
    print(f"{args.items:,} items, {args.queries} interleaved pairs per round, inline {inline}")
    print("| round | service p50 ms | floor p50 ms | overhead p50 ms |")
    print("| ---: | ---: | ---: | ---: |")
    for i, row in enumerate(rounds, 1):
        print(
            f"| {i} | {row['p50_ms']:.2f} | {row['floor_p50_ms']:.2f} "
            f"| {row['overhead_p50_ms']:.2f} |"
        )
    if args.json:
        report = {
            "command": " ".join(["http_overhead.py", *(sys.argv[1:] if argv is None else argv)]),
            "items": args.items,
            "cpu": sb.cpu_model(),
            "BRIDGE_INLINE_SEARCHES": inline,
            "rounds": rounds,
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
