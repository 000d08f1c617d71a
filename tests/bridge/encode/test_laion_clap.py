"""LAION-CLAP `.pt` checkpoints as CLAP encoders (bridge/encode/laion_clap.py), checked
against laion-clap's own code.

The equivalence test: laion_reference.py (run in a subprocess, its docstring says how
laion-clap is made to run offline here: a stand-in torchvision, a small stand-in RoBERTa
saved as `roberta-base` in its working directory, HF_HUB_OFFLINE=1) builds laion-clap's
CLAP_Module with a real-size HTSAT audio branch and random weights, saves it in laion-clap's
checkpoint format (`module.` keys under `state_dict`, with the optimizer state), reloads it
with laion-clap's own `load_ckpt` and embeds clips and captions with
`get_audio_embedding_from_data` and `get_text_embedding`. The test loads the same file with
`load_encoder("clap", path)` and compares: max abs difference <= 1e-5 per value, for
HTSAT-tiny unfused and fused and HTSAT-base unfused (short clips, an exact 10 s window; for
the fused one also a 14 s clip, three random crops plus the whole, and a clip longer by less
than a hop). laion-clap embeds each clip alone, numpy's RNG seeded as the project seeds its
fusion crops; the project embeds them all in one batch, so the fused case also shows that a
clip's embedding does not depend on the batch around it. The bound is tighter than 1e-4 on
purpose: a RoBERTa layer-norm epsilon of 1e-12 instead of 1e-5 moves the text embeddings by
about 5e-5; the conversion matches to about 1e-7.

laion-clap lives outside the project's environment, in `.venv/laion-clap-ref` (`make test`
installs tests/laion-clap-reference.txt there with `pip --no-deps --target`): it asks for
numpy<2 and ships a top-level `tests` package, and neither may reach the project. Without
that folder these tests skip with the reason, unless BRIDGE_REQUIRE_LAION_CLAP=1 (CI), which
turns the skip into a failure. Each reference build takes 10-20 s on 2 cores.

The damaged-file tests that need no laion-clap always run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from bridge.encode import laion_clap
from bridge.encode.encoders import load_encoder
from bridge.errors import ModelLoadError

REPO_ROOT = Path(__file__).resolve().parents[3]
REFERENCE_ENV = REPO_ROOT / ".venv" / "laion-clap-ref"
SCRIPT = Path(__file__).with_name("laion_reference.py")
REQUIRED = os.environ.get("BRIDGE_REQUIRE_LAION_CLAP") == "1"
TOLERANCE = 1e-5


@dataclass(frozen=True)
class Reference:
    name: str
    fusion: bool
    checkpoint: Path
    tokenizer: Path
    waves: list[np.ndarray]
    captions: list[str]
    audio: np.ndarray  # (N, 512) laion-clap's get_audio_embedding_from_data
    text: np.ndarray  # (M, 512) laion-clap's get_text_embedding
    seconds: float  # time the reference build took


def _require_reference_env() -> None:
    if not (REFERENCE_ENV / "laion_clap" / "hook.py").is_file():
        reason = (
            f"laion-clap reference environment missing ({REFERENCE_ENV}); `make test` "
            "installs it from tests/laion-clap-reference.txt"
        )
        if REQUIRED:
            pytest.fail(f"BRIDGE_REQUIRE_LAION_CLAP=1 but {reason}")
        pytest.skip(reason)


# (laion-clap audio model, fusion): the 630k-* checkpoints are HTSAT-tiny with and without
# fusion, music_audioset_epoch_15_esc_90.14.pt is HTSAT-base without.
MODELS = {
    "tiny": ("HTSAT-tiny", False),
    "tiny-fusion": ("HTSAT-tiny", True),
    "base": ("HTSAT-base", False),
}


@pytest.fixture(scope="module", params=list(MODELS))
def reference(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Reference:
    """laion-clap's model, checkpoint and embeddings (built once per mode)."""
    _require_reference_env()
    amodel, fusion = MODELS[request.param]
    workdir = tmp_path_factory.mktemp(f"laion-{request.param}")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REFERENCE_ENV), str(REPO_ROOT)]),
        "HF_HUB_OFFLINE": "1",
        "OPENBLAS_NUM_THREADS": "1",
    }
    command = [sys.executable, "-W", "ignore", str(SCRIPT), "--workdir", str(workdir)]
    started = time.perf_counter()
    done = subprocess.run(
        [*command, "--amodel", amodel, *(["--fusion"] if fusion else [])],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    seconds = time.perf_counter() - started
    assert done.returncode == 0, f"laion-clap reference failed:\n{done.stdout}\n{done.stderr}"
    data = np.load(workdir / "reference.npz")
    return Reference(
        name=request.param,
        fusion=fusion,
        checkpoint=workdir / "clap.pt",
        tokenizer=workdir / "roberta-base",
        waves=[data[f"wave{i}"] for i in range(len(data["audio"]))],
        captions=[str(c) for c in data["captions"]],
        audio=data["audio"],
        text=data["text"],
        seconds=seconds,
    )


@pytest.fixture
def hf_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty HF_HOME, so that conversions are cached in the test's own folder."""
    home = tmp_path / "hf-home"
    monkeypatch.setenv("HF_HOME", str(home))
    return home


def _conversions(hf_home: Path) -> list[Path]:
    root = hf_home / "modality-bridge" / "laion-clap"
    return sorted(p for p in root.glob("*") if (p / "conversion.json").is_file())


# -- equivalence with laion-clap ----------------------------------------------------------
def test_checkpoint_embeds_as_laion_clap(
    reference: Reference, hf_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(laion_clap.TOKENIZER_ENV, str(reference.tokenizer))
    encoder = load_encoder("clap", reference.checkpoint, device="cpu")
    assert encoder.model_id == str(reference.checkpoint)
    assert encoder.fusion is reference.fusion
    assert encoder.sample_rate == 48_000 and encoder.max_samples == 480_000

    audio = encoder.encode_audio(reference.waves, sample_rate=48_000)
    text = encoder.encode_text(reference.captions)
    audio_diff = np.abs(audio - reference.audio).max(axis=1)
    text_diff = np.abs(text - reference.text).max(axis=1)
    print(
        f"\n{reference.name}: reference built in "
        f"{reference.seconds:.1f} s; max |diff| audio {audio_diff.max():.2e} "
        f"({len(audio_diff)} clips), text {text_diff.max():.2e} ({len(text_diff)} captions)"
    )
    assert audio_diff.max() <= TOLERANCE, audio_diff
    assert text_diff.max() <= TOLERANCE, text_diff
    # The references are unit vectors that differ from clip to clip: the check has teeth.
    assert np.abs(reference.audio[0] - reference.audio[1]).max() > 100 * TOLERANCE

    # The second load reads the cached conversion: same folder, same embeddings, no new one.
    (folder,) = _conversions(hf_home)
    umask = laion_clap._umask()  # readable as a plain mkdir/open would leave it
    assert folder.stat().st_mode & 0o777 == 0o777 & ~umask
    assert (folder / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask
    record = (folder / "conversion.json").read_text()
    started = time.perf_counter()
    again = load_encoder("clap", str(reference.checkpoint), device="cpu")
    print(f"cached load: {time.perf_counter() - started:.2f} s")
    assert _conversions(hf_home) == [folder] and (folder / "conversion.json").read_text() == record
    np.testing.assert_allclose(again.encode_text(reference.captions[:2]), text[:2], atol=1e-6)


@pytest.mark.parametrize("reference", ["tiny"], indirect=True)
def test_mbridge_embed_takes_a_checkpoint(
    reference: Reference, hf_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bridge.cli import main

    monkeypatch.setenv(laion_clap.TOKENIZER_ENV, str(reference.tokenizer))
    captions = tmp_path / "captions.txt"
    captions.write_text("\n".join(reference.captions) + "\n", encoding="utf-8")
    out = tmp_path / "clap_text.npy"
    argv = ["embed", "--encoder", "clap", "--model", str(reference.checkpoint)]
    argv += ["--modality", "text", "--input", str(captions), "--output", str(out)]
    assert main([*argv, "--device", "cpu"]) == 0
    assert np.abs(np.load(out) - reference.text).max() <= TOLERANCE


@pytest.mark.parametrize("reference", ["tiny"], indirect=True)
def test_unwritable_cache_converts_for_the_load_only(
    reference: Reference, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("HF_HOME below a file cannot be created")
    monkeypatch.setenv("HF_HOME", str(blocker / "hf-home"))
    monkeypatch.setenv(laion_clap.TOKENIZER_ENV, str(reference.tokenizer))
    encoder = load_encoder("clap", reference.checkpoint, device="cpu")
    text = encoder.encode_text(reference.captions)
    assert np.abs(text - reference.text).max() <= TOLERANCE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


@pytest.mark.parametrize("reference", ["tiny"], indirect=True)
def test_damaged_cached_conversion_is_named(
    reference: Reference, hf_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(laion_clap.TOKENIZER_ENV, str(reference.tokenizer))
    load_encoder("clap", reference.checkpoint, device="cpu")
    (folder,) = _conversions(hf_home)
    (folder / "model.safetensors").write_bytes(b"truncated")
    with pytest.raises(ModelLoadError, match=f"converted copy {folder}; delete that folder"):
        load_encoder("clap", reference.checkpoint, device="cpu")


# -- damaged and foreign files ------------------------------------------------------------
def _state(reference: Reference) -> dict[str, torch.Tensor]:
    saved = torch.load(reference.checkpoint, map_location="cpu", weights_only=True)
    return dict(saved["state_dict"])


@pytest.mark.parametrize("reference", ["tiny"], indirect=True)
@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("drop", r"missing 3: audio_model\.audio_encoder\.layers\.0\.blocks\.0\.attention"),
        ("extra", r"unexpected 1: audio_model\.audio_encoder\.extra\.weight"),
        ("shape", r"shape 1: text_projection\.linear2\.bias \(7,\) \(expected \(512,\)\)"),
        ("no-tokenizer", r"HF_HUB_OFFLINE is set .*hf download nobody/not-cached-roberta"),
    ],
)
def test_damaged_checkpoint_is_refused_and_nothing_cached(
    reference: Reference,
    hf_home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    damage: str,
    message: str,
) -> None:
    state = _state(reference)
    prefix = "module.audio_branch."
    if damage == "drop":
        del state[f"{prefix}layers.0.blocks.0.attn.qkv.weight"]
    elif damage == "extra":
        state[f"{prefix}extra.weight"] = torch.zeros(3)
    elif damage == "shape":
        state["module.text_projection.2.bias"] = torch.zeros(7)
    path = tmp_path / f"{damage}.pt"
    torch.save(state, path)  # a bare state dict this time
    if damage == "no-tokenizer":
        # Offline (conftest) with a tokenizer id that no cache holds.
        monkeypatch.setenv(laion_clap.TOKENIZER_ENV, "nobody/not-cached-roberta")
    else:
        monkeypatch.setenv(laion_clap.TOKENIZER_ENV, str(reference.tokenizer))
    with pytest.raises(ModelLoadError, match=message):
        load_encoder("clap", path, device="cpu")
    assert _conversions(hf_home) == []
    root = hf_home / "modality-bridge" / "laion-clap"
    assert not list(root.glob(".converting-*"))


class _NotPlainData:
    pass


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not a pickle at all", "not a PyTorch checkpoint"),
        ([1, 2, 3], "expected a dict with a 'state_dict' or a state dict, found list"),
        (
            {"state_dict": {"w": torch.zeros(1)}, "args": argparse.Namespace(lr=1.0)},
            r"Python objects other than tensors .*\(argparse.Namespace\).*weights_only=True",
        ),
        ({"state_dict": {"weight": torch.zeros(2, 2)}}, "not a LAION-CLAP checkpoint"),
        ({"state_dict": {"w": torch.zeros(1), "epoch": 3}}, "non-tensor entries"),
        (
            {
                "module.audio_branch.conv_block1.conv1.weight": torch.zeros(1),
                "module.text_branch.embeddings.word_embeddings.weight": torch.zeros(1),
            },
            "audio branch is PANN, not HTSAT",
        ),
    ],
)
def test_foreign_files_are_refused(
    hf_home: Path, tmp_path: Path, content: object, message: str
) -> None:
    path = tmp_path / "model.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(ModelLoadError, match=message) as caught:
        load_encoder("clap", path, device="cpu")
    assert str(path) in str(caught.value)
    assert _conversions(hf_home) == []


def test_pre_zip_format_files_are_read(hf_home: Path, tmp_path: Path) -> None:
    """Files saved before torch 1.6's zip format cannot be memory-mapped: read in full."""
    path = tmp_path / "old.pt"
    torch.save(
        {"state_dict": {"weight": torch.zeros(2)}}, path, _use_new_zipfile_serialization=False
    )
    with pytest.raises(ModelLoadError, match="not a LAION-CLAP checkpoint"):
        load_encoder("clap", path, device="cpu")


def test_checkpoint_paths_name_what_is_wrong(hf_home: Path, tmp_path: Path) -> None:
    missing = tmp_path / "630k-best.pt"
    with pytest.raises(ModelLoadError, match=f"checkpoint file not found: {missing}"):
        load_encoder("clap", missing, device="cpu")
    path = tmp_path / "clap.pt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(ModelLoadError, match="read only as a LAION-CLAP model"):
        load_encoder("clip", path, device="cpu")
    assert laion_clap.is_checkpoint_file(str(path))
    assert not laion_clap.is_checkpoint_file(str(tmp_path))
    assert not laion_clap.is_checkpoint_file("laion/clap-htsat-unfused")
