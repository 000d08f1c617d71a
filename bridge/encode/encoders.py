"""Frozen encoder towers behind one interface: CLIP (text, image) and CLAP (text, audio).

C-MCR (method.md section 2) connects two frozen contrastive spaces; this module produces
their embeddings. Every backbone embedding is L2-normalised here, as the method requires
before anything enters a projector. Both towers load with transformers' `from_pretrained`
from a hub id or a local folder (HF format); nothing is downloaded unless a hub id is given,
and HF_HUB_OFFLINE=1 is honoured by huggingface_hub itself.

    encoder = load_encoder("clap", "laion/clap-htsat-unfused")      # or a local folder
    encoder.encode_text(["a dog barks"])                             # (1, 512) float32
    encoder.encode_audio([waveform], sample_rate=8000)                # resampled to 48 kHz

transformers is imported inside the functions that need it, so `import bridge` stays fast.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from bridge.encode.media import resample
from bridge.errors import InvalidInputError, ModelLoadError, UnsupportedMediaError
from bridge.model.devices import resolve_device

if TYPE_CHECKING:
    import torch
    from PIL import Image

logger = logging.getLogger(__name__)

ENCODER_KINDS = ("clip", "clap")
# Seed for the random crop choices of CLAP's "fusion" feature extraction, so that encoding
# the same long clip twice gives the same embedding.
_FUSION_SEED = 0


class Encoder:
    """One frozen tower pair (text + image, or text + audio) of a contrastive model.

    Attributes: kind ("clip" | "clap"), model_id (hub id or folder as given), dim (embedding
    width), device ("cpu", "cuda", ...), modalities, sample_rate (CLAP: the processor's rate;
    CLIP: None). Every encode_* returns float32 (N, D) with unit-norm rows.

    Thread safety: the service calls one encoder from a thread pool. Fast (Rust) tokenizers
    raise "Already borrowed" when two threads tokenise at once, CLAP's fusion mode touches
    numpy's global RNG, and concurrent forwards on one GPU only contend; so every processor
    + model call runs under `self._lock`. Requests are serialised per encoder, not per process.
    """

    kind: ClassVar[str] = ""
    modalities: ClassVar[tuple[str, ...]] = ()

    def __init__(self, model: Any, processor: Any, model_id: str, device: str) -> None:
        self.model = model
        self.processor = processor
        self.model_id = model_id
        self.device = device
        self.dim = int(model.config.projection_dim)
        self.sample_rate: int | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(model_id={self.model_id!r}, dim={self.dim}, "
            f"device={self.device!r})"
        )

    # -- public API ---------------------------------------------------------------------
    def encode_text(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Embed captions: (N, D) float32, L2-normalised."""
        items = _check_sequence(texts, "texts", str)
        return self._encode_batches(items, batch_size, self._text_batch)

    def encode_image(self, images: Sequence[Image.Image], batch_size: int = 64) -> np.ndarray:
        """Embed PIL images: (N, D) float32, L2-normalised (image towers only)."""
        raise UnsupportedMediaError(
            f"{self.kind} encoder {self.model_id!r} has no image tower "
            f"(modalities: {', '.join(self.modalities)})"
        )

    def encode_audio(
        self, waveforms: Sequence[np.ndarray], sample_rate: int, batch_size: int = 16
    ) -> np.ndarray:
        """Embed mono waveforms at `sample_rate`: (N, D) float32, L2-normalised (audio towers)."""
        raise UnsupportedMediaError(
            f"{self.kind} encoder {self.model_id!r} has no audio tower "
            f"(modalities: {', '.join(self.modalities)})"
        )

    def describe(self) -> dict[str, Any]:
        """Plain-data summary (for reports, checkpoints and /health)."""
        return {
            "kind": self.kind,
            "model_id": self.model_id,
            "dim": self.dim,
            "device": self.device,
            "modalities": list(self.modalities),
            "sample_rate": self.sample_rate,
        }

    # -- shared machinery ---------------------------------------------------------------
    def _text_batch(self, batch: list[str]) -> torch.Tensor:
        inputs = self.processor(text=batch, padding=True, truncation=True, return_tensors="pt")
        return self.model.get_text_features(**inputs.to(self.device))

    def _encode_batches(self, items: list[Any], batch_size: int, forward: Any) -> np.ndarray:
        """Run `forward` over `items` in batches and stack the normalised float32 rows."""
        if batch_size < 1:
            raise InvalidInputError(f"batch_size must be >= 1, got {batch_size}")
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        import torch

        chunks: list[np.ndarray] = []
        with torch.inference_mode():
            for start in range(0, len(items), batch_size):
                batch = items[start : start + batch_size]
                with self._lock:
                    output = forward(batch)
                chunks.append(_normalise(output))
        return np.concatenate(chunks, axis=0)


