"""The service benchmark's tables and issue 4's two targets, from its results."""

from __future__ import annotations

from typing import Any

from bridge.bench.report import markdown_table

LATENCY_TARGET_MS = 2.0  # issue 4: p50 overhead of a vector query over the FAISS floor


def table(results: list[dict[str, Any]]) -> str:
    """The latency table (one row per query kind, path and client count) and the retrain
    table (one row per collection size)."""
    head = ["items", "query", "via", "clients", "p50 ms", "p99 ms", "q/s"]
    head += ["FAISS floor p50 ms", "floor q/s", "overhead p50 ms"]
    head += ["fresh-process floor p50 ms", "1-thread floor p50 ms"]
    rows = []
    for res in results:
        for r in res["rows"]:
            f = r["floor"]
            rows.append(
                [
                    f"{res['items']:,}",
                    r["kind"],
                    r["via"],
                    r["clients"],
                    f"{r['p50_ms']:.2f}",
                    f"{r['p99_ms']:.2f}",
                    f"{r['qps']:.0f}",
                    f"{f['p50_ms']:.2f}",
                    f"{f['qps']:.0f}",
                    f"{r['p50_ms'] - f['p50_ms']:.2f}",
                    f"{r['floor_fresh']['p50_ms']:.2f}" if "floor_fresh" in r else "-",
                    f"{r['floor_1thread']['p50_ms']:.2f}" if "floor_1thread" in r else "-",
                ]
            )
    latency = markdown_table(head, ["---:", "---", "---"] + ["---:"] * 9, rows)
    head = ["items re-projected", "retrain job s", "encode s", "train s"]
    head += ["re-project + index s", "evaluate s", "swap ms"]
    rows = []
    for res in results:
        rt = res.get("retrain")
        if rt:
            s = rt["stages_s"]
            rows.append(
                [
                    f"{rt['reprojected_items']:,}",
                    f"{rt['job_wall_s']:.1f}",
                    f"{s.get('encode', 0):.2f}",
                    f"{s.get('train', 0):.1f}",
                    f"{s.get('reproject', 0):.1f}",
                    f"{s.get('evaluate', 0):.2f}",
                    f"{rt['activate_s'] * 1000:.1f}",
                ]
            )
    return latency + "\n\n" + markdown_table(head, ["---:"] * 7, rows)


def targets(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 4's two targets per collection size, from the HTTP vector-query rows: p50
    overhead with one client under 2 ms, and throughput with the most clients at least half
    of single-threaded raw FAISS (each against the floor measured right before the cell)."""
    out = []
    for res in results:
        rows = [r for r in res["rows"] if r["kind"] == "vector" and r["via"] == "http"]
        if not rows:
            continue
        one = min(rows, key=lambda r: r["clients"])
        most = max(rows, key=lambda r: r["clients"])
        overhead = one["p50_ms"] - one["floor"]["p50_ms"]
        needed = most["floor"]["qps"] / 2
        out.append(
            {
                "items": res["items"],
                "latency_clients": one["clients"],
                "overhead_p50_ms": overhead,
                "latency_met": overhead < LATENCY_TARGET_MS,
                "throughput_clients": most["clients"],
                "qps": most["qps"],
                "qps_needed": needed,
                "throughput_met": most["qps"] >= needed,
            }
        )
    return out


def targets_table(rows: list[dict[str, Any]]) -> str:
    head = ["items", "vector p50 overhead, HTTP, 1 client (target < 2 ms)"]
    head += ["HTTP q/s, most clients (target: floor q/s / 2)"]
    yes = {True: "met", False: "NOT met"}
    cells = [
        [
            f"{t['items']:,}",
            f"{t['overhead_p50_ms']:.2f} ms ({yes[t['latency_met']]})",
            f"{t['qps']:.0f} at {t['throughput_clients']} clients vs "
            f"{t['qps_needed']:.0f} needed ({yes[t['throughput_met']]})",
        ]
        for t in rows
    ]
    return markdown_table(head, ["---:", "---:", "---:"], cells)
