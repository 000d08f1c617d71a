"""A retrain request checked before any job exists, so that a bad one is a 4xx, not a job that
fails after its 202: captions, memory files, train overrides, the device, and a warm start
(`init: "active"`) whose overrides would change the projector it starts from.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args, get_origin, get_type_hints

import numpy as np

from bridge.errors import InvalidInputError
from bridge.io import read_captions
from bridge.model.config import MIN_TRAIN_CAPTIONS, ProjectorConfig, TrainConfig
from bridge.model.devices import resolve_device
from bridge.storage.layout import DataLayout
from bridge.types import MAX_CAPTIONS, RETRAIN_INITS, RetrainRequest

if TYPE_CHECKING:
    from bridge.model.trainer import InitialWeights

EVAL_HOLDOUT_MIN_CAPTIONS = 40  # below this every caption trains and evaluation is in-sample
EVAL_HOLDOUT_FRACTION = 0.1

# Overrides of the projector ("mode": "cmcr" or "exmcr"); the rest copies the active bridge.
_PROJECTOR_KEYS = ("hidden_dim", "shared_dim", "num_layers", "mode")
_TRAIN_KEYS = tuple(f.name for f in dataclasses.fields(TrainConfig))
OVERRIDE_KEYS = tuple(sorted(set(_TRAIN_KEYS) | set(_PROJECTOR_KEYS)))
# Ceilings on what one request may ask of the machine (the configs' own checks give the
# floors): a projector of 2**31 hidden units, or a billion epochs, is a request to refuse,
# not a job to start. Generous for real corpora; the served OpenAPI states them.
OVERRIDE_MAXIMA: dict[str, int | float] = {
    "epochs": 10_000,
    "batch_size": 65_536,
    "warmup_steps": 10_000_000,
    "memory_chunk": 1_048_576,
    "memory_top_k": 1_048_576,
    "hidden_dim": 16_384,
    "shared_dim": 8_192,
    "num_layers": 16,
}


@dataclass(frozen=True)
class RetrainPlan:
    """A validated retrain request."""

    version: str
    captions: list[str]
    image_memory_path: Path | None
    audio_memory_path: Path | None
    train_config: TrainConfig
    projector: ProjectorConfig | None
    activate: bool
    params: dict[str, Any] = field(default_factory=dict)  # what the job record shows
    inputs_dir: Path | None = None  # removed when the job ends (RetrainRequest.inputs_dir)
    # A warm start: the version whose weights training starts from (init "active"), and
    # those weights, attached by the pipeline from the same active version it planned with.
    init_from: str | None = None
    init: InitialWeights | None = field(default=None, repr=False)

    @property
    def mode(self) -> str:
        """The bridge mode this retrain trains (ProjectorConfig.mode)."""
        return self.projector.mode if self.projector is not None else ProjectorConfig().mode


@functools.cache
def override_types() -> dict[str, Any]:
    """Each train_overrides key's type (a TrainConfig or ProjectorConfig field's)."""
    return {**get_type_hints(TrainConfig), **get_type_hints(ProjectorConfig)}


def _check_override_type(key: str, value: Any) -> None:
    """InvalidInputError unless ``value`` has the type of the TrainConfig/ProjectorConfig
    field ``key`` (JSON gives no types of its own: epochs 1.5 or a string hidden_dim used to
    pass here and fail inside the job, after the 202)."""
    expected = override_types()[key]
    if get_origin(expected) is Literal:
        if value not in get_args(expected):
            raise InvalidInputError(
                f"train_overrides.{key} must be one of {list(get_args(expected))}, got {value!r}"
            )
        return
    kinds = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    ok = {
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, int | float) and not isinstance(value, bool),
        bool: isinstance(value, bool),
        str: isinstance(value, str),
    }.get(expected, True)  # other fields (`extra`) are checked by the config itself
    if not ok:
        raise InvalidInputError(f"train_overrides.{key} must be {kinds[expected]}, got {value!r}")
    ceiling = OVERRIDE_MAXIMA.get(key)
    if ceiling is not None and value > ceiling:
        raise InvalidInputError(f"train_overrides.{key} must be at most {ceiling}, got {value!r}")


def overrides_json_schema() -> dict[str, Any]:
    """JSON Schema of a request's `train_overrides`: each key taken here, with its type and,
    where it has one, its ceiling (the served OpenAPI states it: app/schemas/admin.py)."""
    kinds: dict[Any, dict[str, Any]] = {
        int: {"type": "integer"},
        float: {"type": "number"},
        bool: {"type": "boolean"},
        str: {"type": "string"},
    }
    properties: dict[str, Any] = {}
    for key in OVERRIDE_KEYS:
        kind = override_types()[key]
        prop = {"enum": list(get_args(kind))} if get_origin(kind) is Literal else kinds.get(kind)
        properties[key] = dict(prop or {})  # `extra`: any JSON
        if key in OVERRIDE_MAXIMA:
            properties[key]["maximum"] = OVERRIDE_MAXIMA[key]
    return {"type": "object", "properties": properties, "additionalProperties": False}


def split_overrides(
    overrides: dict[str, Any], base_projector: ProjectorConfig | None, device: str
) -> tuple[TrainConfig, ProjectorConfig | None]:
    """TrainConfig from the TrainConfig fields of `overrides`; hidden_dim/shared_dim/num_layers
    and mode go to the projector (which otherwise copies the active bridge's shape and mode)."""
    if not isinstance(overrides, dict):
        raise InvalidInputError("train_overrides must be a JSON object")
    unknown = sorted(set(overrides) - set(OVERRIDE_KEYS))
    if unknown:
        raise InvalidInputError(
            f"unknown train_overrides key(s) {unknown}; allowed: {list(OVERRIDE_KEYS)}"
        )
    for key, value in overrides.items():
        _check_override_type(key, value)
    if "device" in overrides:  # a device this machine lacks failed only inside the job
        resolve_device(overrides["device"])
    train_kwargs: dict[str, Any] = {"device": device, "progress": False}
    train_kwargs.update({k: v for k, v in overrides.items() if k in _TRAIN_KEYS})
    try:
        config = TrainConfig(**train_kwargs)
        projector = base_projector
        shape = {k: v for k, v in overrides.items() if k in _PROJECTOR_KEYS}
        if shape:
            base = base_projector or ProjectorConfig()
            if "mode" in shape:  # text_norms follows batchnorm_mode in the trainer
                base = dataclasses.replace(base, text_norms=False)
            projector = dataclasses.replace(base, **shape)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"invalid train_overrides: {exc}") from exc
    if projector is not None:
        projector.check_training(config)  # e.g. Ex-MCR with CWCL: a 422, not a failed job
    return config, projector


