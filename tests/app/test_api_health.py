"""/healthz, /readyz (503 until ready), /metrics, the OpenAPI document, the page at "/",
and the app's own lifespan (loading the engine in the background)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from media_factory import make_png_bytes

from app.errors import ServiceUnavailableError
from app.main import STATIC_DIR, create_app
from app.state import ServiceHolder
from bridge.errors import ConflictError
from bridge.service.facade import BridgeService


def test_healthz_and_readyz(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200
    body = r.json()
    assert body["ready"] is True and body["phase"] == "ready"
    assert body["engine"]["active_version"] == "v1"
    assert set(body["engine"]["indexes"]) >= {"clip_image", "clap_audio"}
    # the engine's fields as docs/api.md shows them, with the active version's bridge mode
    assert list(body["engine"]) == [
        "ready",
        "backend",
        "encoders",
        "indexes",
        "items",
        "active_version",
        "active_mode",
        "job_running",
        "replica",
    ]
    assert body["engine"]["replica"]["shared"] is False  # FAISS or Milvus Lite: one process
    assert body["engine"]["active_mode"] == "cmcr"
    described = client.get("/openapi.json").json()["components"]["schemas"]["ReadyOut"]
    assert "active_mode" in described["properties"]["engine"]["description"]


def test_the_configured_backend_holds_the_vectors(
    client: TestClient, service: BridgeService, backend: str
) -> None:
    """Every API test runs on both backends; this one checks that the vectors really live
    where BRIDGE_BACKEND says (a Milvus collection named in the manifest, or FAISS files)."""
    r = client.post("/v1/items", files={"file": ("a.png", make_png_bytes(seed=3), "image/png")})
    assert r.status_code == 201, r.text
    ready = client.get("/readyz").json()["engine"]
    assert ready["backend"]["name"] == backend and ready["backend"]["reachable"] is True
    index = service.catalog.native("image")
    assert index is not None and index.ntotal == 1
    assert type(index).__name__ == {"faiss": "VectorIndex", "milvus": "MilvusIndex"}[backend]
    service.catalog.save_all()
    directory = service.catalog.native_dir("image")
    saved = json.loads((directory / "manifest.json").read_text())
    assert saved["backend"] == backend
    if backend == "milvus":
        assert saved["collection"] in service.catalog.backend.connection.collections()  # type: ignore[attr-defined]
        assert sorted(p.name for p in directory.iterdir()) == ["manifest.json"]
        assert ready["backend"]["uri"] == str(service.config.data_dir / "milvus.db")
    else:
        assert (directory / "index.faiss").is_file()


def test_metrics_count_requests_by_route_template_and_stage(
    client: TestClient, make_png_bytes
) -> None:
    item = client.post("/v1/items", files={"file": ("a.png", make_png_bytes(), "image/png")})
    client.get(f"/v1/items/{item.json()['id']}")
    client.get("/v1/items/does-not-exist")
    client.post("/v1/search", json={"text": "x", "target": "image"})
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert 'route="/v1/items/{item_id}",status="200"' in text
    assert 'route="/v1/items/{item_id}",status="404"' in text
    assert "does-not-exist" not in text  # ids never become labels
    assert 'bridge_http_requests_total{method="POST",route="/v1/search",status="200"}' in text
    assert 'bridge_search_batches_total{where="executor"}' in text  # a text query: never inline
    assert 'bridge_http_request_duration_seconds_bucket{le="0.005",method="POST"' in text
    for stage in ("decode", "encode", "search", "hydrate"):
        assert f'bridge_stage_seconds_count{{stage="{stage}"}}' in text


def test_openapi_documents_bodies_and_errors(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    expected = {
        "/v1/items": {"post"},
        "/v1/items/batch": {"post"},
        "/v1/items/{item_id}": {"get", "delete"},
        "/v1/items/{item_id}/content": {"get"},
        "/v1/search": {"post"},
        "/v1/search/batch": {"post"},
        "/v1/admin/retrain": {"post"},
        "/v1/admin/jobs/{job_id}": {"get"},
        "/v1/admin/versions": {"get"},
        "/v1/admin/activate": {"post"},
        "/v1/admin/rollback": {"post"},
        "/healthz": {"get"},
        "/readyz": {"get"},
        "/metrics": {"get"},
    }
    for path, methods in expected.items():
        assert methods <= set(paths[path]), path
        for method in methods:
            assert paths[path][method]["summary"], (path, method)
    search = paths["/v1/search"]["post"]
    assert set(search["requestBody"]["content"]) == {"application/json", "multipart/form-data"}
    assert {"413", "415", "422"} <= set(search["responses"])
    # 409: an audio<->image or `shared` query while no bridge version is active
    assert "409" in search["responses"]
    assert "409" in paths["/v1/search/batch"]["post"]["responses"]
    assert search["responses"]["422"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorOut"
    }
    retrain = paths["/v1/admin/retrain"]["post"]
    assert "202" in retrain["responses"] and "403" in retrain["responses"]
    assert "AdminKey" in spec["components"]["securitySchemes"]
    assert paths["/v1/admin/versions"]["get"]["security"] == [{"AdminKey": []}]


def test_cors_is_closed_by_default_and_opens_to_the_configured_origins(
    make_client: Callable[..., TestClient],
) -> None:
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    closed = make_client()  # the default: no origin is allowed
    refused = closed.options("/v1/search", headers=preflight)
    assert "access-control-allow-origin" not in refused.headers
    plain = closed.get("/healthz", headers={"Origin": "https://app.example"})
    assert "access-control-allow-origin" not in plain.headers
    opened = make_client(cors_origins="https://app.example, http://localhost:3000/")
    r = opened.options(
        "/v1/search",
        headers={**preflight, "Access-Control-Request-Headers": "authorization,content-type"},
    )
    assert r.status_code == 200, r.text
    assert r.headers["access-control-allow-origin"] == "https://app.example"
    assert "POST" in r.headers["access-control-allow-methods"]
    r = opened.get("/healthz", headers={"Origin": "http://localhost:3000"})
    assert r.headers["access-control-allow-origin"] == "http://localhost:3000"
    other = opened.get("/healthz", headers={"Origin": "https://elsewhere.example"})
    assert "access-control-allow-origin" not in other.headers


def test_unknown_routes_answer_json_404(client: TestClient) -> None:
    r = client.get("/v1/nothing-here")
    assert r.status_code == 404 and r.json() == {"detail": "Not Found"}
    r = client.put("/v1/items/x")
    assert r.status_code == 405 and isinstance(r.json()["detail"], str)


@pytest.mark.skipif(not (STATIC_DIR / "index.html").is_file(), reason="no app/static page")
def test_the_search_page_is_served_at_root(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert r.text == (STATIC_DIR / "index.html").read_text()


def test_lifespan_loads_the_engine_in_the_background(
    make_settings: Callable[..., Any],
) -> None:
    """Without an injected service the app opens one itself; /readyz is 503 until then."""
    app = create_app(make_settings())
    with TestClient(app) as client:
        first = client.get("/readyz")
        assert first.status_code in (200, 503)
        if first.status_code == 503:
            assert first.json()["phase"] == "loading" and first.json()["ready"] is False
        deadline = time.monotonic() + 60
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "engine never became ready"
            time.sleep(0.05)
        assert client.post("/v1/search", json={"text": "x", "target": "image"}).status_code == 200
        service = app.state.holder.peek()
        assert isinstance(service, BridgeService)
    assert app.state.holder.phase == "closed"
    try:  # closed by the lifespan
        ready = service.readiness()["ready"]
    except ConflictError:
        ready = False
    assert ready is False


def test_engine_failure_is_reported_as_503(make_settings: Callable[..., Any], tmp_path) -> None:
    failures: list[BaseException] = []
    app = create_app(
        make_settings(clip_model=str(tmp_path / "no-such-model")), on_load_failure=failures.append
    )
    with TestClient(app) as client:
        deadline = time.monotonic() + 30
        while not failures:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        r = client.get("/readyz")
        assert r.status_code == 503 and r.json()["phase"] == "failed"
        assert "failed to start" in r.json()["detail"]
        r = client.post("/v1/search", json={"text": "x", "target": "image"})
        assert r.status_code == 503 and "failed to start" in r.json()["detail"]
        assert client.get("/healthz").status_code == 200


def test_holder_states() -> None:
    holder = ServiceHolder()
    with pytest.raises(ServiceUnavailableError, match="still loading") as loading:
        holder.require()
    assert loading.value.headers == {"Retry-After": "2"}
    holder.set_failed("boom")
    with pytest.raises(ServiceUnavailableError, match="boom"):
        holder.require()
    assert holder.take_for_close() is None and holder.phase == "closed"
    with pytest.raises(ServiceUnavailableError, match="shutting down"):
        holder.require()
