"""C-MCR projectors, the Ex-MCR head and the bridge checkpoint format.

Checkpoint folder (one per bridge version):
    config.json          {"format", "format_version", "projector": ProjectorConfig (with its
                          mode; a config without one is "cmcr"), "train": TrainConfig | null,
                          "encoders": {"clip": id, "clap": id}}
    weights.safetensors  state dict of BridgeModel (clip.*, clap.*, logit_scale); an Ex-MCR
                         bridge has no clip.* weights, and its clap.* keys are those of the
                         authors' Ex_MCR_Head under "clap." (clap.Head1.weight,
                         clap.Head2.mlp1.net1.0.weight, ...)
    report.json          data sizes, loss curve, metrics, wall time, library versions (an
                         imported bridge: its source file, sha256 and license instead)
    README.md            optional model card (an imported bridge has one: bridge/model/imports.py)
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bridge.arrays import l2_normalize, validate_matrix
from bridge.errors import (
    CheckpointCorruptError,
    CheckpointError,
    InvalidInputError,
    NotFoundError,
    disk_full_as_error,
)
from bridge.model.config import ProjectorConfig, TrainConfig, from_dict, to_json_dict

Space = Literal["clip", "clap"]
# What a projector input is: media embeddings (images, audio, and the pseudo vectors standing
# for them in training) or caption text; only projectors with text_norms tell them apart.
InputKind = Literal["media", "text"]
CHECKPOINT_FORMAT = "modality-bridge/checkpoint"
CHECKPOINT_FORMAT_VERSION = 1
CHECKPOINT_FILES = ("config.json", "weights.safetensors", "report.json")


class Projector(nn.Module):
    """MLP with BatchNorm after every linear layer and ReLU between them; output L2-normalised.

    With num_layers=2 this is the official C-MCR projector:
    Linear(in, hidden) -> BN -> ReLU -> Linear(hidden, out) -> BN -> normalise.
    With `text_norms`, caption text ("text" inputs) goes through BatchNorms of its own
    (`text_norms.<i>`), media through the main ones (ProjectorConfig.text_norms).
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        out_dim: int,
        num_layers: int = 2,
        text_norms: bool = False,
    ) -> None:
        super().__init__()
        widths = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        layers: list[nn.Module] = []
        for i in range(num_layers):
            layers += [nn.Linear(widths[i], widths[i + 1]), nn.BatchNorm1d(widths[i + 1])]
            if i < num_layers - 1:
                layers.append(nn.ReLU(inplace=True))
        self.net = nn.Sequential(*layers)
        self.text_norms = (
            nn.ModuleList(nn.BatchNorm1d(width) for width in widths[1:]) if text_norms else None
        )

    def forward(self, x: torch.Tensor, kind: InputKind = "media") -> torch.Tensor:
        if kind == "media" or self.text_norms is None:
            return F.normalize(self.net(x), dim=-1)  # (B, out_dim)
        norms = iter(self.text_norms)
        for layer in self.net:
            x = next(norms)(x) if isinstance(layer, nn.BatchNorm1d) else layer(x)
        return F.normalize(x, dim=-1)  # (B, out_dim)


class UnitNormalize(nn.Module):
    """The CLIP side of an Ex-MCR bridge: CLIP is the shared space, so a CLIP embedding only
    needs unit length. No parameters; `kind` is accepted like a Projector's and ignored."""

    def forward(self, x: torch.Tensor, kind: InputKind = "media") -> torch.Tensor:
        return F.normalize(x, dim=-1)  # (B, D_clip)


class ExMCRBlock(nn.Module):
    """One MLP block of the Ex-MCR head (the authors' `MLP`, exmcr/exmcr_projector.py):
    net1 = Linear(channel, hidden) -> BN -> ReLU, net2 = Linear(hidden, channel) -> BN.
    No residual connection."""

    def __init__(self, channel: int, hidden: int) -> None:
        super().__init__()
        self.net1 = nn.Sequential(
            nn.Linear(channel, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True)
        )
        self.net2 = nn.Sequential(nn.Linear(hidden, channel), nn.BatchNorm1d(channel))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net2(self.net1(x))  # (B, channel)


