"""Use cases run on a data directory with no server: `mbridge retrain`.

The command opens the directory as the service does (taking its lock, so a running server is
never written under), copies the input files into uploads/<id>/ as a multipart retrain does,
and runs the same RetrainPipeline in the foreground, printing its progress to stderr.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

from bridge.errors import InvalidInputError, NotFoundError
from bridge.types import RetrainInit, RetrainRequest, ServiceConfig


def _parse_overrides(text: str) -> dict[str, Any]:
    try:
        overrides = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"--overrides is not JSON: {exc}") from exc
    if not isinstance(overrides, dict):
        raise InvalidInputError("--overrides must be a JSON object, e.g. '{\"epochs\": 5}'")
    return overrides


class _StderrProgress:
    """Prints a line whenever the percentage or the message changes."""

    def __init__(self) -> None:
        self._last: tuple[int, str] | None = None

    def __call__(self, fraction: float, message: str, force: bool = False) -> None:
        shown = (int(round(100 * min(1.0, max(0.0, fraction)))), message)
        if shown != self._last:
            self._last = shown
            print(f"[{shown[0]:3d}%] {message}", file=sys.stderr, flush=True)


def retrain_offline(
    *,
    data_dir: Path,
    captions: Path,
    image_memory: Path | None = None,
    audio_memory: Path | None = None,
    overrides: str = "{}",
    activate: bool = False,
    init: RetrainInit = "fresh",
    clip_model: str,
    clap_model: str,
    device: str = "auto",
    vectors: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train, install and evaluate a new bridge version of `data_dir` (module docstring);
    returns {"version", "metrics"}. `vectors`: the service's ServiceConfig fields of its
    indexes and store (index_type, backend, milvus_*, database_url), so that the new
    version's indexes and records go where the server will look for them."""
    from bridge.service.facade import BridgeService

    train_overrides = _parse_overrides(overrides)
    inputs = {"captions": captions, "image_memory": image_memory, "audio_memory": audio_memory}
    for what, path in inputs.items():
        if path is not None and not Path(path).is_file():
            raise NotFoundError(f"--{what.replace('_', '-')}: no file {path}")
    if not Path(data_dir).is_dir():
        raise NotFoundError(f"--data-dir: no directory {data_dir}")
    config = ServiceConfig(
        data_dir=Path(data_dir),
        clip_model=clip_model,
        clap_model=clap_model,
        device=device,
        initial_bridge=None,  # the server registers its initial bridge itself
        samples_dir=None,
        **(vectors or {}),
    )
    with BridgeService.open(config) as service:
        folder = service.retrain_upload_dir()
        folder.mkdir(parents=True)
        copied: dict[str, str] = {}
        try:
            for what, path in inputs.items():
                if path is not None:
                    dest = folder / f"{what}{Path(path).suffix}"
                    shutil.copyfile(path, dest)
                    copied[what] = dest.relative_to(service.data_dir).as_posix()
            request = RetrainRequest(
                captions_path=copied["captions"],
                image_memory_path=copied.get("image_memory"),
                audio_memory_path=copied.get("audio_memory"),
                train_overrides=train_overrides,
                activate=activate,
                init=init,
                inputs_dir=folder.relative_to(service.data_dir).as_posix(),
            )
            return service.retrain(request, _StderrProgress())
        finally:
            shutil.rmtree(folder, ignore_errors=True)
