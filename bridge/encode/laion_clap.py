"""LAION-CLAP checkpoints (laion-clap's `.pt` files) converted to transformers' ClapModel.

laion-clap (github.com/LAION-AI/CLAP) saves its models as `torch.save` pickles:
`{"epoch", "name", "state_dict", "optimizer", ...}` (keys prefixed `module.` when trained
under DDP), or a bare state dict. `CLAP_Module.load_ckpt` reads them; the released ones
(`630k-best.pt`, `630k-audioset-best.pt`, `630k-fusion-best.pt`,
`630k-audioset-fusion-best.pt`, `music_audioset_epoch_15_esc_90.14.pt`, ...) hold an HTSAT
audio branch (tiny, base or large; with or without feature fusion) and a RoBERTa text branch.
transformers' ClapModel is the maintained port of the same network, so a checkpoint is
served by renaming its weights onto a ClapModel, writing an HF folder and loading that folder
through the same `from_pretrained` path as any other CLAP model:

    folder = converted_folder(Path("630k-audioset-fusion-best.pt"))   # cached per file

The renaming follows transformers' conversion script for these checkpoints
(`models/clap/convert_clap_original_pytorch_to_hf.py` in the transformers repository; the
wheel does not ship it): its substring map, the `_projection.N` -> `linear1|linear2` and
`sequential.N` rules, and the split of each fused `qkv` into query, key and value. Unlike
the script (which loads with strict=False) every key is accounted for: the weights that only
laion-clap's training or its own STFT use are dropped by name (`_UNUSED`), anything else
that does not land on a ClapModel weight, and any ClapModel weight left unfilled, is an
error. tests/bridge/encode/test_laion_clap.py checks the result against laion-clap's own
`get_audio_embedding_from_data` and `get_text_embedding`.

What is inferred from the weights: the HTSAT width, depths, heads and window (so tiny, base
and large all convert), fusion (the `mel_conv2d` / `fusion_model` weights), the mel bands and
FFT size, the RoBERTa width, depth and vocabulary, the projection width. What is laion-clap's
fixed choice and taken as such: 48 kHz, hop 480, 10 s windows, 50-14000 Hz (checked against
the checkpoint's own mel filter bank), spectrogram size 256, RoBERTa's 64-wide attention heads
and layer-norm epsilon 1e-5, 77-token captions. The feature extractor pads short clips by
repetition ("repeatpad") and, for long ones, uses "fusion" (fused checkpoints) or
"rand_trunc", as laion-clap's `get_audio_features` does.

The text tokenizer is RoBERTa's, which the `.pt` does not contain: it comes from
BRIDGE_CLAP_TOKENIZER (a hub id or a folder with vocab.json and merges.txt), by default the
hub's `FacebookAI/roberta-base` (through the Hugging Face cache, so HF_HUB_OFFLINE=1 works
once it is cached).

Conversions are cached under `$HF_HOME/modality-bridge/laion-clap/` (HF_HOME defaults to
~/.cache/huggingface), one folder per checkpoint content (sha256) and tokenizer source; the
sha256 of a file is remembered by path, size and modification time, so a second load reads
neither the pickle nor the whole file again. Where that folder cannot be written the
conversion is made in a temporary folder for this load only (with a warning).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridge.errors import ModelLoadError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

TOKENIZER_ENV = "BRIDGE_CLAP_TOKENIZER"
DEFAULT_TOKENIZER = "FacebookAI/roberta-base"
# Bump when the conversion's output changes: old cache folders are then left unused.
CONVERSION_VERSION = 1
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")

# laion-clap's fixed audio front end (model_configs/HTSAT-*.json, htsat.py).
SAMPLE_RATE = 48_000
HOP_LENGTH = 480
MAX_LENGTH_S = 10
FREQUENCY_MIN = 50
FREQUENCY_MAX = 14_000
SPEC_SIZE = 256
CONTEXT_LENGTH = 77  # CLAP_Module.tokenizer: padding="max_length", max_length=77
ROBERTA_HEAD_WIDTH = 64
ROBERTA_LAYER_NORM_EPS = 1e-5

# transformers' convert_clap_original_pytorch_to_hf.py: KEYS_TO_MODIFY_MAPPING, applied in
# this order to every key that contains the left side.
_RENAMES = (
    ("text_branch", "text_model"),
    ("audio_branch", "audio_model.audio_encoder"),
    ("attn", "attention.self"),
    ("self.proj", "output.dense"),
    ("attention.self_mask", "attn_mask"),
    ("mlp.fc1", "intermediate.dense"),
    ("mlp.fc2", "output.dense"),
    ("norm1", "layernorm_before"),
    ("norm2", "layernorm_after"),
    ("bn0", "batch_norm"),
)
_SEQUENTIAL = re.compile(r".*sequential.(\d+).*")
_PROJECTION = re.compile(r".*_projection.(\d+).*")

# laion-clap weights that ClapModel has no place for, by (original) key, and why.
_UNUSED = {
    r"audio_branch\.spectrogram_extractor\..*": "STFT as a convolution: the feature extractor",
    r"audio_branch\.logmel_extractor\.melW": "mel filters: the feature extractor (checked)",
    r"audio_branch\.head\..*|audio_branch\.tscam_conv\..*": "AudioSet tagging head",
    r"audio_branch\.layers\.\d+\.blocks\.\d+\.attn_mask": "shifted-window masks (recomputed)",
    r"audio_transform\..*|text_transform\..*": "training-only MLPs of the contrastive loss",
    r"text_branch\.embeddings\.position_ids": "RoBERTa's constant position ids",
}
_UNUSED_RE = re.compile("|".join(f"(?:{p})" for p in _UNUSED))
# ClapModel buffers that laion-clap's files do not carry; their values come from the config.
_CONSTANT_BUFFERS = ("text_model.embeddings.position_ids", "text_model.embeddings.token_type_ids")


def is_checkpoint_file(model_id: str) -> bool:
    """True when `model_id` names a file (not a folder, not a hub id) to read as laion-clap's
    checkpoint: an existing file, or a path ending in a checkpoint suffix."""
    path = Path(model_id).expanduser()
    return path.is_file() or (not path.is_dir() and path.suffix.lower() in CHECKPOINT_SUFFIXES)


def tokenizer_source() -> str:
    """Where the RoBERTa tokenizer comes from: BRIDGE_CLAP_TOKENIZER, else the hub's id."""
    return os.environ.get(TOKENIZER_ENV, "").strip() or DEFAULT_TOKENIZER


