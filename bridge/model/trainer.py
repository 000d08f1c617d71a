"""C-MCR trainer: two projectors trained on caption pairs with image/audio memories.

One step (method.md section 3):
  1. pseudo image/audio = memory soft retrieval of each caption (precomputed once per corpus)
  2. Gaussian noise on text and pseudo vectors, re-normalised (fresh every step)
  3. project with the CLIP / CLAP projectors
  4. loss = inter(text) + inter(pseudo) + lambda * intra

Precision (TrainConfig.precision): with "bf16", steps 3-4 run under torch.autocast, so the
projector and logit matrix products take bfloat16 inputs and accumulate in float32, while
log-softmax, the losses, BatchNorm statistics, AdamW and the master weights stay float32. Step 1
is always float32. On a CPU with AVX512-BF16 this makes a step about 1.6x as fast at equal retrieval
metrics (docs/benchmarks.md, "Training throughput").

ProjectorConfig.mode "exmcr" trains the Ex-MCR head instead (bridge/model/exmcr.py, method.md
section 9) with the same data preparation, noise, schedule, validation and report: its corpus
adds audio- and image-centric tuples to the caption pairs, and its step the Ex-MCR loss.

A warm start (`init`, InitialWeights) loads an existing bridge's projector weights and
BatchNorm statistics before the first step instead of a fresh initialisation; the projector
config must be the bridge's own, and the logit scale still follows TrainConfig.temperature.
The report's `init` says where training started: {"from": "fresh"} or the source and sha256.
"""

from __future__ import annotations

import logging
import math
import platform
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bridge.arrays import validate_matrix
from bridge.errors import InvalidInputError
from bridge.model.config import MIN_TRAIN_CAPTIONS, ProjectorConfig, TrainConfig, to_json_dict
from bridge.model.devices import resolve_device, resolve_precision
from bridge.model.exmcr import ExMCRLoss, centred_tuples
from bridge.model.losses import CMCRLoss, LossParts
from bridge.model.memory_retrieval import add_noise, soft_retrieve
from bridge.model.projectors import BridgeCheckpoint, BridgeModel, ExMCRHead, save_checkpoint
from bridge.model.validation import DevSet, EpochSelector, validate_epoch

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[float, str], None]
MAX_LOGIT_SCALE = math.log(100.0)  # CLIP's clamp on the learned logit scale


@dataclass
class TrainResult:
    model: BridgeModel
    report: dict[str, Any]
    checkpoint_dir: Path | None


@dataclass(frozen=True)
class InitialWeights:
    """Weights a training starts from instead of a fresh initialisation (a warm start)."""

    config: ProjectorConfig  # the bridge's projector; the training's must be the same
    state: Mapping[str, torch.Tensor]  # its BridgeModel state dict (CPU copies)
    source: str  # what the report names: a version ("v3") or a checkpoint folder
    sha256: str  # of the weights file the state was read from

    @classmethod
    def from_checkpoint(cls, checkpoint: BridgeCheckpoint, source: str) -> InitialWeights:
        """A copy of a loaded bridge's weights (later changes to its model do not reach it)."""
        state = {k: v.detach().cpu().clone() for k, v in checkpoint.model.state_dict().items()}
        return cls(checkpoint.projector_config, state, source, checkpoint.sha256)

    def record(self) -> dict[str, str]:
        """What the report and the retrain metrics record as `init`."""
        return {"from": self.source, "sha256": self.sha256}

    def conflicts(self, projector: ProjectorConfig) -> list[str]:
        """The projector fields in which `projector` differs from the bridge's, as
        "name X (the bridge's Y)"; widths and text_norms included, as the weights need them."""
        return [
            f"{f.name} {getattr(projector, f.name)!r} ({self.source} has "
            f"{getattr(self.config, f.name)!r})"
            for f in fields(ProjectorConfig)
            if getattr(projector, f.name) != getattr(self.config, f.name)
        ]

    def load_into(self, model: BridgeModel) -> None:
        """Copy the projector weights and BatchNorm statistics into `model`; its logit scale
        stays the configured one (a bridge's scale is that of its own training)."""
        state = {k: v for k, v in self.state.items() if k != "logit_scale"}
        state["logit_scale"] = model.logit_scale.detach().clone()
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise InvalidInputError(
                f"the weights of {self.source} do not fit the projector being trained ({exc})"
            ) from exc


