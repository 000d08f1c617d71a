"""The hostile-media corpus (tests/hostile_media.py) through the real HTTP API.

Each case is uploaded to POST /v1/items and POST /v1/search (multipart, field `file`) and
must get its 4xx with a `detail` that names the file and says what was wrong, within
bounded time and memory, and leave nothing stored: the item count stays 0 and no blob file
appears in the data dir. The tolerated cases (odd but valid files) must be stored, within the
same bounds.

Bounds, per request:
- time: wall-clock seconds of the request through the in-process TestClient, < 2 s;
- memory: the process's peak resident set (VmHWM of /proc/self/status, after resetting the
  peak by writing 5 to /proc/self/clear_refs) minus its resident set just before the
  request, < 500 MB. The TestClient runs the app in this process, so this covers the
  multipart parser, the decoders and the encoders; it is the whole process's peak, so other
  threads of this process count too, which can only make the bound stricter.

The API runs on the FAISS backend only: decoding, where these files are refused, comes
before any index, and the Milvus variant would add a Milvus start for no new path.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from fastapi.testclient import TestClient
from hostile_media import (
    MAX_AUDIO_SECONDS,
    HostileCase,
    ToleratedCase,
    hostile_cases,
    tolerated_cases,
)

if TYPE_CHECKING:
    from bridge.service.facade import BridgeService

MAX_SECONDS = 2.0
MAX_EXTRA_RSS_MB = 500
CASES = hostile_cases()
TOLERATED = tolerated_cases()


@pytest.fixture
def backend() -> str:
    """Overrides the API tests' backend parametrisation (module docstring)."""
    return "faiss"


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client(max_audio_seconds=MAX_AUDIO_SECONDS)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"  # conftest's make_settings puts the data dir here


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/self/status")


def _measured(send: Callable[[], Any]) -> tuple[Any, float, float]:
    """(send()'s result, seconds, MB of peak RSS above the RSS before): module docstring."""
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = _status_kb("VmRSS")
    start = time.perf_counter()
    result = send()
    seconds = time.perf_counter() - start
    return result, seconds, (_status_kb("VmHWM") - before) / 1024


def _blob_files(data_dir: Path) -> list[Path]:
    return [p for p in (data_dir / "blobs").rglob("*") if p.is_file()]


def _post(client: TestClient, endpoint: str, name: str, data: bytes, ctype: str) -> Any:
    form = {"target": "image"} if endpoint == "/v1/search" else {}
    return client.post(endpoint, files={"file": (name, data, ctype)}, data=form)


@pytest.fixture
def stored_nothing(service: BridgeService, data_dir: Path) -> Iterator[None]:
    """Checks, after the test, that no item and no blob file was stored."""
    from apikit import item_count

    yield
    assert item_count(service) == 0
    assert _blob_files(data_dir) == []


@pytest.mark.parametrize("endpoint", ["/v1/items", "/v1/search"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_upload_is_refused_with_a_reason(
    client: TestClient, stored_nothing: None, case: HostileCase, endpoint: str
) -> None:
    r, seconds, extra_mb = _measured(
        lambda: _post(client, endpoint, case.name, case.data, case.content_type)
    )
    assert r.status_code == case.status, f"{case.what}: {r.status_code} {r.text}"
    detail = r.json()["detail"]
    assert isinstance(detail, str) and case.name in detail, detail
    assert re.search(case.says, detail, re.IGNORECASE), f"{case.what}: {detail!r}"
    assert "object at 0x" not in detail  # no memory addresses of the server's objects
    assert seconds < MAX_SECONDS, f"{case.what}: {seconds:.2f} s"
    assert extra_mb < MAX_EXTRA_RSS_MB, f"{case.what}: {extra_mb:.0f} MB"


@pytest.mark.parametrize("case", TOLERATED, ids=[c.name for c in TOLERATED])
def test_odd_but_valid_upload_is_stored_within_bounds(
    client: TestClient, service: BridgeService, data_dir: Path, case: ToleratedCase
) -> None:
    from apikit import item_count

    r, seconds, extra_mb = _measured(
        lambda: _post(client, "/v1/items", case.name, case.data, case.content_type)
    )
    assert r.status_code == 201, f"{case.what}: {r.status_code} {r.text}"
    assert item_count(service) == 1 and len(_blob_files(data_dir)) == 1
    assert seconds < MAX_SECONDS, f"{case.what}: {seconds:.2f} s"
    assert extra_mb < MAX_EXTRA_RSS_MB, f"{case.what}: {extra_mb:.0f} MB"


def test_corpus_covers_every_accepted_format_and_kind() -> None:
    """The corpus keeps the breadth the issue asks for (a case removed by mistake fails)."""
    names = {c.name for c in CASES}
    for ext in ("png", "jpg", "webp", "bmp", "gif", "tiff", "wav", "flac", "ogg", "aiff", "mp3"):
        assert f"truncated-half.{ext}" in names and f"truncated-one-byte.{ext}" in names
    for kind in ("bomb-", "-then-", "empty", "float-nan", "zero-seconds", "long-2h", "tiny-1x"):
        assert any(kind in n or kind in c.what for c in CASES for n in [c.name]), kind
    assert {c.status for c in CASES} == {413, 415, 422}
