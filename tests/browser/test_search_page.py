"""The search page in a real Chromium (Debian's /usr/bin/chromium, driven by Playwright)
against a real server with the demo models and the bundled samples seeded (the fixtures are
in conftest.py). Screenshots go to artifacts/.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from pagekit import K, first_sample, majority, results, screenshot

pytestmark = pytest.mark.browser


def test_spoken_digit_shows_images_of_that_digit(page: Any) -> None:
    audio, label = first_sample("audio")
    page.set_input_files("#sound-file", str(audio))
    cards = results(page, "image-results")
    screenshot(page, "search-page-sound-to-images.png")

    assert len(cards) == K
    assert {c["modality"] for c in cards} == {"image"}
    labels = [c["label"] for c in cards]
    top, count = majority(labels)
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
    image, label = first_sample("image")
    page.set_input_files("#image-file", str(image))
    cards = results(page, "audio-results")
    screenshot(page, "search-page-image-to-sounds.png")

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
    top, count = majority(labels)
    assert top == label and count > K // 2, f"image of {label}, sounds labelled {labels}"


def test_text_shows_images_and_sounds_from_native_spaces(page: Any) -> None:
    page.fill("#text-query", "a spoken digit")
    page.click("#text-form button[type=submit]")
    images = results(page, "image-results")
    sounds = results(page, "audio-results")
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
    screenshot(page, "search-page-error.png")


def test_recording_is_sent_as_wav(page: Any) -> None:
    """Chromium's fake microphone (a beep) -> MediaRecorder -> WebAudio -> WAV -> search."""
    with page.expect_response(lambda r: r.url.endswith("/v1/search")) as answer:
        page.click("#record")
        page.locator("#record", has_text="Stop").wait_for()
        page.wait_for_timeout(1500)
        page.click("#record")
    assert answer.value.status == 200, answer.value.text()
    cards = results(page, "image-results")
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
