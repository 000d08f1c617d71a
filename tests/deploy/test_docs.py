"""The configuration table in README.md matches app/settings.py exactly.

A table row is a Markdown row whose first cell is a `BRIDGE_*` variable and whose second
cell is its default as the docs show it. README.md (the user guide) must hold such a table.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from app.settings import ENV_PREFIX, Settings

REPO = Path(__file__).resolve().parents[2]
GUIDE = REPO / "README.md"
ROW = re.compile(r"^\|\s*`?(BRIDGE_[A-Z0-9_]+)`?\s*\|\s*([^|]*?)\s*\|", re.M)


def shown_default(value: Any) -> str:
    """How a default is written in the docs: unset, true/false, or the plain value."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, SecretStr):
        return "(set)"
    return str(value)


def expected_table() -> dict[str, str]:
    return {
        f"{ENV_PREFIX}{name.upper()}": shown_default(field.default)
        for name, field in Settings.model_fields.items()
    }


def documented_table(path: Path) -> dict[str, str]:
    rows: dict[str, str] = {}
    for name, default in ROW.findall(path.read_text()):
        assert name not in rows, f"{path.name}: {name} appears twice in its settings table"
        rows[name] = default.strip().strip("`")
    return rows


def test_shown_default_formats() -> None:
    assert shown_default(None) == "unset"
    assert shown_default(True) == "true"
    assert shown_default(Path("var")) == "var"
    assert shown_default(30.0) == "30.0"


def test_user_guide_table_matches_settings() -> None:
    documented = documented_table(GUIDE)
    expected = expected_table()
    missing = sorted(set(expected) - set(documented))
    unknown = sorted(set(documented) - set(expected))
    assert not missing, f"{GUIDE.name} lacks settings: {missing}"
    assert not unknown, f"{GUIDE.name} documents settings that do not exist: {unknown}"
    wrong = {k: (documented[k], v) for k, v in expected.items() if documented[k] != v}
    assert not wrong, f"{GUIDE.name} defaults differ (docs, code): {wrong}"