def cache_root() -> Path:
    """`$HF_HOME/modality-bridge/laion-clap`, HF_HOME resolved as huggingface_hub does
    (default `$XDG_CACHE_HOME/huggingface`, then `~/.cache/huggingface`), read at each call."""
    default = os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    home = os.path.expandvars(os.path.expanduser(os.environ.get("HF_HOME", default)))
    return Path(home) / "modality-bridge" / "laion-clap"


@contextlib.contextmanager
def converted_folder(checkpoint: Path) -> Iterator[Path]:
    """An HF-format ClapModel + ClapProcessor folder equivalent to `checkpoint`.

    Yields the cached folder (converting first when there is none), or, where the cache
    cannot be written, a temporary folder removed when the block ends. Raises
    ModelLoadError naming the file and what is wrong with it.
    """
    path = checkpoint.expanduser()
    if not path.is_file():
        raise ModelLoadError(f"cannot load clap encoder: checkpoint file not found: {checkpoint}")
    source = tokenizer_source()
    root = cache_root()
    try:
        digest = _file_sha256(path, root / "by-path")
    except OSError as exc:
        raise ModelLoadError(f"cannot read clap checkpoint {checkpoint}: {exc}") from exc
    key = hashlib.sha256(f"{CONVERSION_VERSION}\n{source}".encode()).hexdigest()[:12]
    folder = root / f"{digest}-{key}"
    if (folder / "conversion.json").is_file():
        logger.info("laion-clap checkpoint %s: cached conversion %s", path, folder)
        yield folder
        return
    try:
        root.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".converting-", dir=root))
    except OSError as exc:
        logger.warning(
            "laion-clap checkpoint %s: the conversion cache %s cannot be written (%s); "
            "converting for this load only",
            path,
            root,
            exc,
        )
        with tempfile.TemporaryDirectory(prefix="laion-clap-") as tmp:
            convert_checkpoint(path, Path(tmp), source, digest)
            yield Path(tmp)
        return
    try:
        convert_checkpoint(path, work, source, digest)
        _plain_modes(work)
        try:
            work.rename(folder)
        except OSError as exc:  # fine when another process finished the same conversion
            if not (folder / "conversion.json").is_file():
                raise ModelLoadError(
                    f"cannot cache the conversion of clap checkpoint {checkpoint} in {folder}: "
                    f"{exc}"
                ) from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)
    logger.info("laion-clap checkpoint %s converted to %s", path, folder)
    yield folder


