"""How much slower is the request path's Python right after an exact FAISS scan?

    .venv/bin/python scripts/bench/scan_cache_effect.py --json docs/benchmarks/scan-cache.json

For each collection size it times one fixed piece of per-request Python work (parsing and
validating three 512-float JSON search bodies, as POST /v1/search does) twice per round:
right after a single-query `IndexFlatIP` scan, and again straight after (warm). The ratio
shows how much of the HTTP overhead at 100,000 items comes from the scan evicting the Python
working set from the CPU caches rather than from the request path itself.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    import faiss

    from app.schemas import SearchRequest

    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(0)
    body = json.dumps(
        {"vector": rng.random(512).tolist(), "space": "clip", "target": "image", "k": 10}
    ).encode()

    def python_work() -> float:
        started = time.perf_counter()
        for _ in range(3):
            SearchRequest.model_validate_json(body).to_query()
        return time.perf_counter() - started

    rows = []
    for n in args.sizes:
        vectors = rng.standard_normal((n, 512)).astype(np.float32)
        index = faiss.IndexFlatIP(512)
        index.add(vectors)
        query = vectors[:1].copy()
        after_scan, warm = [], []
        for _ in range(args.rounds):
            index.search(query, 10)
            after_scan.append(python_work())
            warm.append(python_work())
        rows.append(
            {
                "items": n,
                "after_scan_us": float(np.median(after_scan) * 1e6),
                "warm_us": float(np.median(warm) * 1e6),
            }
        )
    print("| items | Python work after a scan (µs, median) | same work again (µs) | ratio |")
    print("| ---: | ---: | ---: | ---: |")
    for r in rows:
        ratio = r["after_scan_us"] / r["warm_us"]
        print(f"| {r['items']:,} | {r['after_scan_us']:.0f} | {r['warm_us']:.0f} | {ratio:.2f} |")
    if args.json:
        args.json.write_text(json.dumps({"rounds": args.rounds, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
