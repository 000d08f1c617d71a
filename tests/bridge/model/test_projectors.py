"""Projector architecture and the checkpoint folder format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from bridge.errors import CheckpointError, InvalidInputError, NotFoundError
from bridge.model.config import ProjectorConfig, TrainConfig
from bridge.model.projectors import BridgeModel, Projector, load_checkpoint, save_checkpoint


def test_default_projector_is_the_official_architecture() -> None:
    proj = Projector(512, 1024, 512)
    kinds = [type(m) for m in proj.net]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear, nn.BatchNorm1d]
    assert sum(p.numel() for p in proj.parameters()) == 1_053_184  # about 1.05 M
    out = proj.eval()(torch.randn(3, 512))
    assert torch.allclose(out.norm(dim=-1), torch.ones(3), atol=1e-5)


def test_depth_is_configurable() -> None:
    proj = Projector(8, 16, 4, num_layers=3)
    assert sum(isinstance(m, nn.Linear) for m in proj.net) == 3


def test_checkpoint_round_trip_and_projection(tmp_path: Path) -> None:
    config = ProjectorConfig(clip_dim=6, clap_dim=5, hidden_dim=12, shared_dim=4)
    model = BridgeModel(config)
    model.train()
    model.clip(torch.randn(16, 6))  # move BatchNorm running stats away from their init
    model.eval()
    out = save_checkpoint(tmp_path / "ck", model, TrainConfig(epochs=3), {"note": 1}, {"clip": "c"})
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "report.json",
        "weights.safetensors",
    ]
    ckpt = load_checkpoint(out)
    assert ckpt.projector_config == config and ckpt.train_config.epochs == 3  # type: ignore[union-attr]
    assert ckpt.report == {"note": 1} and ckpt.encoders == {"clip": "c"} and len(ckpt.sha256) == 64
    x = np.random.default_rng(0).normal(size=(7, 6)).astype(np.float32)
    with torch.no_grad():
        expected = model.clip(torch.nn.functional.normalize(torch.from_numpy(x), dim=-1)).numpy()
    got = ckpt.project("clip", x * 3.0)  # any input norm: inputs are normalised first
    assert got.dtype == np.float32 and got.shape == (7, 4)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_projection_rejects_wrong_dimension_and_space(tmp_path: Path) -> None:
    model = BridgeModel(ProjectorConfig(clip_dim=6, clap_dim=5, hidden_dim=8, shared_dim=4))
    ckpt = load_checkpoint(save_checkpoint(tmp_path / "ck", model, None, {}))
    with pytest.raises(InvalidInputError, match="expected dimension 5"):
        ckpt.project("clap", np.ones((2, 6), np.float32))
    with pytest.raises(InvalidInputError, match="space"):
        ckpt.project("wav", np.ones((2, 6), np.float32))  # type: ignore[arg-type]


def test_broken_checkpoints_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        load_checkpoint(tmp_path / "missing")
    model = BridgeModel(ProjectorConfig(clip_dim=6, clap_dim=5, hidden_dim=8, shared_dim=4))
    ck = save_checkpoint(tmp_path / "ck", model, None, {})
    config = json.loads((ck / "config.json").read_text())
    config["projector"]["hidden_dim"] = 9
    (ck / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(ck)
    (ck / "weights.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing weights"):
        load_checkpoint(ck)


def test_save_replaces_existing_folder_atomically(tmp_path: Path) -> None:
    model = BridgeModel(ProjectorConfig(clip_dim=6, clap_dim=5, hidden_dim=8, shared_dim=4))
    save_checkpoint(tmp_path / "ck", model, None, {"v": 1})
    save_checkpoint(tmp_path / "ck", model, None, {"v": 2})
    assert load_checkpoint(tmp_path / "ck").report == {"v": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["ck"]  # no temp folders left behind


def test_separate_batchnorm_inference_uses_the_statistics_training_used() -> None:
    """batchnorm_mode "separate": text and pseudo vectors are normalised each by BatchNorms of
    their own, so eval-mode outputs match what training saw for each input type. (The old
    separate mode normalised each call with its own batch statistics while one set of running
    statistics mixed both, so inference used statistics no training forward used.)"""
    from bridge.model.trainer import _project_pair

    torch.manual_seed(0)
    projector = Projector(16, 32, 8, text_norms=True)
    g = torch.Generator().manual_seed(0)
    text = torch.nn.functional.normalize(torch.randn(512, 16, generator=g), dim=-1)
    pseudo = torch.nn.functional.normalize(torch.randn(512, 16, generator=g) + 2.0, dim=-1)
    projector.train()
    with torch.no_grad():
        for _ in range(200):  # running statistics converge on the fixed batch
            seen_text, seen_pseudo = _project_pair(projector, text, pseudo, "separate")
        projector.eval()
        torch.testing.assert_close(projector(text, "text"), seen_text, atol=0.02, rtol=0)
        torch.testing.assert_close(projector(pseudo, "media"), seen_pseudo, atol=0.02, rtol=0)
        # One shared set of statistics (what the old mode inferred with) is far off for text.
        assert (projector(text, "media") - seen_text).abs().max() > 0.1


def test_text_norms_round_trip_and_joint_checkpoints_keep_their_keys(tmp_path: Path) -> None:
    """text_norms is recorded in config.json and its BatchNorms in the weights; a joint-mode
    bridge has exactly the official head's keys (no format change for it)."""
    joint = BridgeModel(ProjectorConfig(clip_dim=16, clap_dim=12, hidden_dim=32, shared_dim=8))
    assert not any("text_norms" in key for key in joint.state_dict())
    config = ProjectorConfig(clip_dim=16, clap_dim=12, hidden_dim=32, shared_dim=8, text_norms=True)
    model = BridgeModel(config)
    with torch.no_grad():
        model.clip.text_norms[0].running_mean.fill_(0.5)  # type: ignore[index]
    save_checkpoint(tmp_path / "ckpt", model, None, {})
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert loaded.projector_config.text_norms
    vectors = np.random.default_rng(0).standard_normal((5, 16)).astype(np.float32)
    as_text = loaded.project("clip", vectors, kind="text")
    as_media = loaded.project("clip", vectors)
    assert as_text.shape == as_media.shape == (5, 8)
    assert not np.allclose(as_text, as_media)
