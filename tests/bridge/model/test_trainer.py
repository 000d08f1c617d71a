"""Trainer: learns a bridge on a small synthetic world; seeded, deterministic, checkpointed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bridge.bench.synthetic_world import World, WorldConfig, make_world
from bridge.errors import InvalidInputError
from bridge.model.config import ProjectorConfig, TrainConfig
from bridge.model.evaluation import retrieval_metrics
from bridge.model.projectors import load_checkpoint
from bridge.model.trainer import train_bridge

SMALL = WorldConfig(
    latent_dim=8,
    concepts=16,
    space_dim=16,
    hidden_dim=32,
    captions=2000,
    memory=1000,
    test_pairs=200,
    seed=0,
)
PROJECTOR = ProjectorConfig(hidden_dim=64, shared_dim=16)


@pytest.fixture(scope="module")
def world() -> World:
    return make_world(SMALL)


def _config(**overrides: object) -> TrainConfig:
    base: dict[str, object] = dict(epochs=6, batch_size=256, progress=False, seed=0)
    base.update(overrides)
    return TrainConfig(**base)  # type: ignore[arg-type]


def _audio_to_image_r10(world: World, checkpoint_dir: Path) -> float:
    ckpt = load_checkpoint(checkpoint_dir)
    shared_image = ckpt.project("clip", world.test_image)
    shared_audio = ckpt.project("clap", world.test_audio)
    return retrieval_metrics(shared_audio, shared_image)["r_at_10"]


def test_bridge_retrieves_audio_to_image_far_above_chance(world: World, tmp_path: Path) -> None:
    result = train_bridge(
        world.clip_text,
        world.clap_text,
        world.image_memory,
        world.audio_memory,
        _config(),
        PROJECTOR,
        out_dir=tmp_path / "ckpt",
    )
    r10 = _audio_to_image_r10(world, tmp_path / "ckpt")
    chance = 10 / SMALL.test_pairs
    assert r10 > 5 * chance, r10
    report = json.loads((tmp_path / "ckpt" / "report.json").read_text())
    assert report["data"]["caption_pairs"] == 2000 and report["data"]["image_memory"] == 1000
    assert len(report["loss_curve"]) == 6
    assert report["loss_curve"][-1]["loss"] < report["loss_curve"][0]["loss"]
    assert "val_mean_r_at_1" in report["final"] and "torch" in report["versions"]
    assert result.checkpoint_dir == tmp_path / "ckpt"


def test_training_is_deterministic_on_cpu(world: World) -> None:
    a = train_bridge(
        world.clip_text[:512],
        world.clap_text[:512],
        world.image_memory,
        world.audio_memory,
        _config(epochs=2),
        PROJECTOR,
    )
    b = train_bridge(
        world.clip_text[:512],
        world.clap_text[:512],
        world.image_memory,
        world.audio_memory,
        _config(epochs=2),
        PROJECTOR,
    )
    for (name, pa), pb in zip(
        a.model.state_dict().items(), b.model.state_dict().values(), strict=True
    ):
        assert torch.equal(pa, pb), name


def test_naive_memory_recompute_gives_the_same_model(world: World) -> None:
    kwargs = dict(config=_config(epochs=1, use_noise=False), projector=PROJECTOR)
    fast = train_bridge(
        world.clip_text[:512],
        world.clap_text[:512],
        world.image_memory,
        world.audio_memory,
        **kwargs,
    )  # type: ignore[arg-type]
    naive = train_bridge(
        world.clip_text[:512],
        world.clap_text[:512],
        world.image_memory,
        world.audio_memory,
        recompute_memory_each_step=True,
        **kwargs,
    )  # type: ignore[arg-type]
    for pa, pb in zip(fast.model.parameters(), naive.model.parameters(), strict=True):
        assert torch.allclose(pa, pb, atol=1e-5)


@pytest.mark.parametrize(
    "overrides",
    [
        {"loss": "cwcl", "cwcl_sharpen": 4.0},
        {"loss": "cwcl", "cwcl_reverse": "cwcl", "cwcl_weight_source": "clip"},
        {"learn_temperature": True},
        {"batchnorm_mode": "separate", "memory_top_k": 32},
    ],
)
def test_options_train_and_report(world: World, overrides: dict[str, object]) -> None:
    result = train_bridge(
        world.clip_text[:512],
        world.clap_text[:512],
        world.image_memory,
        world.audio_memory,
        _config(epochs=2, **overrides),
        PROJECTOR,
    )
    final = result.report["final"]
    assert np.isfinite(final["loss"])
    if overrides.get("loss") == "cwcl":
        assert 0 < final["target_mass"] < 1
    if overrides.get("learn_temperature"):
        assert final["temperature"] != pytest.approx(0.01)


def test_memories_are_optional(world: World) -> None:
    result = train_bridge(
        world.clip_text[:256], world.clap_text[:256], config=_config(epochs=1), projector=PROJECTOR
    )
    assert result.report["data"]["memory_used"] is False


def test_bad_inputs_are_rejected(world: World) -> None:
    with pytest.raises(InvalidInputError, match="row i"):
        train_bridge(world.clip_text[:10], world.clap_text[:11], config=_config())
    bad = world.clip_text[:10].copy()
    bad[3, 0] = np.nan
    with pytest.raises(InvalidInputError, match="NaN"):
        train_bridge(bad, world.clap_text[:10], config=_config())
    with pytest.raises(InvalidInputError, match="dimension"):
        train_bridge(
            world.clip_text[:10], world.clap_text[:10], image_memory=np.ones((5, 3), np.float32)
        )
    with pytest.raises(InvalidInputError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(InvalidInputError, match="device"):
        TrainConfig(device="tpu")


@pytest.mark.gpu
def test_training_on_cuda(world: World) -> None:
    result = train_bridge(
        world.clip_text[:512],
        world.clap_text[:512],
        world.image_memory,
        world.audio_memory,
        _config(epochs=1, device="cuda"),
        PROJECTOR,
    )
    assert result.report["device"] == "cuda"


def test_fixed_temperature_below_clip_clamp_is_honoured(world: World) -> None:
    result = train_bridge(
        world.clip_text[:256],
        world.clap_text[:256],
        config=_config(epochs=1, temperature=0.001),
        projector=PROJECTOR,
    )
    assert result.report["final"]["temperature"] == pytest.approx(0.001, rel=1e-4)


def test_bf16_precision_trains_as_well_as_fp32(world: World, tmp_path: Path) -> None:
    """The bf16 path (autocast matmuls, fp32 softmax/optimizer) must reach the fp32 metric."""
    scores = {}
    for precision in ("fp32", "bf16"):
        result = train_bridge(
            world.clip_text,
            world.clap_text,
            world.image_memory,
            world.audio_memory,
            _config(precision=precision),
            PROJECTOR,
            out_dir=tmp_path / precision,
        )
        assert result.report["precision"] == precision
        assert all(p.dtype == torch.float32 for p in result.model.parameters())
        scores[precision] = _audio_to_image_r10(world, tmp_path / precision)
    assert scores["bf16"] > 5 * 10 / SMALL.test_pairs, scores
    assert abs(scores["bf16"] - scores["fp32"]) < 0.1, scores


def test_precision_auto_resolves_per_device(monkeypatch: pytest.MonkeyPatch) -> None:
    from bridge.model import devices

    assert devices.resolve_precision("fp32", "cpu") == "fp32"
    assert devices.resolve_precision("bf16", "cpu") == "bf16"
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: True)
    assert devices.resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: False)
    assert devices.resolve_precision("auto", "cpu") == "fp32"
    with pytest.raises(InvalidInputError, match="precision"):
        devices.resolve_precision("fp8", "cpu")
    with pytest.raises(InvalidInputError, match="precision"):
        TrainConfig(precision="half")  # type: ignore[arg-type]
