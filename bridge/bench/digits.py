"""Digits benchmark: `mbridge bench digits --data-dir ../shared/data --json OUT.json`.

Real data, end to end. The demo CLIP (MNIST) and demo CLAP (FSDD) towers never saw each
other's data; C-MCR projectors are trained on a caption corpus encoded by both text towers
with unpaired memories (image memory: demo-CLIP embeddings of MNIST 0-4999; audio memory:
demo-CLAP embeddings of FSDD takes 5-49). No audio-image pair is used in training.

Protocol (class level: every gallery item with the query's digit is relevant):
- main split: queries/gallery = FSDD test takes 0-4 (300 clips, six speakers) and MNIST
  images 5000-9999 (5,000), both directions (audio->image, image->audio): P@1 (= class R@1),
  mAP, R@5, R@10.
- speaker-held-out split: speakers HELDOUT_SPEAKERS are removed from the bridge's audio
  memory (takes 5-49 of the other four speakers only); evaluation uses the held-out
  speakers' takes 0-4 (100 clips) against MNIST 5000-9999. The caption corpus carries no
  speaker information and is unchanged. Note: the demo CLAP tower itself heard takes 5-49 of
  all six speakers; pass --heldout-clap with a tower trained without the held-out speakers
  (scripts/demo/train_demo_clap.py --exclude-speakers theo yweweler) to hold them out of the
  tower too.
- rows: the ablation grid (full C-MCR with InfoNCE, no noise, no memory, no intra loss,
  CWCL instead of InfoNCE) over --seeds seeds (mean and population std); chance (random
  embeddings, mean over seeds); a label oracle (one-hot labels as embeddings: the ceiling);
  a text cascade without any bridge (each item's zero-shot class distribution in its own
  space, compared across spaces) which shows what the towers alone allow; and the committed
  demo bridge checkpoint if it exists.
- zero-shot accuracy of each tower in its own space (text->image on MNIST 5000-9999,
  text->audio on FSDD takes 0-4) with a fixed prompt ensemble.

Embeddings are cached under --cache-dir keyed by the weights' sha256, so reruns only train.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from bridge.bench.digits_world import (
    HELDOUT_SPEAKERS,
    PROMPTS,
    Split,
    World,
    dev_split,
    load_world,
)
from bridge.bench.report import format_table, machine_info, write_json
from bridge.errors import InvalidInputError
from bridge.model.config import ProjectorConfig, TrainConfig, with_overrides
from bridge.model.evaluation import retrieval_metrics
from bridge.model.relative import RelativeConfig, relative_pair
from bridge.model.validation import DevSet

logger = logging.getLogger(__name__)

EXMCR = "ex-mcr (clap into native clip)"
VARIANTS: dict[str, dict[str, Any]] = {
    "c-mcr full (infonce)": {},
    "fp32 matmuls (precision fp32)": {"precision": "fp32"},
    "no noise": {"use_noise": False},
    "no memory": {"use_memory": False},
    "no intra": {"use_intra": False},
    "cwcl instead of infonce": {"loss": "cwcl"},
    EXMCR: {"mode": "exmcr"},
}
# Selection sweep (--sweep), run on the dev split only: the full method's temperature and
# noise variance were chosen with it (see docs/benchmarks.md, "dev_sweep").
SWEEP: dict[str, dict[str, Any]] = {
    "method.md's settings (temperature 0.01, noise 0.004)": {
        "temperature": 0.01,
        "noise_variance": 0.004,
    },
    "temperature 0.05, noise 0.004": {"noise_variance": 0.004},
    "temperature 0.05, noise 0.01": {"noise_variance": 0.01},
    "temperature 0.05, noise 0.02": {"noise_variance": 0.02},
    "temperature 0.05, noise 0.04": {"noise_variance": 0.04},
    "temperature 0.05, noise 0.06 (chosen)": {},
    "temperature 0.05, noise 0.08": {"noise_variance": 0.08},
    "temperature 0.05, noise 0.16": {"noise_variance": 0.16},
    "temperature 0.01, noise 0.06": {"temperature": 0.01},
    "temperature 0.1, noise 0.06": {"temperature": 0.1},
    "intra weight 1.0": {"intra_weight": 1.0},
}
METRICS = ("p_at_1", "map", "r_at_5", "r_at_10")
FULL = "c-mcr full (infonce)"
# Validation signals the trainer reports at every epoch (bridge/model/validation.py).
SIGNALS = (
    "val_mean_r_at_1",
    "val_pseudo_audio_to_image_map",
    "val_pseudo_audio_to_image_r_at_1",
    "val_dev_p_at_1",
)
# The labelled dev set of a trained run: a seeded sample of the memories' items (training
# halves, as a service's labelled stored items would be), never an evaluation item.
DEV_SIZES = {"image": 500, "audio": 300}
# Relative representations (bridge/model/relative.py), the training-free competitor: ASIF's
# top-k and power, chosen on the dev split like the bridge's settings (--sweep shows the rest).
RELATIVE = RelativeConfig(top_k=800, power=8.0)
RELATIVE_ROW = "relative representations (asif top-800, power 8), no training"
RELATIVE_SWEEP: dict[str, RelativeConfig] = {
    "relative representations (all captions, power 1)": RelativeConfig(),
    "relative representations (top-100, power 8)": RelativeConfig(top_k=100, power=8.0),
    "relative representations (softmax, temperature 0.01)": RelativeConfig(temperature=0.01),
    "relative representations (softmax, temperature 0.05)": RelativeConfig(temperature=0.05),
}


# --------------------------------------------------------------------------- methods


def _both_directions(
    audio: np.ndarray, image: np.ndarray, audio_labels: np.ndarray, image_labels: np.ndarray
) -> dict[str, dict[str, float]]:
    a2i = retrieval_metrics(audio, image, audio_labels, image_labels)
    i2a = retrieval_metrics(image, audio, image_labels, audio_labels)
    return {
        "audio_to_image": {k: a2i[k] for k in METRICS},
        "image_to_audio": {k: i2a[k] for k in METRICS},
    }


def _dev_set(split: Split) -> DevSet | None:
    if split.image_memory_labels is None or split.audio_memory_labels is None:
        return None
    rng = np.random.default_rng(0)
    image = rng.choice(len(split.image_memory), DEV_SIZES["image"], replace=False)
    audio = rng.choice(len(split.audio_memory), DEV_SIZES["audio"], replace=False)
    return DevSet(
        split.image_memory[image],
        split.image_memory_labels[image],
        split.audio_memory[audio],
        split.audio_memory_labels[audio],
    )


def _train(world: World, split: Split, config: TrainConfig, projector: ProjectorConfig) -> Any:
    from bridge.model.trainer import train_bridge

    clap_text = getattr(split, "clap_text", world.clap_text)
    return train_bridge(
        world.clip_text,
        clap_text,
        split.image_memory,
        split.audio_memory,
        config,
        projector,
        dev=_dev_set(split),
    )


def _relative(world: World, split: Split, config: RelativeConfig) -> dict[str, Any]:
    """No training: audio and images described by their similarities to the caption corpus
    in their own spaces, compared across (bridge/model/relative.py)."""
    clap_text = getattr(split, "clap_text", world.clap_text)
    audio, image = relative_pair(split.audio, split.image, clap_text, world.clip_text, config)
    return _both_directions(audio, image, split.audio_labels, split.image_labels)


def _project(model: Any, split: Split) -> tuple[np.ndarray, np.ndarray]:
    import torch

    from bridge.arrays import l2_normalize

    model.eval()
    with torch.no_grad():
        audio = model.clap(torch.from_numpy(l2_normalize(split.audio))).numpy()
        image = model.clip(torch.from_numpy(l2_normalize(split.image))).numpy()
    return audio, image


def _cascade(world: World, split: Split, temperature: float = 0.01) -> dict[str, Any]:
    """No bridge: each item's zero-shot class distribution in its own space, compared."""
    clap_prompts = getattr(split, "clap_prompts", world.clap_prompts)

    def probs(x: np.ndarray, prompts: np.ndarray) -> np.ndarray:
        logits = x @ prompts.T / temperature
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)

    return _both_directions(
        probs(split.audio, clap_prompts),
        probs(split.image, world.clip_prompts),
        split.audio_labels,
        split.image_labels,
    )


