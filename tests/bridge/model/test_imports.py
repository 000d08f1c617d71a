"""`mbridge import-checkpoint`: the authors' released projector layouts become bridges that
project exactly as the official forward, and damaged files are refused with nothing written.

The released weights are not available offline, so each test builds a random state dict in
the exact released layout with the official modules re-typed in tests/official_mcr.py and
saves it with torch.save, as the authors did.
"""

from __future__ import annotations

import json
import os
import pickle
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from official_mcr import (
    CLAPCLIP_Head,
    Ex_MCR_Head,
    ULIPCLIP_Head,
    official_cmcr,
    official_exmcr,
    randomize,
)

from bridge.cli import main
from bridge.model.config import ProjectorConfig
from bridge.model.imports import PUBLISHED_ENCODERS
from bridge.model.projectors import BridgeModel, load_checkpoint, save_checkpoint

TOLERANCE = 1e-5


def inputs(n: int, dim: int, seed: int) -> np.ndarray:
    """Raw embeddings of arbitrary norm (the bridge normalises them first, as the trunks do)."""
    return (np.random.default_rng(seed).standard_normal((n, dim)) * 3).astype(np.float32)


def saved(tmp_path: Path, obj: object, name: str = "head.pt") -> Path:
    path = tmp_path / name
    torch.save(obj, path)
    return path


def run_import(kind: str, checkpoint: Path, out: Path, *extra: str) -> int:
    return main(["import-checkpoint", "--kind", kind, "--checkpoint", str(checkpoint),
                 "--out", str(out), *extra])  # fmt: skip


