"""What the service benchmarks run on: stand-in encoders, a random bridge, synthetic items.

Encoding 100,000 media files on a CPU would take hours, and the search path never looks at
media again (it reads raw embeddings from the store, and the indexes are built from those),
so the service benchmarks insert N random unit vectors straight into the item store. The
encoders are tiny random CLIP and CLAP models saved in Hugging Face format, with projections
as wide as real CLIP/CLAP (512 by default), so every vector has the real width: an audio
query's time therefore includes a tiny CLAP tower, not a real HTSAT (the per-stage encode
time shows what to scale). The models are seeded, so every run builds the same weights.

Recipe: a byte-level BPE vocabulary with no merges (every byte is its own token), tiny
transformer configs, and `save_pretrained` of the model with its processor; the folders load
through the same `from_pretrained` path as hub checkpoints. The test suite's tiny towers
(tests/tiny_models.py) are these builders at a projection width of 16.
"""

from __future__ import annotations

import io
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from bridge.types import ServiceConfig

SEED = 1234  # torch seed of both stand-in towers
CLAP_SAMPLE_RATE = 48_000
K = 10  # hits per benchmark query


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    """(n, dim) float32 rows of unit length."""
    x = rng.standard_normal((n, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def clustered_rows(
    rng: np.random.Generator, n: int, dim: int, clusters: int = 1000, spread: float = 0.35
) -> np.ndarray:
    """(n, dim) unit rows around `clusters` random centres, as real embeddings cluster by
    content (uniform random rows are the worst case of approximate search: every
    neighbour is about as far as the next)."""
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    points = centres[rng.integers(0, clusters, n)]
    points += spread * rng.standard_normal((n, dim), dtype=np.float32)
    return points / np.linalg.norm(points, axis=1, keepdims=True)


def near_queries(rng: np.random.Generator, rows: np.ndarray, n: int = 64) -> np.ndarray:
    """Unit queries close to the first ``n`` of ``rows`` (each plus 5% noise)."""
    queries = rows[:n] + 0.05 * unit_rows(rng, n, rows.shape[1])
    return queries / np.linalg.norm(queries, axis=1, keepdims=True)


def sine_wav_bytes(seconds: float, rate: int, freq: float) -> bytes:
    """A mono 16-bit PCM WAV file of a sine tone at amplitude 0.5."""
    import soundfile as sf

    t = np.arange(int(round(seconds * rate)), dtype=np.float64) / rate
    tone = (0.5 * np.sin(2.0 * np.pi * freq * t)).astype(np.float32)
    buffer = io.BytesIO()
    sf.write(buffer, tone, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def audio_queries(n: int) -> list[bytes]:
    """``n`` distinct one-second 16 kHz WAV uploads (tones 37 Hz apart from 200 Hz)."""
    return [sine_wav_bytes(1.0, 16000, 200.0 + 37.0 * i) for i in range(n)]


# -- encoders -------------------------------------------------------------------------------


def _byte_vocab(folder: Path, specials: list[str], word_end: bool) -> None:
    """vocab.json (the specials, then the 256 byte characters [and their `</w>` forms]) and
    an empty merges.txt: a byte-level BPE tokenizer with no merges."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    folder.mkdir(parents=True, exist_ok=True)
    byte_chars = list(bytes_to_unicode().values())
    tokens = [*specials, *byte_chars, *([c + "</w>" for c in byte_chars] if word_end else [])]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(tokens))}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")


def _text_tower(tokenizer: Any) -> dict[str, Any]:
    """The text transformer both stand-ins share: hidden 32, 2 layers, 4 heads."""
    return {
        "vocab_size": len(tokenizer),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }


def build_clip(out: Path, dim: int) -> Path:
    """A ~100k-parameter CLIPModel (text and vision: hidden 32, 2 layers; images 32 px,
    patch 8) with a ``dim``-wide projection, saved with its processor to ``out``."""
    import torch
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        CLIPTextConfig,
        CLIPTokenizer,
        CLIPVisionConfig,
    )

    source = out / "_tokenizer_src"
    _byte_vocab(source, ["<|startoftext|>", "<|endoftext|>"], word_end=True)
    tokenizer = CLIPTokenizer.from_pretrained(source, model_max_length=32)
    text = CLIPTextConfig(**_text_tower(tokenizer), max_position_embeddings=32)
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
    )
    config = CLIPConfig(
        text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=dim
    )
    torch.manual_seed(SEED)
    model = CLIPModel(config).eval()
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    model.save_pretrained(out)
    CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(out)
    shutil.rmtree(source, ignore_errors=True)
    return out


def build_clap(out: Path, dim: int) -> Path:
    """A tiny ClapModel (unfused HTSAT: 48 kHz, 16 mel bins, spec 64, patch 4, window 4,
    depths [1, 1], 1 s clips; RoBERTa text, hidden 32) with a ``dim``-wide projection."""
    import torch
    from transformers import (
        ClapAudioConfig,
        ClapConfig,
        ClapFeatureExtractor,
        ClapModel,
        ClapProcessor,
        ClapTextConfig,
        RobertaTokenizer,
    )

    source = out / "_tokenizer_src"
    _byte_vocab(source, ["<s>", "<pad>", "</s>", "<unk>", "<mask>"], word_end=False)
    tokenizer = RobertaTokenizer.from_pretrained(source, model_max_length=32)
    features = ClapFeatureExtractor(
        feature_size=16,
        sampling_rate=CLAP_SAMPLE_RATE,
        max_length_s=1,
        hop_length=480,
        fft_window_size=1024,
        truncation="rand_trunc",
    )
    text = ClapTextConfig(**_text_tower(tokenizer), max_position_embeddings=40, projection_dim=dim)
    audio = ClapAudioConfig(
        spec_size=64,
        num_mel_bins=16,
        patch_size=4,
        patch_stride=[4, 4],
        window_size=4,
        depths=[1, 1],
        num_attention_heads=[2, 4],
        patch_embeds_hidden_size=16,
        hidden_size=32,
        projection_dim=dim,
        enable_fusion=False,
    )
    config = ClapConfig(
        text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=dim
    )
    torch.manual_seed(SEED)
    model = ClapModel(config).eval()
    model.save_pretrained(out)
    ClapProcessor(feature_extractor=features, tokenizer=tokenizer).save_pretrained(out)
    shutil.rmtree(source, ignore_errors=True)
    return out


def build_stand_in_encoders(workdir: Path, dim: int) -> tuple[str, str]:
    """The stand-in CLIP and CLAP folders under ``workdir``: (clip path, clap path)."""
    return str(build_clip(workdir / "clip", dim)), str(build_clap(workdir / "clap", dim))


# -- data -----------------------------------------------------------------------------------


def make_bridge(path: Path, clip_dim: int, clap_dim: int, hidden: int, shared: int) -> Path:
    """A randomly initialised bridge checkpoint (torch seed 0) at ``path``."""
    import torch

    from bridge.model.config import ProjectorConfig
    from bridge.model.projectors import BridgeModel, save_checkpoint

    torch.manual_seed(0)
    config = ProjectorConfig(
        clip_dim=clip_dim, clap_dim=clap_dim, hidden_dim=hidden, shared_dim=shared
    )
    return save_checkpoint(path, BridgeModel(config), None, {"note": "random benchmark bridge"})


def populate_store(
    data_dir: Path, images: np.ndarray, audio: np.ndarray, clip_id: str, clap_id: str
) -> float:
    """Insert the rows as image and audio items through ItemStore.add_items (5,000 per
    transaction); answers the seconds it took."""
    from bridge.storage.items import ItemStore, NewItem

    started = time.perf_counter()
    store = ItemStore(data_dir / "store.sqlite")
    try:
        for modality, rows, encoder in (("image", images, clip_id), ("audio", audio, clap_id)):
            for start in range(0, len(rows), 5000):
                chunk = rows[start : start + 5000]
                store.add_items(
                    [
                        NewItem(modality, {"n": start + i, "shard": (start + i) % 10}, row, encoder)
                        for i, row in enumerate(chunk)
                    ]
                )
    finally:
        store.close()
    return time.perf_counter() - started


def synthetic_service(
    work: Path, items: int, dim: int = 512, clustered: bool = False
) -> tuple[ServiceConfig, np.ndarray, np.random.Generator]:
    """A data directory under ``work`` with ``items`` random image vectors (uniform, or
    ``clustered_rows``) and 1,000 audio ones, stand-in encoders and a random bridge: (the
    config to open or serve it, the image vectors, the seeded generator they came from, for
    further draws)."""
    from bridge.encode.encoders import load_encoder

    clip_id, clap_id = build_stand_in_encoders(work, dim)
    rng = np.random.default_rng(0)
    images = (clustered_rows if clustered else unit_rows)(rng, items, dim)
    audio = unit_rows(rng, 1000, dim)
    clip, clap = load_encoder("clip", clip_id, "cpu"), load_encoder("clap", clap_id, "cpu")
    populate_store(work / "var", images, audio, clip.model_id, clap.model_id)
    config = ServiceConfig(
        data_dir=work / "var",
        clip_model=clip_id,
        clap_model=clap_id,
        initial_bridge=make_bridge(work / "bridge", dim, dim, 1024, dim),
        device="cpu",
        samples_dir=None,
    )
    return config, images, rng
