"""`mbridge bench NAME`: the registry, its help, and the error for an unknown name."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from bridge.bench import BENCHMARKS
from bridge.cli import main


def test_help_lists_every_benchmark_with_its_summary(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for bench in BENCHMARKS.values():
        assert f"{bench.name}  " in out and bench.summary in out


def test_unknown_name_is_a_usage_error_naming_the_choices(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "no-such-bench"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'no-such-bench'" in err and "http-overhead" in err


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_each_benchmark_has_a_main_and_its_own_help(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    module = importlib.import_module(f"bridge.bench.{BENCHMARKS[name].module}")
    assert callable(module.main)
    with pytest.raises(SystemExit) as exit_:
        main(["bench", name, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: mbridge bench {name}")
    assert "--json" in out


def test_the_cli_imports_no_benchmark_or_heavy_library_to_build_its_parser() -> None:
    code = (
        "import sys, bridge.cli; bridge.cli.build_parser(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('numpy', 'torch', 'faiss', 'fastapi') or m.startswith('bridge.bench.')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