def _warm_start_base(request: RetrainRequest, base_version: str | None) -> str | None:
    """The version a warm start starts from (init "active"), or None for a fresh start."""
    if request.init not in RETRAIN_INITS:
        raise InvalidInputError(f"init must be one of {list(RETRAIN_INITS)}, got {request.init!r}")
    if request.init == "fresh":
        return None
    if base_version is None:
        raise InvalidInputError("init 'active' needs an active bridge version to start from")
    return base_version


def _warm_start_overrides(overrides: Any, base: ProjectorConfig) -> Any:
    """A warm start trains the BatchNorms the base has: text_norms (batchnorm_mode
    'separate') unless the overrides say otherwise (then the conflict check refuses it)."""
    if isinstance(overrides, dict) and "batchnorm_mode" not in overrides and base.text_norms:
        return {**overrides, "batchnorm_mode": "separate"}
    return overrides


def check_warm_start(
    base_version: str, base: ProjectorConfig, projector: ProjectorConfig, config: TrainConfig
) -> None:
    """InvalidInputError naming every override that would change the projector of the version
    a warm start starts from (its weights fit only that shape and mode)."""
    trained = dataclasses.replace(projector, text_norms=config.batchnorm_mode == "separate")
    conflicts = [
        f"{name} {getattr(trained, name)!r} ({base_version} has {getattr(base, name)!r})"
        for name in (*_PROJECTOR_KEYS, "text_norms")
        if getattr(trained, name) != getattr(base, name)
    ]
    if conflicts:
        names = ", ".join(c.split()[0] for c in conflicts).replace("text_norms", "batchnorm_mode")
        raise InvalidInputError(
            f"init 'active' starts from {base_version}'s weights, which fit only its projector; "
            f"train_overrides change it: {'; '.join(conflicts)}. Drop {names} from "
            "train_overrides, or retrain with init 'fresh'"
        )