def _chance(split: Split, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    audio = rng.standard_normal((len(split.audio), 16)).astype(np.float32)
    image = rng.standard_normal((len(split.image), 16)).astype(np.float32)
    return _both_directions(audio, image, split.audio_labels, split.image_labels)


def _oracle(split: Split) -> dict[str, Any]:
    eye = np.eye(10, dtype=np.float32)
    return _both_directions(
        eye[split.audio_labels], eye[split.image_labels], split.audio_labels, split.image_labels
    )


def _aggregate(runs: list[dict[str, dict[str, float]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for direction in runs[0]:
        out[direction] = {}
        for metric in runs[0][direction]:
            values = [r[direction][metric] for r in runs]
            out[direction][metric] = float(np.mean(values))
            out[direction][f"{metric}_std"] = float(np.std(values))
    out["runs"] = runs
    return out


def run_split(
    world: World,
    split: Split,
    base: TrainConfig,
    projector: ProjectorConfig,
    seeds: int,
    variants: dict[str, dict[str, Any]],
    demo_bridge: Path | None,
    relatives: dict[str, RelativeConfig] | None = None,
) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for name, overrides in variants.items():
        runs = []
        config, shape = with_overrides(base, projector, overrides)
        for seed in range(seeds):
            started = time.perf_counter()
            trained = _train(world, split, replace(config, seed=seed), shape)
            audio, image = _project(trained.model, split)
            run = _both_directions(audio, image, split.audio_labels, split.image_labels)
            final = trained.report["final"]
            run["validation"] = {k: float(final[k]) for k in SIGNALS if k in final}
            runs.append(run)
            logger.info(
                "%s / %s seed %d: a2i P@1 %.3f, i2a P@1 %.3f (%.1fs)",
                split.name,
                name,
                seed,
                runs[-1]["audio_to_image"]["p_at_1"],
                runs[-1]["image_to_audio"]["p_at_1"],
                time.perf_counter() - started,
            )
        rows[name] = _aggregate(runs)
    if demo_bridge is not None and split.name != "speaker_heldout_tower":
        from bridge.model.projectors import load_checkpoint

        ckpt = load_checkpoint(demo_bridge)
        projected = ckpt.project("clap", split.audio), ckpt.project("clip", split.image)
        rows["committed demo bridge"] = _aggregate(
            [_both_directions(*projected, split.audio_labels, split.image_labels)]
        )
    rows["text cascade, no bridge"] = _aggregate([_cascade(world, split)])
    for name, relative in ({RELATIVE_ROW: RELATIVE} | (relatives or {})).items():
        rows[name] = _aggregate([_relative(world, split, relative)])
    rows["chance (random embeddings)"] = _aggregate(
        [_chance(split, s) for s in range(max(seeds, 3))]
    )
    rows["label oracle"] = _aggregate([_oracle(split)])
    return {"description": split.description, "rows": rows}


def signal_agreement(splits: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Spearman rank correlation, over every trained run (each variant and seed of every
    split, and per split in `by_split`), between each validation signal at the last epoch and
    the run's true audio->image P@1 on the split's test items. A signal that ranks runs as the
    test does can choose between them (and between epochs: TrainConfig.select_epoch)."""
    from scipy.stats import spearmanr

    def rho(values: list[tuple[float, float]]) -> float | None:
        if len(values) < 3 or len({v for v, _ in values}) < 2:
            return None
        return float(spearmanr([v for v, _ in values], [p for _, p in values]).statistic)

    pairs: dict[str, dict[str, list[tuple[float, float]]]] = {s: {} for s in SIGNALS}
    for split, result in splits.items():
        for row in result["rows"].values():
            for run in row["runs"]:
                for signal, value in run.get("validation", {}).items():
                    truth = run["audio_to_image"]["p_at_1"]
                    pairs[signal].setdefault(split, []).append((value, truth))
    out: dict[str, dict[str, Any]] = {}
    for signal, by_split in pairs.items():
        everything = [pair for values in by_split.values() for pair in values]
        overall = rho(everything)
        if overall is None:
            continue
        out[signal] = {
            "spearman_rho": overall,
            "runs": float(len(everything)),
            "by_split": {split: rho(values) for split, values in by_split.items()},
        }
    return out


# --------------------------------------------------------------------------- output


def _table(result: dict[str, Any]) -> str:
    headers = ["method", "a->i P@1", "a->i mAP", "a->i R@5", "a->i R@10"]
    headers += ["i->a P@1", "i->a mAP", "i->a R@5", "i->a R@10"]
    rows = []
    for name, row in result["rows"].items():
        cells: list[Any] = [name]
        for direction in ("audio_to_image", "image_to_audio"):
            for metric in METRICS:
                mean, std = row[direction][metric], row[direction][f"{metric}_std"]
                cells.append(f"{mean:.3f}" + (f" ±{std:.3f}" if len(row["runs"]) > 1 else ""))
        rows.append(cells)
    return format_table(headers, rows)


def _rho_cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mbridge bench digits",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--clip", type=Path, default=Path("models/demo-clip"))
    parser.add_argument("--clap", type=Path, default=Path("models/demo-clap"))
    parser.add_argument("--captions", type=Path, default=Path("models/demo-bridge/captions.txt"))
    parser.add_argument("--demo-bridge", type=Path, default=Path("models/demo-bridge"))
    parser.add_argument(
        "--heldout-clap",
        type=Path,
        default=None,
        help="CLAP tower trained "
        "without the held-out speakers (adds the speaker_heldout_tower split)",
    )
    parser.add_argument("--cache-dir", type=Path, default=Path("bench-out/digits-cache"))
    parser.add_argument("--no-cache", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--hidden-dim", type=int, default=512)
    parser.add_argument("--shared-dim", type=int, default=128)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument(
        "--quick", action="store_true", help="1 seed, 15 epochs: full method, no memory, Ex-MCR"
    )
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="also run the hyper-parameter selection sweep on the dev split (training-half "
        "items: MNIST 0-4999 vs FSDD takes 5-49), and its settings once on the main split "
        "(main_sweep: more runs for the validation signals to rank)",
    )
    return parser


def bridge_config(epochs: int, batch_size: int) -> TrainConfig:
    """The training configuration of the full method (also used for models/demo-bridge).

    Temperature 0.05 and noise variance 0.06 (instead of the method's 0.01 / 0.004) were
    selected with `--sweep` on the dev split (training-half items only): semantic completion
    is the one ingredient that matters here, and dev retrieval rises with the noise up to a
    plateau at 0.04-0.08.
    """
    return TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        temperature=0.05,
        noise_variance=0.06,
        progress=False,
        device="cpu",
    )


def main(argv: list[str]) -> int:
    args = _build_parser().parse_args(argv)
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    seeds, epochs, variants = args.seeds, args.epochs, dict(VARIANTS)
    if args.quick:
        seeds, epochs = 1, 15
        variants = {k: VARIANTS[k] for k in (FULL, "no memory", EXMCR)}
    if seeds < 1 or epochs < 1:
        raise InvalidInputError("--seeds and --epochs must be >= 1")
    started = time.perf_counter()
    world = load_world(
        args.data_dir,
        args.clip,
        args.clap,
        args.captions,
        None if args.no_cache else args.cache_dir,
        args.heldout_clap,
    )
    embed_seconds = time.perf_counter() - started
    base = bridge_config(epochs, args.batch_size)
    projector = ProjectorConfig(
        clip_dim=world.clip_text.shape[1],
        clap_dim=world.clap_text.shape[1],
        hidden_dim=args.hidden_dim,
        shared_dim=args.shared_dim,
    )
    demo_bridge = args.demo_bridge if (args.demo_bridge / "config.json").is_file() else None
    splits = {
        split.name: run_split(world, split, base, projector, seeds, variants, demo_bridge)
        for split in world.splits
    }
    if args.sweep:
        dev = dev_split(world, args.data_dir)
        splits["dev_sweep"] = run_split(
            world, dev, base, projector, seeds, SWEEP, None, RELATIVE_SWEEP
        )
        # The same settings on the main split, one seed each: runs of different quality for
        # the validation signals to rank (the dev split has no separate labelled dev set).
        main_sweep = run_split(world, world.splits[0], base, projector, 1, SWEEP, None)
        main_sweep["description"] = "the dev sweep's settings on the main split (1 seed each)"
        splits["main_sweep"] = main_sweep
    full = splits["main"]["rows"][FULL]
    agreement = signal_agreement(splits)
    payload: dict[str, Any] = {
        "benchmark": "digits",
        "audio_to_image": {k: full["audio_to_image"][k] for k in METRICS},
        "image_to_audio": {k: full["image_to_audio"][k] for k in METRICS},
        "zero_shot": world.zero_shot,
        "splits": splits,
        "signal_agreement": agreement,
        "settings": {
            "seeds": seeds,
            "epochs": epochs,
            "batch_size": args.batch_size,
            "projector": {"hidden_dim": args.hidden_dim, "shared_dim": args.shared_dim},
            "train_config": base.__dict__ | {"extra": {}},
            "heldout_speakers": list(HELDOUT_SPEAKERS),
            "prompts": list(PROMPTS),
            "models": {"clip": str(args.clip), "clap": str(args.clap)},
            "captions": str(args.captions),
            "caption_pairs": int(len(world.clip_text)),
        },
        "machine": machine_info(),
        "embed_seconds": embed_seconds,
        "wall_seconds": time.perf_counter() - started,
    }
    print("zero-shot accuracy of each tower in its own space (prompt ensemble):")
    for key, value in world.zero_shot.items():
        print(f"  {key}: {value:.3f}")
    for name, result in splits.items():
        print(f"\n[{name}] {result['description']}")
        print(_table(result))
    print("\nvalidation signal (last epoch) vs true audio->image P@1, over every trained run:")
    names = list(splits)
    rows = [
        [s, f"{v['spearman_rho']:.3f}", f"{v['runs']:.0f}"]
        + [_rho_cell(v["by_split"].get(name)) for name in names]
        for s, v in agreement.items()
    ]
    print(format_table(["signal", "Spearman rho", "runs", *names], rows))
    print(f"\n{seeds} seed(s), {epochs} epochs; wall {payload['wall_seconds']:.0f}s")
    write_json(args.json, payload)
    return 0
