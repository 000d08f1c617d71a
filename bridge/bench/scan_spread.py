r"""How much one exact FAISS scan varies between copies of the same index (issue 4's floor).

    mbridge bench scan-spread --items 100000 --copies 4 --json docs/benchmarks/scan-spread-100k.json

Builds ``--copies`` IndexFlatIP indexes of the same N unit vectors in one process (each its
own allocation, so its own physical pages) and times single-query searches on them
interleaved, one OpenMP thread, as the service benchmark's floor does. The spread of the
copies' p50s is what a service index and the floor's index can differ by before any service
code runs: a floor built in another process can differ from the served index by which pages
the scan reads (bridge/bench/floor.py takes the floor on the served index for this reason).
"""

from __future__ import annotations

import time

import numpy as np

from bridge.bench.report import bench_parser, markdown_table, write_report
from bridge.bench.standins import K, unit_rows


def main(argv: list[str]) -> int:
    parser = bench_parser("scan-spread", __doc__)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--copies", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=60, help="searches per copy")
    args = parser.parse_args(argv)
    import faiss

    rng = np.random.default_rng(0)
    vectors = unit_rows(rng, args.items, args.dim)
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
            index.search(q, K)
            out.append(time.perf_counter() - t0)
    p50 = [float(np.median(t)) * 1000 for t in times]
    spread = max(p50) - min(p50)
    print(f"{args.items:,} x {args.dim} flat, {args.rounds} single-query searches per copy")
    print(
        markdown_table(
            ["copy", "p50 ms"], ["---:", "---:"], [[i, f"{ms:.2f}"] for i, ms in enumerate(p50)]
        )
    )
    print(f"spread of p50s: {spread:.2f} ms ({100 * spread / min(p50):.1f}% of the fastest)")
    write_report(
        args.json, "scan-spread", argv, items=args.items, dim=args.dim, p50_ms=p50, spread_ms=spread
    )
    return 0
