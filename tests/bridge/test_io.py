"""bridge.io: the one caption-file reader (embed and retrain) and atomic writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.errors import InvalidInputError, NotFoundError
from bridge.io import atomic_write_text, read_captions


def test_read_captions(tmp_path: Path) -> None:
    path = tmp_path / "captions.txt"
    path.write_text("\ufeffa dog barks\r\n  rain on a roof \nseven\n", encoding="utf-8")
    assert read_captions(path) == ["a dog barks", "rain on a roof", "seven"]


def test_read_captions_errors(tmp_path: Path) -> None:
    blank = tmp_path / "blank.txt"
    blank.write_text("one\n\nthree\n", encoding="utf-8")
    with pytest.raises(InvalidInputError, match="blank.txt line 2: blank caption"):
        read_captions(blank)
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(InvalidInputError, match="holds no captions"):
        read_captions(empty)
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(InvalidInputError, match="latin1.txt is not UTF-8 text"):
        read_captions(latin)
    with pytest.raises(NotFoundError, match="missing.txt not found"):
        read_captions(tmp_path / "missing.txt")


# -- media paths -------------------------------------------------------------------------
def test_read_captions_for_a_retrain_skips_blank_lines_and_the_bom(tmp_path: Path) -> None:
    """A retrain corpus: blank lines skipped; the BOM never reaches the first caption (the
    retrain reader used to keep it)."""
    path = tmp_path / "corpus.txt"
    path.write_text("\ufeffone\n\n  two \r\n\n", encoding="utf-8")
    assert read_captions(path, skip_blank=True) == ["one", "two"]
    path.write_text("\n \n", encoding="utf-8")
    with pytest.raises(InvalidInputError, match="holds no captions"):
        read_captions(path, skip_blank=True)


def test_atomic_write_text_replaces_whole_files(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "a.txt"
    atomic_write_text(target, "first")
    atomic_write_text(target, "second")
    assert target.read_text() == "second"
    assert [p.name for p in target.parent.iterdir()] == ["a.txt"]  # no temp file left


def test_durable_atomic_write_fsyncs_the_file_and_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    target = tmp_path / "manifest.json"
    atomic_write_text(target, "plain")
    assert synced == []  # not asked for
    atomic_write_text(target, "durable", durable=True)
    assert len(synced) == 2 and target.read_text() == "durable"  # the file, then the folder
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]
