"""Ex-MCR: the head's structure (the released ex_clap.pt layout), the identity CLIP side, the
modality-centric tuples, the loss and the refused options. Training on the synthetic world:
test_trainer.py, in both modes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bridge.arrays import l2_normalize
from bridge.bench.synthetic_world import World
from bridge.errors import InvalidInputError
from bridge.model.config import ProjectorConfig, TrainConfig
from bridge.model.exmcr import ExMCRLoss, centred_tuples, paired_retrieve
from bridge.model.projectors import BridgeModel, ExMCRHead, load_checkpoint, save_checkpoint
from bridge.model.trainer import train_bridge

# The state dict of the authors' Ex_MCR_Head (MCR-PEFT/Ex-MCR, exmcr/exmcr_projector.py) at
# 512-d, in its order: what checkpoints/ex_clap.pt holds, and ours under the prefix "clap.".
_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
RELEASED_KEYS = [("Head1.weight", (512, 512)), ("Head1.bias", (512,))]
for _block in ("mlp1", "mlp2"):
    for _net, _out, _in in (("net1", 1024, 512), ("net2", 512, 1024)):
        _prefix = f"Head2.{_block}.{_net}"
        RELEASED_KEYS += [(f"{_prefix}.0.weight", (_out, _in)), (f"{_prefix}.0.bias", (_out,))]
        RELEASED_KEYS += [
            (f"{_prefix}.1.{name}", () if name == "num_batches_tracked" else (_out,))
            for name in _BN
        ]


def _config(**overrides: object) -> TrainConfig:
    base: dict[str, object] = dict(epochs=6, batch_size=256, progress=False, seed=0)
    base.update(overrides)
    return TrainConfig(**base)  # type: ignore[arg-type]


def _unit(rows: int, dim: int, seed: int) -> torch.Tensor:
    return F.normalize(
        torch.randn(rows, dim, generator=torch.Generator().manual_seed(seed)), dim=-1
    )


def test_the_head_has_the_released_layers_and_names() -> None:
    model = BridgeModel(ProjectorConfig(mode="exmcr"))
    keys = [(k, tuple(v.shape)) for k, v in model.state_dict().items() if k.startswith("clap.")]
    assert keys == [(f"clap.{name}", shape) for name, shape in RELEASED_KEYS]
    head = model.clap
    assert isinstance(head, ExMCRHead)
    assert torch.equal(head.Head1.weight, torch.eye(512))  # identity at initialisation
    for block in (head.Head2.mlp1, head.Head2.mlp2):
        assert [type(m) for m in block.net1] == [nn.Linear, nn.BatchNorm1d, nn.ReLU]
        assert [type(m) for m in block.net2] == [nn.Linear, nn.BatchNorm1d]
    assert sum(p.numel() for p in head.parameters()) == 262_656 + 2 * 1_053_184
    out = head.eval()(torch.randn(3, 512))
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(3))


def test_the_clip_side_is_a_parameter_free_normalisation(tmp_path: Path) -> None:
    config = ProjectorConfig(clip_dim=6, clap_dim=5, hidden_dim=12, shared_dim=99, mode="exmcr")
    assert config.shared_dim == 6  # the shared space is CLIP's, whatever was given
    model = BridgeModel(config)
    assert list(model.clip.parameters()) == [] and not any(
        k.startswith("clip.") for k in model.state_dict()
    )
    ckpt = load_checkpoint(save_checkpoint(tmp_path / "ck", model, None, {}))
    x = np.random.default_rng(0).normal(size=(4, 6)).astype(np.float32) * 3.0
    np.testing.assert_allclose(ckpt.project("clip", x), l2_normalize(x), atol=1e-6)
    np.testing.assert_allclose(ckpt.project("clip", x, kind="text"), l2_normalize(x), atol=1e-6)
    assert ckpt.project("clap", x[:, :5]).shape == (4, 6)


def test_a_config_without_mode_loads_as_cmcr(tmp_path: Path) -> None:
    model = BridgeModel(ProjectorConfig(clip_dim=6, clap_dim=5, hidden_dim=8, shared_dim=4))
    ck = save_checkpoint(tmp_path / "ck", model, None, {})
    config = json.loads((ck / "config.json").read_text())
    assert config["projector"].pop("mode") == "cmcr"
    (ck / "config.json").write_text(json.dumps(config))  # as written before modes existed
    loaded = load_checkpoint(ck)
    assert loaded.projector_config.mode == "cmcr" and loaded.projector_config.shared_dim == 4
    assert loaded.project("clap", np.ones((2, 5), np.float32)).shape == (2, 4)


def test_exmcr_refuses_the_c_mcr_only_options(small_world: World) -> None:
    with pytest.raises(InvalidInputError, match="one BatchNorm per layer"):
        ProjectorConfig(mode="exmcr", text_norms=True)
    with pytest.raises(InvalidInputError, match="mode"):
        ProjectorConfig(mode="both")  # type: ignore[arg-type]
    data = (small_world.clip_text[:64], small_world.clap_text[:64])
    exmcr = ProjectorConfig(mode="exmcr", hidden_dim=16)
    with pytest.raises(InvalidInputError, match="infonce"):
        train_bridge(*data, config=_config(epochs=1, loss="cwcl"), projector=exmcr)
    with pytest.raises(InvalidInputError, match="BatchNorm"):
        train_bridge(*data, config=_config(epochs=1, batchnorm_mode="separate"), projector=exmcr)


def test_paired_retrieval_weights_the_paired_rows_by_the_key_similarities() -> None:
    queries, keys, paired = _unit(5, 8, 0), _unit(30, 8, 1), _unit(30, 6, 2)
    weights = torch.softmax(queries @ keys.T / 0.05, dim=1)  # (5, 30)
    for top_k in (0, 30):  # exact, and top-k keeping every key: the same weights
        got_keys, got_paired = paired_retrieve(
            queries, keys, paired, 0.05, chunk_size=7, top_k=top_k
        )
        torch.testing.assert_close(got_keys, F.normalize(weights @ keys, dim=-1))
        torch.testing.assert_close(got_paired, F.normalize(weights @ paired, dim=-1))


def test_centred_tuples_go_through_the_captions_to_the_other_model() -> None:
    clip_text, clap_text = _unit(40, 8, 0), _unit(40, 6, 1)
    images, audio = _unit(10, 8, 2), _unit(12, 6, 3)
    tuples = centred_tuples(clip_text, clap_text, images, audio, 0.05)
    t_clip, t_clap, image, clip_audio = tuples["audio"]
    assert [len(x) for x in tuples["audio"]] == [12] * 4 and torch.equal(clip_audio, audio)
    weights = torch.softmax(audio @ clap_text.T / 0.05, dim=1)
    torch.testing.assert_close(t_clip, F.normalize(weights @ clip_text, dim=-1))
    to_images = torch.softmax(t_clip @ images.T / 0.05, dim=1)
    torch.testing.assert_close(image, F.normalize(to_images @ images, dim=-1))
    assert [len(x) for x in tuples["image"]] == [10] * 4 and torch.equal(tuples["image"][2], images)
    # Without an image memory there are no image-centric tuples, and CLIP text stands in.
    alone = centred_tuples(clip_text, clap_text, None, audio, 0.05)
    assert set(alone) == {"audio"} and torch.equal(alone["audio"][2], alone["audio"][0])


def test_the_loss_is_dense_inter_plus_weighted_intra_on_the_linear_layer() -> None:
    head = ExMCRHead(6, 8, 16)
    batch = (_unit(32, 8, 0), _unit(32, 6, 1), _unit(32, 8, 2), _unit(32, 6, 3))
    scale = torch.tensor(20.0)
    plain, weighted = ExMCRLoss(0.0)(head, *batch, scale), ExMCRLoss(0.5)(head, *batch, scale)
    assert plain.intra == 0.0 and weighted.intra > 0.0
    inter = weighted.inter_text + weighted.inter_pseudo
    assert float(weighted.total.detach()) == pytest.approx(inter + 0.5 * weighted.intra, rel=1e-5)
    # The intra term reaches the linear layer only: the two losses differ by it alone.
    head.zero_grad()
    (weighted.total - plain.total).backward()
    assert head.Head1.weight.grad is not None and head.Head1.weight.grad.abs().max() > 0
    for parameter in head.Head2.parameters():
        assert parameter.grad is None or parameter.grad.abs().max() < 1e-6
