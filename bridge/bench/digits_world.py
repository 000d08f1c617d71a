"""The digits benchmark's world: every embedding it needs (cached), and its splits.

Real data under a data dir (bridge/bench/digits_data.py): the caption corpus through both
text towers, MNIST images and FSDD clips through the demo towers, each tower's zero-shot
prompt ensemble, and the evaluation splits (main, speaker-held-out, optionally a tower that
never heard the held-out speakers; `dev_split` for hyper-parameter selection). Embeddings are
cached as .npy files keyed by the weights' sha256, so reruns only train.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bridge.bench.digits_data import (
    DIGIT_WORDS,
    FSDD_SPEAKERS,
    FSDD_TEST_TAKES,
    FSDD_TRAIN_TAKES,
    MNIST_EVAL,
    MNIST_TRAIN,
    list_fsdd,
    load_mnist,
    mnist_pil,
    read_wav,
)
from bridge.errors import InvalidInputError, NotFoundError

logger = logging.getLogger(__name__)

HELDOUT_SPEAKERS = ("theo", "yweweler")
# Zero-shot prompt ensemble: short neutral prompts, the same for both towers.
PROMPTS = ("{w}", "the number {w}", "the digit {w}", "the digit {d}", "number {d}")


@dataclass
class Split:
    """Raw embeddings and labels for one evaluation split."""

    name: str
    image_memory: np.ndarray  # (M_i, D_clip)
    audio_memory: np.ndarray  # (M_a, D_clap)
    image: np.ndarray  # (N_i, D_clip) evaluation images
    image_labels: np.ndarray
    audio: np.ndarray  # (N_a, D_clap) evaluation clips
    audio_labels: np.ndarray
    description: str
    # Labels of the memories' items (training halves): the trainer's labelled dev set is a
    # sample of them (never the evaluation items). None: no dev set for this split.
    image_memory_labels: np.ndarray | None = None
    audio_memory_labels: np.ndarray | None = None


@dataclass
class World:
    clip_text: np.ndarray  # (N, D_clip) caption corpus
    clap_text: np.ndarray  # (N, D_clap)
    clip_prompts: np.ndarray  # (10, D_clip) class prompt ensembles
    clap_prompts: np.ndarray  # (10, D_clap)
    splits: list[Split]
    zero_shot: dict[str, float]


def _sha256(path: Path) -> str:
    from bridge.model.projectors import file_sha256

    return file_sha256(path)


def _weights_file(model_dir: Path) -> Path:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (model_dir / name).is_file():
            return model_dir / name
    raise NotFoundError(f"no model weights in {model_dir}")


class _Cache:
    """Embeddings cached as .npy files named by model weights hash and item set."""

    def __init__(self, root: Path | None, clip_dir: Path, clap_dir: Path) -> None:
        self.root = root
        self.tags = {
            "clip": _sha256(_weights_file(clip_dir))[:16],
            "clap": _sha256(_weights_file(clap_dir))[:16],
        }

    def get(self, kind: str, name: str, compute: Any) -> np.ndarray:
        from bridge.arrays import atomic_save_npy

        if self.root is None:
            return np.asarray(compute(), dtype=np.float32)
        path = self.root / f"{kind}-{self.tags[kind]}-{name}.npy"
        if path.is_file():
            return np.load(path)
        started = time.perf_counter()
        array = np.asarray(compute(), dtype=np.float32)
        atomic_save_npy(path, array)
        logger.info(
            "embedded %s/%s %s in %.1fs", kind, name, array.shape, time.perf_counter() - started
        )
        return array


def _prompt_ensemble(encoder: Any) -> np.ndarray:
    from bridge.arrays import l2_normalize

    rows = []
    for digit, word in enumerate(DIGIT_WORDS):
        texts = [p.format(w=word, d=digit) for p in PROMPTS]
        rows.append(encoder.encode_text(texts).mean(axis=0))
    return l2_normalize(np.stack(rows))


def _zero_shot(items: np.ndarray, prompts: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean((items @ prompts.T).argmax(axis=1) == labels))


def load_world(
    data_dir: Path,
    clip_dir: Path,
    clap_dir: Path,
    captions_path: Path,
    cache_dir: Path | None,
    heldout_clap_dir: Path | None = None,
) -> World:
    """Embed everything the benchmark needs (cached) and build the evaluation splits."""
    from bridge.encode.embed import read_captions
    from bridge.encode.encoders import load_encoder

    captions = read_captions(captions_path)
    images, image_labels = load_mnist(data_dir)
    train_clips = list_fsdd(data_dir, FSDD_TRAIN_TAKES)
    test_clips = list_fsdd(data_dir, FSDD_TEST_TAKES)
    clip = load_encoder("clip", str(clip_dir), device="cpu")
    clap = load_encoder("clap", str(clap_dir), device="cpu")
    cache = _Cache(cache_dir, clip_dir, clap_dir)
    tr, ev = np.array(MNIST_TRAIN), np.array(MNIST_EVAL)
    caption_key = "captions-" + _text_hash(captions)

    def audio(encoder: Any, clips: list[Any]) -> np.ndarray:
        waves = [read_wav(c.path) for c in clips]
        rates = {rate for _, rate in waves}
        if len(rates) != 1:
            raise InvalidInputError(f"FSDD clips with mixed sample rates {sorted(rates)}")
        return encoder.encode_audio([w for w, _ in waves], sample_rate=rates.pop())

    clip_text = cache.get("clip", caption_key, lambda: clip.encode_text(captions, batch_size=256))
    clap_text = cache.get("clap", caption_key, lambda: clap.encode_text(captions, batch_size=256))
    img_train = cache.get("clip", "mnist-0-4999", lambda: clip.encode_image(mnist_pil(images[tr])))
    img_eval = cache.get(
        "clip", "mnist-5000-9999", lambda: clip.encode_image(mnist_pil(images[ev]))
    )
    aud_train = cache.get("clap", "fsdd-takes-5-49", lambda: audio(clap, train_clips))
    aud_test = cache.get("clap", "fsdd-takes-0-4", lambda: audio(clap, test_clips))
    clip_prompts = _prompt_ensemble(clip)
    clap_prompts = _prompt_ensemble(clap)

    test_lab = np.array([c.digit for c in test_clips])
    train_lab = np.array([c.digit for c in train_clips])
    test_spk = np.array([c.speaker for c in test_clips])
    train_spk = np.array([c.speaker for c in train_clips])
    held = np.isin(test_spk, HELDOUT_SPEAKERS)
    known = ~np.isin(train_spk, HELDOUT_SPEAKERS)
    zero_shot = {
        "clip_text_to_image_mnist_5000_9999": _zero_shot(img_eval, clip_prompts, image_labels[ev]),
        "clap_text_to_audio_fsdd_takes_0_4": _zero_shot(aud_test, clap_prompts, test_lab),
        "clap_text_to_audio_heldout_speakers_takes_0_4": _zero_shot(
            aud_test[held], clap_prompts, test_lab[held]
        ),
    }
    splits = [
        Split(
            "main",
            img_train,
            aud_train,
            img_eval,
            image_labels[ev],
            aud_test,
            test_lab,
            "FSDD takes 0-4 (300 clips, 6 speakers) vs MNIST 5000-9999 (5000 images); "
            "memories: MNIST 0-4999, FSDD takes 5-49 of all speakers",
            image_labels[tr],
            train_lab,
        ),
        Split(
            "speaker_heldout",
            img_train,
            aud_train[known],
            img_eval,
            image_labels[ev],
            aud_test[held],
            test_lab[held],
            f"held-out speakers {', '.join(HELDOUT_SPEAKERS)}: their FSDD takes 0-4 "
            f"({int(held.sum())} clips) vs MNIST 5000-9999; audio memory: FSDD takes 5-49 of "
            f"the other {len(FSDD_SPEAKERS) - len(HELDOUT_SPEAKERS)} speakers only "
            "(the CLAP tower heard takes 5-49 of every speaker)",
            image_labels[tr],
            train_lab[known],
        ),
    ]
    if heldout_clap_dir is not None:
        clap_h = load_encoder("clap", str(heldout_clap_dir), device="cpu")
        cache_h = _Cache(cache_dir, clip_dir, heldout_clap_dir)
        clap_text_h = cache_h.get("clap", caption_key, lambda: clap_h.encode_text(captions, 256))
        aud_train_h = cache_h.get("clap", "fsdd-takes-5-49", lambda: audio(clap_h, train_clips))
        aud_test_h = cache_h.get("clap", "fsdd-takes-0-4", lambda: audio(clap_h, test_clips))
        prompts_h = _prompt_ensemble(clap_h)
        zero_shot["heldout_clap_text_to_audio_heldout_speakers_takes_0_4"] = _zero_shot(
            aud_test_h[held], prompts_h, test_lab[held]
        )
        splits.append(
            Split(
                "speaker_heldout_tower",
                img_train,
                aud_train_h[known],
                img_eval,
                image_labels[ev],
                aud_test_h[held],
                test_lab[held],
                f"as speaker_heldout, with a CLAP tower ({heldout_clap_dir}) that never heard "
                f"{', '.join(HELDOUT_SPEAKERS)}",
                image_labels[tr],
                train_lab[known],
            )
        )
        splits[-1].clap_text = clap_text_h  # type: ignore[attr-defined]
        splits[-1].clap_prompts = prompts_h  # type: ignore[attr-defined]
    return World(clip_text, clap_text, clip_prompts, clap_prompts, splits, zero_shot)


def _text_hash(lines: list[str]) -> str:
    import hashlib

    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()[:16]


def dev_split(world: World, data_dir: Path) -> Split:
    """Selection split from the training halves only: the memories' own items as queries and
    gallery (MNIST 0-4999 vs FSDD takes 5-49). No evaluation item is touched."""
    main = world.splits[0]
    _, labels = load_mnist(data_dir)
    clips = list_fsdd(data_dir, FSDD_TRAIN_TAKES)
    return Split(
        "dev",
        main.image_memory,
        main.audio_memory,
        main.image_memory,
        labels[np.array(MNIST_TRAIN)],
        main.audio_memory,
        np.array([c.digit for c in clips]),
        "dev split for hyper-parameter selection: FSDD takes 5-49 (2700) vs MNIST 0-4999 "
        "(5000), the towers' and memories' training items; never the evaluation items",
    )
