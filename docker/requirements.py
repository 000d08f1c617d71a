"""Print the project's pinned runtime dependencies from pyproject.toml, one per line.

Used by the Dockerfiles to install the dependency layer before the source is copied, so that a
source change does not reinstall torch. Reads only pyproject.toml (stdlib tomllib), so it runs
in a bare python image.

    python docker/requirements.py pyproject.toml --exclude torch --exclude faiss-cpu
    python docker/requirements.py pyproject.toml --only torch        # -> torch==2.13.0
    python docker/requirements.py pyproject.toml --extra milvus      # + that extra's pins
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def canonical(name: str) -> str:
    """PEP 503 normalised project name (faiss_cpu, Faiss.CPU -> faiss-cpu)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    match = _NAME.match(requirement)
    if match is None:
        raise ValueError(f"cannot read a project name from requirement {requirement!r}")
    return canonical(match.group(1))


def dependencies(pyproject: Path, extras: list[str] | None = None) -> list[str]:
    """The [project].dependencies list of a pyproject.toml, then those of each extra in
    `extras` ([project.optional-dependencies])."""
    with pyproject.open("rb") as handle:
        data = tomllib.load(handle)
    project = data.get("project", {})
    deps = project.get("dependencies")
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        raise ValueError(f"{pyproject}: [project].dependencies must be a list of strings")
    optional = project.get("optional-dependencies", {})
    for extra in extras or []:
        if extra not in optional:
            raise ValueError(f"{pyproject}: no optional dependencies named {extra!r}")
        deps = [*deps, *optional[extra]]
    return list(deps)


def select(deps: list[str], exclude: list[str], only: list[str]) -> list[str]:
    """Filter requirements by canonical name; every name asked for must exist."""
    names = {requirement_name(d) for d in deps}
    unknown = sorted({canonical(n) for n in [*exclude, *only]} - names)
    if unknown:
        raise ValueError(f"not a dependency in pyproject.toml: {', '.join(unknown)}")
    excluded = {canonical(n) for n in exclude}
    wanted = {canonical(n) for n in only}
    return [
        d
        for d in deps
        if requirement_name(d) not in excluded and (not wanted or requirement_name(d) in wanted)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pyproject", type=Path, nargs="?", default=Path("pyproject.toml"))
    parser.add_argument("--exclude", action="append", default=[], metavar="NAME")
    parser.add_argument("--only", action="append", default=[], metavar="NAME")
    parser.add_argument("--extra", action="append", default=[], metavar="EXTRA")
    args = parser.parse_args(argv)
    try:
        chosen = select(dependencies(args.pyproject, args.extra), args.exclude, args.only)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write("".join(f"{d}\n" for d in chosen))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