@dataclass
class _Corpus:
    """Normalised training tensors on the training device."""

    clip_text: torch.Tensor  # (N, D_clip)
    clap_text: torch.Tensor  # (N, D_clap)
    pseudo_image: torch.Tensor  # (N, D_clip)
    pseudo_audio: torch.Tensor  # (N, D_clap)


@dataclass
class _Optimisation:
    """Everything one training step needs; `step` runs C-MCR steps 2-4 and the update."""

    model: BridgeModel
    criterion: CMCRLoss
    optimizer: torch.optim.Optimizer
    scheduler: Any
    config: TrainConfig
    noise: float
    generator: torch.Generator
    # A learned scale is clamped like CLIP's (at most 100), but never below the configured
    # starting point, so a fixed temperature under 0.01 is honoured exactly.
    max_log_scale: float
    # "bf16": projector and logit matrix products under autocast (train.py module docstring).
    precision: str = "fp32"
    exmcr: ExMCRLoss | None = None  # set for ProjectorConfig.mode "exmcr": its loss instead

    def scale(self) -> torch.Tensor:
        return self.model.logit_scale.clamp(max=self.max_log_scale).exp()

    def step(
        self, t_clip: torch.Tensor, t_clap: torch.Tensor, v: torch.Tensor, a: torch.Tensor
    ) -> LossParts:
        config, noise, generator = self.config, self.noise, self.generator
        # CWCL's weights come from the frozen caption embeddings as they are, before the noise
        # (noised ones blur the same-concept / other-concept gap from ~0.25 to ~0.08).
        frozen = _cwcl_reference(t_clip, t_clap, config) if config.loss == "cwcl" else None
        t_clip, v = add_noise(t_clip, noise, generator), add_noise(v, noise, generator)
        t_clap, a = add_noise(t_clap, noise, generator), add_noise(a, noise, generator)
        device = t_clip.device.type
        bf16 = self.precision == "bf16"
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            if self.exmcr is not None:
                assert isinstance(self.model.clap, ExMCRHead)
                parts = self.exmcr(self.model.clap, t_clip, t_clap, v, a, self.scale())
            else:
                parts = self._cmcr_parts(t_clip, t_clap, v, a, frozen, bf16)
        self.optimizer.zero_grad(set_to_none=True)
        parts.total.backward()
        self.optimizer.step()
        self.scheduler.step()
        return parts

    def _cmcr_parts(
        self,
        t_clip: torch.Tensor,
        t_clap: torch.Tensor,
        v: torch.Tensor,
        a: torch.Tensor,
        frozen: torch.Tensor | None,
        bf16: bool,
    ) -> LossParts:
        """C-MCR steps 3-4 (under the step's autocast)."""
        mode = self.config.batchnorm_mode
        s_clip_text, s_image = _project_pair(self.model.clip, t_clip, v, mode)
        s_clap_text, s_audio = _project_pair(self.model.clap, t_clap, a, mode)
        # Under bf16 CWCL's logit products still run in float32 (losses._SymmetricContrastive).
        return self.criterion(s_clip_text, s_clap_text, s_image, s_audio, self.scale(), frozen)


_LOSS_PARTS = ("loss", "inter_text", "inter_pseudo", "intra", "target_mass")


def _accumulate(sums: dict[str, float], parts: LossParts) -> None:
    sums["loss"] += float(parts.total.detach())
    sums["inter_text"] += parts.inter_text
    sums["inter_pseudo"] += parts.inter_pseudo
    sums["intra"] += parts.intra
    sums["target_mass"] += parts.target_mass


