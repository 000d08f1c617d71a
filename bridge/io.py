"""Small file helpers shared by the CLI, the trainer, the service and benchmarks."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from bridge.errors import disk_full_as_error


def atomic_write_text(path: str | Path, text: str, durable: bool = False) -> None:
    """Write text through a temp file in the same folder, then rename over `path`.
    `durable`: fsync the file before the rename and the folder after it, so that a crash,
    power loss included, leaves the old text or the new one. A full disk is StorageFullError
    and leaves the old file as it was."""
    path = Path(path)
    with disk_full_as_error(str(path)):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                if durable:
                    handle.flush()
                    os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    if durable:
        fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """fsync a folder (its entries: a rename into it); quietly a no-op where unsupported."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_captions(
    path: str | Path, *, skip_blank: bool = False, what: str = "captions"
) -> list[str]:
    """Captions from a UTF-8 text file, one per line, stripped; a leading BOM is dropped.

    `skip_blank=False` (`mbridge embed`): a blank line is an error naming the line, since row
    i of the output must be line i of the file. `skip_blank=True` (a retrain corpus, where
    both text towers read the same list): blank lines are skipped. A file with no caption,
    or one that is not UTF-8, is an error either way.
    """
    from bridge.errors import InvalidInputError, NotFoundError

    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"{what} file {path.name} not found")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{what} file {path.name} is not UTF-8 text ({exc})") from exc
    captions: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        caption = line.strip()
        if caption:
            captions.append(caption)
        elif not skip_blank:
            raise InvalidInputError(
                f"{what} file {path.name} line {number}: blank caption (one caption per line; "
                "row i of the output is line i)"
            )
    if not captions:
        raise InvalidInputError(f"{what} file {path.name} holds no captions")
    return captions