def check_memory_header(path: Path, what: str, dim: int | None) -> None:
    """InvalidInputError unless ``path`` is a .npy file of a float (N >= 1, dim) array whose
    data is all there: read from the header and a memory map, not the data (memories can be
    hundreds of MB; the job checks the values). A wrong width or a truncated file used to
    pass with a 202 and fail inside the job."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:  # not .npy, a pickle, or fewer bytes than declared
        raise InvalidInputError(f"{what}: not a readable .npy array ({exc})") from exc
    if not isinstance(array, np.ndarray):  # np.load opens a .npz (zip) archive as an NpzFile
        array.close()
        raise InvalidInputError(f"{what}: a .npz archive, not a .npy array")
    shape, dtype = array.shape, array.dtype
    del array  # close the map
    if len(shape) != 2 or shape[0] == 0 or dtype.kind != "f":
        raise InvalidInputError(
            f"{what}: expected a 2-D float array (N, D) with N >= 1, got {dtype} {shape}"
        )
    if dim is not None and shape[1] != dim:
        raise InvalidInputError(
            f"{what}: rows have {shape[1]} values, the encoder's embeddings {dim}"
        )


def _captions(request: RetrainRequest, layout: DataLayout) -> list[str]:
    captions: list[str] = []
    if request.captions is not None:
        if not isinstance(request.captions, list) or not all(
            isinstance(c, str) for c in request.captions
        ):
            raise InvalidInputError("captions must be a list of strings")
        captions += [c.strip() for c in request.captions if c.strip()]
    if request.captions_path is not None:
        path = layout.resolve_input(request.captions_path, "captions")
        captions += read_captions(path, skip_blank=True)
    if request.captions is None and request.captions_path is None:
        raise InvalidInputError("a retrain needs captions: give `captions` or `captions_path`")
    if len(captions) < MIN_TRAIN_CAPTIONS:
        raise InvalidInputError(
            f"a retrain needs at least {MIN_TRAIN_CAPTIONS} non-blank captions, got {len(captions)}"
        )
    if len(captions) > MAX_CAPTIONS:
        raise InvalidInputError(f"at most {MAX_CAPTIONS} captions, got {len(captions)}")
    return captions


def plan_retrain(
    request: RetrainRequest,
    layout: DataLayout,
    version: str,
    base_projector: ProjectorConfig | None,
    device: str,
    memory_dims: tuple[int, int] | None = None,
    base_version: str | None = None,
) -> RetrainPlan:
    """Validate a request: captions (list and/or file, at least MIN_TRAIN_CAPTIONS), memory
    paths (.npy under the data directory, the encoders' widths), overrides, and the start
    (init "active" needs `base_version`, the active version, whose projector is
    `base_projector`). The plan's `init` weights are the caller's to attach."""
    init_from = _warm_start_base(request, base_version)
    captions = _captions(request, layout)
    image_path = audio_path = None
    clip_dim, clap_dim = memory_dims or (None, None)
    if request.image_memory_path is not None:
        image_path = layout.resolve_input(request.image_memory_path, "image memory")
        check_memory_header(image_path, "image memory", clip_dim)
    if request.audio_memory_path is not None:
        audio_path = layout.resolve_input(request.audio_memory_path, "audio memory")
        check_memory_header(audio_path, "audio memory", clap_dim)
    overrides = request.train_overrides
    if init_from is not None and base_projector is not None:
        overrides = _warm_start_overrides(overrides, base_projector)
    config, projector = split_overrides(overrides, base_projector, device)
    if init_from is not None and base_projector is not None and projector is not None:
        check_warm_start(init_from, base_projector, projector, config)
    params = {
        "version": version,
        "captions": len(captions),
        "captions_path": request.captions_path,
        "image_memory_path": request.image_memory_path,
        "audio_memory_path": request.audio_memory_path,
        "train_overrides": request.train_overrides,
        "activate": request.activate,
        "init": request.init,
    }
    inputs_dir = None
    if request.inputs_dir is not None:
        inputs_dir = (layout.root / request.inputs_dir).resolve()
        if not layout.is_upload_dir(inputs_dir):
            raise InvalidInputError("inputs_dir must be a folder under the data dir's uploads/")
    return RetrainPlan(
        version,
        captions,
        image_path,
        audio_path,
        config,
        projector,
        request.activate,
        params,
        inputs_dir,
        init_from,
    )


def holdout_split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) caption indices: 10% (at least 4) held out from N >= 40 captions;
    with fewer, everything trains and the evaluation reuses all captions (in-sample)."""
    order = np.random.default_rng(seed + 7919).permutation(n)
    if n < EVAL_HOLDOUT_MIN_CAPTIONS:
        return order, order
    n_eval = max(4, int(round(n * EVAL_HOLDOUT_FRACTION)))
    return order[n_eval:], order[:n_eval]
