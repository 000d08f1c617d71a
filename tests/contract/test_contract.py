"""The served OpenAPI document is the contract: schemathesis drives a real server (`python -m
app` on the shipped demo models and samples) with requests generated from it, in every phase
(examples, coverage, fuzzing, stateful through the document's links) and with every check,
and must find nothing. The exceptions, with their reasons, are in schemathesis.toml here.

Bounded for `make test` (25 examples per operation, seed 1: about 20 s per server); `make
fuzz` runs it longer with a fresh seed (CONTRACT_EXAMPLES, CONTRACT_SEED).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from apikit import ADMIN_KEY
from server_env import REPO, Server, server_env

CONFIG = Path(__file__).with_name("schemathesis.toml")
EXAMPLES = int(os.environ.get("CONTRACT_EXAMPLES", "25"))
SEED = int(os.environ.get("CONTRACT_SEED", "1"))
API_KEY = "contract-api-key"


def schemathesis_cli() -> str:
    found = shutil.which("st", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail("schemathesis is not installed (it is in the dev extra: make test installs it)")
    return found


def config_with_keys(tmp_path: Path, api_key: str | None) -> Path:
    """schemathesis.toml plus the bearer key of each group of operations."""
    sections = [CONFIG.read_text(), "", "[[operations]]", 'include-tag = "admin"']
    sections.append(f'headers = {{ Authorization = "Bearer {ADMIN_KEY}" }}')
    if api_key is not None:
        sections += ["", "[[operations]]", 'include-tag-regex = "^(items|search)$"']
        sections.append(f'headers = {{ Authorization = "Bearer {api_key}" }}')
    path = tmp_path / "schemathesis.toml"
    path.write_text("\n".join(sections) + "\n")
    return path


@pytest.mark.parametrize("api_key", [None, API_KEY], ids=["open", "api-key"])
def test_schemathesis_finds_no_contract_failure(tmp_path: Path, api_key: str | None) -> None:
    models = REPO / "models"
    env = server_env(
        tmp_path / "var", models / "demo-clip", models / "demo-clap", models / "demo-bridge"
    )
    env["BRIDGE_SEED_SAMPLES"] = "true"  # items to find, and item ids for the links
    if api_key is not None:
        env["BRIDGE_API_KEY"] = api_key
    server = Server(env, tmp_path / "server.log")
    server.start(timeout=120)
    try:
        run = subprocess.run(
            [
                schemathesis_cli(),
                "--config-file",
                str(config_with_keys(tmp_path, api_key)),
                "--no-color",
                "run",
                f"{server.url}/openapi.json",
                "--max-examples",
                str(EXAMPLES),
                "--seed",
                str(SEED),
                "--workers",
                "1",
            ],
            capture_output=True,
            text=True,
            timeout=max(900, 20 * EXAMPLES),
            cwd=tmp_path,  # its report and cache files land here
        )
    finally:
        server.stop()
    report = run.stdout[-12000:] + run.stderr[-2000:]
    print(f"schemathesis seed {SEED}, {EXAMPLES} examples per operation")
    assert run.returncode == 0, f"schemathesis found failures:\n{report}\n{server.output()}"
    assert "Stateful" in report and " passed" in report, report  # the phases ran
    assert "Authentication failed" not in report, report  # each group got its key
