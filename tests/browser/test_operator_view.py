"""The operator view and the sample queries of the search page, in a real Chromium against
the real server of conftest.py (demo models, bundled samples, an admin key).

The operator test runs real retrains (a few captions, 1-2 epochs on the demo models) from
the page, activates, rolls back, and leaves the server's active version as it found it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pagekit import ADMIN_KEY, ARTIFACTS, K, api, majority, results, sample_label

pytestmark = pytest.mark.browser

CAPTIONS = [
    "the digit seven",
    "a spoken seven",
    "a handwritten three",
    "someone says three",
    "the number five",
    "a voice counting five",
]
SESSION_KEYS = "() => Object.fromEntries(Object.entries(sessionStorage))"
LOCAL_KEYS = "() => Object.fromEntries(Object.entries(localStorage))"


def _active(server: str) -> str | None:
    status, body = api(server, "v1/admin/versions", key=ADMIN_KEY)
    assert status == 200, body
    return body["active"]


@pytest.fixture()
def restore_active(server: str) -> Iterator[str | None]:
    """The active version before the test; activated again afterwards if the test left
    another one active (the server is shared by every browser test)."""
    before = _active(server)
    yield before
    if before is not None and _active(server) != before:
        api(server, "v1/admin/activate", body={"version": before}, key=ADMIN_KEY)


def _admin_error(page: Any) -> str:
    page.locator("#admin-error").wait_for(state="visible")
    return page.inner_text("#admin-error")


def _active_row(page: Any, version: str) -> None:
    page.locator(f"#versions[data-active='{version}']").wait_for()
    row = page.locator(f"#versions-body tr[data-version='{version}']")
    assert row.get_attribute("data-active") == "true"
    assert "active" in row.inner_text()


def _search_reports(page: Any, version: str) -> None:
    """A search from the page (the spoken-seven sample) is answered by `version`."""
    page.click("#sample-spoken")
    page.locator(f"#image-results[data-bridge-version='{version}']").wait_for()
    assert page.get_attribute("#image-results", "data-space") == "shared"
    assert f"by bridge {version}" in page.inner_text("#image-space")


def _finished_job(page: Any, after: str | None) -> dict[str, str]:
    """Wait until the page shows a finished job other than `after`; its id and version."""
    page.wait_for_function(
        """before => { const job = document.getElementById('job');
             const status = document.getElementById('job-status').dataset.status;
             return job.dataset.jobId && job.dataset.jobId !== before &&
                    (status === 'succeeded' || status === 'failed'); }""",
        arg=after,
    )
    return page.eval_on_selector(
        "#job",
        """job => ({id: job.dataset.jobId, version: job.dataset.version,
                   status: document.getElementById('job-status').dataset.status})""",
    )


def test_operator_retrains_activates_and_rolls_back(
    page: Any, server: str, tmp_path: Path, restore_active: str | None
) -> None:
    original = restore_active
    assert original is not None, "the demo server starts with an active bridge"
    polled: list[str] = []
    page.on("request", lambda r: polled.append(r.url) if "/v1/admin/jobs/" in r.url else None)
    assert page.is_hidden("#admin-view")

    # A wrong key: the 401 in words, nothing kept, nothing shown.
    page.fill("#admin-key", "not-the-admin-key")
    page.click("#admin-key-form button[type=submit]")
    shown = _admin_error(page)
    assert "The server answered 401: invalid bearer key for admin" in shown, shown
    assert "Check the admin key." in shown
    assert page.is_hidden("#admin-view")
    assert page.evaluate(SESSION_KEYS) == {}

    # The right key: the versions, the key only in this tab's sessionStorage.
    page.fill("#admin-key", ADMIN_KEY)
    page.click("#admin-key-form button[type=submit]")
    page.locator("#admin-view").wait_for(state="visible")
    _active_row(page, original)
    assert page.is_hidden("#admin-error")
    assert page.input_value("#admin-key") == ""
    assert ADMIN_KEY in page.evaluate(SESSION_KEYS).values()
    assert ADMIN_KEY not in str(page.evaluate(LOCAL_KEYS)) and ADMIN_KEY not in page.url

    # 409 and 422 from the API are shown in the server's words.
    page.click("#rollback")
    shown = _admin_error(page)
    assert "The server answered 409: no previously active bridge version" in shown, shown
    page.fill("#captions-text", "one\ntwo")
    page.click("#retrain-start")
    page.locator("#admin-error", has_text="422").wait_for()
    assert "at least 4 non-blank captions, got 2" in page.inner_text("#admin-error")
    assert page.is_hidden("#job")

    # A real retrain from the typed list (JSON): the bar reaches done, then the metrics.
    page.fill("#captions-text", "\n".join(CAPTIONS))
    page.fill("#epochs", "2")
    page.click("#retrain-start")
    job = _finished_job(page, None)
    assert job["status"] == "succeeded", page.inner_text("#admin-error")
    new = job["version"]
    assert new != original
    assert page.eval_on_selector("#job-progress", "bar => bar.value") == 1
    assert page.inner_text("#job-percent") == "100 %"
    assert page.inner_text("#job-status") == "Done"
    assert any(url.endswith(f"/v1/admin/jobs/{job['id']}") for url in polled), polled
    status, answer = api(server, f"v1/admin/jobs/{job['id']}", key=ADMIN_KEY)
    assert status == 200 and answer["status"] == "succeeded"
    rows = page.eval_on_selector_all(
        "#job-metrics-table tbody tr",
        "rows => rows.map(r => [r.dataset.group, r.dataset.direction, r.innerText])",
    )
    groups = {(group, direction) for group, direction, _ in rows}
    assert ("stored_items_by_label", "audio_to_image") in groups, rows
    assert ("captions", "clap_to_clip") in groups, rows
    recall = answer["metrics"]["stored_items_by_label"]["audio_to_image"]["r_at_1"]
    shown_row = next(text for g, d, text in rows if d == "audio_to_image")
    assert f"{recall:.3f}" in shown_row.split(), shown_row
    assert page.is_visible("#job-activate")

    shot = tmp_path / "operator-view.png"
    page.locator("#operator").screenshot(path=str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "search-page-operator.png").write_bytes(shot.read_bytes())

    # Activate it from the page: a search from the page is then answered by it.
    page.click("#job-activate")
    _active_row(page, new)
    assert f"Version {new} is active" in page.inner_text("#admin-notice")
    assert page.is_hidden("#job-activate")
    assert _active(server) == new
    _search_reports(page, new)

    # A retrain from an uploaded file (multipart), activated when ready.
    corpus = tmp_path / "captions.txt"
    corpus.write_text("\n".join(reversed(CAPTIONS)) + "\n")
    page.check("input[name='captions-source'][value='file']")
    assert page.is_hidden("#captions-text")
    page.set_input_files("#captions-file", str(corpus))
    page.fill("#epochs", "1")
    page.check("#retrain-activate")
    page.click("#retrain-start")
    third = _finished_job(page, job["id"])
    assert third["status"] == "succeeded", page.inner_text("#admin-error")
    _active_row(page, third["version"])
    assert "ready and active" in page.inner_text("#admin-notice")

    # Roll back (to `new`), then activate the original version from its row.
    page.click("#rollback")
    _active_row(page, new)
    assert f"version {new} is active again" in page.inner_text("#admin-notice")
    page.click(f"#versions-body tr[data-version='{original}'] button.activate")
    _active_row(page, original)
    _search_reports(page, original)


def test_sample_queries_are_one_click_away(page: Any, server: str) -> None:
    active = _active(server)

    page.click("#sample-spoken")
    cards = results(page, "image-results")
    spoken = sample_label(page.get_attribute("#sample-spoken", "data-sample-file"))
    labels = [c["label"] for c in cards]
    top, count = majority(labels)
    assert len(cards) == K and top == spoken and count > K // 2, labels
    assert page.get_attribute("#image-results", "data-space") == "shared"
    assert page.get_attribute("#image-results", "data-bridge-version") == active
    assert f"bridged (C-MCR) space by bridge {active}" in page.inner_text("#image-space")
    assert page.get_attribute("#sound-preview", "src").startswith("blob:")
    assert "the spoken “seven”" in page.inner_text("#results-title")

    page.click("#sample-written")
    cards = results(page, "audio-results")
    written = sample_label(page.get_attribute("#sample-written", "data-sample-file"))
    labels = [c["label"] for c in cards]
    top, count = majority(labels)
    assert len(cards) == K and top == written and count > K // 2, labels
    assert {c["modality"] for c in cards} == {"audio"}
    assert page.get_attribute("#audio-results", "data-space") == "shared"
    assert page.is_hidden("#image-block")
    width = page.eval_on_selector("#image-preview", "i => i.decode().then(() => i.naturalWidth)")
    assert width > 0

    page.click("#sample-text")
    assert page.input_value("#text-query") == "the digit five"
    images, sounds = results(page, "image-results"), results(page, "audio-results")
    assert len(images) == K and len(sounds) == K
    assert page.get_attribute("#image-results", "data-space") == "clip"
    assert page.get_attribute("#audio-results", "data-space") == "clap"
    assert f"native CLIP space (bridge {active} active)" in page.inner_text("#image-space")
    assert page.is_hidden("#error")
