"""The dependency audit (scripts/audit.py, `make audit`, run by .ci/run).

The real pip-audit runs here against a stand-in OSV service on loopback (the real services
cannot be reached from the build machines: docs/security.md), so the tests see the audit
fail on a vulnerability, pass when it is accepted, and say so when nothing was checked.
"""

from __future__ import annotations

import http.server
import importlib.util
import json
import re
import sys
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


def load_audit() -> ModuleType:
    spec = importlib.util.spec_from_file_location("audit_script", REPO / "scripts" / "audit.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


audit = load_audit()


class _OSV(http.server.BaseHTTPRequestHandler):
    """OSV's /v1/query: one advisory for `vulnerable` (name, version), none for the rest."""

    vulnerable: tuple[str, str] = ("", "")
    queried: list[tuple[str, str]] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server API)
        query = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        asked = (query["package"]["name"], query["version"])
        self.queried.append(asked)
        body: dict[str, Any] = {}
        if asked == self.vulnerable:
            name, version = asked
            body = {
                "vulns": [
                    {
                        "id": "PYSEC-2099-1",
                        "aliases": ["CVE-2099-0001"],
                        "summary": "a test advisory",
                        "affected": [
                            {
                                "package": {"name": name, "ecosystem": "PyPI"},
                                "ranges": [
                                    {
                                        "type": "ECOSYSTEM",
                                        "events": [{"introduced": "0"}, {"fixed": "999.0"}],
                                    }
                                ],
                            }
                        ],
                    }
                ]
            }
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def osv() -> Iterator[tuple[str, type[_OSV]]]:
    handler = type("Handler", (_OSV,), {"queried": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/query", handler
    finally:
        server.shutdown()
        server.server_close()


def pin(pins: list[str], name: str) -> str:
    return next(p.split("==")[1] for p in pins if p.split("==")[0] == name)


# ---------------------------------------------------------------- what is audited


def test_audits_what_the_images_ship_not_the_dev_tools() -> None:
    pyproject = REPO / "pyproject.toml"
    pins = audit.shipped_pins(pyproject) + audit.gpu_image_pins(pyproject)
    assert all(re.fullmatch(r"[a-z0-9-]+==\S+", p) for p in pins), pins
    names = [p.split("==")[0] for p in pins]
    assert len(names) == len(set(names))
    project = tomllib.loads(pyproject.read_text())["project"]
    # every direct pin and the image extras' pins, at their pinned version
    for extra in [None, *audit.IMAGE_EXTRAS]:
        deps = project["optional-dependencies"][extra] if extra else project["dependencies"]
        for dep in deps:
            match = re.fullmatch(r"([A-Za-z0-9._-]+)(?:\[\w+\])?==([^;\s]+).*", dep)
            if match:
                name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
                assert pin(pins, name) == match.group(2).split("+")[0], dep
    # what they pull in (psycopg[binary] -> psycopg-binary, transformers -> huggingface-hub)
    assert {"psycopg-binary", "huggingface-hub", "starlette", "grpcio"} <= set(names)
    # the GPU image's faiss, at the faiss-cpu pin; torch's local label (+cpu) dropped
    assert pin(pins, "faiss-gpu") == pin(pins, "faiss-cpu")
    assert "+" not in pin(pins, "torch")
    # the dev extra is not shipped
    assert not {"pytest", "ruff", "mypy", "pip-audit", "schemathesis", "playwright"} & set(names)


def test_an_environment_off_the_pins_is_refused(tmp_path: Path) -> None:
    extras = "[project.optional-dependencies]\nmilvus = []\npostgres = []\n"
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\ndependencies = ["numpy==0.0.1"]\n' + extras)
    with pytest.raises(audit.AuditError, match="numpy .* is installed but pyproject.toml pins"):
        audit.shipped_pins(pyproject)
    pyproject.write_text('[project]\ndependencies = ["surely-not-installed-xyz==1"]\n' + extras)
    with pytest.raises(audit.AuditError, match="not installed"):
        audit.shipped_pins(pyproject)


# ---------------------------------------------------------------- the verdict


def report(*deps: dict[str, Any]) -> dict[str, Any]:
    return {"dependencies": list(deps), "fixes": []}


VULN = {"id": "PYSEC-2099-1", "aliases": ["CVE-2099-0001"], "fix_versions": ["2.0"]}


def test_judge(monkeypatch: pytest.MonkeyPatch) -> None:
    clean = {"name": "a", "version": "1.0", "vulns": []}
    bad = {"name": "b", "version": "1.0", "vulns": [VULN]}
    skipped = {"name": "c", "skip_reason": "Dependency not found on PyPI and could not be audited"}
    assert audit.judge(report(clean), required=True).status == 0
    failed = audit.judge(report(clean, bad), required=False)
    assert failed.status == 1 and "b 1.0: PYSEC-2099-1" in failed.message
    assert "fixed in 2.0" in failed.message
    # a skip among audited packages is named, and passes
    partial = audit.judge(report(clean, skipped), required=True)
    assert partial.status == 0 and partial.performed and "not audited: c" in partial.message
    # nothing audited: said loudly; a failure only when the audit is required
    none = audit.judge(report(skipped, skipped), required=False)
    assert (none.status, none.performed) == (0, False)
    assert "NOT PERFORMED" in none.message and "not found on PyPI" in none.message
    assert audit.judge(report(skipped), required=True).status == 2
    # an accepted ID (or one of its aliases) no longer fails
    monkeypatch.setattr(audit, "ACCEPTED", {"CVE-2099-0001": "test"})
    assert audit.judge(report(clean, bad), required=True).status == 0


def test_every_accepted_vulnerability_is_documented() -> None:
    security = (REPO / "docs" / "security.md").read_text()
    for vuln, reason in audit.ACCEPTED.items():
        assert reason.strip(), vuln
        assert vuln in security, f"{vuln} is accepted in scripts/audit.py but not in the docs"


# ---------------------------------------------------------------- the real pip-audit


def run_main(capsys: pytest.CaptureFixture[str], url: str) -> tuple[int, str]:
    status = audit.main(["--", "--vulnerability-service", "osv", "--osv-url", url])
    out = capsys.readouterr()
    return status, out.out + out.err


def test_pip_audit_fails_on_a_vulnerability_and_passes_once_accepted(
    osv: tuple[str, type[_OSV]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, handler = osv
    pyproject = REPO / "pyproject.toml"
    pins = audit.shipped_pins(pyproject) + audit.gpu_image_pins(pyproject)
    handler.vulnerable = ("tqdm", pin(pins, "tqdm"))
    status, text = run_main(capsys, url)
    assert status == 1, text
    assert f"tqdm {pin(pins, 'tqdm')}: PYSEC-2099-1" in text
    # every shipped pin was asked about, once
    assert sorted(handler.queried) == sorted(tuple(p.split("==")) for p in pins)
    # accepted: pip-audit is told to ignore it and the audit passes
    monkeypatch.setattr(audit, "ACCEPTED", {"PYSEC-2099-1": "a test advisory"})
    status, text = run_main(capsys, url)
    assert status == 0 and "audit passed" in text, text


def closed_url() -> str:
    """A loopback URL where nothing listens (a port taken, then released)."""
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    port = server.server_address[1]
    server.server_close()
    return f"http://127.0.0.1:{port}/v1/query"


def test_an_unreachable_service_is_reported_not_passed(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = closed_url()
    status, text = run_main(capsys, url)
    assert status == 0 and "audit NOT PERFORMED" in text and "unreachable" in text, text
    monkeypatch.setenv(audit.REQUIRE_ENV, "1")
    status, text = run_main(capsys, url)
    assert status == 2 and "audit NOT PERFORMED" in text, text