class CLIPEncoder(Encoder):
    """CLIP through transformers CLIPModel + CLIPProcessor (e.g. openai/clip-vit-base-patch32)."""

    kind: ClassVar[str] = "clip"
    modalities: ClassVar[tuple[str, ...]] = ("text", "image")

    def encode_image(self, images: Sequence[Image.Image], batch_size: int = 64) -> np.ndarray:
        """Embed PIL images (converted to RGB): (N, D) float32, L2-normalised."""
        from PIL import Image

        items = _check_sequence(images, "images", Image.Image)
        rgb = [im if im.mode == "RGB" else im.convert("RGB") for im in items]
        return self._encode_batches(rgb, batch_size, self._image_batch)

    def _image_batch(self, batch: list[Image.Image]) -> torch.Tensor:
        inputs = self.processor(images=batch, return_tensors="pt")
        return self.model.get_image_features(**inputs.to(self.device))


class CLAPEncoder(Encoder):
    """CLAP through transformers ClapModel + ClapProcessor (e.g. laion/clap-htsat-unfused).

    Audio is resampled to the processor's rate (48 kHz for LAION's checkpoints) with soxr,
    then the feature extractor pads (repeat-pad) or cuts to its `max_length_s` window. Its
    "rand_trunc" mode would pick a random window of a long clip; we cut to the first window
    ourselves so that encoding is deterministic. "fusion" mode (fused checkpoints) keeps its
    multi-window features, with its random choices seeded per clip, and fuses only the clips
    longer than the window, as laion-clap's `get_audio_embedding_from_data` does.
    """

    kind: ClassVar[str] = "clap"
    modalities: ClassVar[tuple[str, ...]] = ("text", "audio")

    def __init__(self, model: Any, processor: Any, model_id: str, device: str) -> None:
        super().__init__(model, processor, model_id, device)
        extractor = processor.feature_extractor
        self.sample_rate = int(extractor.sampling_rate)
        self.max_samples = int(extractor.nb_max_samples)
        self.fusion = extractor.truncation == "fusion"

    def encode_audio(
        self, waveforms: Sequence[np.ndarray], sample_rate: int, batch_size: int = 16
    ) -> np.ndarray:
        """Embed mono float waveforms recorded at `sample_rate` Hz: (N, D) float32."""
        items = _check_sequence(waveforms, "waveforms", np.ndarray)
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, int | np.integer):
            raise InvalidInputError(f"sample_rate must be an integer, got {sample_rate!r}")
        assert self.sample_rate is not None
        prepared = [self._prepare(w, int(sample_rate), i) for i, w in enumerate(items)]
        return self._encode_batches(prepared, batch_size, self._audio_batch)

    def _prepare(self, waveform: np.ndarray, sample_rate: int, index: int) -> np.ndarray:
        """Validate one waveform, resample it to the model rate, cut to the first window."""
        if waveform.ndim != 1:
            raise InvalidInputError(
                f"waveforms[{index}]: expected a 1-D mono waveform, got shape {waveform.shape}"
            )
        if waveform.size == 0:
            raise InvalidInputError(f"waveforms[{index}]: empty waveform")
        if not np.issubdtype(waveform.dtype, np.number) or not np.isfinite(waveform).all():
            raise InvalidInputError(f"waveforms[{index}]: samples must be finite numbers")
        assert self.sample_rate is not None
        wave = resample(waveform, sample_rate, self.sample_rate)
        if not self.fusion and wave.shape[0] > self.max_samples:
            wave = wave[: self.max_samples]
        return wave

    def _audio_batch(self, batch: list[np.ndarray]) -> torch.Tensor:
        if not self.fusion:
            inputs = self.processor(
                audio=batch, sampling_rate=self.sample_rate, return_tensors="pt"
            )
            return self.model.get_audio_features(**inputs.to(self.device))
        import torch

        # Fusion: one clip at a time with its crop choices seeded, so that a clip's embedding
        # does not depend on the batch around it; and `is_longer` as laion-clap's inference
        # sets it (longer than the window, by at least one hop). The feature extractor marks a
        # random clip "longer" when none is, as laion-clap does only while training, which
        # would fuse copies of one window.
        features = []
        for wave in batch:
            with _seeded_numpy(_FUSION_SEED):
                one = self.processor.feature_extractor(
                    wave, sampling_rate=self.sample_rate, return_tensors="pt"
                )
            features.append(one["input_features"])  # (1, 4, T, M)
        hop = int(self.processor.feature_extractor.hop_length)
        longer = [
            w.shape[0] > self.max_samples and w.shape[0] // hop != self.max_samples // hop
            for w in batch
        ]
        return self.model.get_audio_features(
            input_features=torch.cat(features).to(self.device),
            is_longer=torch.tensor(longer).unsqueeze(1).to(self.device),
        )


_CLASSES: dict[str, tuple[type[Encoder], str, str, str]] = {
    # kind: (encoder class, transformers model class, processor class, config model_type)
    "clip": (CLIPEncoder, "CLIPModel", "CLIPProcessor", "clip"),
    "clap": (CLAPEncoder, "ClapModel", "ClapProcessor", "clap"),
}


ENCODER_MODALITIES: dict[str, tuple[str, ...]] = {
    kind: spec[0].modalities for kind, spec in _CLASSES.items()
}


