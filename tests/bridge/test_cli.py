"""The mbridge CLI, called in-process: the exact forms of issue 2 and its error paths."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bridge.bench.synthetic_world import World
from bridge.cli import main


def argv(command: str, *switches: str, **options: object) -> list[str]:
    """`mbridge` arguments: options as --name value (underscores as dashes), then switches."""
    args = [command]
    for name, value in options.items():
        args += [f"--{name.replace('_', '-')}", str(value)]
    return args + [f"--{switch}" for switch in switches]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, small_world: World) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli")
    arrays = {
        "clip_text": small_world.clip_text,
        "clap_text": small_world.clap_text,
        "image_memory": small_world.image_memory,
        "audio_memory": small_world.audio_memory,
        "test_image": small_world.test_image,
        "test_audio": small_world.test_audio,
    }
    paths = {}
    for name, array in arrays.items():
        paths[name] = root / f"{name}.npy"
        np.save(paths[name], array)
    paths["labels"] = root / "labels.npy"
    np.save(paths["labels"], small_world.test_concept)
    paths["ckpt"] = root / "ckpt"
    trained = argv(
        "train",
        "quiet",
        clip_text=paths["clip_text"],
        clap_text=paths["clap_text"],
        image_memory=paths["image_memory"],
        audio_memory=paths["audio_memory"],
        out=paths["ckpt"],
        loss="infonce",
        epochs=12,
        batch_size=128,
        seed=0,
        device="cpu",
        precision="bf16",
        hidden_dim=32,
        shared_dim=8,
    )
    assert main(trained) == 0
    return paths


def test_train_writes_checkpoint(files: dict[str, Path]) -> None:
    config = json.loads((files["ckpt"] / "config.json").read_text())
    assert config["train"]["epochs"] == 12 and config["projector"]["shared_dim"] == 8
    assert config["train"]["precision"] == "bf16"
    report = json.loads((files["ckpt"] / "report.json").read_text())
    assert report["precision"] == "bf16"
    assert report["warnings"] == [] and report["data"]["pseudo_source"]["audio"] == "memory"


def test_train_without_memories_warns_on_stderr(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["train", "--clip-text", str(files["clip_text"]), "--clap-text"]
    args += [str(files["clap_text"]), "--out", str(tmp_path / "c"), "--epochs", "1"]
    args += ["--hidden-dim", "32", "--shared-dim", "8", "--device", "cpu", "--quiet"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert err.count("warning: no ") == 2 and "gap is not learned" in err


def test_train_with_a_labelled_dev_set_reports_its_p_at_1(
    files: dict[str, Path],
    small_world: World,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"concept-{c}\n" for c in small_world.test_concept))
    dev = dict(dev_image=files["test_image"], dev_image_labels=labels)
    dev |= dict(dev_audio=files["test_audio"], dev_audio_labels=labels)
    base = dict(clip_text=files["clip_text"], clap_text=files["clap_text"], epochs=2)
    base |= dict(hidden_dim=32, shared_dim=8, device="cpu", select_epoch="val_dev_p_at_1")
    out = tmp_path / "c"
    assert main(argv("train", "quiet", out=out, **base, **dev)) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["selected_epoch"]["by"] == "val_dev_p_at_1"
    assert "val_dev_p_at_1=" in capsys.readouterr().out
    partial = {k: v for k, v in dev.items() if k != "dev_audio_labels"}
    _fails(argv("train", out=tmp_path / "d", **base, **partial), capsys, "--dev-audio-labels")
    assert not (tmp_path / "d").exists()


def test_train_mode_exmcr_end_to_end(
    files: dict[str, Path], small_world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--mode exmcr` trains the Ex-MCR head; `project` then keeps CLIP vectors native (only
    normalised) and maps audio into CLIP, and `eval` finds audio->image far above chance."""
    out = tmp_path / "exmcr"
    base = dict(clip_text=files["clip_text"], clap_text=files["clap_text"], epochs=12)
    base |= dict(image_memory=files["image_memory"], audio_memory=files["audio_memory"])
    base |= dict(batch_size=128, hidden_dim=32, device="cpu", mode="exmcr")
    assert main(argv("train", "quiet", out=out, **base)) == 0
    assert "(exmcr, " in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert config["projector"]["mode"] == "exmcr"
    assert config["projector"]["shared_dim"] == small_world.clip_text.shape[1]
    assert json.loads((out / "report.json").read_text())["mode"] == "exmcr"
    image = tmp_path / "image.npy"
    project = argv("project", checkpoint=out, space="clip", input=files["test_image"], output=image)
    assert main(project) == 0
    norms = np.linalg.norm(small_world.test_image, axis=1, keepdims=True)
    np.testing.assert_allclose(np.load(image), small_world.test_image / norms, atol=1e-6)
    metrics = tmp_path / "m.json"
    evaluate = argv("eval", checkpoint=out, image=files["test_image"], audio=files["test_audio"])
    assert main([*evaluate, "--labels", str(files["labels"]), "--json", str(metrics)]) == 0
    a2i = json.loads(metrics.read_text())["audio_to_image"]
    assert a2i["map"] > 2 / small_world.config.concepts


