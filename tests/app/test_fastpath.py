"""app/fastpath.py answers JSON searches exactly as the FastAPI route would.

Each request goes to two apps over the same engine: the real one (fast path installed) and
one with the fast path taken out of the middleware stack, so the route answers. Status,
body (less the per-request timings) and the headers a client acts on must be equal.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
from apikit import API_KEY
from fastapi.testclient import TestClient

from app.fastpath import JSONSearchFastPath
from app.main import create_app

if TYPE_CHECKING:
    from fastapi import FastAPI

    from bridge.service.facade import BridgeService


@pytest.fixture
def clients(
    service: BridgeService,
    make_settings: Callable[..., Any],
    open_client: Callable[[FastAPI], TestClient],
) -> Callable[..., tuple[TestClient, TestClient]]:
    """clients(**settings) -> (with the fast path, route only)."""

    def make(**overrides: Any) -> tuple[TestClient, TestClient]:
        settings = make_settings(**overrides)
        fast = create_app(settings, service=service)
        plain = create_app(settings, service=service)
        plain.user_middleware = [
            m for m in plain.user_middleware if m.cls is not JSONSearchFastPath
        ]
        assert len(plain.user_middleware) == len(fast.user_middleware) - 1
        return open_client(fast), open_client(plain)

    return make


def _seed(service: BridgeService, make_png_bytes: Callable[..., bytes]) -> str:
    from bridge.types import Upload

    items = service.add_items(
        [Upload(make_png_bytes(seed=i), f"i{i}.png", "image/png") for i in range(3)],
        [{"label": str(i)} for i in range(3)],
    )
    return items[0].id


def _answer(client: TestClient, body: bytes, headers: dict[str, str]) -> tuple[int, Any, dict]:
    r = client.post("/v1/search", content=body, headers=headers)
    payload = r.json()
    if isinstance(payload, dict):
        payload.pop("timings_ms", None)
    kept = {
        k: r.headers[k]
        for k in ("content-type", "www-authenticate", "retry-after")
        if k in r.headers
    }
    return r.status_code, payload, kept


def _bodies(item_id: str, dim: int) -> list[Any]:
    return [
        {"text": "a photo", "target": "image", "k": 2},
        {"text": "a sound", "target": "audio"},
        {"vector": [0.5] * dim, "space": "clip", "target": "image", "k": 1, "offset": 1},
        {"item_id": item_id, "target": "image", "filters": {"label": "2"}},
        {"item_id": item_id, "target": "audio"},  # bridged
        {"item_id": "no-such-item", "target": "image"},  # 404
        {"vector": [0.0] * dim, "space": "clip", "target": "image"},  # 422 from the engine
        {"vector": [1.0, "x"], "space": "clip", "target": "image"},  # 422 from pydantic
        {"text": "x", "vector": [1.0], "target": "image"},  # 422: two sources
        {"text": "x", "target": "video"},  # 422: bad target
        {"text": "x"},  # 422: no target
        b"{not json",  # 422: body is not valid JSON
        b"",  # 422: empty body
        [1, 2, 3],  # 422: not an object
    ]


def test_fast_path_answers_as_the_route(
    clients: Callable[..., tuple[TestClient, TestClient]],
    service: BridgeService,
    make_png_bytes: Callable[..., bytes],
) -> None:
    fast, plain = clients()
    item_id = _seed(service, make_png_bytes)
    for body in _bodies(item_id, service.clip.dim):
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"content-type": "application/json"}
        got, want = _answer(fast, raw, headers), _answer(plain, raw, headers)
        assert got == want, body
    # An answered search really came from the fast path: it sends its own Content-Length.
    r = fast.post("/v1/search", json={"text": "x", "target": "image"})
    assert r.status_code == 200 and int(r.headers["content-length"]) == len(r.content)


@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong", f"Basic {API_KEY}", f"Bearer {API_KEY}", "Bearer"]
)
def test_fast_path_checks_the_api_key_as_the_route(
    clients: Callable[..., tuple[TestClient, TestClient]], authorization: str | None
) -> None:
    fast, plain = clients(api_key=API_KEY)
    headers = {"content-type": "application/json"}
    if authorization is not None:
        headers["authorization"] = authorization
    body = json.dumps({"text": "x", "target": "image"}).encode()
    got, want = _answer(fast, body, headers), _answer(plain, body, headers)
    assert got == want
    assert got[0] == (200 if authorization == f"Bearer {API_KEY}" else 401)


def test_fast_path_applies_the_body_limit(
    clients: Callable[..., tuple[TestClient, TestClient]],
) -> None:
    fast, plain = clients(max_upload_bytes=1024)
    limit = fast.app.state.settings.upload_body_limit  # the file limit plus room for fields
    body = json.dumps({"vector": [0.1] * limit, "space": "clip", "target": "image"}).encode()
    got = _answer(fast, body, {"content-type": "application/json"})
    assert got == _answer(plain, body, {"content-type": "application/json"})
    assert got[0] == 413 and "BRIDGE_MAX_UPLOAD_BYTES" in got[1]["detail"]


def test_other_requests_pass_through(
    clients: Callable[..., tuple[TestClient, TestClient]], make_png_bytes: Callable[..., bytes]
) -> None:
    fast, _ = clients()
    r = fast.post("/v1/search", content=b"x", headers={"content-type": "text/plain"})
    assert r.status_code == 415 and "text/plain" in r.json()["detail"]
    r = fast.post(
        "/v1/search",
        files={"file": ("q.png", make_png_bytes(), "image/png")},
        data={"target": "image"},
    )
    assert r.status_code == 200 and r.json()["query_modality"] == "image"
