"""Import the authors' released projector weights as bridges in this project's format.

Two kinds (docs/published-model.md; method.md sections 2 and 9):

- "cmcr": MCR-PEFT/C-MCR `checkpoints/clap_clip.pt`, a plain state dict of the official
  `CLAPCLIP_Head` (cmcr/cmcr_projector.py). `Head_A` projects CLAP embeddings, `Head_B` CLIP
  embeddings (images and text); each is `MLP(channel=512, res_expansion=2)`:
  net1 = Linear(512, 1024) -> BatchNorm1d -> ReLU, net2 = Linear(1024, 512) -> BatchNorm1d.
  The official forward L2-normalises the outputs (cmcr/cmcr_model.py). Our `Projector` is the
  same network with its layers in one Sequential: net1.0 -> net.0, net1.1 -> net.1,
  net2.0 -> net.3, net2.1 -> net.4 (net.2 is the ReLU).
- "exmcr": MCR-PEFT/Ex-MCR `checkpoints/ex_clap.pt`, a plain state dict of the official
  `Ex_MCR_Head` (exmcr/exmcr_projector.py): Head1 = Linear(512, 512), Head2 = mlp1, mlp2 (each
  the MLP above), then L2-normalise. `ExMCRHead` has the same module names, so the keys map
  to `clap.<key>`; the CLIP side has no parameters.

The authors load both files with a strict `load_state_dict(torch.load(path))` of exactly
these modules, so a released file is a plain state dict: no `{"state_dict": ...}` wrapper and
no `module.` prefix. Files are read with `torch.load(weights_only=True)` only (no code runs),
checked key by key against the official layout (missing, unexpected, shapes, finite values)
and refused with a one-line CheckpointError before anything is written. The widths are read
from the file (512-d for the released weights), so the same layout at other widths imports
too; the service checks them against its encoders when it loads the bridge.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from bridge.errors import CheckpointError, NotFoundError
from bridge.model.config import ProjectorConfig

if TYPE_CHECKING:  # torch loads where it is used, so that `mbridge --help` stays fast
    import torch

    from bridge.model.projectors import BridgeModel

ImportKind = Literal["cmcr", "exmcr"]
IMPORT_KINDS: tuple[str, ...] = get_args(ImportKind)

# The encoders the released projectors were trained on (both READMEs): CLIP ViT-B/32 from the
# hub, and the LAION-CLAP checkpoint `630k-fusion-best.pt` (HTSAT-tiny with fusion; the
# authors' code loads it as checkpoints/laion_clap_fullset_fusion.pt with enable_fusion=True).
PUBLISHED_CLIP = "openai/clip-vit-base-patch32"
PUBLISHED_CLAP = "630k-fusion-best.pt"
PUBLISHED_ENCODERS: dict[str, str] = {"clip": PUBLISHED_CLIP, "clap": PUBLISHED_CLAP}
# Another name of the same file: the one the authors' code loads it under.
CLAP_FILE_ALIASES: dict[str, str] = {"laion_clap_fullset_fusion.pt": PUBLISHED_CLAP}

# The official MLP block's sub-layers and where our modules keep them.
_BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_CMCR_LAYERS = {"net1.0": "net.0", "net1.1": "net.1", "net2.0": "net.3", "net2.1": "net.4"}
_CMCR_HEADS = {"Head_A": "clap", "Head_B": "clip"}  # official head -> our side


@dataclass(frozen=True)
class Source:
    """Where a released projector comes from (written into the bridge's card)."""

    kind: ImportKind
    method: str
    repo: str
    file: str
    module: str
    license: str


SOURCES: dict[str, Source] = {
    "cmcr": Source(
        "cmcr",
        'C-MCR (Wang et al., 2023, "Connecting Multi-modal Contrastive Representations")',
        "https://github.com/MCR-PEFT/C-MCR",
        "checkpoints/clap_clip.pt",
        "CLAPCLIP_Head (cmcr/cmcr_projector.py)",
        "CC BY 4.0 (the repository's LICENSE)",
    ),
    "exmcr": Source(
        "exmcr",
        'Ex-MCR (Wang et al., 2023, "Extending Multi-modal Contrastive Representation")',
        "https://github.com/MCR-PEFT/Ex-MCR",
        "checkpoints/ex_clap.pt",
        "Ex_MCR_Head (exmcr/exmcr_projector.py)",
        "CC BY 4.0 (the repository's LICENSE)",
    ),
}


def _load_failure(exc: BaseException) -> str:
    """Why torch.load refused a file, in a few words: the weights-only unpickler's own reason
    (e.g. "Unsupported global: GLOBAL print") when it gives one, else the error's first line."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    reason = re.search(r"WeightsUnpickler error:\s*([^\n]+)", text)
    if reason:
        words = re.split(r" was not an allowed| Please use", reason.group(1))[0]
        return f"it holds more than tensors: {words.strip().rstrip('.')}"
    lines = text.strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _shape(value: Any) -> str:
    return str(tuple(value.shape)) if hasattr(value, "shape") else type(value).__name__


def _listed(names: list[str], limit: int = 6) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a released projector file, loaded with weights_only=True.

    CheckpointError (one line) for a file torch cannot load that way (an arbitrary pickle,
    not a torch file), anything but a flat mapping of names to tensors, and the two common
    wrappers, which the released files do not have.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"projector checkpoint not found: {path}")
    with path.open("rb") as handle:
        head = handle.read(64)
    if head.startswith(b"version https://git-lfs"):
        raise CheckpointError(
            f"{path} is a Git LFS pointer, not the weights: fetch the file itself "
            "(`git lfs pull`, or download it from the repository's web page)"
        )
    if not head.startswith((b"PK\x03\x04", b"\x80")):  # torch.save's zip or legacy pickle
        raise CheckpointError(
            f"{path}: not a torch.save file (it starts with {head[:8]!r}); the released "
            "projectors are plain state dicts saved with torch.save"
        )
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and torch errors alike: the file is refused
        raise CheckpointError(
            f"{path}: not loadable as a weights-only torch file ({_load_failure(exc)}); "
            "the released projectors are plain state dicts saved with torch.save"
        ) from exc
    if not isinstance(loaded, Mapping):
        raise CheckpointError(
            f"{path} holds a {type(loaded).__name__}, not a state dict (a mapping of parameter "
            "names to tensors)"
        )
    if isinstance(loaded.get("state_dict"), Mapping):
        raise CheckpointError(
            f"{path} wraps its weights in {{'state_dict': ...}} (a training checkpoint); the "
            "released files are the plain state dict the authors load with load_state_dict: "
            "save checkpoint['state_dict'] on its own and import that file"
        )
    if loaded and all(isinstance(k, str) and k.startswith("module.") for k in loaded):
        raise CheckpointError(
            f"{path}: every key starts with 'module.' (saved from DataParallel); the released "
            "files have no prefix: strip it and save again"
        )
    bad = [f"{k!r} ({type(v).__name__})" for k, v in loaded.items()
           if not isinstance(k, str) or not isinstance(v, torch.Tensor)]  # fmt: skip
    if bad:
        raise CheckpointError(
            f"{path} is not a state dict: entries that are not name -> tensor: {_listed(bad)}"
        )
    return dict(loaded)


def _layout_error(path: Path, what: str, problems: list[str]) -> CheckpointError:
    return CheckpointError(f"{path} does not fit {what}: " + "; ".join(problems))


def _match(
    path: Path,
    state: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Tensor],
    what: str,
) -> None:
    """CheckpointError naming missing and unexpected keys and shape mismatches, if any."""
    problems = []
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing:
        problems.append(f"missing keys {_listed(missing)}")
    if extra:
        problems.append(f"unexpected keys {_listed(extra)}")
    shapes = [
        f"{k}: expected {_shape(expected[k])}, got {_shape(state[k])}"
        for k in sorted(set(state) & set(expected))
        if tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if shapes:
        problems.append(f"wrong shapes {_listed(shapes, 4)}")
    if problems:
        raise _layout_error(path, what, problems)
    not_finite = [
        k for k, v in state.items() if v.is_floating_point() and not bool(v.isfinite().all())
    ]
    if not_finite:
        raise _layout_error(path, what, [f"non-finite values in {_listed(sorted(not_finite))}"])


def _width(state: Mapping[str, torch.Tensor], key: str, dim: int, default: int) -> int:
    """A width read from a 2-D weight of the file, or the released default when the key is
    absent or not 2-D (the key-by-key check then names the problem)."""
    value = state.get(key)
    if value is not None and value.dim() == 2:
        return int(value.shape[dim])
    return default


def _cmcr_names() -> dict[str, str]:
    """Official CLAPCLIP_Head key -> our BridgeModel key."""
    names = {}
    for head, side in _CMCR_HEADS.items():
        for theirs, ours in _CMCR_LAYERS.items():
            params = _BN_KEYS if theirs.endswith(".1") else ("weight", "bias")
            for param in params:
                names[f"{head}.{theirs}.{param}"] = f"{side}.{ours}.{param}"
    return names


def _refuse_other_layouts(path: Path, state: Mapping[str, torch.Tensor], kind: str) -> None:
    """Clear refusals for the released files this import does not take."""
    keys = set(state)
    if kind == "cmcr" and any(re.match(r"Head_[AB]\.net\.", k) for k in keys):
        raise CheckpointError(
            f"{path} is a ULIP-CLIP head (ULIPCLIP_Head: MLP_Half with net.0/net.1, and Head_A "
            "is the CLIP side there): C-MCR's ulip_clip.pt connects 3D point clouds to CLIP, "
            "not CLAP; import checkpoints/clap_clip.pt"
        )
    if kind == "cmcr" and any(k.startswith(("Head1.", "Head2.")) for k in keys):
        raise CheckpointError(
            f"{path} is an Ex-MCR head (Head1/Head2 keys); import it with --kind exmcr"
        )
    if kind == "exmcr" and any(k.startswith(("Head_A.", "Head_B.")) for k in keys):
        raise CheckpointError(
            f"{path} is a C-MCR head (Head_A/Head_B keys); import it with --kind cmcr"
        )


def cmcr_model(path: Path, state: Mapping[str, torch.Tensor]) -> BridgeModel:
    """A C-MCR BridgeModel holding the weights of a CLAPCLIP_Head state dict."""
    from bridge.model.projectors import BridgeModel

    _refuse_other_layouts(path, state, "cmcr")
    hidden = _width(state, "Head_A.net1.0.weight", 0, 1024)
    config = ProjectorConfig(
        clip_dim=_width(state, "Head_B.net1.0.weight", 1, 512),
        clap_dim=_width(state, "Head_A.net1.0.weight", 1, 512),
        hidden_dim=hidden,
        shared_dim=_width(state, "Head_A.net2.0.weight", 0, 512),
        num_layers=2,
        mode="cmcr",
    )
    model = BridgeModel(config)
    ours = model.state_dict()
    names = _cmcr_names()
    what = (
        f"C-MCR's CLAPCLIP_Head (Head_A: {config.clap_dim}-d CLAP, Head_B: {config.clip_dim}-d "
        f"CLIP, hidden {hidden}, out {config.shared_dim})"
    )
    _match(path, state, {theirs: ours[mine] for theirs, mine in names.items()}, what)
    converted = {mine: state[theirs].to(ours[mine].dtype) for theirs, mine in names.items()}
    converted["logit_scale"] = ours["logit_scale"]
    model.load_state_dict(converted)
    return model.eval()


def exmcr_model(path: Path, state: Mapping[str, torch.Tensor]) -> BridgeModel:
    """An Ex-MCR BridgeModel holding the weights of an Ex_MCR_Head state dict."""
    from bridge.model.projectors import BridgeModel

    _refuse_other_layouts(path, state, "exmcr")
    config = ProjectorConfig(
        clip_dim=_width(state, "Head1.weight", 0, 512),
        clap_dim=_width(state, "Head1.weight", 1, 512),
        hidden_dim=_width(state, "Head2.mlp1.net1.0.weight", 0, 1024),
        num_layers=2,
        mode="exmcr",
    )
    model = BridgeModel(config)
    ours = model.state_dict()
    expected = {k.removeprefix("clap."): v for k, v in ours.items() if k.startswith("clap.")}
    what = (
        f"Ex-MCR's Ex_MCR_Head (Head1: {config.clap_dim}-d CLAP -> {config.clip_dim}-d CLIP, "
        f"Head2: mlp1, mlp2 with hidden {config.hidden_dim})"
    )
    _match(path, state, expected, what)
    converted = {f"clap.{k}": state[k].to(v.dtype) for k, v in expected.items()}
    converted["logit_scale"] = ours["logit_scale"]
    model.load_state_dict(converted)
    return model.eval()


def model_card(
    kind: str, source_file: Path, sha256: str, config: ProjectorConfig, encoders: dict[str, str]
) -> str:
    """README.md of an imported bridge: where it comes from, its license, what it maps."""
    src = SOURCES[kind]
    if kind == "cmcr":
        maps = (
            f"Two projectors into a new {config.shared_dim}-d shared space (method.md "
            f"section 2): `clap` (the official Head_A) maps {config.clap_dim}-d CLAP audio "
            f"embeddings, `clip` (Head_B) {config.clip_dim}-d CLIP image and text embeddings. "
            f"Each is Linear(D, {config.hidden_dim}) -> BatchNorm1d -> ReLU -> "
            f"Linear({config.hidden_dim}, {config.shared_dim}) -> BatchNorm1d (D its space's "
            "width), then L2; inputs are L2-normalised first, BatchNorm uses its running "
            "statistics."
        )
    else:
        maps = (
            f"One head from {config.clap_dim}-d CLAP into {config.clip_dim}-d CLIP space "
            "(method.md section 9): `clap` is the official Ex_MCR_Head (Head1 = "
            f"Linear({config.clap_dim}, {config.clip_dim}), Head2 = two blocks Linear -> "
            f"BatchNorm1d -> ReLU -> Linear -> BatchNorm1d, hidden {config.hidden_dim}), then "
            "L2; CLIP images and text stay native CLIP embeddings (only normalised)."
        )
    published = encoders == PUBLISHED_ENCODERS
    return "\n".join(
        [
            f"# {kind}: {src.method.split(' (')[0]} projector imported from the authors' release",
            "",
            f"Imported with `mbridge import-checkpoint --kind {kind}` from `{source_file.name}` "
            f"(sha256 `{sha256}`). Not trained here: the weights are the authors'.",
            "",
            "## Source and license",
            f"- Method: {src.method}.",
            f"- Weights: `{src.file}` of {src.repo}, a state dict of `{src.module}`.",
            f"- License of the weights: {src.license}. Attribute the authors when you "
            "redistribute them.",
            "",
            "## What it maps",
            maps,
            "",
            "## Encoders it belongs to",
            f"- CLIP: `{encoders.get('clip', '')}`",
            f"- CLAP: `{encoders.get('clap', '')}`",
            (
                "These are the encoders the authors trained against (their READMEs: CLIP "
                "ViT-B/32 and the LAION-CLAP checkpoint 630k-fusion-best.pt, loaded with "
                "fusion). "
                if published
                else "Recorded as given to --clip/--clap; they differ from the published pair. "
            )
            + "The service refuses to activate this bridge under other encoders "
            "(docs/published-model.md says what counts as the same).",
            "",
            "No metrics: the authors' retrieval numbers are in their papers; this import was "
            "checked only for arithmetic equality with the official forward.",
            "",
        ]
    )


def import_checkpoint(
    kind: str,
    checkpoint: str | Path,
    out_dir: str | Path,
    clip: str | None = None,
    clap: str | None = None,
) -> Path:
    """Convert a released projector file into a bridge folder at `out_dir` (config.json,
    weights.safetensors, report.json, README.md), written atomically: any refusal leaves
    `out_dir` as it was. `clip`/`clap`: the encoder ids to record (default: the published
    pair). Returns `out_dir`."""
    from bridge.model.projectors import file_sha256, save_checkpoint

    if kind not in IMPORT_KINDS:
        raise CheckpointError(f"kind must be one of {list(IMPORT_KINDS)}, got {kind!r}")
    path = Path(checkpoint)
    state = read_state_dict(path)
    model = cmcr_model(path, state) if kind == "cmcr" else exmcr_model(path, state)
    sha256 = file_sha256(path)
    encoders = {"clip": clip or PUBLISHED_CLIP, "clap": clap or PUBLISHED_CLAP}
    src = SOURCES[kind]
    report = {
        "mode": kind,
        "imported": {
            "kind": kind,
            "file": path.name,
            "sha256": sha256,
            "repo": src.repo,
            "official_file": src.file,
            "module": src.module,
            "license": src.license,
        },
    }
    card = model_card(kind, path, sha256, model.config, encoders)
    return save_checkpoint(out_dir, model, None, report, encoders, extra_files={"README.md": card})
