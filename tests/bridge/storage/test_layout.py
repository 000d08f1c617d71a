"""bridge.storage.layout: the data directory's paths, input paths a retrain may read, the lock."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bridge.errors import ConflictError, InvalidInputError, NotFoundError
from bridge.storage.layout import DataLayout


def test_resolve_data_path(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "sub" / "c.txt").write_text("a\nb\n")
    (tmp_path / "secret.txt").write_text("no")
    os.symlink(tmp_path / "secret.txt", data / "link.txt")
    assert (
        DataLayout(data).resolve_input("sub/c.txt", "captions")
        == (data / "sub" / "c.txt").resolve()
    )
    assert DataLayout(data).resolve_input("sub/../sub/c.txt", "captions").name == "c.txt"
    for bad, match in (
        ("../secret.txt", "outside"),
        ("link.txt", "outside"),
        (str(tmp_path / "secret.txt"), "absolute"),
        ("", "relative"),
        ("a\x00b", "NUL"),
    ):
        with pytest.raises(InvalidInputError, match=match):
            DataLayout(data).resolve_input(bad, "captions")
    with pytest.raises(NotFoundError):
        DataLayout(data).resolve_input("sub/none.txt", "captions")
    with pytest.raises(NotFoundError):
        DataLayout(data).resolve_input("sub", "captions")  # a folder is not a file
    with pytest.raises(InvalidInputError, match="not a usable path"):
        DataLayout(data).resolve_input("a" * 300, "captions")  # longer than a file name may be


def test_resolve_data_path_refuses_the_services_own_files(tmp_path: Path) -> None:
    """Reading store.sqlite as a captions file dropped the process's SQLite locks (a later
    outside reader then deleted the WAL, and acknowledged items with it)."""
    data = tmp_path / "data"
    for folder in ("blobs/ab", "native", "versions/v1", "uploads/u1", "corpus"):
        (data / folder).mkdir(parents=True)
    for name in (
        "store.sqlite",
        "store.sqlite-wal",
        "blobs/ab/key",
        "native/x.faiss",
        "versions/v1/report.json",
        "uploads/u1/captions.txt",
        "corpus/c.txt",
    ):
        (data / name).write_text("a\nb\n")
    os.symlink(data / "store.sqlite", data / "corpus" / "link.txt")
    for own in (
        "store.sqlite",
        "./store.sqlite-wal",
        "blobs/ab/key",
        "native/x.faiss",
        "versions/v1/report.json",
        "corpus/link.txt",
        "corpus/../store.sqlite",
    ):
        with pytest.raises(InvalidInputError, match="service's own storage"):
            DataLayout(data).resolve_input(own, "captions")
    # retrain uploads are saved under uploads/ and passed on by path; corpus folders are fine
    assert (
        DataLayout(data).resolve_input("uploads/u1/captions.txt", "captions").name == "captions.txt"
    )
    assert DataLayout(data).resolve_input("corpus/c.txt", "captions").name == "c.txt"


def test_paths_of_a_data_directory(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path)
    assert layout.native_dir("image") == tmp_path / "native" / "clip_image"
    assert layout.shared_dir("v2", "audio") == tmp_path / "versions" / "v2" / "shared_audio"
    assert layout.checkpoint_ref("v2") == "versions/v2/checkpoint"
    assert layout.resolve_checkpoint_ref("versions/v2/checkpoint") == layout.checkpoint_dir("v2")
    for bad in ("../x", "", "a/b", ".hidden"):
        with pytest.raises(InvalidInputError, match="version names"):
            layout.version_dir(bad)
    with pytest.raises(InvalidInputError, match="modality"):
        layout.native_dir("text")
    assert layout.is_upload_dir(layout.new_upload_dir())
    assert not layout.is_upload_dir(tmp_path / "corpus")


def test_one_process_at_a_time_holds_a_data_directory(tmp_path: Path) -> None:
    """A second holder is refused with a message naming the first; releasing frees it."""
    first = DataLayout(tmp_path).lock()
    with pytest.raises(ConflictError, match=f"in use by process {os.getpid()}"):
        DataLayout(tmp_path).lock()
    first.release()
    DataLayout(tmp_path).lock().release()


def test_the_lock_file_is_reserved(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path)
    layout.lock().release()
    with pytest.raises(InvalidInputError, match="service's own storage"):
        layout.resolve_input(".lock", "captions")
