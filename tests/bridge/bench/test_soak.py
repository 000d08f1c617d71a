"""bench soak's verdict (the targets of a long run) from per-minute rows; the whole benchmark
runs for a few seconds under the slow marker."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest

from bridge.bench.soak import Minute, settings_from_environment, summarise, verdict


def minutes_with(latency_ms: list[float], status: int = 200) -> list[Minute]:
    out = []
    for ms in latency_ms:
        minute = Minute()
        for _ in range(100):
            minute.record(status, ms / 1000)
        out.append(minute)
    return out


def test_the_report_names_the_server_settings_without_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BRIDGE_KEEP_PREVIOUS_SECONDS", "600")
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    monkeypatch.setenv("BRIDGE_ADMIN_KEY", "secret")
    monkeypatch.setenv("BRIDGE_DATABASE_URL", "postgresql://u:secret@db/x")
    settings = settings_from_environment()
    assert settings["BRIDGE_KEEP_PREVIOUS_SECONDS"] == "600"
    assert settings["MALLOC_ARENA_MAX"] == "2"
    assert "secret" not in str(settings)


def test_rss_growth_and_slope_are_read_after_minute_5() -> None:
    minutes = minutes_with([50.0] * 8)
    ends = [500.0, 520.0, 540.0, 560.0, 600.0, 610.0, 620.0, 630.0]  # warm-up, then 10 MB/min
    rss = [[end - 5.0, end] for end in ends]
    rss[6] = [700.0, 620.0]  # a brief peak inside minute 7
    rows = summarise(minutes, rss)
    assert [r["rss_mb"] for r in rows] == ends and rows[6]["rss_peak_mb"] == 700.0
    result = verdict(rows, minutes)
    assert result["5xx"] == 0
    assert result["rss_growth_after_minute_5"] == pytest.approx(630 / 600 - 1)
    assert result["rss_peak_growth_after_minute_5"] == pytest.approx(700 / 600 - 1)
    assert result["rss_mb_per_minute_after_minute_5"] == pytest.approx(10.0)
    assert "p99_last5_over_minutes_5_10" not in result  # needs 15 minutes


def test_the_latency_ratio_and_5xx_and_the_last_unsampled_minute() -> None:
    minutes = minutes_with([40.0] * 10 + [60.0] * 5) + minutes_with([10.0], status=503)
    rss = [[600.0]] * 15  # the trailing part-minute has no sample
    rows = summarise(minutes, rss)
    assert math.isnan(rows[-1]["rss_mb"]) and math.isnan(rows[-1]["rss_peak_mb"])
    result = verdict(rows, minutes)
    assert result["5xx"] == 100
    assert result["rss_growth_after_minute_5"] == pytest.approx(0.0)
    assert result["rss_mb_per_minute_after_minute_5"] == pytest.approx(0.0, abs=1e-9)
    # the last five: four minutes at 60 ms and the 503 minute at 10 ms; minutes 6-10 at 40 ms
    assert result["p99_last5_over_minutes_5_10"] == pytest.approx(60 / 40)


@pytest.mark.slow
def test_a_short_soak_retrains_and_reports(run_bench: Callable[..., dict[str, Any]]) -> None:
    report = run_bench("soak", ["--minutes", "0.3", "--clients", "4", "--items", "500"])
    assert report["verdict"]["5xx"] == 0
    assert report["retrain"]["job"]["status"] == "succeeded"
    (minute,) = report["minutes"]
    assert minute["requests"] > 50 and minute["rss_peak_mb"] >= minute["rss_mb"] > 100
    assert set(minute["statuses"]) <= {"200", "201", "204"}
