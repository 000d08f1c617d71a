"""Resident memory of retrains in a serving process, stage by stage.

    mbridge bench retrain-memory [--items 20000] [--retrains 3] [--keep-previous-seconds S]

The soak's synthetic service (bridge/bench/standins.py: N 512-d images and 1,000 sounds,
stand-in encoders, a random bridge) opened in this process with the server's malloc arena cap
(BRIDGE_MALLOC_ARENAS' default), then `--retrains` retrains of the soak's 8 captions (3 epochs),
each activated. For every stage of a retrain (the job's progress messages: encoding captions,
training, re-projecting stored items, shared indexes built, evaluating, activating) it reports
the highest RSS (VmHWM, reset when the stage starts through /proc/self/clear_refs) and the
RSS when the stage ends, in MB above the RSS before the first retrain; and after each retrain
(its heap trim included) what stays.

The baseline is one shared image index (N x 512 x 4 bytes): the least a retrain must add
while it serves from the old version, since it builds the new version's index beside it.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path
from typing import Any

from bridge.bench.report import bench_parser, format_table, write_report
from bridge.bench.soak import CAPTIONS, status_mb

DIM = 512  # the synthetic service's embedding and shared dimension
MB = 1024 * 1024


def reset_peak() -> None:
    """Start VmHWM again from the current RSS (Linux 4.0+)."""
    Path("/proc/self/clear_refs").write_text("5")


class StageMeter:
    """A retrain's progress callback that closes a stage at each new message: its peak RSS
    (VmHWM since the stage began) and its RSS at the end, both above ``base``."""

    def __init__(self, base: float) -> None:
        self.base = base
        self.stages: list[dict[str, Any]] = []
        self.current: str | None = None

    def __call__(self, fraction: float, message: str, force: bool = False) -> None:
        stage = "training" if message.startswith("epoch ") else message
        if stage != self.current:
            self.close()
            self.current = stage
            reset_peak()

    def close(self) -> None:
        if self.current is not None:
            self.stages.append(
                {
                    "stage": self.current,
                    "peak_mb": status_mb("VmHWM") - self.base,
                    "end_mb": status_mb("VmRSS") - self.base,
                }
            )
            self.current = None


def main(argv: list[str]) -> int:
    parser = bench_parser("retrain-memory", __doc__ or "")
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--retrains", type=int, default=3)
    parser.add_argument("--keep-previous-seconds", type=float, default=None)
    args = parser.parse_args(argv)

    from bridge.bench.standins import synthetic_service
    from bridge.memory import DEFAULT_ARENAS, limit_arenas, release_free_memory
    from bridge.service.facade import BridgeService
    from bridge.types import RetrainRequest

    limit_arenas(DEFAULT_ARENAS)
    work = Path(tempfile.mkdtemp(prefix="bench-retrain-memory-"))
    retrains: list[dict[str, Any]] = []
    try:
        config, _, _ = synthetic_service(work, args.items)
        if args.keep_previous_seconds is not None:
            config = dataclasses.replace(config, keep_previous_seconds=args.keep_previous_seconds)
        service = BridgeService.open(config)
        try:
            release_free_memory()
            base = status_mb("VmRSS")
            request = RetrainRequest(
                captions=CAPTIONS, activate=True, train_overrides={"epochs": 3}
            )
            for _ in range(args.retrains):
                meter = StageMeter(base)
                reset_peak()
                service.retrain(request, meter)
                meter.close()
                retrains.append(
                    {
                        "stages": meter.stages,
                        "peak_mb": max(s["peak_mb"] for s in meter.stages),
                        "after_mb": status_mb("VmRSS") - base,
                    }
                )
        finally:
            service.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    index_mb = args.items * DIM * 4 / MB
    print(render(retrains, index_mb))
    print(f"RSS before the first retrain: {base:.0f} MB; one shared image index: {index_mb:.1f} MB")
    write_report(args.json, "retrain-memory", argv, items=args.items, base_mb=base,
                 index_mb=index_mb, keep_previous_seconds=config.keep_previous_seconds,
                 retrains=retrains)  # fmt: skip
    return 0


def render(retrains: list[dict[str, Any]], index_mb: float) -> str:
    rows = []
    for number, retrain in enumerate(retrains, 1):
        for stage in retrain["stages"]:
            rows.append(
                [
                    number,
                    stage["stage"],
                    stage["peak_mb"],
                    stage["peak_mb"] / index_mb,
                    stage["end_mb"],
                ]  # fmt: skip
            )
        rows.append([number, "after (trimmed)", "", "", retrain["after_mb"]])
    headers = ["retrain", "stage", "peak MB above start", "peak ÷ index", "end MB above start"]
    return format_table(headers, rows)
