"""bridge/bench/floor.py: the benchmark's floor reads the service's own index, in-process and
through the floor route of the benchmark server."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from bridge.bench import floor as own_floor
from bridge.service.facade import BridgeService
from bridge.types import ServiceConfig


@pytest.fixture
def service(synthetic: tuple[ServiceConfig, np.ndarray], tmp_path: Path) -> Iterator[BridgeService]:
    config, _ = synthetic
    shutil.copytree(config.data_dir, tmp_path / "data")
    svc = BridgeService.open(dataclasses.replace(config, data_dir=tmp_path / "data"))
    try:
        yield svc
    finally:
        svc.close()


def test_floor_route_times_raw_searches_on_the_served_index(service: BridgeService) -> None:
    from app.main import create_app
    from app.settings import Settings

    app = create_app(Settings(seed_samples=False), service=service)
    own_floor.add_floor_route(app, lambda: service)
    with TestClient(app) as client:
        index = own_floor.index_for(service, "native", "image")
        assert index.ntotal == 300
        queries = np.random.default_rng(0).standard_normal((2, index.dim)).tolist()
        body = {"index": "native", "target": "image", "queries": queries, "total": 5}
        answer = client.post(own_floor.FLOOR_PATH, json=body)
        assert answer.status_code == 200, answer.text  # not the page mounted at "/"
        seconds = answer.json()["seconds"]
        assert len(seconds) == 5 and all(0 < s < 1 for s in seconds)
        # not part of the documented API
        assert own_floor.FLOOR_PATH not in client.get("/openapi.json").json()["paths"]


def test_index_for_names_a_missing_index(
    synthetic: tuple[ServiceConfig, np.ndarray], tmp_path: Path
) -> None:
    config, _ = synthetic
    shutil.copytree(config.data_dir, tmp_path / "data")
    unbridged = dataclasses.replace(config, data_dir=tmp_path / "data", initial_bridge=None)
    service = BridgeService.open(unbridged)
    try:
        with pytest.raises(LookupError, match="no shared image index"):
            own_floor.index_for(service, "shared", "image")
    finally:
        service.close()


def test_split_floor_scans_the_served_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the service splitting lone scans, the floor splits the same way (raw faiss.knn
    per slice, in threads of its own); split=False is one single-threaded FAISS search."""
    import faiss

    import bridge.index.split_scan as split_scan
    import bridge.index.threads as index_module
    from bridge.index.vectors import VectorIndex, configure_search_threads

    monkeypatch.setattr(split_scan, "MIN_ROWS_PER_SLICE", 100)
    monkeypatch.setattr(index_module, "_scanner", index_module._scanner)  # restored after
    configure_search_threads(2)
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((300, 8)).astype(np.float32)
    index = VectorIndex.build("t", np.arange(300), vectors, fingerprint="f", use_gpu=False)
    calls: list[int] = []
    knn = faiss.knn

    def counting_knn(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[1].shape[0])  # rows of the slice scanned
        return knn(*args, **kwargs)

    monkeypatch.setattr(faiss, "knn", counting_knn)
    assert len(own_floor.raw_search_times(index, vectors[:2], 3)) == 3
    assert sorted(calls) == [150] * 6  # 3 searches x 2 slices of the 300 stored rows
    calls.clear()
    assert len(own_floor.raw_search_times(index, vectors[:2], 3, split=False)) == 3
    assert calls == []  # the index's own search, not slices


def test_the_fresh_process_floor_times_its_own_copy(tmp_path: Path) -> None:
    vectors = np.random.default_rng(0).standard_normal((200, 8)).astype(np.float32)
    floor = own_floor.FreshProcessFloor(vectors, vectors[:4], tmp_path, "t")
    s = floor.measure(7)
    assert s["n"] == 7 and 0 < s["p50_ms"] < 100
