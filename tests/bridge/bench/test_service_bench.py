"""`mbridge bench service`: its cells, tables, issue 4's targets and its report."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bridge.bench.service_report import table, targets, targets_table
from bridge.cli import main

TINY = ["--sizes", "200", "--queries", "6", "--distinct", "4"]
TINY += ["--audio-items", "20", "--dim", "16", "--hidden", "32", "--shared", "16"]
TINY += ["--captions", "40", "--retrain-epochs", "1"]


def _cell(kind: str, via: str, clients: int, p50: float, qps: float, floor_p50: float,
          floor_qps: float) -> dict[str, Any]:  # fmt: skip
    floor = {"p50_ms": floor_p50, "qps": floor_qps}
    return {"kind": kind, "via": via, "clients": clients, "p50_ms": p50, "p99_ms": 2 * p50,
            "qps": qps, "floor": floor}  # fmt: skip


def test_targets_take_the_http_vector_rows_against_their_own_floors() -> None:
    rows = [
        _cell("vector", "http", 1, 2.5, 400, 1.0, 1000),  # overhead 1.5 ms: met
        _cell("vector", "http", 32, 9.0, 450, 1.2, 800),  # 450 >= 800 / 2: met
        _cell("vector", "facade", 1, 9.0, 1, 1.0, 1),  # not HTTP: ignored
        _cell("text", "http", 1, 9.0, 1, 1.0, 1),  # not vector: ignored
    ]
    found = targets([{"items": 10_000, "rows": rows}, {"items": 5, "rows": rows[2:]}])
    assert found == [
        {
            "items": 10_000,
            "latency_clients": 1,
            "overhead_p50_ms": 1.5,
            "latency_met": True,
            "throughput_clients": 32,
            "qps": 450,
            "qps_needed": 400.0,
            "throughput_met": True,
        }
    ]
    rows[0]["p50_ms"], rows[1]["qps"] = 3.5, 399
    missed = targets([{"items": 10_000, "rows": rows}])[0]
    assert not missed["latency_met"] and not missed["throughput_met"]
    assert "2.50 ms (NOT met)" in targets_table([missed])
    assert "399 at 32 clients vs 400 needed (NOT met)" in targets_table([missed])


def test_table_rows_and_the_retrain_line() -> None:
    row = _cell("vector", "http", 1, 2.5, 400, 1.0, 1000) | {"floor_fresh": {"p50_ms": 0.9}}
    stages = {"encode": 0.5, "train": 1.0, "reproject": 1.2, "evaluate": 0.1}
    retrain = {
        "reprojected_items": 1200,
        "job_wall_s": 3.0,
        "activate_s": 0.004,
        "stages_s": stages,
    }
    text = table([{"items": 1000, "rows": [row], "retrain": retrain}])
    assert (
        "| 1,000 | vector | http | 1 | 2.50 | 5.00 | 400 | 1.00 | 1000 | 1.50 | 0.90 | - |" in text
    )
    assert "| 1,200 | 3.0 | 0.50 | 1.0 | 1.2 | 0.10 | 4.0 |" in text


@pytest.mark.parametrize(
    ("clients", "http"),
    [([2], False), pytest.param([1, 2], True, marks=pytest.mark.slow)],  # slow: 1 client
)  # runs the fresh-process floors, HTTP a server: seconds of start-up each
def test_service_benchmark_at_tiny_size(
    clients: list[int],
    http: bool,
    run_bench: Callable[[str, list[str]], dict[str, Any]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = TINY + ["--clients", *map(str, clients)] + ([] if http else ["--no-http"])
    report = run_bench("service", argv)
    out = capsys.readouterr().out
    assert report["command"].startswith("mbridge bench service --sizes 200")
    assert report["encoders"] == "stand-ins" and report["k"] == 10
    assert set(report["machine"]) == {"platform", "cpus", "cpu", "loadavg_at_end", "python"}
    (result,) = report["results"]
    assert result["items"] == 200 and result["audio_items"] == 20 and result["dim"] == 16
    assert result["insert_s"] > 0 and result["open_with_index_builds_s"] > 0
    assert set(result["stages_ms"]) == {"vector", "audio_file", "text"}
    vias = ["facade", "http"] if http else ["facade"]
    cells = {(r["kind"], r["via"], r["clients"]) for r in result["rows"]}
    assert cells == {(k, v, c) for k in result["stages_ms"] for v in vias for c in clients}
    for row in result["rows"]:
        assert row["n"] == 6 and row["p50_ms"] > 0 and row["floor"]["p50_ms"] > 0
        one_client = {"floor_fresh", "floor_1thread"} <= set(row)
        assert one_client == (row["clients"] == 1)
    retrain = result["retrain"]
    assert retrain["reprojected_items"] == 220 and retrain["epochs"] == 1
    assert set(retrain["stages_s"]) >= {"encode", "train", "reproject", "evaluate"}
    assert len(report["targets"]) == (1 if http else 0)
    assert f"| 200 | vector | facade | {clients[0]} |" in out and "| 220 |" in out
    # --table-from prints the same tables from the saved report
    saved = tmp_path / "service.json"
    assert main(["bench", "service", "--table-from", str(saved)]) == 0
    assert capsys.readouterr().out == out
    assert json.loads(saved.read_text()) == report
