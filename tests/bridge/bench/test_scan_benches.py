"""The index-level benchmarks at tiny size: index, scan-spread, scan-cache, split-scan and
image-decode; each through `mbridge bench NAME ... --json`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

RunBench = Callable[[str, list[str]], dict[str, Any]]


def test_index(run_bench: RunBench, capsys: pytest.CaptureFixture[str]) -> None:
    report = run_bench("index", ["--n", "2000", "--dim", "16", "--queries", "300"])
    assert report["command"].startswith("mbridge bench index --n 2000")
    assert (report["n"], report["dim"], report["k"]) == (2000, 16, 10)
    assert list(report["kinds"]) == ["flat", "hnsw", "ivf"]
    assert report["kinds"]["flat"]["recall_at_10"] == 1.0
    for kind, row in report["kinds"].items():
        assert 0.5 < row["recall_at_10"] <= 1.0 and row["search_p50_ms"] > 0
        assert len(row["sweep"]) == (0 if kind == "flat" else 5)
    assert report["rw_lock_read_us"] > 0
    assert report["store"]["reconcile_full_rebuild_flat_s"] > 0
    assert "recall@10" in capsys.readouterr().out


def test_scan_spread(run_bench: RunBench, capsys: pytest.CaptureFixture[str]) -> None:
    report = run_bench("scan-spread", ["--items", "2000", "--dim", "32", "--copies", "3",
                                       "--rounds", "20"])  # fmt: skip
    assert (report["items"], report["dim"]) == (2000, 32) and len(report["p50_ms"]) == 3
    assert report["spread_ms"] == pytest.approx(max(report["p50_ms"]) - min(report["p50_ms"]))
    assert "spread of p50s" in capsys.readouterr().out


def test_scan_cache(run_bench: RunBench, capsys: pytest.CaptureFixture[str]) -> None:
    """Runs in a `python -m app` child (the app's request model is timed)."""
    report = run_bench("scan-cache", ["--sizes", "1000", "3000", "--rounds", "10"])
    assert report["rounds"] == 10 and [r["items"] for r in report["rows"]] == [1000, 3000]
    assert all(r["after_scan_us"] > 0 and r["warm_us"] > 0 for r in report["rows"])
    assert "| 3,000 |" in capsys.readouterr().out


def test_split_scan(run_bench: RunBench, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--items", "500", "--rounds", "2", "--clients", "1", "3", "--queries", "24"]
    report = run_bench("split-scan", argv)
    assert report["items"] == 500
    for mode in ("split", "one thread"):
        cells = report["cells"][mode]
        assert list(cells) == ["1", "3"] and all(len(c) == 2 for c in cells.values())
        assert [c["n"] for c in cells["1"]] == [6, 6]  # one client: a quarter of --queries
    assert set(report["median_ratios_split_over_one_thread"]) == {"1", "3"}
    assert "split = up to" in capsys.readouterr().out


def test_image_decode(run_bench: RunBench) -> None:
    report = run_bench("image-decode", ["--scale", "0.25"])
    assert [r["case"] for r in report["rows"]] == ["PNG RGBA 9400x9400", "JPEG RGB 8000x6000"]
    png = report["rows"][0]  # 2350 x 2350: box-reduced by 2, the shorter side stays >= 1024
    assert png["reduce"]["decoded"] == [1175, 1175] and png["full"]["decoded"] == [2350, 2350]
    assert png["reduce"]["peak_rss_above_setup_mb"] < png["full"]["peak_rss_above_setup_mb"]
    assert all(r[m]["seconds"] > 0 for r in report["rows"] for m in ("reduce", "full"))
