"""How much slower is the request path's Python right after an exact FAISS scan?

    mbridge bench scan-cache --json docs/benchmarks/scan-cache.json

For each collection size it times one fixed piece of per-request Python work (parsing and
validating three 512-float JSON search bodies with the app's SearchRequest, as POST
/v1/search does) twice per round: right after a single-query `IndexFlatIP` scan, and again
straight after (warm). The ratio shows how much of the HTTP overhead at 100,000 items comes
from the scan evicting the Python working set from the CPU caches rather than from the
request path itself. It runs in the process of `python -m app` (bridge/bench/appserver.py,
``--job scan-cache``), where the app's request models are loaded.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np

from bridge.bench.report import bench_parser, markdown_table, write_report


def measure_app(app: Any, service: Any, job: dict[str, Any]) -> dict[str, Any]:
    """In the benchmark server's process: the rows for ``job["sizes"]``, ``job["rounds"]``."""
    import faiss

    from bridge.bench.appserver import app_object

    search_request = app_object("app.schemas:SearchRequest")
    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(0)
    body = json.dumps(
        {"vector": rng.random(512).tolist(), "space": "clip", "target": "image", "k": 10}
    ).encode()

    def python_work() -> float:
        started = time.perf_counter()
        for _ in range(3):
            search_request.model_validate_json(body).to_query()
        return time.perf_counter() - started

    rows = []
    for n in job["sizes"]:
        vectors = rng.standard_normal((n, 512)).astype(np.float32)
        index = faiss.IndexFlatIP(512)
        index.add(vectors)
        query = vectors[:1].copy()
        after_scan, warm = [], []
        for _ in range(job["rounds"]):
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
    return {"rows": rows}


def main(argv: list[str]) -> int:
    parser = bench_parser("scan-cache", __doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args(argv)
    from bridge.bench.server import run_job

    rows = run_job("scan-cache", {"sizes": args.sizes, "rounds": args.rounds})["rows"]
    head = ["items", "Python work after a scan (µs, median)", "same work again (µs)", "ratio"]
    cells = [
        [
            f"{r['items']:,}",
            f"{r['after_scan_us']:.0f}",
            f"{r['warm_us']:.0f}",
            f"{r['after_scan_us'] / r['warm_us']:.2f}",
        ]
        for r in rows
    ]
    print(markdown_table(head, ["---:"] * 4, cells))
    write_report(args.json, "scan-cache", argv, rounds=args.rounds, rows=rows)
    return 0
