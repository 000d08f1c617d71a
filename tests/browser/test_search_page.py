"""The search page in a real Chromium (Debian's /usr/bin/chromium, driven by Playwright)
against a real server (`python -m app` on a free loopback port) with the demo models and the
bundled samples seeded.

Skipped when /usr/bin/chromium or Playwright is missing, unless BRIDGE_REQUIRE_BROWSER=1
(CI sets it), in which case that is a failure. Screenshots go to artifacts/.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
SAMPLES = REPO / "models" / "samples"
ARTIFACTS = REPO / "artifacts"
REQUIRED = os.environ.get("BRIDGE_REQUIRE_BROWSER") == "1"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # A fake microphone (a beep) and auto-accepted permission prompts, for the recorder.
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
]
K = 8
START_TIMEOUT_S = 240
UI_TIMEOUT_MS = 60_000


def _missing(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"BRIDGE_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def chromium_path() -> Path:
    if not CHROMIUM.is_file():
        _missing(f"{CHROMIUM} is not installed (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _missing("the playwright package is not installed")
    return CHROMIUM


def _manifest() -> list[dict[str, Any]]:
    path = SAMPLES / "manifest.jsonl"
    if not path.is_file():
        pytest.fail(f"{path} is missing: the demo samples must be committed")
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _first_sample(modality: str) -> tuple[Path, str]:
    """The manifest's first `modality` sample with a label, and that label as text."""
    for entry in _manifest():
        label = entry.get("metadata", {}).get("label")
        if entry["modality"] == modality and label is not None:
            return SAMPLES / entry["file"], str(label)
    raise AssertionError(f"no labelled {modality} sample in the manifest")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture(scope="module")
