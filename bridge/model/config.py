"""Frozen configuration dataclasses, saved as config.json beside the bridge weights."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from bridge.errors import InvalidInputError
from bridge.types import DEVICE_NAMES, parse_device

LossName = Literal["infonce", "cwcl"]
CWCLReverse = Literal["cwcl", "infonce"]
WeightSource = Literal["clip", "clap", "mean"]
BatchNormMode = Literal["joint", "separate"]
Precision = Literal["auto", "fp32", "bf16"]
# "cmcr": two projectors into a new shared space (method.md sections 1-3). "exmcr": CLIP is
# the shared space and one head maps CLAP into it (method.md section 9).
BridgeMode = Literal["cmcr", "exmcr"]
BRIDGE_MODES: tuple[str, ...] = get_args(BridgeMode)
# Which epoch's weights training keeps: the last, or the best by a validation signal
# (bridge/model/validation.py; val_dev_p_at_1 needs a labelled dev set).
SelectEpoch = Literal["last", "val_mean_r_at_1", "val_pseudo_audio_to_image_map", "val_dev_p_at_1"]
PRECISIONS: tuple[str, ...] = get_args(Precision)


@dataclass(frozen=True)
class ProjectorConfig:
    """Shape of the two projectors (method.md section 2: the official C-MCR architecture).

    num_layers=2 gives Linear(in, hidden) -> BN -> ReLU -> Linear(hidden, shared) -> BN.

    mode "exmcr" (method.md section 9): the CLIP side is a parameter-free normalisation and
    the CLAP side the Ex-MCR head, Linear(clap_dim, clip_dim) and then `num_layers` MLP
    blocks Linear(clip_dim, hidden_dim) -> BN -> ReLU -> Linear(hidden_dim, clip_dim) -> BN
    (2 blocks, hidden 1024: the released head). The shared space is CLIP's, so shared_dim is
    set to clip_dim whatever is given.
    """

    clip_dim: int = 512
    clap_dim: int = 512
    hidden_dim: int = 1024
    shared_dim: int = 512
    num_layers: int = 2
    # BatchNorms of their own for caption text (TrainConfig.batchnorm_mode "separate"): text is
    # then normalised with text statistics and media with media statistics, in training and
    # at inference alike. False: one BatchNorm per layer for both (the official C-MCR head).
    text_norms: bool = False
    mode: BridgeMode = "cmcr"

    def __post_init__(self) -> None:
        for name in ("clip_dim", "clap_dim", "hidden_dim", "shared_dim", "num_layers"):
            if getattr(self, name) < 1:
                raise InvalidInputError(f"projector {name} must be >= 1, got {getattr(self, name)}")
        if self.mode not in BRIDGE_MODES:
            raise InvalidInputError(f"projector mode must be cmcr or exmcr, got {self.mode!r}")
        if self.mode == "exmcr":
            if self.text_norms:
                raise InvalidInputError(
                    "an Ex-MCR head has one BatchNorm per layer (batchnorm_mode 'joint')"
                )
            object.__setattr__(self, "shared_dim", self.clip_dim)  # the shared space is CLIP

    def check_training(self, train: TrainConfig) -> None:
        """InvalidInputError for training options this mode has no counterpart for (refused,
        not ignored): Ex-MCR trains with InfoNCE and one BatchNorm per layer."""
        if self.mode != "exmcr":
            return
        if train.loss != "infonce":
            raise InvalidInputError("Ex-MCR trains with loss 'infonce' (CWCL is a C-MCR option)")
        if train.batchnorm_mode != "joint":
            raise InvalidInputError(
                "an Ex-MCR head has one BatchNorm per layer (batchnorm_mode 'joint')"
            )


# Caption pairs a training needs; it keeps them out of its validation slice too.
MIN_TRAIN_CAPTIONS = 4


@dataclass(frozen=True)
class TrainConfig:
    """Training hyper-parameters; the defaults are the benchmarks' choice (docs/benchmarks.md)."""

    loss: LossName = "infonce"
    epochs: int = 30
    batch_size: int = 4096
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 0
    seed: int = 0
    device: str = "auto"
    # Contrastive temperature; learn_temperature turns it into a CLIP-style logit scale.
    # 0.05, not the 0.01 of the reference fork: both benchmarks (synthetic grid, digits dev
    # split) rank 0.05 above 0.01 (docs/benchmarks.md).
    temperature: float = 0.05
    learn_temperature: bool = False
    # Semantic consistency: softmax(text @ memory.T / memory_temperature) @ memory.
    use_memory: bool = True
    memory_temperature: float = 0.01
    memory_chunk: int = 4096
    memory_top_k: int = 0  # 0 = exact softmax over the whole memory
    # Semantic completion: Gaussian noise of this variance, then re-normalisation.
    use_noise: bool = True
    noise_variance: float = 0.004
    # Intra-MCR alignment weight (lambda); 0 or use_intra=False disables it.
    use_intra: bool = True
    intra_weight: float = 0.1
    # CWCL options (method.md section 4).
    cwcl_reverse: CWCLReverse = "infonce"
    cwcl_weight_source: WeightSource = "mean"
    cwcl_sharpen: float = 1.0
    # "joint": text and pseudo vectors are normalised as one batch by shared BatchNorms.
    # "separate": each by BatchNorms of its own (ProjectorConfig.text_norms), whose running
    # statistics then match what training used for that input type.
    batchnorm_mode: BatchNormMode = "joint"
    # Matrix products of the projectors and the contrastive logits: "bf16" runs them under
    # torch.autocast (bfloat16 inputs, float32 accumulation) while log-softmax, losses, BatchNorm
    # statistics, the optimizer and the weights stay float32. "auto" picks bf16 where the device
    # has native bfloat16 (CUDA with bf16, CPUs with AVX512-BF16/AMX) and fp32 elsewhere.
    # The memory soft retrieval is always float32 (its temperature of 0.01 needs the precision).
    precision: Precision = "auto"
    val_fraction: float = 0.05
    select_epoch: SelectEpoch = "last"
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        checks = {
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 2,
            "lr": self.lr > 0,
            "temperature": self.temperature > 0,
            "memory_temperature": self.memory_temperature > 0,
            "memory_chunk": self.memory_chunk >= 1,
            "noise_variance": self.noise_variance >= 0,
            "intra_weight": self.intra_weight >= 0,
            "cwcl_sharpen": self.cwcl_sharpen > 0,
            "val_fraction": 0 <= self.val_fraction < 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            values = ", ".join(f"{n}={getattr(self, n)!r}" for n in bad)
            raise InvalidInputError(f"invalid training option(s): {values}")
        if self.loss not in ("infonce", "cwcl"):
            raise InvalidInputError(f"loss must be 'infonce' or 'cwcl', got {self.loss!r}")
        if self.select_epoch not in get_args(SelectEpoch):
            raise InvalidInputError(
                f"select_epoch must be one of {list(get_args(SelectEpoch))}, "
                f"got {self.select_epoch!r}"
            )
        if self.precision not in PRECISIONS:
            raise InvalidInputError(f"precision must be auto, fp32 or bf16, got {self.precision!r}")
        if parse_device(self.device) is None:
            raise InvalidInputError(f"device must be {DEVICE_NAMES}, got {self.device!r}")


def to_json_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def save_json(path: Path, payload: dict[str, Any]) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def from_dict(cls: type, payload: dict[str, Any]) -> Any:
    """Build a config dataclass from a dict, ignoring unknown keys (forward compatibility)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in payload.items() if k in names})


def with_overrides(
    train: TrainConfig, projector: ProjectorConfig, overrides: dict[str, Any]
) -> tuple[TrainConfig, ProjectorConfig]:
    """`train` and `projector` with the fields named in one flat dict replaced (a benchmark
    variant such as {"loss": "cwcl"} or {"mode": "exmcr"}); an unknown name is an error."""
    projector_keys = {f.name for f in dataclasses.fields(ProjectorConfig)}
    train_keys = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = set(overrides) - projector_keys - train_keys
    if unknown:
        raise InvalidInputError(f"unknown configuration field(s) {sorted(unknown)}")
    return (
        dataclasses.replace(train, **{k: v for k, v in overrides.items() if k in train_keys}),
        dataclasses.replace(
            projector, **{k: v for k, v in overrides.items() if k in projector_keys}
        ),
    )