def test_project_writes_normalised_shared_vectors(
    files: dict[str, Path], small_world: World, tmp_path: Path
) -> None:
    out = tmp_path / "shared.npy"
    project = argv(
        "project", checkpoint=files["ckpt"], space="clap", input=files["test_audio"], output=out
    )
    assert main(project) == 0
    shared = np.load(out)
    assert shared.dtype == np.float32 and shared.shape == (small_world.config.test_pairs, 8)
    np.testing.assert_allclose(np.linalg.norm(shared, axis=1), 1.0, atol=1e-5)


def test_eval_prints_and_writes_json(
    files: dict[str, Path], small_world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "m.json"
    evaluate = argv(
        "eval",
        checkpoint=files["ckpt"],
        image=files["test_image"],
        audio=files["test_audio"],
        labels=files["labels"],
        json=out,
    )
    assert main(evaluate) == 0
    metrics = json.loads(out.read_text())
    assert set(metrics) == {"audio_to_image", "image_to_audio"}
    # class level, far above chance
    assert metrics["audio_to_image"]["map"] > 2 / small_world.config.concepts
    assert "audio_to_image" in capsys.readouterr().out


def test_every_train_option_reaches_the_train_config() -> None:
    """`mbridge train` sets a TrainConfig field from the flag of the same name; a flag whose
    name drifted from its field would be dropped without a word."""
    import dataclasses

    from bridge.cli import _train_config, build_parser
    from bridge.model.config import TrainConfig

    parser = build_parser()
    (subcommands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    train = subcommands.choices["train"]
    flags = {a.dest for a in train._actions} - {"help"}
    files = {"clip_text", "clap_text", "image_memory", "audio_memory", "out"}
    files |= {"dev_image", "dev_image_labels", "dev_audio", "dev_audio_labels", "init_from"}
    projector_and_ids = {"hidden_dim", "shared_dim", "layers", "mode", "clip_model", "clap_model"}
    renamed = {"no_memory", "no_noise", "no_intra", "cwcl_weights", "quiet"}
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert flags - files - projector_and_ids - renamed <= fields
    switches = ("no-memory", "no-intra", "quiet", "learn-temperature")
    options = dict(epochs=3, cwcl_weights="clip", memory_top_k=5)
    args = parser.parse_args(
        argv("train", *switches, clip_text="a", clap_text="b", out="o", **options)
    )
    config = _train_config(args)
    assert (config.use_memory, config.use_noise, config.use_intra) == (False, True, False)
    assert config.progress is False and config.learn_temperature is True
    assert (config.epochs, config.cwcl_weight_source, config.memory_top_k) == (3, "clip", 5)


def _fails(argv: list[str], capsys: pytest.CaptureFixture[str], message: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0], err


def test_bad_inputs_exit_nonzero_with_one_line_and_no_output(
    files: dict[str, Path], small_world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dim = small_world.config.space_dim  # the checkpoint's CLIP input width
    out = tmp_path / "out.npy"
    project = argv("project", checkpoint=files["ckpt"], space="clip", output=out)
    _fails(project + ["--input", str(tmp_path / "nope.npy")], capsys, "not found")
    np.save(tmp_path / "ints.npy", np.ones((3, dim), dtype=np.int64))
    _fails(project + ["--input", str(tmp_path / "ints.npy")], capsys, "dtype")
    np.save(tmp_path / "rank1.npy", np.ones(dim, dtype=np.float32))
    _fails(project + ["--input", str(tmp_path / "rank1.npy")], capsys, "2-D")
    nan = np.ones((3, dim), dtype=np.float32)
    nan[1, 1] = np.inf
    np.save(tmp_path / "nan.npy", nan)
    _fails(project + ["--input", str(tmp_path / "nan.npy")], capsys, "NaN or Inf")
    np.save(tmp_path / "wide.npy", np.ones((3, dim + 1), dtype=np.float32))
    _fails(project + ["--input", str(tmp_path / "wide.npy")], capsys, f"expected dimension {dim}")
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    _fails(project + ["--input", str(tmp_path / "junk.npy")], capsys, "readable")
    assert not out.exists()
    ckpt = tmp_path / "never"
    train = argv("train", "quiet", clip_text=files["clip_text"], clap_text=files["test_audio"])
    _fails([*train, "--out", str(ckpt)], capsys, "rows")
    assert not ckpt.exists()
    assert list(tmp_path.glob(".*")) == []  # no temp files left


def test_help_is_fast_and_does_not_import_torch() -> None:
    code = (
        "import sys; from bridge.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
