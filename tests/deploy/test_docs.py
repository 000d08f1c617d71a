"""The docs stay true to the code and to themselves.

- The settings table in docs/configuration.md (its one home) matches app/settings.py exactly:
  a table row is a Markdown row whose first cell is a `BRIDGE_*` variable and whose second
  cell is its default as the docs show it; the README keeps no copy.
- Every relative link in README.md and docs/*.md reaches a file, and a heading when it names
  an anchor.
- Every "method.md section N" the code cites is a section of docs/method.md, and the
  architecture.md the code cites exists.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from app.settings import ENV_PREFIX, Settings

REPO = Path(__file__).resolve().parents[2]
GUIDE = REPO / "docs" / "configuration.md"
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


def table_problems(text: str) -> list[str]:
    """What is wrong with the settings table in `text` against app/settings.py (empty: none)."""
    documented: dict[str, str] = {}
    problems: list[str] = []
    for name, default in ROW.findall(text):
        if name in documented:
            problems.append(f"{name} appears twice")
        documented[name] = default.strip().strip("`")
    expected = expected_table()
    problems += [f"lacks {name}" for name in sorted(set(expected) - set(documented))]
    problems += [f"documents unknown {name}" for name in sorted(set(documented) - set(expected))]
    problems += [
        f"{name}: docs say {documented[name]!r}, code says {default!r}"
        for name, default in expected.items()
        if name in documented and documented[name] != default
    ]
    return problems


def test_shown_default_formats() -> None:
    assert shown_default(None) == "unset"
    assert shown_default(True) == "true"
    assert shown_default(Path("var")) == "var"
    assert shown_default(30.0) == "30.0"


def test_configuration_table_matches_settings() -> None:
    assert table_problems(GUIDE.read_text()) == [], f"{GUIDE.relative_to(REPO)}"


def test_a_drifted_table_is_caught() -> None:
    """The check itself: a wrong default, a missing row, an unknown and a repeated variable."""
    text = GUIDE.read_text()
    assert "| `BRIDGE_PORT` | `8000` |" in text
    drifted = text.replace("| `BRIDGE_PORT` | `8000` |", "| `BRIDGE_PORT` | `8080` |")
    assert table_problems(drifted) == ["BRIDGE_PORT: docs say '8080', code says '8000'"]
    rows = [line for line in text.splitlines() if line.startswith("| `BRIDGE_")]
    without = text.replace(rows[0] + "\n", "")
    assert table_problems(without) == [f"lacks {ROW.findall(rows[0])[0][0]}"]
    extra = text + "\n| `BRIDGE_NOT_A_SETTING` | `1` | x |\n" + rows[1] + "\n"
    assert table_problems(extra) == [
        f"{ROW.findall(rows[1])[0][0]} appears twice",
        "documents unknown BRIDGE_NOT_A_SETTING",
    ]


def test_readme_keeps_no_copy_of_the_table() -> None:
    """One home per fact: the README points to docs/configuration.md instead."""
    readme = (REPO / "README.md").read_text()
    assert ROW.findall(readme) == []
    assert "docs/configuration.md" in readme


DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*$", re.M)
CODE_BLOCK = re.compile(r"^```.*?^```", re.M | re.S)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.replace("`", "").lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(h) for h in HEADING.findall(CODE_BLOCK.sub("", path.read_text()))}


def broken_links(path: Path) -> list[str]:
    """Relative links in `path` whose file or heading anchor does not exist."""
    broken = []
    for target in LINK.findall(CODE_BLOCK.sub("", path.read_text())):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: no heading with that anchor")
    return broken


def test_slug_matches_github() -> None:
    assert slug("## 4. The data directory".lstrip("# ")) == "4-the-data-directory"
    assert slug("`mbridge bench NAME`") == "mbridge-bench-name"
    assert slug("Real data: spoken digits ↔ handwritten digits") == (
        "real-data-spoken-digits--handwritten-digits"
    )


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_doc_links_resolve(path: Path) -> None:
    assert broken_links(path) == []


def test_a_broken_link_is_caught(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n[a](missing.md) [b](#title) [c](#nowhere) [d](https://x.org)\n")
    assert broken_links(page) == [
        "missing.md: no such file",
        "#nowhere: no heading with that anchor",
    ]


def cited_sections() -> list[tuple[str, str]]:
    """(where, section number) for every "method.md section N" the code cites."""
    cited = []
    for root in ("bridge", "app", "tests", "scripts"):
        for source in sorted((REPO / root).rglob("*.py")):
            for number in re.findall(r"method\.md section (\d+)", source.read_text()):
                cited.append((str(source.relative_to(REPO)), number))
    return cited


def test_cited_method_sections_exist() -> None:
    """The code cites docs/method.md by section number; every number cited is a section."""
    sections = set(re.findall(r"^## (\d+)\. ", (REPO / "docs" / "method.md").read_text(), re.M))
    cited = cited_sections()
    assert cited, "no citation found: the pattern no longer matches the code's spelling"
    assert [(where, n) for where, n in cited if n not in sections] == []


def test_cited_architecture_doc_exists() -> None:
    citing = [
        source
        for root in ("bridge", "app", "tests")
        for source in (REPO / root).rglob("*.py")
        if "architecture.md" in source.read_text()
    ]
    assert citing, "no citation found: the pattern no longer matches the code's spelling"
    assert (REPO / "docs" / "architecture.md").is_file()


CITED_DOC = re.compile(r"\bdocs/[A-Za-z0-9_-]+\.md\b")
CITING_FILES = [
    *(p for root in ("bridge", "app", "tests", "scripts") for p in (REPO / root).rglob("*.py")),
    *(REPO / "models").glob("*/README.md"),
    REPO / "pyproject.toml",
    REPO / ".env.example",
    REPO / "docker-compose.yml",
    REPO / "Makefile",
]


def test_every_doc_the_code_cites_exists() -> None:
    """A doc path named in code, model cards or deployment files is a file of docs/ (four
    files cited docs that a reorganisation had removed)."""
    missing = [
        f"{source.relative_to(REPO)}: {cited}"
        for source in CITING_FILES
        if source.is_file()
        for cited in CITED_DOC.findall(source.read_text())
        if not (REPO / cited).is_file()
    ]
    assert missing == []
