"""POST/GET/DELETE /v1/items (+ batch and content): success paths, every error path, and that
nothing is stored after a rejected request."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest
from apikit import API_KEY, item_count
from fastapi.testclient import TestClient

from bridge.service.facade import BridgeService


def _post_file(client: TestClient, name: str, data: bytes, ctype: str, **form: str):
    return client.post("/v1/items", files={"file": (name, data, ctype)}, data=form)


def test_add_image_then_read_it_back(
    client: TestClient, service: BridgeService, make_png_bytes: Callable[..., bytes]
) -> None:
    png = make_png_bytes(seed=3)
    r = _post_file(client, "cat.png", png, "image/png", metadata='{"label": "cat", "n": 3}')
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["modality"] == "image" and set(body) == {"id", "modality"}

    got = client.get(f"/v1/items/{body['id']}")
    assert got.status_code == 200
    assert got.json()["metadata"] == {"label": "cat", "n": 3}
    assert got.json()["modality"] == "image" and got.json()["created_at"]

    content = client.get(f"/v1/items/{body['id']}/content")
    assert content.status_code == 200
    assert content.content == png
    assert content.headers["content-type"] == "image/png"
    assert content.headers["x-content-type-options"] == "nosniff"
    assert item_count(service) == 1


def test_add_audio(client: TestClient, make_wav_bytes: Callable[..., bytes]) -> None:
    r = _post_file(client, "tone.wav", make_wav_bytes(seconds=0.5), "audio/wav")
    assert r.status_code == 201, r.text
    assert r.json()["modality"] == "audio"
    content = client.get(f"/v1/items/{r.json()['id']}/content")
    assert content.headers["content-type"].startswith("audio/")


def test_delete_item(client: TestClient, service: BridgeService, make_png_bytes) -> None:
    item_id = _post_file(client, "a.png", make_png_bytes(), "image/png").json()["id"]
    assert client.delete(f"/v1/items/{item_id}").status_code == 204
    for path in (f"/v1/items/{item_id}", f"/v1/items/{item_id}/content"):
        r = client.get(path)
        assert r.status_code == 404 and item_id in r.json()["detail"]
    again = client.delete(f"/v1/items/{item_id}")
    assert again.status_code == 404 and isinstance(again.json()["detail"], str)
    assert item_count(service) == 0


@pytest.mark.parametrize(
    ("metadata", "words"),
    [
        ("{not json", "not valid JSON"),
        ('["a", "b"]', "JSON object"),
        ("42", "JSON object"),
        ('{"a": ' + "[" * 40 + "]" * 40 + "}", "more than 32 levels"),
        ('{"a": ' + "[" * 3000 + "]" * 3000 + "}", "nested too deeply"),  # was a 500
        ('{"a": "\\ud800"}', "not valid Unicode"),  # was stored, then GET answered 500
        ('{"a": 1' + "1" * 5000 + "}", "more than 4300 digits"),  # was a 500
    ],
)
def test_bad_metadata_is_422_and_stores_nothing(
    client: TestClient,
    service: BridgeService,
    make_png_bytes,
    metadata: str,
    words: str,
) -> None:
    r = _post_file(client, "a.png", make_png_bytes(), "image/png", metadata=metadata)
    assert r.status_code == 422
    assert "metadata" in r.json()["detail"] and words in r.json()["detail"]
    assert item_count(service) == 0


def test_missing_file_is_422_with_a_string_detail(client: TestClient) -> None:
    r = client.post("/v1/items", files={"metadata": (None, "{}")})
    assert r.status_code == 422
    assert r.json() == {"detail": "the multipart body needs a `file` file field"}


def test_unsupported_type_is_415(client: TestClient, service: BridgeService) -> None:
    r = _post_file(client, "notes.txt", b"just some text, not media\n" * 20, "text/plain")
    assert r.status_code == 415, r.text
    assert r.json()["detail"]
    assert item_count(service) == 0


def test_undecodable_image_is_422(client: TestClient, service: BridgeService) -> None:
    broken = b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 50
    r = _post_file(client, "broken.png", broken, "image/png")
    assert r.status_code == 422, r.text
    assert r.json()["detail"]
    assert item_count(service) == 0


def test_empty_file_is_422(client: TestClient, service: BridgeService) -> None:
    r = _post_file(client, "empty.png", b"", "image/png")
    assert r.status_code == 422 and "empty" in r.json()["detail"]
    assert item_count(service) == 0


def test_file_over_the_upload_limit_is_413(
    make_client: Callable[..., TestClient],
    service: BridgeService,
    make_png_bytes,
) -> None:
    client = make_client(max_upload_bytes=2_000)
    big = make_png_bytes(width=200, height=200, seed=1)
    assert len(big) > 2_000
    r = _post_file(client, "big.png", big, "image/png")
    assert r.status_code == 413
    assert "2000 bytes" in r.json()["detail"] and "BRIDGE_MAX_UPLOAD_BYTES" in r.json()["detail"]
    assert item_count(service) == 0


def test_body_over_the_limit_is_413_from_content_length(
    make_client: Callable[..., TestClient], service: BridgeService
) -> None:
    from app.settings import FORM_OVERHEAD_BYTES

    client = make_client(max_upload_bytes=1_000)
    payload = b"\x89PNG" + b"\x00" * (FORM_OVERHEAD_BYTES + 10_000)
    r = _post_file(client, "huge.png", payload, "image/png")
    assert r.status_code == 413
    assert r.json()["detail"].startswith("request body is larger than")
    assert item_count(service) == 0


def test_streamed_body_without_length_is_cut_at_the_limit(
    make_client: Callable[..., TestClient], service: BridgeService
) -> None:
    """A chunked body (no Content-Length) is counted while it streams."""
    from app.settings import FORM_OVERHEAD_BYTES

    client = make_client(max_upload_bytes=1_000)
    sent: list[int] = []

    def chunks() -> Iterator[bytes]:
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n\r\n'
        for _ in range(64):
            sent.append(1)
            yield b"\x00" * 65_536

    r = client.post(
        "/v1/items",
        content=chunks(),
        headers={"content-type": "multipart/form-data; boundary=b"},
    )
    assert r.status_code == 413, r.text
    assert "limit" in r.json()["detail"]
    assert (FORM_OVERHEAD_BYTES + 1_000) // 65_536 < 64  # the limit lies inside the stream
    assert item_count(service) == 0


def test_audio_over_the_duration_limit_is_413(
    client: TestClient,
    service: BridgeService,
    make_wav_bytes,
) -> None:
    r = _post_file(client, "long.wav", make_wav_bytes(seconds=6.0, rate=8000), "audio/wav")
    assert r.status_code == 413, r.text
    assert r.json()["detail"]
    assert item_count(service) == 0


def test_malformed_multipart_is_400(client: TestClient, service: BridgeService) -> None:
    r = client.post(
        "/v1/items",
        content=b"this is not multipart",
        headers={"content-type": "multipart/form-data"},
    )
    assert r.status_code == 400, r.text
    assert isinstance(r.json()["detail"], str)
    assert item_count(service) == 0


def test_unknown_item_is_404(client: TestClient) -> None:
    for method, path in (
        ("GET", "/v1/items/nope"),
        ("DELETE", "/v1/items/nope"),
        ("GET", "/v1/items/nope/content"),
    ):
        r = client.request(method, path)
        assert r.status_code == 404, (method, path)
        assert "nope" in r.json()["detail"]


# ------------------------------------------------------------------ batch


def test_batch_adds_every_file_with_its_metadata(
    client: TestClient,
    service: BridgeService,
    make_png_bytes,
    make_wav_bytes,
) -> None:
    files = [
        ("files", ("a.png", make_png_bytes(seed=1), "image/png")),
        ("files", ("b.wav", make_wav_bytes(seconds=0.5), "audio/wav")),
        ("files", ("c.png", make_png_bytes(seed=2), "image/png")),
    ]
    meta = json.dumps([{"n": 1}, {"n": 2}, {"n": 3}])
    r = client.post("/v1/items/batch", files=files, data={"metadata": meta})
    assert r.status_code == 201, r.text
    items = r.json()["items"]
    assert [i["modality"] for i in items] == ["image", "audio", "image"]
    for n, item in enumerate(items, start=1):
        assert client.get(f"/v1/items/{item['id']}").json()["metadata"] == {"n": n}
    assert item_count(service) == 3


def test_batch_is_all_or_nothing(
    client: TestClient,
    service: BridgeService,
    make_png_bytes,
) -> None:
    files = [
        ("files", ("a.png", make_png_bytes(seed=1), "image/png")),
        ("files", ("b.txt", b"plain text, not an image or a sound" * 10, "text/plain")),
    ]
    r = client.post("/v1/items/batch", files=files)
    assert r.status_code == 415, r.text
    assert item_count(service) == 0


@pytest.mark.parametrize(
    ("metadata", "words"), [('[{"n": 1}]', "2 files"), ('{"n": 1}', "JSON array")]
)
def test_batch_metadata_must_match_the_files(
    client: TestClient,
    service: BridgeService,
    make_png_bytes,
    metadata: str,
    words: str,
) -> None:
    files = [("files", (f"{i}.png", make_png_bytes(seed=i), "image/png")) for i in range(2)]
    r = client.post("/v1/items/batch", files=files, data={"metadata": metadata})
    assert r.status_code == 422 and words in r.json()["detail"]
    assert item_count(service) == 0


def test_batch_over_the_file_count_limit_is_422(
    make_client: Callable[..., TestClient],
    service: BridgeService,
    make_png_bytes,
) -> None:
    client = make_client(max_batch=2)
    files = [("files", (f"{i}.png", make_png_bytes(seed=i), "image/png")) for i in range(3)]
    r = client.post("/v1/items/batch", files=files)
    assert r.status_code == 422 and "BRIDGE_MAX_BATCH" in r.json()["detail"]
    files += [("files", ("x.png", make_png_bytes(), "image/png"))]
    r = client.post("/v1/items/batch", files=files)  # far over: the parser stops early
    assert r.status_code == 400 and "Too many files" in r.json()["detail"]
    assert item_count(service) == 0


# ------------------------------------------------------------------ optional API key


def test_api_key_guards_items_when_set(
    make_client: Callable[..., TestClient],
    service: BridgeService,
    make_png_bytes,
) -> None:
    client = make_client(api_key=API_KEY)
    png = make_png_bytes()
    missing = _post_file(client, "a.png", png, "image/png")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert "BRIDGE_API_KEY" in missing.json()["detail"]
    wrong = client.post(
        "/v1/items",
        files={"file": ("a.png", png, "image/png")},
        headers={"Authorization": "Bearer wrong-key"},
    )
    assert wrong.status_code == 401 and 'error="invalid_token"' in wrong.headers["www-authenticate"]
    assert item_count(service) == 0

    ok = client.post(
        "/v1/items",
        files={"file": ("a.png", png, "image/png")},
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    assert ok.status_code == 201
    item_id = ok.json()["id"]
    assert client.get(f"/v1/items/{item_id}").status_code == 401
    assert client.get(f"/v1/items/{item_id}/content").status_code == 401
    assert client.delete(f"/v1/items/{item_id}").status_code == 401
    assert item_count(service) == 1


def test_api_key_is_checked_before_the_body_is_read(
    make_client: Callable[..., TestClient], service: BridgeService
) -> None:
    """A wrong key gets 401 even for a body that would fail to parse (400)."""
    client = make_client(api_key=API_KEY)
    garbage = {"content-type": "multipart/form-data; boundary=zz"}
    r = client.post("/v1/items", content=b"not multipart at all", headers=garbage)
    assert r.status_code == 401
    r = client.post("/v1/items/batch", content=b"not multipart at all", headers=garbage)
    assert r.status_code == 401
    authed = {**garbage, "Authorization": f"Bearer {API_KEY}"}
    r = client.post("/v1/items", content=b"not multipart at all", headers=authed)
    assert r.status_code == 400


def test_items_need_multipart(client: TestClient, service: BridgeService) -> None:
    r = client.post("/v1/items", json={"file": "aGVsbG8="})
    assert r.status_code == 415 and "multipart/form-data" in r.json()["detail"]
    r = client.post("/v1/items/batch", content=b"x", headers={"content-type": "image/png"})
    assert r.status_code == 415
    assert item_count(service) == 0


def test_items_are_open_without_an_api_key(client: TestClient, make_png_bytes) -> None:
    r = client.post(
        "/v1/items",
        files={"file": ("a.png", make_png_bytes(), "image/png")},
        headers={"Authorization": "Bearer anything"},
    )
    assert r.status_code == 201


@pytest.mark.parametrize("path", ["/v1/items", "/v1/items/batch", "/v1/search"])
def test_upload_cut_off_mid_body_is_499_stores_nothing_and_is_no_server_error(
    client: TestClient,
    service: BridgeService,
    make_png_bytes: Callable[[], bytes],
    path: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A client that disconnects during a multipart upload: nothing stored, no traceback,
    and /metrics counts it as 499 (client closed request), not as a 500."""
    boundary = "cutoffboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
            f"Content-Type: image/png\r\n\r\n"
        ).encode()
        + make_png_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    half = body[: len(body) // 2]
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "client": ("127.0.0.1", 1), "server": ("testserver", 80),
        "headers": [
            (b"host", b"testserver"),
            (b"content-type", f"multipart/form-data; boundary={boundary}".encode()),
            (b"content-length", str(len(body)).encode()),
        ],
    }  # fmt: skip
    messages = iter(
        [{"type": "http.request", "body": half, "more_body": True}, {"type": "http.disconnect"}]
    )
    sent: list[dict] = []

    async def receive() -> dict:
        return next(messages)

    async def send(message: dict) -> None:
        sent.append(message)

    async def call() -> None:
        await client.app(scope, receive, send)  # type: ignore[arg-type]

    before = {status: _requests_with(client, status) for status in ("499", "500")}
    with caplog.at_level("INFO", logger="app.errors"):
        client.portal.call(call)  # type: ignore[union-attr]
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 499
    assert item_count(service) == 0
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
    assert _requests_with(client, "499") == before["499"] + 1  # the registry is per process
    assert _requests_with(client, "500") == before["500"]


def _requests_with(client: TestClient, status: str) -> float:
    """bridge_http_requests_total summed over every series with this status."""
    lines = client.get("/metrics").text.splitlines()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in lines
        if line.startswith("bridge_http_requests_total{") and f'status="{status}"' in line
    )
