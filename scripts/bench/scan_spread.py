r"""How much one exact FAISS scan varies between copies of the same index (issue 4's floor).

    .venv/bin/python scripts/bench/scan_spread.py --items 100000 --copies 4 \
        --json docs/benchmarks/scan-spread-100k.json

Builds ``--copies`` IndexFlatIP indexes of the same N unit vectors in one process (each its
own allocation, so its own physical pages) and times single-query searches on them
interleaved, one OpenMP thread, as the service benchmark's floor does. The spread of the
copies' p50s is what a service index and the floor's index can differ by before any service
code runs: the service benchmark compares its answer times with a floor built in another
process, so at 100,000 items part of a "2 ms overhead" can be which pages the scan reads.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    import faiss

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--copies", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=60, help="searches per copy")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((args.items, args.dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[:64] + 0.05 * rng.standard_normal((64, args.dim), dtype=np.float32)
    faiss.omp_set_num_threads(1)
    copies = []
    for _ in range(args.copies):
        index = faiss.IndexFlatIP(args.dim)
        index.add(vectors)
        copies.append(index)
    times: list[list[float]] = [[] for _ in copies]
    for r in range(args.rounds):
        q = queries[r % len(queries)][None, :]
        for index, out in zip(copies, times, strict=True):
            t0 = time.perf_counter()
            index.search(q, 10)
            out.append(time.perf_counter() - t0)
    p50 = [float(np.median(t)) * 1000 for t in times]
    spread = max(p50) - min(p50)
    print(f"{args.items:,} x {args.dim} flat, {args.rounds} single-query searches per copy")
    print("| copy | p50 ms |")
    print("| ---: | ---: |")
    for i, ms in enumerate(p50):
        print(f"| {i} | {ms:.2f} |")
    print(f"spread of p50s: {spread:.2f} ms ({100 * spread / min(p50):.1f}% of the fastest)")
    if args.json:
        report = {
            "command": " ".join(["scan_spread.py", *(sys.argv[1:] if argv is None else argv)]),
            "items": args.items,
            "dim": args.dim,
            "p50_ms": p50,
            "spread_ms": spread,
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