def server(chromium_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `python -m app` with the demo models, seeded with the samples; its base URL."""
    port = _free_port()
    data_dir = tmp_path_factory.mktemp("data")
    log_path = data_dir.parent / "server.log"
    env = {
        **os.environ,
        "BRIDGE_HOST": "127.0.0.1",
        "BRIDGE_PORT": str(port),
        "BRIDGE_DATA_DIR": str(data_dir),
        "BRIDGE_SEED_SAMPLES": "true",
        "BRIDGE_DEVICE": "cpu",
        "BRIDGE_FAISS_GPU": "false",
        "BRIDGE_LOG_LEVEL": "warning",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    for name in ("BRIDGE_API_KEY", "BRIDGE_ADMIN_KEY"):
        env.pop(name, None)
    base = f"http://127.0.0.1:{port}/"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "app"], cwd=REPO, env=env, stdout=log, stderr=log
        )
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while True:
                if process.poll() is not None:
                    pytest.fail(f"server exited ({process.returncode}):\n{log_path.read_text()}")
                try:
                    status, _ = _get(base + "readyz")
                except OSError:
                    status = 0
                if status == 200:
                    break
                if time.monotonic() > deadline:
                    pytest.fail(f"server not ready in {START_TIMEOUT_S} s:\n{log_path.read_text()}")
                time.sleep(0.5)
            yield base
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


@pytest.fixture(scope="module")
def browser(chromium_path: Path) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(
            executable_path=str(chromium_path), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture()
def page(browser: Any, server: str) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    context.grant_permissions(["microphone"], origin=server.rstrip("/"))
    page = context.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server)
    page.locator("#status[data-state='ready']").wait_for()
    page.fill("#k", str(K))
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def _results(page: Any, list_id: str) -> list[dict[str, str]]:
    """Wait for the list's cards and their media, then read their data attributes."""
    page.locator(f"#{list_id} li.result").first.wait_for()
    page.wait_for_function(
        """id => [...document.querySelectorAll(`#${id} li.result .media`)].every(
                 m => m.querySelector('img, audio') || m.classList.contains('no-preview'))""",
        arg=list_id,
    )
    return page.eval_on_selector_all(
        f"#{list_id} li.result",
        """cards => cards.map(c => ({
            id: c.dataset.id, label: c.dataset.label, modality: c.dataset.modality,
            score: c.dataset.score, text: c.innerText}))""",
    )


def _screenshot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def _majority(labels: list[str]) -> tuple[str, int]:
    return Counter(labels).most_common(1)[0]


def test_spoken_digit_shows_images_of_that_digit(page: Any) -> None:
    audio, label = _first_sample("audio")
    page.set_input_files("#sound-file", str(audio))
    cards = _results(page, "image-results")
    _screenshot(page, "search-page-sound-to-images.png")

    assert len(cards) == K
    assert {c["modality"] for c in cards} == {"image"}
    labels = [c["label"] for c in cards]
    top, count = _majority(labels)
    assert top == label and count > K // 2, f"spoken {label}, images labelled {labels}"
    assert page.get_attribute("#image-results", "data-space") == "shared"
    assert "bridged (C-MCR) space" in page.inner_text("#image-space")
    scores = [float(c["score"]) for c in cards]
    assert scores == sorted(scores, reverse=True)
    assert f"score {scores[0]:.3f}" in cards[0]["text"]
    # The images really loaded from /v1/items/{id}/content.
    widths = page.eval_on_selector_all(
        "#image-results img",
        "imgs => Promise.all(imgs.map(i => i.decode().then(() => i.naturalWidth)))",
    )
    assert len(widths) == K and min(widths) > 0
    assert page.is_hidden("#error")


def test_image_shows_playable_sounds(page: Any) -> None:
    image, label = _first_sample("image")
    page.set_input_files("#image-file", str(image))
    cards = _results(page, "audio-results")
    _screenshot(page, "search-page-image-to-sounds.png")

    assert len(cards) == K and {c["modality"] for c in cards} == {"audio"}
    assert page.get_attribute("#audio-results", "data-space") == "shared"
    durations = page.eval_on_selector_all(
        "#audio-results audio",
        """els => Promise.all(els.map(a => a.readyState >= 1 ? a.duration :
            new Promise((ok, bad) => { a.onloadedmetadata = () => ok(a.duration);
                                       a.onerror = () => bad(new Error('audio failed')); })))""",
    )
    assert len(durations) == K and min(durations) > 0
    labels = [c["label"] for c in cards]
    top, count = _majority(labels)
    assert top == label and count > K // 2, f"image of {label}, sounds labelled {labels}"


def test_text_shows_images_and_sounds_from_native_spaces(page: Any) -> None:
    page.fill("#text-query", "a spoken digit")
    page.click("#text-form button[type=submit]")
    images = _results(page, "image-results")
    sounds = _results(page, "audio-results")
    assert len(images) == K and len(sounds) == K
    assert page.get_attribute("#image-results", "data-space") == "clip"
    assert page.get_attribute("#audio-results", "data-space") == "clap"
    assert "native CLIP space" in page.inner_text("#image-space")
    assert "native CLAP space" in page.inner_text("#audio-space")


def test_api_errors_are_shown_in_words(page: Any, server: str, tmp_path: Path) -> None:
    bogus = tmp_path / "notes.txt"
    bogus.write_text("this is not a sound\n" * 20)
    page.set_input_files("#sound-file", str(bogus))
    page.locator("#error").wait_for(state="visible")
    shown = page.inner_text("#error")
    # The same upload straight to the API: the page must show the server's own message.
    boundary = "----bridge-test"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="target"\r\n\r\nimage\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="notes.txt"\r\n'
        f"Content-Type: text/plain\r\n\r\n{bogus.read_text()}\r\n--{boundary}--\r\n"
    ).encode()
    request = urllib.request.Request(
        server + "v1/search",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(request, timeout=30)
    detail = json.loads(answer.value.read())["detail"]
    assert answer.value.code in (415, 422)
    assert f"The server answered {answer.value.code}: {detail}" in shown
    assert page.is_hidden("#results")
    _screenshot(page, "search-page-error.png")


def test_recording_is_sent_as_wav(page: Any) -> None:
    """Chromium's fake microphone (a beep) -> MediaRecorder -> WebAudio -> WAV -> search."""
    with page.expect_response(lambda r: r.url.endswith("/v1/search")) as answer:
        page.click("#record")
        page.locator("#record", has_text="Stop").wait_for()
        page.wait_for_timeout(1500)
        page.click("#record")
    assert answer.value.status == 200, answer.value.text()
    cards = _results(page, "image-results")
    assert len(cards) == K
    assert page.get_attribute("#image-results", "data-space") == "shared"
    assert "Recorded" in page.inner_text("#record-status")
    # The file that was sent is the one previewed: check its WAV header.
    header = page.evaluate(
        """async () => {
            const bytes = await (await fetch(document.getElementById('sound-preview').src))
                .arrayBuffer();
            const v = new DataView(bytes);
            const tag = o => String.fromCharCode(...new Uint8Array(bytes, o, 4));
            return {riff: tag(0), wave: tag(8), format: v.getUint16(20, true),
                    channels: v.getUint16(22, true), rate: v.getUint32(24, true),
                    bits: v.getUint16(34, true), data: v.getUint32(40, true),
                    size: bytes.byteLength};
        }"""
    )
    assert header["riff"] == "RIFF" and header["wave"] == "WAVE", header
    assert (header["format"], header["channels"], header["bits"]) == (1, 1, 16), header
    seconds = header["data"] / 2 / header["rate"]
    assert header["size"] == 44 + header["data"] and 0.5 < seconds < 5, header
