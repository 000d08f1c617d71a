"""Fixtures of the browser tests: Debian's /usr/bin/chromium driven by Playwright against
one real server (`python -m app` on a free loopback port, the demo models, the bundled
samples seeded, an admin key set) shared by every browser test of the session.

Skipped when /usr/bin/chromium or Playwright is missing, unless BRIDGE_REQUIRE_BROWSER=1
(CI sets it), in which case that is a failure. A failed test leaves a screenshot of its page
in its tmp dir and in artifacts/, named in the failure report.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pagekit import ADMIN_KEY, ARTIFACTS, REPO, K

CHROMIUM = Path("/usr/bin/chromium")
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
START_TIMEOUT_S = 240
UI_TIMEOUT_MS = 60_000


def _missing(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"BRIDGE_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    if not CHROMIUM.is_file():
        _missing(f"{CHROMIUM} is not installed (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _missing("the playwright package is not installed")
    return CHROMIUM


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


@pytest.fixture(scope="session")
def server(chromium_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `python -m app` with the demo models, seeded with the samples; its base URL.

    One per session: starting it (loading the models, seeding 600 samples) is most of the
    browser run. Tests that change the active bridge version restore it.
    """
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
        "BRIDGE_ADMIN_KEY": ADMIN_KEY,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    env.pop("BRIDGE_API_KEY", None)
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


@pytest.fixture(scope="session")
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
def page(browser: Any, server: str, tmp_path: Path) -> Iterator[Any]:
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


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """On a failed browser test, a full-page screenshot in its tmp dir and in artifacts/."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    funcargs = getattr(item, "funcargs", {})
    page, tmp_path = funcargs.get("page"), funcargs.get("tmp_path")
    if report.when != "call" or not report.failed or page is None or tmp_path is None:
        return
    shot = tmp_path / "failure.png"
    try:
        page.screenshot(path=str(shot), full_page=True)
    except Exception as exc:  # the page itself may be what broke
        report.sections.append(("screenshot", f"none: {exc}"))
        return
    ARTIFACTS.mkdir(exist_ok=True)
    kept = ARTIFACTS / f"failure-{item.name}.png"
    shutil.copyfile(shot, kept)
    report.sections.append(("screenshot", f"{shot}\n{kept}"))