def _validate_inputs(
    clip_text: np.ndarray,
    clap_text: np.ndarray,
    image_memory: np.ndarray | None,
    audio_memory: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    clip_text = validate_matrix(clip_text, "clip text embeddings")
    clap_text = validate_matrix(clap_text, "clap text embeddings")
    if len(clip_text) != len(clap_text):
        raise InvalidInputError(
            f"clip text has {len(clip_text)} rows but clap text has {len(clap_text)}: "
            "row i of both must encode the same caption"
        )
    if len(clip_text) < MIN_TRAIN_CAPTIONS:
        raise InvalidInputError(
            f"need at least {MIN_TRAIN_CAPTIONS} caption pairs to train, got {len(clip_text)}"
        )
    if image_memory is not None:
        image_memory = validate_matrix(image_memory, "image memory", clip_text.shape[1])
    if audio_memory is not None:
        audio_memory = validate_matrix(audio_memory, "audio memory", clap_text.shape[1])
    return clip_text, clap_text, image_memory, audio_memory


def _to_unit_tensor(array: np.ndarray, device: str) -> torch.Tensor:
    return F.normalize(torch.from_numpy(array).to(device), dim=-1)


def _pseudo(
    text: torch.Tensor, memory: np.ndarray | None, config: TrainConfig, device: str
) -> torch.Tensor:
    """Semantic consistency: memory soft retrieval, or the text itself when memory is off."""
    if not config.use_memory or memory is None:
        return text.clone()
    return soft_retrieve(
        text,
        _to_unit_tensor(memory, device),
        config.memory_temperature,
        chunk_size=config.memory_chunk,
        top_k=config.memory_top_k,
    )


def _pseudo_sources(
    image_memory: np.ndarray | None, audio_memory: np.ndarray | None, config: TrainConfig
) -> tuple[dict[str, str], list[str]]:
    """Where the pseudo image / audio vectors come from, and a warning for each side where the
    captions stand in: then the gap between text and media inside that space is never
    learned, and media queries through the bridge suffer (docs/method.md)."""
    sources: dict[str, str] = {}
    warnings: list[str] = []
    for modality, memory in (("image", image_memory), ("audio", audio_memory)):
        if config.use_memory and memory is not None:
            sources[modality] = "memory"
            continue
        sources[modality] = "captions"
        why = "memory is turned off" if not config.use_memory else f"no {modality} memory given"
        warnings.append(
            f"{why}: the {modality} side trains on caption embeddings in place of pseudo "
            f"{modality} vectors, so the text-{modality} gap is not learned; give unpaired "
            f"{modality} embeddings as memory"
        )
    return sources, warnings


def _project_pair(
    projector: torch.nn.Module, text: torch.Tensor, pseudo: torch.Tensor, mode: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Project text and pseudo vectors: "joint" as one batch through shared BatchNorms,
    "separate" each through its own (the projector has text_norms; TrainConfig.batchnorm_mode)."""
    if mode == "joint":
        out = projector(torch.cat([text, pseudo]))  # (2B, S)
        return out[: len(text)], out[len(text) :]
    return projector(text, "text"), projector(pseudo, "media")


def _cosine_schedule(optimizer: torch.optim.Optimizer, total: int, warmup: int) -> Any:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def library_versions() -> dict[str, str]:
    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
    }
    try:
        import transformers

        versions["transformers"] = transformers.__version__
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass
    return versions


def train_bridge(
    clip_text: np.ndarray,
    clap_text: np.ndarray,
    image_memory: np.ndarray | None = None,
    audio_memory: np.ndarray | None = None,
    config: TrainConfig | None = None,
    projector: ProjectorConfig | None = None,
    out_dir: str | Path | None = None,
    progress_callback: ProgressCallback | None = None,
    encoders: dict[str, str] | None = None,
    recompute_memory_each_step: bool = False,
    dev: DevSet | None = None,
    init: InitialWeights | None = None,
) -> TrainResult:
    """Train the two C-MCR projectors; optionally write a checkpoint folder to `out_dir`.

    `dev`: labelled images and clips (never trained on) whose class-level retrieval across
    the bridge is measured every epoch (bridge/model/validation.py).

    `init`: start from these weights (a warm start) instead of a fresh initialisation; the
    projector (after the widths of the data and text_norms of config.batchnorm_mode are
    applied) must be init.config, else InvalidInputError naming the differences.

    `recompute_memory_each_step` is the naive baseline of the speed benchmark: it redoes the
    memory soft retrieval for every batch instead of once per corpus. Results are identical.
    """
    config = config or TrainConfig()
    clip_text, clap_text, image_memory, audio_memory = _validate_inputs(
        clip_text, clap_text, image_memory, audio_memory
    )
    projector = projector or ProjectorConfig(
        clip_dim=clip_text.shape[1], clap_dim=clap_text.shape[1]
    )
    projector.check_training(config)
    projector = replace(
        projector,
        clip_dim=clip_text.shape[1],
        clap_dim=clap_text.shape[1],
        text_norms=config.batchnorm_mode == "separate",
    )
    conflicts = init.conflicts(projector) if init is not None else []
    if init is not None and conflicts:
        text_norms = any(c.startswith("text_norms") for c in conflicts)
        note = " (batchnorm_mode 'separate' is text_norms True)" if text_norms else ""
        raise InvalidInputError(
            f"a warm start from {init.source} keeps its projector, but this training's differs: "
            + "; ".join(conflicts)
            + note
        )
    if recompute_memory_each_step and projector.mode == "exmcr":
        raise InvalidInputError("recompute_memory_each_step is a C-MCR speed baseline only")
    if dev is not None:
        dev.check_dims(clip_text.shape[1], clap_text.shape[1])
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    torch.manual_seed(config.seed)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    started = time.perf_counter()

    # Held-out slice of captions for the per-epoch validation metric.
    order = np.random.default_rng(config.seed).permutation(len(clip_text))
    n_val = int(round(len(order) * config.val_fraction)) if len(order) >= 40 else 0
    n_val = min(n_val, len(order) - MIN_TRAIN_CAPTIONS)  # val_fraction 0.99 left none to train
    val_idx, train_idx = order[:n_val], order[n_val:]
    all_clip, all_clap = _to_unit_tensor(clip_text, device), _to_unit_tensor(clap_text, device)

    def memory_for(idx: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return (
            _pseudo(all_clip[idx], image_memory, config, device),
            _pseudo(all_clap[idx], audio_memory, config, device),
        )

    pseudo_source, warnings = _pseudo_sources(image_memory, audio_memory, config)
    for warning in warnings:
        logger.warning("%s", warning)
    prep_started = time.perf_counter()
    train_t = torch.from_numpy(train_idx).to(device)
    if recompute_memory_each_step:
        corpus = _Corpus(all_clip[train_t], all_clap[train_t], all_clip[:0], all_clap[:0])
    else:
        pseudo_image, pseudo_audio = memory_for(train_t)
        corpus = _Corpus(all_clip[train_t], all_clap[train_t], pseudo_image, pseudo_audio)
    tuples = {"text": len(train_idx)}
    if projector.mode == "exmcr":
        corpus, tuples = _with_centred_tuples(corpus, image_memory, audio_memory, config, device)
    prep_seconds = time.perf_counter() - prep_started
    val_t = torch.from_numpy(val_idx).to(device)
    # The pseudo-pair signal needs real memories on both sides (with captions standing in it
    # would only repeat the text-to-text metric).
    both_memories = set(pseudo_source.values()) == {"memory"}
    val_pseudo = memory_for(val_t) if n_val >= 2 and both_memories else None
    val_dev = None
    if dev is not None:
        val_dev = (_to_unit_tensor(dev.image, device), _to_unit_tensor(dev.audio, device), dev)

    model = BridgeModel(projector, config.temperature)
    if init is not None:
        init.load_into(model)
    model.to(device)
    model.logit_scale.requires_grad_(config.learn_temperature)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    n_train, n_rows = len(train_idx), len(corpus.clip_text)  # rows: Ex-MCR adds tuples
    batch_size = min(config.batch_size, n_rows)
    steps_per_epoch = max(1, n_rows // batch_size)  # drop the ragged tail: BN wants full batches
    opt = _Optimisation(
        model=model,
        criterion=CMCRLoss(
            config.loss,
            config.intra_weight if config.use_intra else 0.0,
            config.cwcl_reverse,
            config.cwcl_sharpen,
        ),
        optimizer=optimizer,
        scheduler=_cosine_schedule(optimizer, steps_per_epoch * config.epochs, config.warmup_steps),
        config=config,
        noise=config.noise_variance if config.use_noise else 0.0,
        generator=generator,
        max_log_scale=max(MAX_LOGIT_SCALE, math.log(1.0 / config.temperature)),
        precision=precision,
        exmcr=ExMCRLoss(config.intra_weight if config.use_intra else 0.0)
        if projector.mode == "exmcr"
        else None,
    )
    history: list[dict[str, float]] = []
    selector = EpochSelector(config.select_epoch)
    step = 0
    train_seconds = 0.0
    epochs = _progress(range(config.epochs), config.progress)
    model.train()
    for epoch in epochs:
        epoch_started = time.perf_counter()
        perm = torch.randperm(n_rows, generator=generator, device=device)
        sums = dict.fromkeys(_LOSS_PARTS, 0.0)
        for b in range(steps_per_epoch):
            idx = perm[b * batch_size : (b + 1) * batch_size]
            if recompute_memory_each_step:
                v, a = memory_for(train_t[idx])
            else:
                v, a = corpus.pseudo_image[idx], corpus.pseudo_audio[idx]
            _accumulate(sums, opt.step(corpus.clip_text[idx], corpus.clap_text[idx], v, a))
            step += 1
        train_seconds += time.perf_counter() - epoch_started
        record = {k: v / steps_per_epoch for k, v in sums.items()}
        record["epoch"] = epoch + 1
        record["lr"] = float(opt.scheduler.get_last_lr()[0])
        record["temperature"] = float(1.0 / opt.scale().detach())
        if n_val >= 2 or val_dev is not None:
            validation = validate_epoch(
                model, all_clip[val_t], all_clap[val_t], val_pseudo, val_dev
            )
            record.update({f"val_{k}": v for k, v in validation.items()})
        history.append(record)
        selector.offer(model, record)
        _set_postfix(epochs, record)
        if progress_callback is not None:
            progress_callback(
                (epoch + 1) / config.epochs,
                f"epoch {epoch + 1}/{config.epochs} loss {record['loss']:.4f}",
            )
    selected = selector.restore(model, config.epochs)
    model.eval()
    wall = time.perf_counter() - started
    report = {
        "mode": projector.mode,
        "init": init.record() if init is not None else {"from": "fresh"},
        "data": {
            "caption_pairs": int(len(clip_text)),
            "train_pairs": int(n_train),
            "val_pairs": int(n_val),
            "image_memory": int(len(image_memory)) if image_memory is not None else 0,
            "audio_memory": int(len(audio_memory)) if audio_memory is not None else 0,
            "memory_used": bool(
                config.use_memory and (image_memory is not None or audio_memory is not None)
            ),
            "pseudo_source": pseudo_source,
            "tuples": tuples,
            "dev_images": int(len(dev.image)) if dev is not None else 0,
            "dev_audio": int(len(dev.audio)) if dev is not None else 0,
        },
        "warnings": warnings,
        "steps": step,
        "loss_curve": history,
        "final": history[-1] if history else {},
        "selected_epoch": selected,
        "wall_seconds": wall,
        "memory_prep_seconds": prep_seconds,
        "train_seconds": train_seconds,
        "pairs_per_second": (step * batch_size) / train_seconds if train_seconds > 0 else 0.0,
        "device": device,
        "precision": precision,
        "config": to_json_dict(config),
        "projector": to_json_dict(projector),
        "versions": library_versions(),
    }
    checkpoint_dir = None
    if out_dir is not None:
        checkpoint_dir = save_checkpoint(out_dir, model.cpu(), config, report, encoders)
        model.to(device)
    return TrainResult(model=model, report=report, checkpoint_dir=checkpoint_dir)


def _with_centred_tuples(
    corpus: _Corpus,
    image_memory: np.ndarray | None,
    audio_memory: np.ndarray | None,
    config: TrainConfig,
    device: str,
) -> tuple[_Corpus, dict[str, int]]:
    """Ex-MCR's corpus: the caption pairs (text-centric tuples) followed by the audio- and
    image-centric tuples of the memories (bridge/model/exmcr.py); and the count of each."""
    image, audio = (
        _to_unit_tensor(m, device) if m is not None and config.use_memory else None
        for m in (image_memory, audio_memory)
    )
    parts = [(corpus.clip_text, corpus.clap_text, corpus.pseudo_image, corpus.pseudo_audio)]
    counts = {"text": len(corpus.clip_text)}
    centred = centred_tuples(
        corpus.clip_text,
        corpus.clap_text,
        image,
        audio,
        config.memory_temperature,
        chunk_size=config.memory_chunk,
        top_k=config.memory_top_k,
    )
    for centre, rows in centred.items():
        parts.append(rows)
        counts[centre] = len(rows[0])
    fields = (torch.cat(column) for column in zip(*parts, strict=True))
    return _Corpus(*fields), counts


def _cwcl_reference(
    t_clip: torch.Tensor, t_clap: torch.Tensor, config: TrainConfig
) -> torch.Tensor:
    """Frozen caption embeddings that define the CWCL weights (clip, clap, or the mean of both
    similarity structures — implemented by concatenating the unit vectors, whose cosine is the
    mean of the two cosines). Clean (called before the noise), float32, no gradient."""
    t_clip, t_clap = t_clip.detach().float(), t_clap.detach().float()
    if config.cwcl_weight_source == "clip":
        return t_clip
    if config.cwcl_weight_source == "clap":
        return t_clap
    return torch.cat([F.normalize(t_clip, dim=-1), F.normalize(t_clap, dim=-1)], dim=-1)


def _progress(iterable: range, enabled: bool) -> Any:
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc="train", unit="epoch", file=sys.stderr, leave=False)


def _set_postfix(bar: Any, record: dict[str, float]) -> None:
    if hasattr(bar, "set_postfix"):
        shown = {"loss": f"{record['loss']:.3f}"}
        if "val_mean_r_at_1" in record:
            shown["val_r1"] = f"{record['val_mean_r_at_1']:.3f}"
        bar.set_postfix(shown)
