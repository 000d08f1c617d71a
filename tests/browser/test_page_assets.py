"""The search page's files, checked without a browser (the browser test needs Chromium).

The app serves app/static at "/"; every element id that app.js looks up exists in
index.html, and every API path the page calls is a route of the app.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import STATIC_DIR, create_app
from app.settings import Settings


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    # No `with`: the lifespan (which loads the engine) does not run; static files need none.
    settings = Settings(data_dir=tmp_path_factory.mktemp("data"), seed_samples=False)
    return TestClient(create_app(settings))


def test_page_and_assets_are_served(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="app.js" defer>' in page.text
    assert '<link rel="stylesheet" href="style.css">' in page.text
    script = client.get("/app.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    style = client.get("/style.css")
    assert style.status_code == 200 and style.headers["content-type"].startswith("text/css")


def test_every_id_the_script_uses_exists() -> None:
    html = (STATIC_DIR / "index.html").read_text()
    script = (STATIC_DIR / "app.js").read_text()
    ids_in_page = set(re.findall(r'\sid="([^"]+)"', html))
    used = set(re.findall(r'\$\("([^"]+)"\)', script))
    used |= set(re.findall(r'getElementById\("([^"]+)"\)', script))
    assert used, "app.js looks up no element ids: the pattern is out of date"
    missing = used - ids_in_page
    assert not missing, f"ids used by app.js but missing in index.html: {missing}"
    assert len(re.findall(r'\sid="', html)) == len(ids_in_page), "duplicate ids in index.html"


def test_api_paths_called_by_the_page_exist(client: TestClient) -> None:
    script = (STATIC_DIR / "app.js").read_text()
    called = set(re.findall(r'"(v1/[a-z/]+)"', script))
    called |= {re.sub(r"\$\{[^}]+\}", "{}", p) for p in re.findall(r"`(v1/[^`]+)`", script)}
    called |= set(re.findall(r'fetch\("([a-z]+)"\)', script))
    expected = {"v1/search", "v1/items/{}/content", "readyz", "v1/admin/jobs/{}"}
    expected |= {f"v1/admin/{name}" for name in ("retrain", "versions", "activate", "rollback")}
    assert expected <= called, called
    # Path parameters compared by place, not name: /v1/items/{item_id} is "v1/items/{}".
    served = {re.sub(r"\{[^}]+\}", "{}", p) for p in client.get("/openapi.json").json()["paths"]}
    missing = {p for p in called if f"/{p}" not in served}
    assert not missing, f"the page calls paths the app does not serve: {missing}"


def test_no_key_field_can_be_submitted_with_the_page() -> None:
    """Key fields have no `name`: a form submitted without the script never carries a key."""
    html = (STATIC_DIR / "index.html").read_text()
    for field in ("api-key", "admin-key"):
        tag = re.search(rf'<input id="{field}"[^>]*>', html)
        assert tag and 'type="password"' in tag[0] and " name=" not in tag[0], field
    script = (STATIC_DIR / "app.js").read_text()
    assert "ADMIN_KEY_STORAGE" in script  # the admin key is kept under this name...
    for line in script.splitlines():  # ...and never in localStorage, which outlives the tab
        code = line.split("//")[0]
        assert "localStorage" not in code or "admin" not in code.lower(), line


def test_static_dir_is_packaged() -> None:
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    packaged = re.search(r'app\s*=\s*\[\s*"static/\*"\s*\]', pyproject)
    assert packaged, "app/static is not in [tool.setuptools.package-data]"
