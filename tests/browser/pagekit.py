"""Helpers of the browser tests (tests/browser): a module, not the conftest, so that test
files can import it."""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "models" / "samples"
ARTIFACTS = REPO / "artifacts"
K = 8
# The browser test server's admin key: made up per run, never written to a file.
ADMIN_KEY = secrets.token_urlsafe(24)


def manifest() -> list[dict[str, Any]]:
    path = SAMPLES / "manifest.jsonl"
    if not path.is_file():
        pytest.fail(f"{path} is missing: the demo samples must be committed")
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def first_sample(modality: str) -> tuple[Path, str]:
    """The manifest's first `modality` sample with a label, and that label as text."""
    for entry in manifest():
        label = entry.get("metadata", {}).get("label")
        if entry["modality"] == modality and label is not None:
            return SAMPLES / entry["file"], str(label)
    raise AssertionError(f"no labelled {modality} sample in the manifest")


def sample_label(sample_file: str) -> str:
    """The label the manifest gives the sample `sample_file` (e.g. "audio/7_george_0.wav")."""
    for entry in manifest():
        if entry["file"] == sample_file:
            return str(entry["metadata"]["label"])
    raise AssertionError(f"{sample_file} is not in the manifest")


def api(
    base: str, path: str, *, body: dict[str, Any] | None = None, key: str | None = None
) -> tuple[int, Any]:
    """A JSON call to the test server (urllib, no browser): status and parsed answer."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    data = None
    if body is not None:
        headers["Content-Type"] = "application/json"
        data = json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def results(page: Any, list_id: str) -> list[dict[str, str]]:
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


def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path


def majority(labels: list[str]) -> tuple[str, int]:
    return Counter(labels).most_common(1)[0]
