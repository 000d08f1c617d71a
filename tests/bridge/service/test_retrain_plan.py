"""Retrain requests checked before a job exists: captions, overrides, held-out split."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.errors import InvalidInputError
from bridge.model.config import ProjectorConfig
from bridge.service.retrain_plan import holdout_split, plan_retrain, split_overrides
from bridge.storage.layout import DataLayout
from bridge.types import MAX_CAPTIONS, RetrainRequest


def test_plan_retrain_merges_captions_and_splits_overrides(tmp_path: Path) -> None:
    (tmp_path / "caps.txt").write_text("one\n\n two \nthree\n")
    base = ProjectorConfig(clip_dim=16, clap_dim=16, hidden_dim=32, shared_dim=8)
    plan = plan_retrain(
        RetrainRequest(
            captions=["zero", "  "],
            captions_path="caps.txt",
            train_overrides={"epochs": 3, "loss": "cwcl", "hidden_dim": 64},
            activate=True,
        ),
        DataLayout(tmp_path),
        "v4",
        base,
        "cpu",
    )
    assert plan.captions == ["zero", "one", "two", "three"]
    assert (plan.train_config.epochs, plan.train_config.loss) == (3, "cwcl")
    assert plan.train_config.device == "cpu" and plan.train_config.progress is False
    assert plan.projector == ProjectorConfig(clip_dim=16, clap_dim=16, hidden_dim=64, shared_dim=8)
    assert plan.params["version"] == "v4" and plan.params["captions"] == 4 and plan.activate


def test_split_overrides_rejects_bad_values() -> None:
    with pytest.raises(InvalidInputError, match="unknown"):
        split_overrides({"lr": 0.1, "nope": 1}, None, "cpu")
    with pytest.raises(InvalidInputError, match="lr"):
        split_overrides({"lr": -1.0}, None, "cpu")
    with pytest.raises(InvalidInputError, match="shared_dim"):
        split_overrides({"shared_dim": 0}, None, "cpu")
    config, projector = split_overrides({}, None, "cpu")
    assert projector is None and config.epochs == 30


def test_the_mode_override_switches_the_bridge_and_is_checked_up_front() -> None:
    separate = ProjectorConfig(clip_dim=16, clap_dim=12, shared_dim=8, text_norms=True)
    _, projector = split_overrides({"mode": "exmcr"}, separate, "cpu")
    assert projector is not None and projector.mode == "exmcr"
    assert (projector.clip_dim, projector.shared_dim, projector.text_norms) == (16, 16, False)
    _, inherited = split_overrides({"epochs": 2}, projector, "cpu")
    assert inherited is projector  # the active bridge's mode, unless overridden
    _, back = split_overrides({"mode": "cmcr", "shared_dim": 8}, projector, "cpu")
    assert back is not None and (back.mode, back.shared_dim) == ("cmcr", 8)
    with pytest.raises(InvalidInputError, match="must be one of"):
        split_overrides({"mode": "both"}, None, "cpu")
    with pytest.raises(InvalidInputError, match="infonce"):
        split_overrides({"mode": "exmcr", "loss": "cwcl"}, None, "cpu")
    with pytest.raises(InvalidInputError, match="BatchNorm"):
        split_overrides({"batchnorm_mode": "separate"}, projector, "cpu")


def test_holdout_split() -> None:
    train, held = holdout_split(100, seed=0)
    assert len(held) == 10 and len(train) == 90 and not set(train) & set(held)
    assert sorted([*train, *held]) == list(range(100))
    small_train, small_held = holdout_split(10, seed=0)
    assert sorted(small_train) == sorted(small_held) == list(range(10))


def test_plan_retrain_caption_limits(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path)
    with pytest.raises(InvalidInputError, match="at least 4 non-blank captions, got 3"):
        plan_retrain(RetrainRequest(captions=["a", "b", "", "c"]), layout, "v2", None, "cpu")
    too_many = RetrainRequest(captions=["x"] * (MAX_CAPTIONS + 1))
    with pytest.raises(InvalidInputError, match=f"at most {MAX_CAPTIONS} captions"):
        plan_retrain(too_many, layout, "v2", None, "cpu")
    with pytest.raises(InvalidInputError, match="needs captions"):
        plan_retrain(RetrainRequest(), layout, "v2", None, "cpu")
