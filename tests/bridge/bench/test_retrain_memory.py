"""bench retrain-memory: per-stage peaks from VmHWM, and a whole short run (slow)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from bridge.bench.retrain_memory import StageMeter
from bridge.bench.soak import status_mb


def test_each_stage_has_its_own_peak() -> None:
    """64 MB touched in the first stage shows in its peak, not in the second's."""
    meter = StageMeter(status_mb("VmRSS"))
    meter(0.1, "encoding captions")
    block = np.ones(64 * 1024 * 1024 // 8)
    del block
    meter(0.2, "epoch 1/3 loss 1.0")
    meter(0.3, "epoch 2/3 loss 0.9")  # still training
    meter.close()
    first, second = meter.stages
    assert [first["stage"], second["stage"]] == ["encoding captions", "training"]
    assert first["peak_mb"] >= 60 > second["peak_mb"]
    assert first["end_mb"] < 30


@pytest.mark.slow
def test_a_short_run_reports_every_stage(run_bench: Callable[..., dict[str, Any]]) -> None:
    report = run_bench("retrain-memory", ["--items", "2000", "--retrains", "2"])
    assert len(report["retrains"]) == 2
    stages = [s["stage"] for s in report["retrains"][0]["stages"]]
    assert stages[:3] == ["encoding captions", "training", "re-projecting stored items"]
    assert stages[-1] == "activating"
    assert all(r["peak_mb"] >= max(s["end_mb"] for s in r["stages"]) for r in report["retrains"])
