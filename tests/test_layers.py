"""The layer rule of docs/architecture.md, checked on the import graph (lazy imports included).

Each package of bridge/ imports only the shared modules and the layers below it; the ML core
imports no FAISS, SQLite or HTTP framework, the index layer no torch, and nothing in bridge/
imports app/. An import inside a function counts like one at the top: a lazy import still
couples the layers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

SHARED = {"errors", "types", "modalities", "arrays", "io", "telemetry", "memory"}
HTTP = {"fastapi", "starlette", "uvicorn", "httptools", "multipart", "pydantic_settings"}
# layer -> the bridge packages it may import (besides the shared modules and itself)
ALLOWED_LAYERS: dict[str, set[str]] = {
    "shared": set(),
    "model": set(),
    "index": set(),
    "storage": set(),
    "encode": {"model"},  # devices: the one device resolver
    "service": {"model", "encode", "index", "storage"},
    "cli": {"model", "encode", "index", "storage", "service", "bench"},
    "bench": {"model", "encode", "index", "storage", "service", "cli"},
}
FORBIDDEN_LIBRARIES: dict[str, set[str]] = {
    "shared": {"torch", "transformers", "faiss", "sqlite3"} | HTTP,
    "model": {"faiss", "sqlite3"} | HTTP,
    "encode": {"faiss", "sqlite3"} | HTTP,
    "index": {"torch", "transformers", "sqlite3"} | HTTP,
    "storage": {"torch", "transformers", "faiss"} | HTTP,
    "service": HTTP,
    "cli": HTTP,
    "bench": set(),  # benchmarks drive the whole stack, HTTP included
}


def layer_of(module: Path) -> str:
    parts = module.relative_to(REPO / "bridge").parts
    if len(parts) == 1:
        stem = parts[0].removesuffix(".py")
        return "shared" if stem in SHARED | {"__init__"} else stem
    return parts[0]


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, dotted module) of every import in the file, top level or not."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
            if node.module == "bridge":  # `from bridge import model` names a package
                found += [(node.lineno, f"bridge.{alias.name}") for alias in node.names]
    return found


def violations(path: Path) -> list[str]:
    layer = layer_of(path)
    bad: list[str] = []
    for line, module in imports_of(path):
        where = f"{path.relative_to(REPO)}:{line} imports {module}"
        top = module.split(".")[0]
        if top == "app":
            bad.append(f"{where}: nothing in bridge/ imports app/")
        elif top in FORBIDDEN_LIBRARIES[layer]:
            bad.append(f"{where}: the {layer} layer must not use {top}")
        elif top == "bridge" and module != "bridge":
            target = module.split(".")[1]
            if target in SHARED or target == layer:
                continue
            if target not in ALLOWED_LAYERS[layer]:
                bad.append(f"{where}: {layer} may import only {sorted(ALLOWED_LAYERS[layer])}")
    return bad


def bridge_modules() -> list[Path]:
    return sorted((REPO / "bridge").rglob("*.py"))


def test_every_bridge_module_belongs_to_a_known_layer() -> None:
    for path in bridge_modules():
        assert layer_of(path) in ALLOWED_LAYERS, f"{path}: no layer; add it to tests/test_layers.py"


@pytest.mark.parametrize("path", bridge_modules(), ids=lambda p: str(p.relative_to(REPO)))
def test_bridge_imports_only_downward(path: Path) -> None:
    assert violations(path) == []


def test_the_rule_catches_a_violation(tmp_path: Path) -> None:
    """The checker itself: an upward import and a forbidden library are both reported."""
    fake = REPO / "bridge" / "model" / "_layer_rule_probe.py"
    fake.write_text("import faiss\n\n\ndef f():\n    from bridge.service import facade\n")
    try:
        found = violations(fake)
    finally:
        fake.unlink()
    assert len(found) == 2
    assert "must not use faiss" in found[0]
    assert "model may import only" in found[1]


def test_app_is_http_only_over_the_service_facade() -> None:
    """app/ reaches the engine through the facade, its types and errors, not its internals."""
    allowed = {
        "bridge",
        "bridge.errors",
        "bridge.types",
        "bridge.modalities",
        "bridge.telemetry",
        "bridge.service",
        # The retrain request's contract: the train_overrides the engine takes, which the
        # served OpenAPI states (pure data and a schema; no torch).
        "bridge.service.retrain_plan",
        # The process's heap (malloc arenas), set by `python -m app` before threads start.
        "bridge.memory",
    }
    bad = []
    for path in sorted((REPO / "app").rglob("*.py")):
        for line, module in imports_of(path):
            if module.startswith("bridge") and module not in allowed:
                bad.append(f"{path.relative_to(REPO)}:{line} imports {module}")
    assert bad == []
