"""Property tests of the JSON request bodies (Hypothesis): whatever JSON a client sends as the
search body, the batch-search body or an item's `metadata` field, the answer is a success or
a 4xx whose `detail` is a non-empty string; never a 5xx.

Bodies are drawn from near-valid shapes (the real field names with values of any JSON type,
right-sized and wrong-sized vectors, NaN and huge numbers, deep nesting) and from arbitrary
JSON, including non-objects and non-standard tokens (NaN, Infinity). Derandomised with a
bounded number of examples; one app (FAISS backend, the tiny encoders) serves them all.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from media_factory import make_png_bytes
from tiny_models import TINY_CLAP_DIM, TINY_CLIP_DIM

PROPERTY = settings(
    derandomize=True,
    max_examples=120,
    deadline=None,
    # One client serves every example; nothing an example stores changes what the next may
    # answer beyond 2xx vs 4xx, which every assertion allows.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
PNG = make_png_bytes(16, 16, seed=5)

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
FLOATS = st.floats(width=32, allow_nan=False, allow_infinity=False)
VECTORS = st.one_of(
    st.lists(FLOATS, min_size=TINY_CLIP_DIM, max_size=TINY_CLIP_DIM),
    st.lists(FLOATS, min_size=TINY_CLAP_DIM, max_size=TINY_CLAP_DIM),
    st.lists(st.floats(), max_size=20),
    JSON,
)
SEARCH_FIELDS = {
    "text": st.text(max_size=30) | JSON,
    "vector": VECTORS,
    "space": st.sampled_from(["clip", "clap", "shared", "CLIP", ""]) | JSON,
    "item_id": st.text(max_size=20) | JSON,
    "target": st.sampled_from(["image", "audio", "video"]) | JSON,
    "k": st.integers(-3, 1_100) | JSON,
    "offset": st.integers(-3, 1_100) | JSON,
    "min_score": st.floats(-2, 2) | JSON,
    "filters": st.dictionaries(st.text(max_size=8), JSON, max_size=4) | JSON,
    "extra": JSON,
}
SEARCH_BODIES = st.fixed_dictionaries({}, optional=SEARCH_FIELDS) | JSON


@pytest.fixture
def backend() -> str:
    """FAISS only: the bodies are validated before any index is asked."""
    return "faiss"


def _dumps(value: Any) -> str:
    return json.dumps(value, allow_nan=True)  # NaN/Infinity tokens: not JSON, must be a 4xx


def _check(r: Any, body: str) -> None:
    assert r.status_code < 500, f"{r.status_code} {r.text} for {body[:300]!r}"
    if r.status_code >= 400:
        detail = r.json()["detail"]
        assert isinstance(detail, str) and detail.strip(), r.text


@PROPERTY
@given(body=SEARCH_BODIES)
def test_search_json_body_is_answered_or_refused(client: TestClient, body: Any) -> None:
    text = _dumps(body)
    r = client.post("/v1/search", content=text, headers={"content-type": "application/json"})
    _check(r, text)
    if isinstance(body, dict) and r.status_code == 200:
        assert isinstance(r.json()["results"], list)


@PROPERTY
@given(queries=st.lists(SEARCH_BODIES, max_size=3) | JSON)
def test_search_batch_body_is_answered_or_refused(client: TestClient, queries: Any) -> None:
    text = _dumps({"queries": queries})
    r = client.post("/v1/search/batch", content=text, headers={"content-type": "application/json"})
    _check(r, text)


@PROPERTY
@given(
    metadata=JSON | st.dictionaries(st.text(max_size=8), JSON, max_size=6) | st.text(max_size=40)
)
def test_item_metadata_is_stored_or_refused(client: TestClient, metadata: Any) -> None:
    raw = metadata if isinstance(metadata, str) else _dumps(metadata)
    r = client.post(
        "/v1/items", files={"file": ("m.png", PNG, "image/png")}, data={"metadata": raw}
    )
    _check(r, raw)
    if r.status_code == 201:  # what was stored reads back as the same JSON
        stored = client.get(f"/v1/items/{r.json()['id']}")
        assert stored.status_code == 200, stored.text
        if isinstance(metadata, dict) and _finite(metadata):
            assert stored.json()["metadata"] == json.loads(raw)


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return True
