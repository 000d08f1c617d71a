"""Benchmark output: a printed table, the machine it ran on, and the --json report."""

from __future__ import annotations

import argparse
import json
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bridge.io import atomic_write_text


def machine_info() -> dict[str, Any]:
    import torch

    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def cpu_model() -> str:
    """The CPU's model name and its widest vector extension (FAISS picks kernels by them)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    lines = info.splitlines()
    model = next((ln.split(":", 1)[1].strip() for ln in lines if "model name" in ln), "")
    flags = next((ln.split(":", 1)[1].split() for ln in lines if ln.startswith("flags")), [])
    simd = "avx512f" if "avx512f" in flags else "avx2" if "avx2" in flags else "sse"
    return f"{model} ({simd})"


def set_threads(threads: int) -> None:
    """Pin torch's intra-op threads; on a loaded machine 1 thread avoids oversubscription."""
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table, columns padded to their widest cell (floats to 3 decimals)."""
    cells = [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    lines = [" | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("-|-".join("-" * w for w in widths))
    lines += [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def markdown_row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def markdown_table(
    head: Sequence[str], align: Sequence[str], rows: Sequence[Sequence[object]]
) -> str:
    """A Markdown table (``align``: "---" or "---:" per column) of preformatted cells, as
    docs/ quotes them."""
    lines = [markdown_row(head), markdown_row(align)]
    return "\n".join(lines + [markdown_row(r) for r in rows])


def bench_parser(name: str, doc: str, json: bool = True) -> argparse.ArgumentParser:
    """The option parser of `mbridge bench NAME` (its module docstring as the help), with
    ``--json PATH`` (the report) unless ``json`` is False."""
    parser = argparse.ArgumentParser(
        prog=f"mbridge bench {name}",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if json:
        parser.add_argument("--json", type=Path, default=None, help="write the report here")
    return parser


def command_line(name: str, argv: Sequence[str]) -> str:
    """The command that makes a report: `mbridge bench NAME ARGS...`."""
    return " ".join(["mbridge", "bench", name, *argv])


def write_json(path: str | Path | None, payload: dict[str, Any]) -> None:
    """The report of the training benchmarks (keys sorted); nothing when ``path`` is None."""
    if path is not None:
        atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def write_report(path: Path | None, name: str, argv: Sequence[str], **fields: Any) -> None:
    """A service benchmark's --json report (nothing when ``path`` is None): the command that
    made it, the CPU, then ``fields``."""
    if path is not None:
        report = {"command": command_line(name, argv), "cpu": cpu_model(), **fields}
        atomic_write_text(path, json.dumps(report, indent=2) + "\n")