def test_cmcr_import_projects_as_the_official_forward(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    head = randomize(CLAPCLIP_Head(), seed=1)
    out = tmp_path / "cmcr-bridge"
    assert run_import("cmcr", saved(tmp_path, head.state_dict(), "clap_clip.pt"), out) == 0
    assert "wrote bridge" in capsys.readouterr().out

    bridge = load_checkpoint(out)
    config = bridge.projector_config
    assert (config.mode, config.clip_dim, config.clap_dim) == ("cmcr", 512, 512)
    assert (config.hidden_dim, config.shared_dim, config.num_layers) == (1024, 512, 2)
    clap, clip = inputs(33, 512, 2), inputs(17, 512, 3)
    audio, vision = official_cmcr(head, torch.from_numpy(clap), torch.from_numpy(clip))
    ours_audio, ours_vision = bridge.project("clap", clap), bridge.project("clip", clip)
    np.testing.assert_allclose(ours_audio, audio.numpy(), atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(ours_vision, vision.numpy(), atol=TOLERANCE, rtol=0)
    # Head_A is the CLAP side: swapping the heads would not match.
    assert np.abs(bridge.project("clip", clap) - audio.numpy()).max() > 0.1

    assert bridge.encoders == PUBLISHED_ENCODERS
    assert bridge.train_config is None
    assert bridge.report["mode"] == "cmcr"
    assert bridge.report["imported"]["file"] == "clap_clip.pt"
    card = (out / "README.md").read_text()
    for fact in ("MCR-PEFT/C-MCR", "CC BY 4.0", "openai/clip-vit-base-patch32",
                 "630k-fusion-best.pt", "Head_A"):  # fmt: skip
        assert fact in card
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md", "config.json", "report.json", "weights.safetensors"
    ]  # fmt: skip


def test_exmcr_import_projects_as_the_official_forward(tmp_path: Path) -> None:
    head = randomize(Ex_MCR_Head(), seed=4)
    out = tmp_path / "exmcr-bridge"
    assert run_import("exmcr", saved(tmp_path, head.state_dict(), "ex_clap.pt"), out) == 0

    bridge = load_checkpoint(out)
    config = bridge.projector_config
    assert (config.mode, config.clip_dim, config.clap_dim, config.shared_dim) == (
        "exmcr", 512, 512, 512
    )  # fmt: skip
    assert (config.hidden_dim, config.num_layers) == (1024, 2)
    clap, clip = inputs(29, 512, 5), inputs(11, 512, 6)
    audio, vision = official_exmcr(head, torch.from_numpy(clap), torch.from_numpy(clip))
    np.testing.assert_allclose(bridge.project("clap", clap), audio.numpy(), atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(bridge.project("clip", clip), vision.numpy(), atol=TOLERANCE, rtol=0)
    # The official key names are ours under "clap." (nothing renamed, nothing dropped).
    from safetensors.torch import load_file

    weights = load_file(str(out / "weights.safetensors"))
    assert {k for k in weights if k != "logit_scale"} == {f"clap.{k}" for k in head.state_dict()}
    assert "Ex_MCR_Head" in (out / "README.md").read_text()


def test_encoders_recorded_as_given(tmp_path: Path) -> None:
    path = saved(tmp_path, randomize(Ex_MCR_Head(16), seed=0).state_dict())
    out = tmp_path / "b"
    code = run_import("exmcr", path, out, "--clip", "models/my-clip", "--clap", "/w/630k.pt")
    assert code == 0
    assert json.loads((out / "config.json").read_text())["encoders"] == {
        "clip": "models/my-clip", "clap": "/w/630k.pt"
    }  # fmt: skip
    assert load_checkpoint(out).projector_config.clip_dim == 16  # widths read from the file


# -- refusals: one line naming the problem, exit 2, nothing written ------------------------


class NotWeights:
    """An object torch.save pickles as code to run: weights_only=True must refuse it."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("this would run on load",))


def _cmcr_state() -> dict[str, torch.Tensor]:
    return dict(randomize(CLAPCLIP_Head(), seed=7).state_dict())


def _without(key: str) -> dict[str, torch.Tensor]:
    state = _cmcr_state()
    del state[key]
    return state


def _with(key: str, value: torch.Tensor) -> dict[str, torch.Tensor]:
    return {**_cmcr_state(), key: value}


DAMAGED: dict[str, tuple[str, object, list[str]]] = {
    "missing key": (
        "cmcr",
        _without("Head_B.net2.1.running_var"),
        ["missing keys", "Head_B.net2.1.running_var"],
    ),
    "extra key": (
        "cmcr",
        _with("Head_A.net3.0.weight", torch.zeros(4, 4)),
        ["unexpected keys", "Head_A.net3.0.weight"],
    ),
    "wrong shape": (
        "cmcr",
        _with("Head_B.net2.0.weight", torch.zeros(512, 1000)),
        ["Head_B.net2.0.weight: expected (512, 1024), got (512, 1000)"],
    ),
    "wrong shape exmcr": (
        "exmcr",
        {**randomize(Ex_MCR_Head(), 0).state_dict(), "Head2.mlp2.net1.1.bias": torch.zeros(7)},
        ["Head2.mlp2.net1.1.bias: expected (1024,), got (7,)"],
    ),
    "non-finite": (
        "cmcr",
        _with("Head_A.net1.0.bias", torch.full((1024,), float("nan"))),
        ["non-finite values in Head_A.net1.0.bias"],
    ),
    "a tensor, not a state dict": ("cmcr", torch.zeros(3), ["holds a Tensor, not a state dict"]),
    "a list of tensors": ("exmcr", [torch.zeros(3)], ["holds a list, not a state dict"]),
    "non-tensor values": ("cmcr", {"Head_A.net1.0.weight": [1, 2]}, ["'Head_A.net1.0.weight'"]),
    "arbitrary pickle": (
        "cmcr",
        NotWeights(),
        ["not loadable as a weights-only torch file", "it holds more than tensors", "print"],
    ),
    "ULIP-CLIP head": (
        "cmcr",
        randomize(ULIPCLIP_Head(), 0).state_dict(),
        ["ULIP-CLIP head", "MLP_Half", "Head_A is the CLIP side"],
    ),
    "state_dict wrapper": (
        "cmcr",
        {"state_dict": _cmcr_state(), "epoch": 3},
        ["{'state_dict': ...}", "save checkpoint['state_dict'] on its own"],
    ),
    "module. prefix": (
        "cmcr",
        {f"module.{k}": v for k, v in _cmcr_state().items()},
        ["every key starts with 'module.'"],
    ),
    "Ex-MCR file as cmcr": (
        "cmcr",
        randomize(Ex_MCR_Head(), 0).state_dict(),
        ["Ex-MCR head", "--kind exmcr"],
    ),
    "C-MCR file as exmcr": ("exmcr", _cmcr_state(), ["C-MCR head", "--kind cmcr"]),
}


@pytest.mark.parametrize("case", list(DAMAGED))
def test_damaged_files_are_refused_and_nothing_is_written(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kind, content, phrases = DAMAGED[case]
    path = saved(tmp_path, content)
    fresh = tmp_path / "fresh"
    assert run_import(kind, path, fresh) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for phrase in phrases:
        assert phrase in err, err
    assert not fresh.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["head.pt"]  # no temp folder left behind

    # An existing bridge at --out is left exactly as it was.
    existing = save_checkpoint(
        tmp_path / "existing", BridgeModel(ProjectorConfig(16, 16, 8, 4)), None, {"x": 1}
    )
    before = {p.name: p.read_bytes() for p in existing.iterdir()}
    assert run_import(kind, path, existing) == 2
    assert {p.name: p.read_bytes() for p in existing.iterdir()} == before


def test_other_files_are_refused(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    lfs = tmp_path / "clap_clip.pt"
    lfs.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\n")
    assert run_import("cmcr", lfs, tmp_path / "out") == 2
    assert "is a Git LFS pointer, not the weights" in capsys.readouterr().err
    text = tmp_path / "notes.pt"
    text.write_text("hello\n")
    assert run_import("cmcr", text, tmp_path / "out") == 2
    assert "not a torch.save file (it starts with b'hello" in capsys.readouterr().err
    assert run_import("cmcr", tmp_path / "absent.pt", tmp_path / "out") == 2
    assert "projector checkpoint not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_plain_pickle_of_a_state_dict_is_refused(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    """A state dict pickled without torch.save's container is not what the authors release."""
    path = tmp_path / "head.pt"
    path.write_bytes(pickle.dumps({k: v.numpy() for k, v in _cmcr_state().items()}, protocol=2))
    assert run_import("cmcr", path, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "it holds more than tensors: Unsupported global: GLOBAL numpy" in err, err
    assert not (tmp_path / "out").exists()


def test_bridge_folder_modes_follow_the_umask(tmp_path: Path) -> None:
    """Readable like a plain folder (mkdtemp's 0700 and safetensors' 0600 would lock out the
    container user that serves ./models read-only in docker-compose)."""
    mask = os.umask(0o027)
    try:
        out = tmp_path / "b"
        assert (
            run_import("exmcr", saved(tmp_path, randomize(Ex_MCR_Head(16), 0).state_dict()), out)
            == 0
        )
    finally:
        os.umask(mask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o750
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()} == {
        name: 0o640 for name in ("README.md", "config.json", "report.json", "weights.safetensors")
    }
