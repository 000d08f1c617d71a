"""Shared test fixtures. Keep names and behaviour stable: every test package uses them.

Offline: HF_HUB_OFFLINE=1 (and TRANSFORMERS_OFFLINE=1) are set for the whole test session,
before anything imports huggingface_hub, so no test can reach a model hub.

Fixtures:
    tiny_clip_dir      (session) Path of a tiny CLIP model + processor in HF format
                       (tests/tiny_models.py: text + image, dim TINY_CLIP_DIM = 16).
    tiny_clap_dir      (session) Path of a tiny CLAP model + processor in HF format
                       (text + audio at 48 kHz, dim TINY_CLAP_DIM = 16).
    tiny_clip_encoder  (session) bridge.encode.encoders.load_encoder("clip", tiny_clip_dir, "cpu").
    tiny_clap_encoder  (session) bridge.encode.encoders.load_encoder("clap", tiny_clap_dir, "cpu").
    small_world        (session) a small synthetic world (bridge/bench/synthetic_world.py:
                       16 concepts, 16-d spaces, 2,000 caption pairs, 1,000-entry memories,
                       200 test pairs, seed 0; its WorldConfig is small_world.config), the
                       world the trainer and `mbridge` tests learn on (do not mutate it).
    make_wav_bytes     the function media_factory.make_wav_bytes(seconds, rate, freq, channels)
    make_audio_bytes   media_factory.make_audio_bytes(seconds, rate, freq, *, channels, fmt, ...)
    make_png_bytes     media_factory.make_png_bytes(width, height, color=None, seed=0)
    make_image_bytes   media_factory.make_image_bytes(width, height, color, fmt, seed, mode)
    shared_dir         Path of ../shared next to the repository; skips the test when absent.
    fsdd_dir           ../shared/data/fsdd/recordings (8 kHz spoken digits); skips when absent.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import media_factory  # noqa: E402  (after the offline switch on purpose)
import tiny_models  # noqa: E402
from milvus_kit import milvus_server  # noqa: E402, F401  (one session Milvus server for all)
from postgres_kit import postgres_server  # noqa: E402, F401  (and one PostgreSQL server)

if TYPE_CHECKING:
    from bridge.bench.synthetic_world import World
    from bridge.encode.encoders import Encoder

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny seeded CLIP model folder (built once per session)."""
    return tiny_models.build_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="session")
def tiny_clap_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny seeded CLAP model folder (built once per session)."""
    return tiny_models.build_tiny_clap(tmp_path_factory.mktemp("tiny-clap"))


@pytest.fixture(scope="session")
def tiny_clip_encoder(tiny_clip_dir: Path) -> Encoder:
    """The tiny CLIP folder loaded through bridge.encode.encoders on CPU (shared: do not mutate)."""
    from bridge.encode.encoders import load_encoder

    return load_encoder("clip", str(tiny_clip_dir), device="cpu")


@pytest.fixture(scope="session")
def tiny_clap_encoder(tiny_clap_dir: Path) -> Encoder:
    """The tiny CLAP folder loaded through bridge.encode.encoders on CPU (shared: do not mutate)."""
    from bridge.encode.encoders import load_encoder

    return load_encoder("clap", str(tiny_clap_dir), device="cpu")


@pytest.fixture(scope="session")
def small_world() -> World:
    """A synthetic world small enough to train on in a second, large enough that a trained
    bridge's recall stands far above chance (built once per session; shared: do not mutate)."""
    from bridge.bench.synthetic_world import WorldConfig, make_world

    return make_world(
        WorldConfig(
            latent_dim=8,
            concepts=16,
            space_dim=16,
            hidden_dim=32,
            captions=2000,
            memory=1000,
            test_pairs=200,
            seed=0,
        )
    )


def _media_fixture(factory: Callable[..., bytes]) -> Any:
    """A fixture named like `factory` that hands it to the test (its docstring says the
    arguments)."""

    def fixture() -> Callable[..., bytes]:
        return factory

    fixture.__doc__ = factory.__doc__
    return pytest.fixture(name=factory.__name__)(fixture)


make_wav_bytes = _media_fixture(media_factory.make_wav_bytes)
make_audio_bytes = _media_fixture(media_factory.make_audio_bytes)
make_png_bytes = _media_fixture(media_factory.make_png_bytes)
make_image_bytes = _media_fixture(media_factory.make_image_bytes)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared beside the repository; tests that use it skip cleanly when it is absent."""
    if not SHARED_DIR.is_dir():
        pytest.skip(f"optional shared data folder not present: {SHARED_DIR}")
    return SHARED_DIR


@pytest.fixture(scope="session")
def fsdd_dir(shared_dir: Path) -> Path:
    """Free Spoken Digit Dataset recordings (8 kHz mono WAV); skips when absent."""
    folder = shared_dir / "data" / "fsdd" / "recordings"
    if not folder.is_dir() or not any(folder.glob("*.wav")):
        pytest.skip(f"FSDD recordings not present: {folder}")
    return folder
