"""The training benchmarks at tiny size: speed, synthetic and digits."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

RunBench = Callable[[str, list[str]], dict[str, Any]]


def test_speed(run_bench: RunBench, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--batch-size", "64", "--memory", "256", "--captions", "512", "--epochs", "1"]
    report = run_bench("speed", argv + ["--dim", "16", "--threads", "1"])
    assert report["benchmark"] == "speed" and report["args"]["batch_size"] == 64
    results = report["results"]
    shipped = results["precomputed memory (shipped)"]
    naive = results["naive: retrieval every step"]
    assert shipped["steps"] == naive["steps"] > 0
    assert report["identical_weights"] is True  # noise off: the two variants agree
    assert report["speedup"] == pytest.approx(
        shipped["pairs_per_second"] / naive["pairs_per_second"]
    )
    assert set(report["machine"]) >= {"platform", "python", "torch", "torch_threads"}
    assert "speed-up:" in capsys.readouterr().out


def test_synthetic(run_bench: RunBench, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--seeds", "1", "--epochs", "1", "--batch-size", "64", "--captions", "300"]
    report = run_bench("synthetic", argv + ["--memory", "200", "--test-pairs", "50"])
    results = report["results"]
    methods = ["chance", "linear map (caption pairs)", "c-mcr (infonce)", "no memory"]
    methods += ["relative representations (asif top-800, power 8)"]
    methods += ["ex-mcr (clap into native clip)"]
    assert set(results) >= {*methods, "oracle (true audio-image pairs)"}
    assert results["chance"]["a2i_r1"] == {"mean": 1 / 50, "std": 0.0}
    for row in results.values():
        assert 0 <= row["a2i_r10"]["mean"] <= 1 and row["seconds"] >= 0
    assert report["world"]["test_pairs"] == 50 and report["train"]["epochs"] == 1
    assert "chance R@1 = 0.020" in capsys.readouterr().out


def test_digits_scoring_on_labelled_embeddings() -> None:
    """The digits benchmark's rows: the label oracle is perfect, chance is near 1 / 10, and
    a row's table cell shows mean and spread over seeds."""
    from bridge.bench.digits import _aggregate, _chance, _oracle, _table
    from bridge.bench.digits_world import Split

    labels = np.arange(200) % 10
    split = Split("t", np.zeros((1, 4)), np.zeros((1, 4)), np.zeros((200, 4)), labels,
                  np.zeros((100, 4)), labels[:100], "test split")  # fmt: skip
    oracle = _oracle(split)
    assert oracle["audio_to_image"]["p_at_1"] == 1.0 == oracle["image_to_audio"]["map"]
    chance = _aggregate([_chance(split, seed) for seed in range(3)])
    assert 0.0 < chance["audio_to_image"]["p_at_1"] < 0.3
    assert chance["audio_to_image"]["p_at_1_std"] > 0 and len(chance["runs"]) == 3
    table = _table({"rows": {"label oracle": _aggregate([oracle]), "chance": chance}})
    assert "label oracle | 1.000 " in table and " ±" in table.splitlines()[-1]


def test_digits_rows_include_the_training_free_relative_representations() -> None:
    """The relative-representation row compares audio and images through their similarities
    to one caption corpus: with towers that put each class's captions and items together it
    is perfect, with a corpus of one class it cannot tell classes apart."""
    from bridge.bench.digits import _relative
    from bridge.bench.digits_world import Split, World
    from bridge.model.relative import RelativeConfig

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((10, 16)).astype(np.float32)
    labels = np.arange(100) % 10

    def near(rows: np.ndarray) -> np.ndarray:
        return centres[rows] + 0.05 * rng.standard_normal((len(rows), 16)).astype(np.float32)

    split = Split("t", near(labels), near(labels), near(labels), labels,
                  near(labels[:50]), labels[:50], "toy")  # fmt: skip
    corpus = np.repeat(np.arange(10), 5)
    world = World(near(corpus), near(corpus), centres, centres, [split], {})
    result = _relative(world, split, RelativeConfig(top_k=5, power=8.0))
    assert result["audio_to_image"]["p_at_1"] == 1.0 == result["image_to_audio"]["p_at_1"]
    one_class = World(near(corpus * 0), near(corpus * 0), centres, centres, [split], {})
    assert _relative(one_class, split, RelativeConfig())["audio_to_image"]["map"] < 0.5


@pytest.mark.slow
def test_digits_quick_on_the_committed_subset(
    run_bench: RunBench, shared_dir: Path, tmp_path: Path
) -> None:
    data = shared_dir / "data"
    if not (data / "mnist").is_dir():
        pytest.skip("no digits data")
    argv = ["--data-dir", str(data), "--quick", "--epochs", "2", "--cache-dir", str(tmp_path)]
    report = run_bench("digits", argv)
    assert set(report["splits"]) >= {"main", "speaker_heldout"}
    rows = report["splits"]["main"]["rows"]
    assert rows["label oracle"]["audio_to_image"]["p_at_1"] == 1.0
    assert rows["c-mcr full (infonce)"]["audio_to_image"]["p_at_1"] > 0.1  # above chance
    assert rows["relative representations (asif top-800, power 8), no training"]
    assert rows["ex-mcr (clap into native clip)"]["audio_to_image"]["p_at_1"] > 0.1
    run = rows["c-mcr full (infonce)"]["runs"][0]
    assert 0.0 <= run["validation"]["val_dev_p_at_1"] <= 1.0  # the labelled dev set


def test_signal_agreement_is_the_rank_correlation_with_true_audio_to_image() -> None:
    """Each validation signal is ranked against the runs' true audio->image P@1: a signal
    that orders runs as the test does scores 1, the reverse order -1."""
    from bridge.bench.digits import signal_agreement

    def run(p_at_1: float, text: float, pseudo: float) -> dict:
        return {
            "audio_to_image": {"p_at_1": p_at_1},
            "validation": {"val_mean_r_at_1": text, "val_pseudo_audio_to_image_map": pseudo},
        }

    splits = {
        "main": {"rows": {"a": {"runs": [run(0.9, 0.2, 0.8), run(0.5, 0.4, 0.3)]}}},
        "dev": {"rows": {"b": {"runs": [run(0.7, 0.1, 0.6), run(0.1, 0.9, 0.05)]}}},
    }
    splits["main"]["rows"]["c"] = {"runs": [run(0.3, 0.3, 0.2)]}
    agreement = signal_agreement(splits)
    pseudo = agreement["val_pseudo_audio_to_image_map"]
    assert pseudo["spearman_rho"] == pytest.approx(1.0) and pseudo["runs"] == 5.0
    assert pseudo["by_split"] == {"main": pytest.approx(1.0), "dev": None}
    assert agreement["val_mean_r_at_1"]["spearman_rho"] == pytest.approx(-0.8)
    assert agreement["val_mean_r_at_1"]["by_split"]["main"] == pytest.approx(-0.5)
