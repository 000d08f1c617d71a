"""scripts/bench/own_floor.py: the benchmark's floor route reads the service's own index."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.main import create_app

if TYPE_CHECKING:
    from bridge.service.facade import BridgeService

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts" / "bench"))
import own_floor  # noqa: E402


def test_floor_route_times_raw_searches_on_the_served_index(
    service: BridgeService, make_settings: Callable[..., Any], make_png_bytes: Callable[..., bytes]
) -> None:
    app = create_app(make_settings(), service=service)
    own_floor.add_floor_route(app)
    with TestClient(app) as client:
        for seed in range(3):
            files = {"file": (f"{seed}.png", make_png_bytes(seed=seed), "image/png")}
            assert client.post("/v1/items", files=files).status_code == 201
        index = own_floor.index_for(service, "native", "image")
        assert index.ntotal == 3
        queries = np.random.default_rng(0).standard_normal((2, index.dim)).tolist()
        body = {"index": "native", "target": "image", "queries": queries, "total": 5}
        answer = client.post(own_floor.FLOOR_PATH, json=body)
        assert answer.status_code == 200, answer.text  # not the page mounted at "/"
        seconds = answer.json()["seconds"]
        assert len(seconds) == 5 and all(0 < s < 1 for s in seconds)
        # not part of the documented API
        assert own_floor.FLOOR_PATH not in client.get("/openapi.json").json()["paths"]


def test_index_for_names_a_missing_index(service: BridgeService) -> None:
    with pytest.raises(LookupError, match="no shared image index"):
        own_floor.index_for(service, "shared", "image")


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
