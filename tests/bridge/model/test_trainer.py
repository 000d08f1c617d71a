"""Trainer: learns a bridge on a small synthetic world; seeded, deterministic, checkpointed."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from bridge.arrays import l2_normalize
from bridge.bench.synthetic_world import World
from bridge.errors import InvalidInputError
from bridge.model.config import BridgeMode, ProjectorConfig, TrainConfig
from bridge.model.evaluation import retrieval_metrics
from bridge.model.projectors import load_checkpoint
from bridge.model.trainer import train_bridge
from bridge.model.validation import DevSet

PROJECTOR = ProjectorConfig(hidden_dim=64, shared_dim=16)


def _config(**overrides: object) -> TrainConfig:
    base: dict[str, object] = dict(epochs=6, batch_size=256, progress=False, seed=0)
    base.update(overrides)
    return TrainConfig(**base)  # type: ignore[arg-type]


def _audio_to_image_r10(world: World, checkpoint_dir: Path) -> float:
    ckpt = load_checkpoint(checkpoint_dir)
    shared_image = ckpt.project("clip", world.test_image)
    shared_audio = ckpt.project("clap", world.test_audio)
    return retrieval_metrics(shared_audio, shared_image)["r_at_10"]


@pytest.mark.parametrize("mode", ["cmcr", "exmcr"])
def test_bridge_retrieves_audio_to_image_far_above_chance(
    small_world: World, tmp_path: Path, mode: BridgeMode
) -> None:
    """Both modes (Ex-MCR: bridge/model/exmcr.py) on the same inputs and options."""
    result = train_bridge(
        small_world.clip_text,
        small_world.clap_text,
        small_world.image_memory,
        small_world.audio_memory,
        _config(),
        replace(PROJECTOR, mode=mode),
        out_dir=tmp_path / "ckpt",
    )
    r10 = _audio_to_image_r10(small_world, tmp_path / "ckpt")
    chance = 10 / small_world.config.test_pairs
    assert r10 > 5 * chance, r10
    # The saved checkpoint projects exactly as the trained model does.
    audio = l2_normalize(small_world.test_audio[:50])
    with torch.no_grad():
        trained = result.model.cpu().eval().clap(torch.from_numpy(audio)).numpy()
    np.testing.assert_allclose(load_checkpoint(tmp_path / "ckpt").project("clap", audio), trained)
    report = json.loads((tmp_path / "ckpt" / "report.json").read_text())
    assert report["mode"] == mode and report["projector"]["mode"] == mode
    extra = {"audio": small_world.config.memory, "image": small_world.config.memory}
    tuples = {"text": report["data"]["train_pairs"], **(extra if mode == "exmcr" else {})}
    assert report["data"]["tuples"] == tuples  # Ex-MCR: audio- and image-centric rows too
    assert report["data"]["caption_pairs"] == small_world.config.captions
    assert report["data"]["image_memory"] == small_world.config.memory
    assert len(report["loss_curve"]) == 6
    assert report["loss_curve"][-1]["loss"] < report["loss_curve"][0]["loss"]
    assert "val_mean_r_at_1" in report["final"] and "torch" in report["versions"]
    assert result.checkpoint_dir == tmp_path / "ckpt"
    # The pseudo-pair signal: every epoch, in [0, 1], and far above chance once trained.
    curve = [epoch["val_pseudo_audio_to_image_r_at_1"] for epoch in report["loss_curve"]]
    assert all(0.0 <= value <= 1.0 for value in curve)
    val_pairs = report["data"]["val_pairs"]
    assert curve[-1] > 5 / val_pairs, curve
    assert 0.0 < report["final"]["val_pseudo_audio_to_image_map"] <= 1.0


def test_training_is_deterministic_on_cpu(small_world: World) -> None:
    a, b = (
        train_bridge(
            small_world.clip_text[:512],
            small_world.clap_text[:512],
            small_world.image_memory,
            small_world.audio_memory,
            _config(epochs=2),
            PROJECTOR,
        )
        for _ in range(2)
    )
    for (name, pa), pb in zip(
        a.model.state_dict().items(), b.model.state_dict().values(), strict=True
    ):
        assert torch.equal(pa, pb), name


def test_naive_memory_recompute_gives_the_same_model(small_world: World) -> None:
    kwargs = dict(config=_config(epochs=1, use_noise=False), projector=PROJECTOR)
    fast = train_bridge(
        small_world.clip_text[:512],
        small_world.clap_text[:512],
        small_world.image_memory,
        small_world.audio_memory,
        **kwargs,
    )  # type: ignore[arg-type]
    naive = train_bridge(
        small_world.clip_text[:512],
        small_world.clap_text[:512],
        small_world.image_memory,
        small_world.audio_memory,
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
def test_options_train_and_report(small_world: World, overrides: dict[str, object]) -> None:
    result = train_bridge(
        small_world.clip_text[:512],
        small_world.clap_text[:512],
        small_world.image_memory,
        small_world.audio_memory,
        _config(epochs=2, **overrides),
        PROJECTOR,
    )
    final = result.report["final"]
    assert np.isfinite(final["loss"])
    if overrides.get("loss") == "cwcl":
        assert 0 < final["target_mass"] < 1
    if overrides.get("learn_temperature"):
        assert final["temperature"] != pytest.approx(0.01)
    separate = overrides.get("batchnorm_mode") == "separate"
    assert result.model.config.text_norms is separate
    assert (result.model.clip.text_norms is not None) is separate


def test_memories_are_optional(small_world: World) -> None:
    result = train_bridge(
        small_world.clip_text[:256],
        small_world.clap_text[:256],
        config=_config(epochs=1),
        projector=PROJECTOR,
    )
    assert result.report["data"]["memory_used"] is False


def test_bad_inputs_are_rejected(small_world: World) -> None:
    with pytest.raises(InvalidInputError, match="row i"):
        train_bridge(small_world.clip_text[:10], small_world.clap_text[:11], config=_config())
    bad = small_world.clip_text[:10].copy()
    bad[3, 0] = np.nan
    with pytest.raises(InvalidInputError, match="NaN"):
        train_bridge(bad, small_world.clap_text[:10], config=_config())
    with pytest.raises(InvalidInputError, match="dimension"):
        train_bridge(
            small_world.clip_text[:10],
            small_world.clap_text[:10],
            image_memory=np.ones((5, 3), np.float32),
        )
    with pytest.raises(InvalidInputError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(InvalidInputError, match="device"):
        TrainConfig(device="tpu")


@pytest.mark.gpu
def test_training_on_cuda(small_world: World) -> None:
    result = train_bridge(
        small_world.clip_text[:512],
        small_world.clap_text[:512],
        small_world.image_memory,
        small_world.audio_memory,
        _config(epochs=1, device="cuda"),
        PROJECTOR,
    )
    assert result.report["device"] == "cuda"


def test_fixed_temperature_below_clip_clamp_is_honoured(small_world: World) -> None:
    result = train_bridge(
        small_world.clip_text[:256],
        small_world.clap_text[:256],
        config=_config(epochs=1, temperature=0.001),
        projector=PROJECTOR,
    )
    assert result.report["final"]["temperature"] == pytest.approx(0.001, rel=1e-4)


def test_bf16_precision_trains_as_well_as_fp32(small_world: World, tmp_path: Path) -> None:
    """The bf16 path (autocast matmuls, fp32 softmax/optimizer) must reach the fp32 metric."""
    scores = {}
    for precision in ("fp32", "bf16"):
        result = train_bridge(
            small_world.clip_text,
            small_world.clap_text,
            small_world.image_memory,
            small_world.audio_memory,
            _config(precision=precision),
            PROJECTOR,
            out_dir=tmp_path / precision,
        )
        assert result.report["precision"] == precision
        assert all(p.dtype == torch.float32 for p in result.model.parameters())
        scores[precision] = _audio_to_image_r10(small_world, tmp_path / precision)
    assert scores["bf16"] > 5 * 10 / small_world.config.test_pairs, scores
    assert abs(scores["bf16"] - scores["fp32"]) < 0.1, scores


class _RecordingCriterion:
    """Wraps the real CMCRLoss and records what one training step hands it."""

    def __init__(self, inner: torch.nn.Module) -> None:
        self.inner = inner
        self.calls: list[dict[str, object]] = []

    def __call__(self, *args: torch.Tensor | None) -> object:
        shared, frozen = args[:4], args[5]
        self.calls.append(
            {
                "frozen": None if frozen is None else frozen.clone(),
                "dtypes": {t.dtype for t in shared if t is not None},
                "autocast": torch.is_autocast_enabled("cpu"),
            }
        )
        return self.inner(*args)


def _one_step(loss: str, precision: str, noise: float = 0.3) -> tuple[_RecordingCriterion, list]:
    from bridge.model.losses import CMCRLoss
    from bridge.model.projectors import BridgeModel
    from bridge.model.trainer import _cwcl_reference, _Optimisation

    torch.manual_seed(0)
    config = _config(loss=loss)
    model = BridgeModel(ProjectorConfig(clip_dim=16, clap_dim=12, hidden_dim=32, shared_dim=8))
    criterion = _RecordingCriterion(CMCRLoss(loss, 0.1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    opt = _Optimisation(
        model=model,
        criterion=criterion,  # type: ignore[arg-type]
        optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0),
        config=config,
        noise=noise,
        generator=torch.Generator().manual_seed(0),
        max_log_scale=5.0,
        precision=precision,
    )
    g = torch.Generator().manual_seed(1)
    batch = [
        torch.nn.functional.normalize(torch.randn(32, d, generator=g), dim=-1)
        for d in (16, 12, 16, 12)
    ]
    opt.step(*batch)
    return criterion, [_cwcl_reference(batch[0], batch[1], config)]


def test_cwcl_weights_come_from_the_clean_caption_embeddings() -> None:
    """The weights' reference is the frozen embeddings before the step's noise (they were
    computed from the noised ones, which blurred the weights)."""
    criterion, (clean,) = _one_step("cwcl", "fp32", noise=0.3)
    (call,) = criterion.calls
    assert call["frozen"] is not None
    torch.testing.assert_close(call["frozen"], clean)


def test_bf16_steps_hand_the_loss_bf16_under_autocast() -> None:
    """With precision bf16 both losses get the projectors' bf16 outputs under autocast; the
    loss decides its own precision (CWCL's logits and targets stay float32, test_losses)."""
    for loss in ("cwcl", "infonce"):
        criterion, _ = _one_step(loss, "bf16")
        (call,) = criterion.calls
        assert call["dtypes"] == {torch.bfloat16} and call["autocast"] is True


def test_training_without_memory_says_the_captions_stand_in(
    small_world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """No audio memory: the report names the pseudo source of each side and warns that the
    text-audio gap is not learned (it trained silently before)."""
    with caplog.at_level("WARNING", logger="bridge.model.trainer"):
        result = train_bridge(
            small_world.clip_text[:256],
            small_world.clap_text[:256],
            small_world.image_memory,
            None,
            _config(epochs=1),
            PROJECTOR,
        )
    data = result.report["data"]
    assert data["pseudo_source"] == {"image": "memory", "audio": "captions"}
    assert "val_pseudo_audio_to_image_r_at_1" not in result.report["final"]  # text stands in
    (warning,) = result.report["warnings"]
    assert "no audio memory given" in warning and "text-audio gap is not learned" in warning
    assert warning in caplog.text
    off = train_bridge(
        small_world.clip_text[:256],
        small_world.clap_text[:256],
        small_world.image_memory,
        small_world.audio_memory,
        _config(epochs=1, use_memory=False),
        PROJECTOR,
    )
    assert off.report["data"]["pseudo_source"] == {"image": "captions", "audio": "captions"}
    assert all("memory is turned off" in w for w in off.report["warnings"])


def test_select_epoch_keeps_the_best_epoch_by_the_chosen_signal(small_world: World) -> None:
    """select_epoch names a validation signal; the returned model is the epoch where it
    peaked (re-measured on the same held-out captions), and the report says which."""
    from bridge.model.trainer import _pseudo, _to_unit_tensor
    from bridge.model.validation import validate_epoch

    signal = "val_pseudo_audio_to_image_map"
    config = _config(epochs=6, select_epoch=signal, val_fraction=0.1, lr=3e-2)
    world = small_world
    result = train_bridge(
        world.clip_text, world.clap_text, world.image_memory, world.audio_memory, config, PROJECTOR
    )
    curve = [epoch[signal] for epoch in result.report["loss_curve"]]
    best = max(range(len(curve)), key=lambda i: (curve[i], -i))
    selected = result.report["selected_epoch"]
    assert selected == {"by": signal, "epoch": best + 1, "value": curve[best]}
    assert best + 1 < config.epochs  # the signal peaks before the end in this world
    # The same held-out captions as the trainer's split, through the returned model.
    order = np.random.default_rng(config.seed).permutation(len(world.clip_text))
    val = torch.from_numpy(order[: int(round(len(order) * config.val_fraction))])
    clip, clap = _to_unit_tensor(world.clip_text, "cpu"), _to_unit_tensor(world.clap_text, "cpu")
    pseudo = (
        _pseudo(clip[val], world.image_memory, config, "cpu"),
        _pseudo(clap[val], world.audio_memory, config, "cpu"),
    )
    again = validate_epoch(result.model, clip[val], clap[val], pseudo)
    assert again["pseudo_audio_to_image_map"] == pytest.approx(curve[best], abs=1e-6)


def test_select_epoch_falls_back_to_the_last_without_the_signal(small_world: World) -> None:
    config = _config(epochs=2, select_epoch="val_pseudo_audio_to_image_map")
    world = small_world
    result = train_bridge(
        world.clip_text[:256], world.clap_text[:256], world.image_memory, None, config, PROJECTOR
    )
    selected = result.report["selected_epoch"]
    assert selected["by"] == "last" and selected["epoch"] == 2 and "fallback" in selected
    with pytest.raises(InvalidInputError, match="select_epoch"):
        _config(select_epoch="best")


def _dev_set(world: World, rows: slice = slice(0, 200)) -> DevSet:
    labels = world.test_concept[rows]
    return DevSet(world.test_image[rows], labels, world.test_audio[rows], labels)


def test_dev_set_signal_is_class_level_retrieval_of_the_dev_media(small_world: World) -> None:
    """With a labelled dev set the report carries its class-level P@1 both ways every epoch;
    the last epoch's value is what the returned model gives on those items, and
    select_epoch="val_dev_p_at_1" keeps the epoch where it peaked."""
    world, dev = small_world, _dev_set(small_world)
    config = _config(epochs=5, lr=3e-2, select_epoch="val_dev_p_at_1")
    result = train_bridge(
        world.clip_text,
        world.clap_text,
        world.image_memory,
        world.audio_memory,
        config,
        PROJECTOR,
        dev=dev,
    )
    curve = result.report["loss_curve"]
    assert all({"val_dev_audio_to_image_p_at_1", "val_dev_p_at_1"} <= set(e) for e in curve)
    assert result.report["data"]["dev_images"] == 200
    best = max(range(len(curve)), key=lambda i: (curve[i]["val_dev_p_at_1"], -i))
    assert result.report["selected_epoch"]["epoch"] == best + 1
    # Re-measured through the returned (selected) model, as a search would see it.
    shared_image = result.model.clip(torch.from_numpy(l2_normalize(dev.image))).detach().numpy()
    shared_audio = result.model.clap(torch.from_numpy(l2_normalize(dev.audio))).detach().numpy()
    a2i = retrieval_metrics(shared_audio, shared_image, dev.audio_labels, dev.image_labels)
    assert a2i["p_at_1"] == pytest.approx(curve[best]["val_dev_audio_to_image_p_at_1"])
    assert a2i["p_at_1"] > 3 / world.config.concepts  # far above chance


def test_dev_set_alone_validates_without_held_out_captions(small_world: World) -> None:
    world = small_world
    config = _config(epochs=1, val_fraction=0.0)
    result = train_bridge(
        world.clip_text, world.clap_text, None, None, config, PROJECTOR, dev=_dev_set(world)
    )
    final = result.report["final"]
    assert "val_dev_p_at_1" in final and "val_mean_r_at_1" not in final


def test_bad_dev_sets_are_rejected(small_world: World) -> None:
    world = small_world
    labels = world.test_concept[:50]
    with pytest.raises(InvalidInputError, match="one label per row"):
        DevSet(world.test_image[:50], labels[:10], world.test_audio[:50], labels)
    with pytest.raises(InvalidInputError, match="no value in common"):
        DevSet(world.test_image[:50], labels, world.test_audio[:50], labels + 1000)
    dev = DevSet(world.test_image[:50, :8], labels, world.test_audio[:50], labels)
    with pytest.raises(InvalidInputError, match="dev image embeddings"):
        train_bridge(world.clip_text, world.clap_text, None, None, _config(epochs=1), dev=dev)
