"""The benchmarks that run the app (bridge/bench/appserver.py): http-overhead, server-cpu,
request-timeline and cold-path. Their pure parts are tested fast; each whole benchmark runs
at tiny size under the slow marker (a server or app child takes seconds to start)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bridge.bench.appserver import app_object
from bridge.bench.request_timeline import gaps
from bridge.bench.server import child_env, server_command
from bridge.bench.server_cpu import batch_counts, thread_cpu
from bridge.types import ServiceConfig

RunBench = Callable[[str, list[str]], dict[str, Any]]


def test_gaps_are_per_request_medians_in_request_order() -> None:
    marks = [(10.0, 10.010), (20.0, 20.012)]
    events = [
        ("recv", 10.001),
        ("engine+", 10.002),
        ("engine-", 10.008),
        ("recv", 20.001),
        ("engine+", 20.002),
        ("engine-", 20.010),
        ("recv", 30.0),
    ]  # fmt: skip  (outside every timed request)
    found = gaps(events, marks)
    assert list(found) == ["client send -> recv", "recv -> engine+", "engine+ -> engine-",
                           "engine- -> client receive"]  # fmt: skip
    assert found["engine+ -> engine-"] == pytest.approx(7.0)  # median of 6 and 8 ms
    assert found["client send -> recv"] == pytest.approx(1.0)


def test_batch_counts_read_the_search_batch_counters() -> None:
    metrics = "\n".join([
        "# HELP bridge_search_batches_total ...",
        'bridge_search_batches_total{where="executor"} 12.0',
        'bridge_search_batched_queries_total{where="inline"} 30.0',
        'bridge_search_batches_created{where="executor"} 1.7e9',
        "bridge_requests_total 4.0",
    ])  # fmt: skip
    assert batch_counts(metrics) == {"batches:executor": 12.0, "queries:inline": 30.0}


def test_thread_cpu_names_this_process_threads() -> None:
    threads = thread_cpu(os.getpid())
    assert str(os.getpid()) in threads
    assert all(seconds >= 0 for _, seconds in threads.values())


def test_app_object_finds_loaded_app_objects_by_name_and_names_a_missing_one() -> None:
    import app.fastpath  # loaded, as in the benchmark server

    assert app_object("app.fastpath:JSONSearchFastPath") is app.fastpath.JSONSearchFastPath
    assert app_object("app.fastpath") is app.fastpath
    with pytest.raises(LookupError, match="app.fastpath:Gone: the app has no such object"):
        app_object("app.fastpath:Gone")
    with pytest.raises(LookupError, match="app.not_a_module is not loaded"):
        app_object("app.not_a_module:X")


def test_the_server_child_serves_the_data_dir_on_loopback(tmp_path: Path) -> None:
    config = ServiceConfig(data_dir=tmp_path, clip_model="c", clap_model="a", device="cpu")
    env = child_env(config, 8123, {"BRIDGE_SEARCH_THREADS": "1", "BRIDGE_HOST": "0.0.0.0"})
    assert env["BRIDGE_HOST"] == "127.0.0.1" and env["BRIDGE_PORT"] == "8123"
    assert env["BRIDGE_DATA_DIR"] == str(tmp_path) and env["BRIDGE_INITIAL_BRIDGE"] == "none"
    assert env["BRIDGE_SEARCH_THREADS"] == "1"
    assert server_command(None, ["--timeline"])[1:] == ["-m", "bridge.bench.appserver",
                                                        "--timeline"]  # fmt: skip
    old = tmp_path / "old" / "scripts" / "bench"
    old.mkdir(parents=True)
    (old / "own_floor.py").write_text("")
    assert server_command(tmp_path / "old") == [sys.executable, str(old / "own_floor.py")]
    with pytest.raises(FileNotFoundError, match="no benchmark server"):
        server_command(tmp_path)


@pytest.mark.slow
def test_http_overhead_with_a_baseline(run_bench: RunBench) -> None:
    argv = ["--items", "300", "--rounds", "2", "--queries", "8"]
    report = run_bench("http-overhead", argv + ["--baseline-env", "BRIDGE_SEARCH_THREADS=1"])
    assert report["command"].startswith("mbridge bench http-overhead --items 300")
    assert report["items"] == 300 and report["BRIDGE_INLINE_SEARCHES"] == "true"
    assert report["baseline_env"] == {"BRIDGE_SEARCH_THREADS": "1"}
    for rounds in (report["rounds"], report["baseline_rounds"]):
        assert len(rounds) == 2
        for r in rounds:
            assert r["overhead_p50_ms"] == pytest.approx(r["p50_ms"] - r["floor_p50_ms"])
            assert 0 < r["floor_p50_ms"] < r["p50_ms"]


@pytest.mark.slow
def test_server_cpu(run_bench: RunBench) -> None:
    argv = ["--items", "300", "--requests", "200", "--clients", "1", "4"]
    report = run_bench("server-cpu", argv)
    assert [r["clients"] for r in report["rows"]] == [1, 4]
    for row in report["rows"]:
        assert row["p50_ms"] > 0 and row["qps"] > 0 and row["client_cpu_ms"] > 0
        # /proc counts CPU in clock ticks (10 ms): 200 requests take several
        assert row["event_loop_cpu_ms"] + row["other_threads_cpu_ms"] > 0
        assert sum(v for k, v in row["search_batches"].items() if k.startswith("queries")) >= 200


@pytest.mark.slow
def test_request_timeline(run_bench: RunBench) -> None:
    report = run_bench("request-timeline", ["--items", "300", "--queries", "20"])
    gaps_ms = report["p50_ms"]
    for event in ("fastpath+", "parse+", "engine+", "plan+", "index+", "faiss+", "hydrate+"):
        assert any(name.endswith(f"-> {event}") for name in gaps_ms), event
    assert next(iter(gaps_ms)) == "client send -> recv"
    assert 0 < gaps_ms["faiss+ -> faiss-"] < report["request_p50_ms"]


@pytest.mark.slow
def test_cold_path(run_bench: RunBench) -> None:
    report = run_bench("cold-path", ["--rounds", "3"])
    assert list(report["p50_us"]) == ["app", "fastpath", "engine", "index", "raw"]
    for by in report["p50_us"].values():
        assert list(by) == ["scan", "sleep", "warm"] and all(v > 0 for v in by.values())