def convert_checkpoint(checkpoint: Path, out: Path, source: str, digest: str = "") -> Path:
    """Write the ClapModel weights, config and ClapProcessor equivalent to `checkpoint` to
    `out` (an existing folder). `source`: the RoBERTa tokenizer's hub id or folder."""
    state = read_state_dict(checkpoint)
    config, features = infer_config(state, checkpoint)
    weights = map_weights(state, config, checkpoint)
    tokenizer = load_tokenizer(source, checkpoint, config.text_config.vocab_size)
    _save(out, weights, config, features, tokenizer)
    record = {
        "checkpoint": str(checkpoint),
        "sha256": digest,
        "tokenizer": source,
        "conversion_version": CONVERSION_VERSION,
        "fusion": bool(config.audio_config.enable_fusion),
    }
    (out / "conversion.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return out


def read_state_dict(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's state dict, `module.` prefixes removed. Loaded with
    `torch.load(weights_only=True)`: tensors and plain containers only, no code runs."""
    import pickle

    import torch

    try:
        try:  # memory-mapped: the optimizer state that training saved is never read
            obj = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:  # files from before torch 1.6's zip format
            if "mmap" not in str(exc):
                raise
            obj = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if found is None:  # a broken or foreign pickle stream
            raise ModelLoadError(
                f"cannot load clap checkpoint {checkpoint}: not a PyTorch checkpoint "
                f"({_last_line(exc)})"
            ) from exc
        raise ModelLoadError(
            f"cannot load clap checkpoint {checkpoint}: it holds Python objects other than "
            f"tensors and plain containers ({found.group(1)}), and it is read with "
            "torch.load(weights_only=True), which runs no code from a file. laion-clap's own "
            "training saves only tensors, numbers, strings and the optimizer's state. If you "
            'trust this file, re-save its weights once: python -c "import torch; '
            "c = torch.load('IN.pt', weights_only=False, map_location='cpu'); "
            "torch.save({'state_dict': c.get('state_dict', c)}, 'OUT.pt')\""
        ) from exc
    except Exception as exc:  # not a zip or pickle, truncated, ...
        raise ModelLoadError(
            f"cannot load clap checkpoint {checkpoint}: not a PyTorch checkpoint "
            f"({type(exc).__name__}: {_last_line(exc)})"
        ) from exc
    state = obj.get("state_dict", obj) if isinstance(obj, Mapping) else obj
    if not isinstance(state, Mapping) or not state:
        raise ModelLoadError(
            f"cannot load clap checkpoint {checkpoint}: expected a dict with a 'state_dict' or "
            f"a state dict, found {type(obj).__name__}"
        )
    tensors = {str(k): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if len(tensors) != len(state):
        bad = next(str(k) for k, v in state.items() if not isinstance(v, torch.Tensor))
        raise ModelLoadError(
            f"cannot load clap checkpoint {checkpoint}: its state dict holds non-tensor "
            f"entries (e.g. {bad!r})"
        )
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module.") :]: v for k, v in tensors.items()}
    if not any(k.startswith("audio_branch.") for k in tensors) or not any(
        k.startswith("text_branch.") for k in tensors
    ):
        sample = ", ".join(sorted(tensors)[:3])
        raise ModelLoadError(
            f"cannot load clap checkpoint {checkpoint}: not a LAION-CLAP checkpoint (no "
            f"audio_branch.* and text_branch.* weights; its keys start {sample})"
        )
    return tensors


def infer_config(state: Mapping[str, torch.Tensor], checkpoint: Path) -> tuple[Any, Any]:
    """(ClapConfig, ClapFeatureExtractor) matching the checkpoint's architecture."""
    from transformers import ClapConfig, ClapFeatureExtractor

    def need(key: str) -> torch.Tensor:
        if key not in state:
            raise ModelLoadError(f"cannot load clap checkpoint {checkpoint}: missing {key}")
        return state[key]

    if "audio_branch.patch_embed.proj.weight" not in state:
        kind = "PANN" if any(k.startswith("audio_branch.conv_block") for k in state) else "unknown"
        raise ModelLoadError(
            f"cannot load clap checkpoint {checkpoint}: its audio branch is {kind}, not HTSAT "
            "(only HTSAT checkpoints convert to transformers' ClapModel)"
        )
    if "text_branch.embeddings.word_embeddings.weight" not in state or any(
        k.startswith("text_branch.shared") for k in state
    ):
        raise ModelLoadError(
            f"cannot load clap checkpoint {checkpoint}: its text branch is not RoBERTa "
            "(only RoBERTa text branches convert to transformers' ClapModel)"
        )
    types = need("text_branch.embeddings.token_type_embeddings.weight").shape[0]
    if types != 1:
        raise ModelLoadError(
            f"cannot load clap checkpoint {checkpoint}: its text branch has {types} token "
            "types, a BERT model; only RoBERTa text branches are supported"
        )
    depths = _count_indices(state, r"audio_branch\.layers\.(\d+)\.blocks\.(\d+)\.")
    heads = [
        int(need(f"audio_branch.layers.{i}.blocks.0.attn.relative_position_bias_table").shape[1])
        for i in range(len(depths))
    ]
    table = need("audio_branch.layers.0.blocks.0.attn.relative_position_bias_table").shape[0]
    window = (math.isqrt(int(table)) + 1) // 2
    embed = int(need("audio_branch.patch_embed.proj.weight").shape[0])
    hidden = embed * 2 ** (len(depths) - 1)
    mel_bins = int(need("audio_branch.bn0.weight").shape[0])
    fusion = "audio_branch.patch_embed.mel_conv2d.weight" in state
    stft = state.get("audio_branch.spectrogram_extractor.stft.conv_real.weight")
    n_fft = int(stft.shape[-1]) if stft is not None else 1024
    projection = int(need("audio_projection.2.weight").shape[0])
    if need("audio_projection.0.weight").shape[1] != hidden:
        raise ModelLoadError(
            f"cannot load clap checkpoint {checkpoint}: audio projection takes "
            f"{need('audio_projection.0.weight').shape[1]} features, HTSAT gives {hidden}"
        )
    text_hidden = int(need("text_branch.embeddings.word_embeddings.weight").shape[1])
    text = {
        "vocab_size": int(need("text_branch.embeddings.word_embeddings.weight").shape[0]),
        "hidden_size": text_hidden,
        "num_hidden_layers": len(_count_indices(state, r"text_branch\.encoder\.layer\.(\d+)\.")),
        "num_attention_heads": max(1, text_hidden // ROBERTA_HEAD_WIDTH),
        "intermediate_size": int(
            need("text_branch.encoder.layer.0.intermediate.dense.weight").shape[0]
        ),
        "max_position_embeddings": int(
            need("text_branch.embeddings.position_embeddings.weight").shape[0]
        ),
        "type_vocab_size": 1,
        "layer_norm_eps": ROBERTA_LAYER_NORM_EPS,
        "projection_dim": projection,
    }
    audio = {
        "window_size": window,
        "num_mel_bins": mel_bins,
        "spec_size": SPEC_SIZE,
        "patch_embeds_hidden_size": embed,
        "depths": depths,
        "num_attention_heads": heads,
        "hidden_size": hidden,
        "num_hidden_layers": len(depths),
        "projection_dim": projection,
        "enable_fusion": fusion,
        "fusion_type": "aff_2d" if fusion else None,
    }
    config = ClapConfig(text_config=text, audio_config=audio, projection_dim=projection)
    features = ClapFeatureExtractor(
        feature_size=mel_bins,
        sampling_rate=SAMPLE_RATE,
        hop_length=HOP_LENGTH,
        max_length_s=MAX_LENGTH_S,
        fft_window_size=n_fft,
        frequency_min=FREQUENCY_MIN,
        frequency_max=FREQUENCY_MAX,
        top_db=None,
        truncation="fusion" if fusion else "rand_trunc",
        padding="repeatpad",
    )
    _check_mel_filters(state, features, checkpoint)
    return config, features


def map_weights(
    state: Mapping[str, torch.Tensor], config: Any, checkpoint: Path
) -> dict[str, torch.Tensor]:
    """laion-clap's weights under ClapModel's names, every key accounted for (see module doc)."""
    import torch
    from transformers import ClapModel

    renamed: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if _UNUSED_RE.fullmatch(key):
            continue
        for new_key, tensor in _rename(key, value):
            if tensor.is_floating_point():
                tensor = tensor.to(torch.float32)
            renamed[new_key] = tensor.detach().contiguous()
    with torch.device("meta"):
        expected = ClapModel(config).state_dict()
    position_ids = torch.arange(config.text_config.max_position_embeddings).expand((1, -1))
    renamed[_CONSTANT_BUFFERS[0]] = position_ids.clone()
    renamed[_CONSTANT_BUFFERS[1]] = torch.zeros(position_ids.shape, dtype=torch.long)
    missing = sorted(set(expected) - set(renamed))
    unexpected = sorted(set(renamed) - set(expected))
    wrong = sorted(
        f"{k} {tuple(renamed[k].shape)} (expected {tuple(expected[k].shape)})"
        for k in set(expected) & set(renamed)
        if renamed[k].shape != expected[k].shape
    )
    problems = [
        f"{label} {len(keys)}: {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}"
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape", wrong))
        if keys
    ]
    if problems:
        raise ModelLoadError(
            f"cannot load clap checkpoint {checkpoint}: its weights do not fit transformers' "
            f"ClapModel ({'; '.join(problems)}; ClapModel names shown)"
        )
    return renamed


def load_tokenizer(source: str, checkpoint: Path, vocab_size: int) -> Any:
    """RoBERTa's tokenizer from `source` (hub id or folder), cut at laion-clap's 77 tokens;
    its vocabulary must be the text branch's (`vocab_size` entries)."""
    from transformers import RobertaTokenizer

    try:
        tokenizer = RobertaTokenizer.from_pretrained(source, model_max_length=CONTEXT_LENGTH)
        # transformers 5 builds a tokenizer of the special tokens alone when it finds no
        # vocabulary files (offline, wrong folder), so the size is the test that it loaded.
        if len(tokenizer) != vocab_size:
            raise OSError(
                f"it has {len(tokenizer)} tokens, the checkpoint's text branch {vocab_size}"
            )
    except Exception as exc:  # OSError when offline or absent, ValueError for a bad folder
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
        local = Path(source).expanduser().exists() or source.startswith(("/", ".", "~"))
        if local:
            hint = f"{source} must be a folder holding RoBERTa's vocab.json and merges.txt"
        elif offline:
            hint = (
                f"HF_HUB_OFFLINE is set and {source!r} is not in the Hugging Face cache: on a "
                f"machine with internet run `hf download {source} vocab.json merges.txt "
                "tokenizer.json tokenizer_config.json config.json` (it fills the cache that "
                f"HF_HOME points at; copy that cache here), or set {TOKENIZER_ENV} to a folder "
                "holding RoBERTa's vocab.json and merges.txt (any laion/clap-htsat-* model "
                "folder has them)"
            )
        else:
            hint = (
                f"set {TOKENIZER_ENV} to a hub id or a folder holding RoBERTa's vocab.json "
                "and merges.txt"
            )
        detail = str(exc).splitlines()[0] if str(exc) else ""
        raise ModelLoadError(
            f"cannot load clap checkpoint {checkpoint}: the RoBERTa tokenizer its text branch "
            f"needs could not be loaded from {source!r} ({type(exc).__name__}: {detail}). "
            f"{hint}"
        ) from exc
    return tokenizer


# -- helpers ------------------------------------------------------------------------------


def _rename(key: str, value: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """One laion-clap key -> ClapModel key(s), as transformers' conversion script renames."""
    for old, new in _RENAMES:
        if old in key:
            key = key.replace(old, new)
    sequential = _SEQUENTIAL.match(key)
    projection = _PROJECTION.match(key)
    if sequential:
        n = sequential.group(1)
        key = key.replace(f"sequential.{n}.", f"layers.{int(n) // 3}.linear.")
    elif projection:
        n = int(projection.group(1))
        key = key.replace(f"_projection.{n}.", f"_projection.linear{1 if n == 0 else 2}.")
    if "qkv" in key:  # HTSAT's fused attention input: (3 * D, ...) -> query, key, value
        query, key_part, value_part = value.chunk(3, dim=0)
        return [
            (key.replace("qkv", "query"), query),
            (key.replace("qkv", "key"), key_part),
            (key.replace("qkv", "value"), value_part),
        ]
    return [(key, value)]


def _last_line(exc: BaseException) -> str:
    """The informative line of an exception message (torch's end in a documentation link)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith("Check the documentation")]
    return (useful or lines or [type(exc).__name__])[-1]


def _count_indices(state: Mapping[str, Any], pattern: str) -> list[int]:
    """Numbered blocks: [blocks in group 0, ...] for a two-index pattern, or [0] * N for a
    one-index one (its length is what counts)."""
    regex = re.compile(pattern)
    groups: dict[int, set[int]] = {}
    for key in state:
        match = regex.match(key)
        if match:
            inner = int(match.group(2)) if regex.groups > 1 else 0
            groups.setdefault(int(match.group(1)), set()).add(inner)
    if sorted(groups) != list(range(len(groups))) or not groups:
        raise ModelLoadError(f"unexpected numbering of {pattern!r} in the checkpoint")
    return [len(groups[i]) for i in range(len(groups))]


def _check_mel_filters(state: Mapping[str, torch.Tensor], features: Any, checkpoint: Path) -> None:
    """The checkpoint's own mel filter bank (torchlibrosa's, from librosa) must be the one
    the feature extractor computes, or the audio front end would differ."""
    import numpy as np

    mel = state.get("audio_branch.logmel_extractor.melW")
    if mel is None:
        return
    ours = np.asarray(features.mel_filters_slaney, dtype=np.float64)  # (n_freq, n_mels)
    theirs = mel.detach().cpu().double().numpy()
    if theirs.shape != ours.shape or not np.allclose(theirs, ours, rtol=1e-4, atol=1e-6):
        raise ModelLoadError(
            f"cannot load clap checkpoint {checkpoint}: its mel filter bank {theirs.shape} is "
            f"not laion-clap's {SAMPLE_RATE} Hz, {FREQUENCY_MIN}-{FREQUENCY_MAX} Hz one "
            f"{ours.shape}; this audio front end is not supported"
        )


def _file_sha256(path: Path, memo_dir: Path) -> str:
    """sha256 of the file, remembered by (real path, size, mtime) under `memo_dir`."""
    stat = path.stat()
    real = str(path.resolve())
    memo = memo_dir / (hashlib.sha256(real.encode()).hexdigest()[:32] + ".json")
    stamp = {"path": real, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    with contextlib.suppress(OSError, ValueError):
        saved = json.loads(memo.read_text(encoding="utf-8"))
        if {k: saved.get(k) for k in stamp} == stamp and isinstance(saved.get("sha256"), str):
            return str(saved["sha256"])
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    value = digest.hexdigest()
    with contextlib.suppress(OSError):
        memo_dir.mkdir(parents=True, exist_ok=True)
        memo.write_text(json.dumps({**stamp, "sha256": value}), encoding="utf-8")
    return value


def _plain_modes(folder: Path) -> None:
    """The modes a plain mkdir/open would give under the umask (mkdtemp makes 0700 and
    safetensors writes 0600), so that another user of a shared HF_HOME can read the folder."""
    umask = _umask()
    folder.chmod(0o777 & ~umask)
    for path in folder.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def _umask() -> int:
    """The process umask, read without setting it (os.umask would race other threads)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return 0o022


def _save(out: Path, weights: dict[str, Any], config: Any, features: Any, tokenizer: Any) -> None:
    from safetensors.torch import save_file
    from transformers import ClapProcessor

    out.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(out)
    ClapProcessor(feature_extractor=features, tokenizer=tokenizer).save_pretrained(out)
