"""Audit the dependencies the Docker images ship for known vulnerabilities, with pip-audit.

    .venv/bin/python scripts/audit.py                 # make audit; .ci/run runs it
    .venv/bin/python scripts/audit.py --list          # print the audited pins, audit nothing

What is audited is what the images install: pyproject.toml's pinned runtime dependencies with
the extras the Dockerfiles add (`milvus`, `postgres`; the list docker/requirements.py prints
for them), everything those pull in at the version installed in this environment (which
must satisfy the pins: `make` installs it from the same pyproject.toml), and faiss-gpu at the
GPU image's pin. Not the dev tools, which no image carries. pip-audit gets that list as a
fully pinned requirements file (`--no-deps --disable-pip`), so it resolves nothing and only
asks the vulnerability service about each name and version: seconds, not a reinstall.

Exit status: 0 when no vulnerability outside ACCEPTED was found; 1 when one was (the build
must fail: bump the pin, or accept it below with its reason and in docs/security.md); 2 when
the environment does not match the pins, or pip-audit failed for another reason than an
unreachable service. When the service cannot be reached or knows none of the packages (the
case on the project's build machines, docs/security.md says why) the audit is NOT performed
and the script says so on stderr with the reason; that exits 0 so that such a machine can
still build, and 2 under BRIDGE_REQUIRE_AUDIT=1, for CI on a machine that reaches the service.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]

# The extras the Dockerfiles install (`--extra milvus --extra postgres`).
IMAGE_EXTRAS = ["milvus", "postgres"]
REQUIRE_ENV = "BRIDGE_REQUIRE_AUDIT"

# Vulnerabilities accepted on purpose: ID -> why (docs/security.md repeats each one).
# pip-audit is run with --ignore-vuln for each; anything else found fails the audit.
ACCEPTED: dict[str, str] = {}

# pip-audit's words for a service it could not reach (a traceback, no report).
_UNREACHABLE = re.compile(
    r"ConnectionError|NameResolutionError|Max retries exceeded|Could not connect|timed out"
)


class AuditError(Exception):
    """The audit could not be set up (the environment does not match the pins)."""


def dependencies(pyproject: Path, extras: list[str] | None = None) -> list[str]:
    """pyproject's pinned dependencies and those of `extras`, read by docker/requirements.py
    (the reader the Dockerfiles run, so both see one list)."""
    spec = importlib.util.spec_from_file_location("requirements", REPO / "docker/requirements.py")
    if spec is None or spec.loader is None:
        raise AuditError("cannot load docker/requirements.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    deps: list[str] = module.dependencies(pyproject, extras)
    return deps


def gpu_image_pins(pyproject: Path) -> list[str]:
    """What the GPU image installs beyond the CPU list: faiss-gpu at the faiss-cpu pin
    (tests/deploy checks the Dockerfile's FAISS_GPU_VERSION against that pin)."""
    for dep in dependencies(pyproject):
        req = Requirement(dep)
        if canonicalize_name(req.name) == "faiss-cpu":
            return [f"faiss-gpu{req.specifier}"]
    raise AuditError("pyproject.toml has no faiss-cpu pin")


def shipped_pins(pyproject: Path) -> list[str]:
    """`name==version` for every distribution the images install, read from the installed
    environment along the requirement graph of pyproject's dependencies and image extras."""
    pins: dict[str, str] = {}
    pending: list[tuple[Requirement, str]] = [
        (Requirement(d), "pyproject.toml") for d in dependencies(pyproject, IMAGE_EXTRAS)
    ]
    while pending:
        req, wanted_by = pending.pop()
        name = canonicalize_name(req.name)
        if name in pins:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise AuditError(
                f"{req} (required by {wanted_by}) is not installed here; run `make audit`, "
                "which installs the project with its extras first"
            ) from None
        version = dist.version
        if not req.specifier.contains(version, prereleases=True):
            raise AuditError(
                f"{name} {version} is installed but {wanted_by} pins {req}: the audit would "
                "not describe what the images ship; reinstall (`make audit`)"
            )
        pins[name] = version
        for line in dist.requires or []:
            child = Requirement(line)
            if child.marker is None or any(
                child.marker.evaluate({"extra": extra}) for extra in [*req.extras, ""]
            ):
                pending.append((child, f"{name} {version}"))
    # torch's 2.13.0+cpu is release 2.13.0 to an advisory: drop the local version label.
    return [f"{name}=={Version(version).public}" for name, version in sorted(pins.items())]


@dataclass(frozen=True)
class Verdict:
    status: int  # the exit status
    message: str
    performed: bool = True


def judge(report: dict[str, Any], required: bool) -> Verdict:
    """What pip-audit's JSON report means for the build."""
    deps = report.get("dependencies", [])
    skipped = [d for d in deps if d.get("skip_reason")]
    found = [
        (d["name"], d["version"], v)
        for d in deps
        for v in d.get("vulns", [])
        if v["id"] not in ACCEPTED and not set(v.get("aliases", [])) & set(ACCEPTED)
    ]
    lines = [
        f"{name} {version}: {v['id']} (aliases {', '.join(v.get('aliases', [])) or 'none'}); "
        f"fixed in {', '.join(v.get('fix_versions', [])) or 'no release yet'}"
        for name, version, v in found
    ]
    if found:
        return Verdict(
            1,
            f"audit FAILED: {len(found)} known vulnerabilities in the shipped dependencies:\n"
            + "\n".join(f"  {line}" for line in lines)
            + "\nBump the pin in pyproject.toml, or accept the ID in scripts/audit.py's "
            "ACCEPTED with its reason and in docs/security.md.",
        )
    if deps and len(skipped) == len(deps):
        reasons = sorted({d["skip_reason"].split(":")[0] for d in skipped})
        return not_performed(
            f"the vulnerability service knew none of the {len(deps)} packages "
            f"({'; '.join(reasons)})",
            required,
        )
    note = "".join(f"\n  not audited: {d['name']}: {d['skip_reason']}" for d in skipped)
    accepted = f", {len(ACCEPTED)} accepted (docs/security.md)" if ACCEPTED else ""
    return Verdict(
        0,
        f"audit passed: {len(deps) - len(skipped)} packages, no known vulnerability{accepted}"
        + note,
    )


def not_performed(reason: str, required: bool) -> Verdict:
    message = (
        f"audit NOT PERFORMED: {reason}. No package was checked; see docs/security.md "
        "(a machine that reaches the service runs it; "
        f"{REQUIRE_ENV}=1 makes this a failure)."
    )
    return Verdict(2 if required else 0, message, performed=False)


def run_pip_audit(pins: list[str], extra_args: list[str], timeout: float) -> Verdict:
    required = os.environ.get(REQUIRE_ENV) == "1"
    with tempfile.TemporaryDirectory(prefix="audit-") as work:
        requirements = Path(work) / "requirements.txt"
        requirements.write_text("".join(f"{pin}\n" for pin in pins))
        report = Path(work) / "report.json"
        command = [
            sys.executable,
            "-m",
            "pip_audit",
            "--requirement",
            str(requirements),
            "--no-deps",
            "--disable-pip",
            "--progress-spinner",
            "off",
            "--format",
            "json",
            "--output",
            str(report),
            *[arg for vuln in sorted(ACCEPTED) for arg in ("--ignore-vuln", vuln)],
            *extra_args,
        ]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return not_performed(f"pip-audit did not finish in {timeout:.0f} s", required)
        text = report.read_text() if report.is_file() else ""
        if not text.strip():
            last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
            if _UNREACHABLE.search(done.stderr):
                return not_performed(f"the vulnerability service is unreachable: {last}", required)
            return Verdict(2, f"pip-audit failed (exit {done.returncode}): {done.stderr}")
        return judge(json.loads(text), required)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="print the audited pins and stop")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds for pip-audit")
    parser.add_argument(
        "pip_audit_args",
        nargs="*",
        help="passed to pip-audit after `--` (e.g. -- --vulnerability-service osv)",
    )
    args = parser.parse_args(argv)
    pyproject = REPO / "pyproject.toml"
    try:
        pins = [*shipped_pins(pyproject), *gpu_image_pins(pyproject)]
    except (AuditError, ValueError) as exc:
        print(f"audit: {exc}", file=sys.stderr)
        return 2
    if args.list:
        sys.stdout.write("".join(f"{pin}\n" for pin in pins))
        return 0
    verdict = run_pip_audit(pins, args.pip_audit_args, args.timeout)
    quiet = verdict.status == 0 and verdict.performed
    print(verdict.message, file=sys.stdout if quiet else sys.stderr)
    return verdict.status


if __name__ == "__main__":
    raise SystemExit(main())
