r"""Split scans (bridge/index/split_scan.py) against one-thread scans, same run, same service.

    mbridge bench split-scan --items 100000 --rounds 4 --json docs/benchmarks/split-scan-100k.json

One in-process service on N synthetic items (as `mbridge bench service` builds it). Each round
measures vector searches through the facade (`BridgeService.search` from 1, 8 and 32 client
threads), for each client count with BRIDGE_SEARCH_THREADS' effect on
(`configure_search_threads(0)`: one slice per core) and off (`configure_search_threads(1)`)
back to back, in alternating order. Prints q/s per round and the median per-round ratios
split / unsplit: the machine drifts 10-20% within minutes and has noisy spells of seconds,
so only cells measured next to each other compare. With one client a split scan should be
faster; with many, queries are batched anyway and splitting should cost nothing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from bridge.bench.report import bench_parser, markdown_table, write_report
from bridge.bench.standins import K, near_queries, synthetic_service
from bridge.bench.timing import median_ratio, run_threads

MODES = {"split": 0, "one thread": 1}  # configure_search_threads argument


def measure(args: argparse.Namespace, work: Path) -> dict[str, dict[int, list[dict[str, float]]]]:
    """mode -> clients -> the cell of each round."""
    from bridge.index.vectors import configure_search_threads
    from bridge.service.facade import BridgeService
    from bridge.types import SearchQuery

    cells: dict[str, dict[int, list[dict[str, float]]]] = {m: {} for m in MODES}
    config, images, rng = synthetic_service(work, args.items)
    service = BridgeService.open(config)
    queries = near_queries(rng, images)
    parsed = [SearchQuery("image", vector=v.tolist(), space="clip", k=K) for v in queries]
    try:
        for r in range(args.rounds):
            for clients in args.clients:
                # the two modes back to back, so that each pair sees one machine state
                order = list(MODES) if (r + clients) % 2 == 0 else list(reversed(MODES))
                for mode in order:
                    configure_search_threads(MODES[mode])
                    total = args.queries // 4 if clients == 1 else args.queries
                    stats = run_threads(
                        lambda i: service.search(parsed[i % len(parsed)]), total, clients
                    )
                    cells[mode].setdefault(clients, []).append(stats)
                    print(
                        f"round {r + 1} {mode} c={clients}: {stats['qps']:.0f} q/s, "
                        f"p50 {stats['p50_ms']:.1f} ms",
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        service.close()
        configure_search_threads(0)
    return cells


def main(argv: list[str]) -> int:
    parser = bench_parser("split-scan", __doc__)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--queries", type=int, default=384, help="per cell (1 client: 1/4)")
    args = parser.parse_args(argv)
    from bridge.index.split_scan import default_threads

    with tempfile.TemporaryDirectory(prefix="split-scan-", ignore_cleanup_errors=True) as work:
        cells = measure(args, Path(work))

    summary: dict[int, dict[str, Any]] = {}
    rows = []
    for clients in args.clients:
        split, single = cells["split"][clients], cells["one thread"][clients]
        pairs = list(zip(split, single, strict=True))
        qps_ratio, p50_ratio = median_ratio(pairs, "qps"), median_ratio(pairs, "p50_ms")
        summary[clients] = {"qps_ratio": qps_ratio, "p50_ratio": p50_ratio}
        split_qps = ", ".join(f"{c['qps']:.0f}" for c in split)
        single_qps = ", ".join(f"{c['qps']:.0f}" for c in single)
        rows.append([clients, split_qps, single_qps, f"{qps_ratio:.2f}", f"{p50_ratio:.2f}"])
    print(f"{args.items:,} items, {args.rounds} rounds, split = up to {default_threads()} slices")
    head = ["clients", "split q/s per round", "one-thread q/s per round", "q/s ratio"]
    align = ["---:", "---", "---", "---:", "---:"]
    print(markdown_table([*head, "p50 ratio"], align, rows))
    write_report(
        args.json,
        "split-scan",
        argv,
        items=args.items,
        cells=cells,
        median_ratios_split_over_one_thread=summary,
    )
    return 0