class ExMCRProjector(nn.Module):
    """The MLP part of the Ex-MCR head (the authors' `Projector`): blocks mlp1, mlp2, ...,
    then L2-normalise; linear weights Xavier-uniform at initialisation, as theirs."""

    def __init__(self, channel: int, hidden: int, blocks: int = 2) -> None:
        super().__init__()
        for i in range(blocks):
            self.add_module(f"mlp{i + 1}", ExMCRBlock(channel, hidden))
        for parameter in self.parameters():
            if parameter.dim() > 1:
                nn.init.xavier_uniform_(parameter)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.children():
            x = block(x)
        return F.normalize(x, dim=-1)  # (B, channel)


class ExMCRHead(nn.Module):
    """The Ex-MCR head that maps CLAP into CLIP (the authors' `Ex_MCR_Head`): `Head1`, a
    linear layer initialised to the identity, then `Head2`, the MLP blocks. Module names
    match theirs, so a released ex_clap.pt state dict loads under the prefix `clap.`.
    Head1 alone is what the intra-space term trains (bridge/model/exmcr.py)."""

    def __init__(self, clap_dim: int, clip_dim: int, hidden_dim: int, blocks: int = 2) -> None:
        super().__init__()
        self.Head1 = nn.Linear(clap_dim, clip_dim)
        nn.init.eye_(self.Head1.weight)
        self.Head2 = ExMCRProjector(clip_dim, hidden_dim, blocks)

    def forward(self, x: torch.Tensor, kind: InputKind = "media") -> torch.Tensor:
        return self.Head2(self.Head1(x))  # (B, D_clip)


class BridgeModel(nn.Module):
    """The two projectors (CLIP space, CLAP space) and an optional learned logit scale.

    mode "exmcr": `clip` is UnitNormalize and `clap` the ExMCRHead (CLIP is the shared space).
    """

    def __init__(self, config: ProjectorConfig, temperature: float = 0.01) -> None:
        super().__init__()
        self.config = config
        self.clip: nn.Module
        self.clap: nn.Module
        if config.mode == "exmcr":
            self.clip = UnitNormalize()
            self.clap = ExMCRHead(
                config.clap_dim, config.clip_dim, config.hidden_dim, config.num_layers
            )
        else:
            shape = (config.hidden_dim, config.shared_dim, config.num_layers, config.text_norms)
            self.clip = Projector(config.clip_dim, *shape)
            self.clap = Projector(config.clap_dim, *shape)
        # log(1/tau), CLIP-style; only trained when TrainConfig.learn_temperature is set.
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))

    def projector(self, space: Space) -> nn.Module:
        if space == "clip":
            return self.clip
        if space == "clap":
            return self.clap
        raise InvalidInputError(f"space must be 'clip' or 'clap', got {space!r}")