def load_encoder(kind: str, model: str | Path, device: str = "auto") -> Encoder:
    """Load a CLIP or CLAP encoder from a hub id, a local HF-format folder or (CLAP only) a
    laion-clap `.pt` checkpoint.

    `device`: "auto" (cuda when available, else cpu), "cpu", "cuda[:N]" or "mps". A path that does
    not exist is an error (no download is attempted for it); a hub id goes through
    huggingface_hub, which honours HF_HUB_OFFLINE. A laion-clap checkpoint is converted to a
    ClapModel folder once and cached (bridge/encode/laion_clap.py); the encoder's model_id
    stays the file's path. Failures raise ModelLoadError naming the id and the cause; the
    model is put in eval mode on the device, in float32.
    """
    if kind not in _CLASSES:
        raise InvalidInputError(f"encoder kind must be one of {ENCODER_KINDS}, got {kind!r}")
    resolved = resolve_device(device)
    model_id = str(model)
    from bridge.encode import laion_clap

    if laion_clap.is_checkpoint_file(model_id):
        if kind != "clap":
            raise ModelLoadError(
                f"cannot load {kind} encoder from {model_id!r}: a checkpoint file is read only "
                "as a LAION-CLAP model; give CLIP as a hub id or an HF-format folder"
            )
        with laion_clap.converted_folder(Path(model_id)) as folder:
            try:
                return _load_pretrained(kind, str(folder), model_id, resolved)
            except ModelLoadError as exc:
                raise ModelLoadError(
                    f"{exc} (from its converted copy {folder}; delete that folder to convert "
                    "the checkpoint again)"
                ) from exc
    _check_local_source(kind, model_id)
    return _load_pretrained(kind, model_id, model_id, resolved)


def _load_pretrained(kind: str, source: str, model_id: str, device: str) -> Encoder:
    """from_pretrained of `source` (hub id or folder) as the `kind` encoder named `model_id`."""
    encoder_cls, model_cls_name, processor_cls_name, model_type = _CLASSES[kind]
    try:
        import torch
        import transformers

        config = transformers.AutoConfig.from_pretrained(source)
        if getattr(config, "model_type", None) != model_type:
            raise ModelLoadError(
                f"cannot load {kind} encoder from {model_id!r}: it holds a "
                f"{getattr(config, 'model_type', 'unknown')!r} model, expected {model_type!r}"
            )
        model_cls = getattr(transformers, model_cls_name)
        processor_cls = getattr(transformers, processor_cls_name)
        net = model_cls.from_pretrained(source, config=config, dtype=torch.float32)
        processor = processor_cls.from_pretrained(source)
    except ModelLoadError:
        raise
    except Exception as exc:  # OSError (missing/offline), ValueError, safetensors errors...
        raise ModelLoadError(
            f"cannot load {kind} encoder from {model_id!r}: {type(exc).__name__}: {exc}"
        ) from exc
    net.eval()
    net.requires_grad_(False)
    net.to(device)
    encoder = encoder_cls(net, processor, model_id, device)
    logger.info("loaded %r", encoder)
    return encoder


def _check_local_source(kind: str, model_id: str) -> None:
    """Fail early for local paths that do not hold a model (hub ids pass through)."""
    path = Path(model_id).expanduser()
    looks_local = (
        path.exists()
        or path.is_absolute()
        or model_id.startswith((".", "~"))
        or model_id.count("/") > 1
        or "\\" in model_id
    )
    if not looks_local:
        return
    if not path.is_dir():
        raise ModelLoadError(f"cannot load {kind} encoder: model folder not found: {model_id}")
    if not (path / "config.json").is_file():
        raise ModelLoadError(
            f"cannot load {kind} encoder from {model_id!r}: no config.json in the folder "
            "(expected a Hugging Face model saved with save_pretrained)"
        )


def _check_sequence(items: Any, name: str, item_type: type | tuple[type, ...]) -> list[Any]:
    """`items` as a list, each of `item_type`; a bare str/array is rejected, not iterated."""
    if isinstance(items, str | bytes | np.ndarray) or not isinstance(items, Sequence):
        raise InvalidInputError(f"{name}: expected a list, got {type(items).__name__}")
    out = list(items)
    for i, item in enumerate(out):
        if not isinstance(item, item_type):
            raise InvalidInputError(
                f"{name}[{i}]: expected {getattr(item_type, '__name__', item_type)}, "
                f"got {type(item).__name__}"
            )
    return out


def _normalise(output: Any) -> np.ndarray:
    """Pooled features (transformers 5 output object or 4.x tensor) -> unit rows, float32."""
    import torch

    features = output if isinstance(output, torch.Tensor) else output.pooler_output  # (B, D)
    features = torch.nn.functional.normalize(features.float(), dim=-1)
    return features.cpu().numpy().astype(np.float32, copy=False)


@contextlib.contextmanager
def _seeded_numpy(seed: int) -> Iterator[None]:
    """Seed numpy's global RNG for the block and restore its previous state afterwards."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)
