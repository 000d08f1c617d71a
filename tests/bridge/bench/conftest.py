"""Fixtures of the benchmark tests: a small synthetic service (stand-in encoders, random
bridge, N random items: what the service benchmarks run on), built once per session."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bridge.types import ServiceConfig

ITEMS = 300


@pytest.fixture(autouse=True)
def _no_bridge_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Benchmarks pass the caller's environment to their servers: none of the caller's
    BRIDGE_* settings may leak into a test's."""
    for name in list(os.environ):
        if name.upper().startswith("BRIDGE_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[ServiceConfig, np.ndarray]:
    """(config, image vectors) of a data directory with ITEMS 16-wide image items."""
    from bridge.bench.standins import synthetic_service

    config, images, _ = synthetic_service(tmp_path_factory.mktemp("synthetic"), ITEMS, dim=16)
    return config, images


@pytest.fixture
def run_bench(tmp_path: Path) -> Callable[[str, list[str]], dict[str, Any]]:
    """run_bench(NAME, ARGV): `mbridge bench NAME ARGV --json FILE` in-process, through the
    CLI; answers the report."""
    from bridge.cli import main

    def run(name: str, argv: list[str]) -> dict[str, Any]:
        out = tmp_path / f"{name}.json"
        assert main(["bench", name, *argv, "--json", str(out)]) == 0
        report: dict[str, Any] = json.loads(out.read_text())
        return report

    return run