@dataclass
class BridgeCheckpoint:
    """A loaded bridge: config, model in eval mode, report and the weights' sha256."""

    path: Path
    projector_config: ProjectorConfig
    train_config: TrainConfig | None
    model: BridgeModel
    report: dict[str, Any] = field(default_factory=dict)
    encoders: dict[str, str] = field(default_factory=dict)
    sha256: str = ""
    device: str = "cpu"

    def input_dim(self, space: Space) -> int:
        return self.projector_config.clip_dim if space == "clip" else self.projector_config.clap_dim

    @torch.no_grad()
    def project(
        self,
        space: Space,
        vectors: np.ndarray,
        batch_size: int = 8192,
        kind: InputKind = "media",
    ) -> np.ndarray:
        """Map raw encoder embeddings (any norm) of `space` into the shared space.

        Returns L2-normalised float32 (N, shared_dim). Inputs are L2-normalised first,
        as in training. `kind`: "text" for caption embeddings (matters only with text_norms).
        """
        projector = self.model.projector(space)
        vectors = validate_matrix(vectors, f"{space} embeddings", self.input_dim(space))
        vectors = l2_normalize(vectors)
        out = np.empty((len(vectors), self.projector_config.shared_dim), dtype=np.float32)
        for start in range(0, len(vectors), batch_size):
            chunk = torch.from_numpy(vectors[start : start + batch_size]).to(self.device)
            out[start : start + batch_size] = projector(chunk, kind).float().cpu().numpy()
        return out


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _umask() -> int:
    """The process umask, read without changing it (Linux); 0o022 where it cannot be read."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def _share_like_umask(folder: Path) -> None:
    """Give the folder and its files the modes a plain mkdir / open would (mkdtemp makes the
    folder 0700 and safetensors writes 0600), so that a checkpoint mounted into a container
    that runs as another user stays readable."""
    mask = _umask()
    folder.chmod(0o777 & ~mask)
    for path in folder.iterdir():
        path.chmod(0o666 & ~mask)


def save_checkpoint(
    out_dir: str | Path,
    model: BridgeModel,
    train_config: TrainConfig | None,
    report: dict[str, Any],
    encoders: dict[str, str] | None = None,
    extra_files: Mapping[str, str] | None = None,
) -> Path:
    """Write a checkpoint folder atomically: build it in a temp sibling, then rename.

    An existing folder at `out_dir` is replaced only once the new one is complete.
    `extra_files`: more text files of the folder by name (e.g. an imported bridge's README.md).
    A full disk is StorageFullError; the temp folder is removed and `out_dir` left as it was.
    """
    out_dir = Path(out_dir)
    with disk_full_as_error(f"the checkpoint {out_dir}"):
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        _write_checkpoint(out_dir, model, train_config, report, encoders, extra_files)
    return out_dir


def _write_checkpoint(
    out_dir: Path,
    model: BridgeModel,
    train_config: TrainConfig | None,
    report: dict[str, Any],
    encoders: dict[str, str] | None,
    extra_files: Mapping[str, str] | None,
) -> None:
    from safetensors.torch import save_file

    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    try:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / "weights.safetensors"))
        config = {
            "format": CHECKPOINT_FORMAT,
            "format_version": CHECKPOINT_FORMAT_VERSION,
            "projector": to_json_dict(model.config),
            "train": to_json_dict(train_config) if train_config else None,
            "encoders": encoders or {},
        }
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        (tmp / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
        for name, text in (extra_files or {}).items():
            if Path(name).name != name or name in CHECKPOINT_FILES:
                raise InvalidInputError(f"extra checkpoint file name {name!r} is not allowed")
            (tmp / name).write_text(text)
        _share_like_umask(tmp)
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_checkpoint(
    path: str | Path, device: str = "cpu", expected_sha256: str | None = None
) -> BridgeCheckpoint:
    """Load a checkpoint folder written by save_checkpoint; the model is in eval mode.

    `expected_sha256`: the weights' hash recorded for this checkpoint (a version's, in the
    store); checked before the weights are read. Missing or unreadable files and a hash that
    differs are CheckpointCorruptError naming the file.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_dir():
        raise NotFoundError(f"checkpoint folder not found: {path}")
    config_path, weights_path = path / "config.json", path / "weights.safetensors"
    for required in (config_path, weights_path):
        if not required.is_file():
            raise CheckpointCorruptError(f"checkpoint {path} is missing {required.name}")
    sha256 = file_sha256(weights_path)
    if expected_sha256 and sha256 != expected_sha256:
        raise CheckpointCorruptError(
            f"{weights_path} was changed or damaged on disk: its sha256 is {sha256[:16]}..., "
            f"the version records {expected_sha256[:16]}..."
        )
    try:
        config = json.loads(config_path.read_text())
        projector_config = from_dict(ProjectorConfig, config["projector"])
        train_config = from_dict(TrainConfig, config["train"]) if config.get("train") else None
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise CheckpointCorruptError(f"checkpoint {path}: unreadable config.json ({exc})") from exc
    temperature = train_config.temperature if train_config else 0.01
    model = BridgeModel(projector_config, temperature)
    try:
        weights = load_file(str(weights_path))
    except (SafetensorError, OSError) as exc:
        raise CheckpointCorruptError(f"{weights_path} is unreadable ({exc})") from exc
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {path}: weights do not fit config.json ({exc})") from exc
    model.to(device).eval()
    report_path = path / "report.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    return BridgeCheckpoint(
        path=path,
        projector_config=projector_config,
        train_config=train_config,
        model=model,
        report=report,
        encoders=dict(config.get("encoders") or {}),
        sha256=sha256,
        device=device,
    )
