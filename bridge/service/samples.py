"""Sample items from a samples manifest (models/samples/manifest.jsonl).

Format: one JSON object per line,
    {"file": "audio/3_theo_0.wav", "modality": "audio", "metadata": {"label": 3, ...}}
`file` is relative to the manifest's folder and must stay inside it; `modality` is "image"
or "audio"; `metadata` is a JSON object (optional). Blank lines are skipped. The service seeds
an empty store with every listed file in one add_items batch, adding `sample_file` (the
manifest's `file`) to each item's metadata.
"""

from __future__ import annotations

import json
import mimetypes
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.errors import InvalidInputError, NotFoundError
from bridge.types import Upload

MANIFEST_NAME = "manifest.jsonl"


@dataclass(frozen=True)
class Sample:
    upload: Upload
    modality: str
    metadata: dict[str, Any]


def _parse_line(line: str, number: int, root: Path) -> tuple[Path, str, dict[str, Any]]:
    where = f"{MANIFEST_NAME} line {number}"
    try:
        entry = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{where}: not valid JSON ({exc})") from exc
    if not isinstance(entry, dict):
        raise InvalidInputError(f"{where}: expected a JSON object")
    file, modality = entry.get("file"), entry.get("modality")
    metadata = entry.get("metadata", {})
    if not isinstance(file, str) or not file:
        raise InvalidInputError(f"{where}: `file` must be a non-empty string")
    if modality not in ("image", "audio"):
        raise InvalidInputError(f"{where}: `modality` must be 'image' or 'audio', got {modality!r}")
    if not isinstance(metadata, dict):
        raise InvalidInputError(f"{where}: `metadata` must be a JSON object")
    path = (root / file).resolve()
    if Path(file).is_absolute() or not path.is_relative_to(root):
        raise InvalidInputError(f"{where}: {file!r} is outside the samples folder")
    if not path.is_file():
        raise NotFoundError(f"{where}: sample file not found: {path}")
    return path, modality, {**metadata, "sample_file": file}


def load_samples(samples_dir: Path) -> list[Sample]:
    """Read samples_dir/manifest.jsonl and every file it lists (NotFoundError if missing)."""
    root = Path(samples_dir).resolve()
    manifest = root / MANIFEST_NAME
    if not manifest.is_file():
        raise NotFoundError(f"samples manifest not found: {manifest}")
    samples: list[Sample] = []
    for number, line in enumerate(manifest.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        path, modality, metadata = _parse_line(line, number, root)
        content_type = mimetypes.guess_type(path.name)[0]
        upload = Upload(data=path.read_bytes(), filename=path.name, content_type=content_type)
        samples.append(Sample(upload, modality, metadata))
    return samples
