r"""Split scans (bridge/index/split_scan.py) against one-thread scans, same run, same service.

    .venv/bin/python scripts/bench/split_scan.py --items 100000 --rounds 4 \
        --json docs/benchmarks/split-scan-100k.json

One in-process service on N synthetic items (as scripts/bench/service_bench.py builds it).
Each round measures vector searches through the facade (`BridgeService.search` from 1, 8 and
32 client threads), for each client count with BRIDGE_SEARCH_THREADS' effect on
(`configure_search_threads(0)`: one slice per core) and off (`configure_search_threads(1)`)
back to back, in alternating order. Prints q/s per round and the median per-round ratios
split / unsplit: the machine drifts 10-20% within minutes and has noisy spells of seconds,
so only cells measured next to each other compare. With one client a split
scan should be faster; with many, queries are batched anyway and splitting should cost
nothing.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "scripts" / "bench")]

import service_bench as sb  # noqa: E402

MODES = {"split": 0, "one thread": 1}  # configure_search_threads argument


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--queries", type=int, default=384, help="per cell (1 client: 1/4)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    from bridge.index.split_scan import default_threads
    from bridge.index.vectors import configure_search_threads
    from bridge.service.facade import BridgeService
    from bridge.types import SearchQuery

    work = Path(tempfile.mkdtemp(prefix="split-scan-"))
    cells: dict[str, dict[int, list[dict[str, float]]]] = {m: {} for m in MODES}
    try:
        config, images, rng = sb.synthetic_service(work, args.items)
        service = BridgeService.open(config)
        queries = images[:64] + 0.05 * sb.unit_rows(rng, 64, 512)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        parsed = [SearchQuery("image", vector=v.tolist(), space="clip", k=sb.K) for v in queries]
        try:
            for r in range(args.rounds):
                for clients in args.clients:
                    # the two modes back to back, so that each pair sees one machine state
                    order = list(MODES) if (r + clients) % 2 == 0 else list(reversed(MODES))
                    for mode in order:
                        configure_search_threads(MODES[mode])
                        total = args.queries // 4 if clients == 1 else args.queries
                        stats = sb.run_threads(
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
    finally:
        shutil.rmtree(work, ignore_errors=True)
        configure_search_threads(0)

    summary: dict[int, dict[str, Any]] = {}
    print(f"{args.items:,} items, {args.rounds} rounds, split = up to {default_threads()} slices")
    print("| clients | split q/s per round | one-thread q/s per round | q/s ratio | p50 ratio |")
    print("| ---: | --- | --- | ---: | ---: |")
    for clients in args.clients:
        split, single = cells["split"][clients], cells["one thread"][clients]
        pairs = list(zip(split, single, strict=True))
        qps_ratio = float(np.median([a["qps"] / b["qps"] for a, b in pairs]))
        p50_ratio = float(np.median([a["p50_ms"] / b["p50_ms"] for a, b in pairs]))
        summary[clients] = {"qps_ratio": qps_ratio, "p50_ratio": p50_ratio}
        split_qps = ", ".join(f"{c['qps']:.0f}" for c in split)
        single_qps = ", ".join(f"{c['qps']:.0f}" for c in single)
        print(f"| {clients} | {split_qps} | {single_qps} | {qps_ratio:.2f} | {p50_ratio:.2f} |")
    sb.write_report(
        args.json,
        "split_scan.py",
        argv,
        items=args.items,
        cells=cells,
        median_ratios_split_over_one_thread=summary,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
