"""Whether a bridge belongs to the encoders the service runs.

A bridge's config.json records the encoder ids it was made for (`encoders`: trained bridges
record the ids the encoders were loaded with, EncoderPair.encoder_ids(); imported ones the
published pair or --clip/--clap). A projector only means something on embeddings of those
encoders, so the service refuses to activate (or start with) a bridge recorded for others
(bridge/service/versions.py). A bridge that records none (older ones) is accepted.

A recorded id and a running id name the same encoder when:
- they are the same string;
- they resolve to the same local file or folder (relative paths from the working directory);
- one is a hub id and the other its snapshot folder in the Hugging Face cache
  (`.../models--ORG--NAME/snapshots/REV`);
- the recorded id is a bare checkpoint file name (`630k-fusion-best.pt`: what an imported
  bridge records for LAION-CLAP by default) and the running id is a file of that name (or of
  a known other name of it, bridge/model/imports.py CLAP_FILE_ALIASES);
- the recorded id is a relative path and the running one an existing local path ending with
  it (a bridge trained with `models/demo-clip` and served from another working directory).
Anything else differs: the same weights under two unrelated folder names are not recognised
(re-import or retrain with the id the service runs).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from bridge.model.imports import CLAP_FILE_ALIASES

ENCODER_KINDS = ("clip", "clap")
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
_HUB_CACHE = re.compile(r"models--(?P<org>[^/]+?)--(?P<name>[^/]+)/snapshots/[^/]+$")


def _local(model_id: str) -> Path | None:
    """The resolved local path `model_id` names, or None when it names none."""
    try:
        path = Path(model_id).expanduser()
        return path.resolve() if path.exists() else None
    except (OSError, RuntimeError, ValueError):
        return None


def canonical(model_id: str) -> str:
    """A hub id for a Hugging Face cache snapshot, the resolved path for a local file or
    folder, else the id itself (without trailing slashes)."""
    text = model_id.strip().rstrip("/") or model_id
    local = _local(text)
    if local is not None:
        text = local.as_posix()
    match = _HUB_CACHE.search(text)
    return f"{match['org']}/{match['name']}" if match else text


def _file_name(name: str) -> str:
    return CLAP_FILE_ALIASES.get(name, name)


def same_encoder(recorded: str, running: str) -> bool:
    """Whether a bridge recorded for `recorded` fits embeddings of `running` (module docstring)."""
    if recorded == running:
        return True
    running_id = canonical(running)
    if canonical(recorded) == running_id:
        return True
    wanted = PurePosixPath(recorded.strip().rstrip("/"))
    if len(wanted.parts) == 1 and wanted.suffix in CHECKPOINT_SUFFIXES:
        return _file_name(wanted.name) == _file_name(PurePosixPath(running_id).name)
    if not wanted.is_absolute() and ".." not in wanted.parts and _local(running) is not None:
        parts = PurePosixPath(running_id).parts
        return len(parts) >= len(wanted.parts) and parts[-len(wanted.parts) :] == wanted.parts
    return False


def encoder_mismatch(recorded: Mapping[str, str], running: Mapping[str, str]) -> str | None:
    """None when a bridge recorded for `recorded` may run under `running`; else a sentence
    naming both pairs. Kinds a bridge does not record are not checked."""
    differ = [
        kind
        for kind in ENCODER_KINDS
        if recorded.get(kind) and running.get(kind)
        and not same_encoder(recorded[kind], running[kind])
    ]  # fmt: skip
    if not differ:
        return None
    made = " and ".join(f"{kind.upper()} {recorded[kind]!r}" for kind in differ)
    runs = " and ".join(f"{kind.upper()} {running[kind]!r}" for kind in differ)
    return (
        f"was made for {made}, but the service runs {runs}: its projections would not match "
        "these encoders' embeddings (serve it with BRIDGE_CLIP_MODEL / BRIDGE_CLAP_MODEL set to "
        "the encoders it records, or re-import it with --clip/--clap; "
        "docs/published-model.md)"
    )
