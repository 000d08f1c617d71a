"""Quality benchmark on the synthetic world: `mbridge bench synthetic [--json OUT]`.

Rows: C-MCR (InfoNCE, the default), C-MCR with CWCL, the ablations (no noise, no memory, no
intra loss), two training-free baselines over the same caption corpus (a linear map fitted
on the caption pairs: least squares CLAP text -> CLIP text, applied to audio and compared
with images in CLIP space; relative representations, ASIF: each item described by its
similarities to the captions in its own space), chance, and an oracle trained on true
audio-image pairs. Metrics: instance-level audio->image and image->audio R@1 / R@10 on
held-out pairs, mean and spread over seeds.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from bridge.bench.report import format_table, machine_info, set_threads, write_json
from bridge.bench.synthetic_world import World, WorldConfig, make_world
from bridge.model.config import ProjectorConfig, TrainConfig, with_overrides
from bridge.model.evaluation import retrieval_metrics
from bridge.model.projectors import BridgeModel
from bridge.model.relative import RelativeConfig, relative_pair

Method = Callable[[World, int], tuple[np.ndarray, np.ndarray]]  # -> (query audio, gallery image)

VARIANTS: dict[str, dict[str, Any]] = {
    "c-mcr (infonce)": {},
    "c-mcr (infonce), fp32 matmuls": {"precision": "fp32"},
    "c-mcr (cwcl, sharpen 4)": {"loss": "cwcl", "cwcl_sharpen": 4.0},
    "c-mcr (cwcl, sharpen 1)": {"loss": "cwcl", "cwcl_sharpen": 1.0},
    "no noise": {"use_noise": False},
    "no memory": {"use_memory": False},
    "no intra": {"use_intra": False},
    "ex-mcr (clap into native clip)": {"mode": "exmcr"},
}
SWEEP: dict[str, dict[str, Any]] = {
    "temperature 0.01 (reference fork)": {"temperature": 0.01},
    "temperature 0.1": {"temperature": 0.1},
    "learned temperature": {"learn_temperature": True},
    "memory temperature 0.05": {"memory_temperature": 0.05},
    "noise variance 0.02": {"noise_variance": 0.02},
    "intra weight 1.0": {"intra_weight": 1.0},
    "batchnorm separate": {"batchnorm_mode": "separate"},
}

GRID: dict[str, dict[str, Any]] = {
    f"temp {t} / noise {n} / mem temp {m}": {
        "temperature": t,
        "noise_variance": n,
        "use_noise": n > 0,
        "memory_temperature": m,
    }
    for t in (0.02, 0.05, 0.1)
    for n in (0.0, 0.001, 0.004)
    for m in (0.01, 0.05)
}


def _project(
    model: BridgeModel, world: World, image: np.ndarray, audio: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    import torch

    with torch.no_grad():
        shared_audio = model.clap(torch.from_numpy(audio)).numpy()
        shared_image = model.clip(torch.from_numpy(image)).numpy()
    return shared_audio, shared_image


def _trained(train: TrainConfig, projector: ProjectorConfig) -> Method:
    from bridge.model.trainer import train_bridge

    def run(world: World, seed: int) -> tuple[np.ndarray, np.ndarray]:
        result = train_bridge(
            world.clip_text,
            world.clap_text,
            world.image_memory,
            world.audio_memory,
            replace(train, seed=seed),
            projector,
        )
        return _project(result.model, world, world.test_image, world.test_audio)

    return run


def _oracle(train: TrainConfig, projector: ProjectorConfig) -> Method:
    from bridge.model.trainer import train_bridge

    def run(world: World, seed: int) -> tuple[np.ndarray, np.ndarray]:
        config = replace(train, seed=seed, use_memory=False, use_intra=False, use_noise=False)
        result = train_bridge(world.train_image, world.train_audio, None, None, config, projector)
        return _project(result.model, world, world.test_image, world.test_audio)

    return run


def _linear(world: World, seed: int) -> tuple[np.ndarray, np.ndarray]:
    weights, *_ = np.linalg.lstsq(world.clap_text, world.clip_text, rcond=None)
    return (world.test_audio @ weights).astype(np.float32), world.test_image


def _relative(config: RelativeConfig) -> Method:
    def run(world: World, seed: int) -> tuple[np.ndarray, np.ndarray]:
        return relative_pair(
            world.test_audio, world.test_image, world.clap_text, world.clip_text, config
        )

    return run


def _score(shared_audio: np.ndarray, shared_image: np.ndarray) -> dict[str, float]:
    a2i = retrieval_metrics(shared_audio, shared_image)
    i2a = retrieval_metrics(shared_image, shared_audio)
    return {
        "a2i_r1": a2i["r_at_1"],
        "a2i_r10": a2i["r_at_10"],
        "i2a_r1": i2a["r_at_1"],
        "i2a_r10": i2a["r_at_10"],
    }


def _aggregate(runs: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    return {
        k: {
            "mean": float(np.mean([r[k] for r in runs])),
            "std": float(np.std([r[k] for r in runs])),
        }
        for k in runs[0]
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mbridge bench synthetic", description=__doc__)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--captions", type=int, default=10_000)
    parser.add_argument("--memory", type=int, default=5_000)
    parser.add_argument("--test-pairs", type=int, default=1_000)
    parser.add_argument("--sweep", action="store_true", help="also sweep the open hyper-parameters")
    parser.add_argument("--grid", action="store_true", help="only the temperature x noise grid")
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 seed (smoke run)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--json", default=None, help="write results here")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    if args.quick:
        args.seeds, args.epochs, args.captions, args.memory, args.test_pairs = 1, 8, 4000, 2000, 300
        args.batch_size = 256
    world_cfg = WorldConfig(captions=args.captions, memory=args.memory, test_pairs=args.test_pairs)
    projector = ProjectorConfig(hidden_dim=256, shared_dim=64)
    base = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, progress=False)
    methods: dict[str, Method] = {
        "chance": lambda w, s: (w.test_audio, w.test_image),
        "linear map (caption pairs)": _linear,
        "relative representations (asif top-800, power 8)": _relative(
            RelativeConfig(top_k=800, power=8.0)
        ),
    }
    if args.sweep:
        methods["relative representations (all captions, power 1)"] = _relative(RelativeConfig())
        methods["relative representations (softmax, temperature 0.05)"] = _relative(
            RelativeConfig(temperature=0.05)
        )
    variants = dict(VARIANTS, **(SWEEP if args.sweep else {}))
    if args.grid:
        variants = GRID
    for name, overrides in variants.items():
        methods[name] = _trained(*with_overrides(base, projector, overrides))
    methods["oracle (true audio-image pairs)"] = _oracle(base, projector)
    results: dict[str, Any] = {}
    for name, method in methods.items():
        started = time.perf_counter()
        runs = []
        for seed in range(args.seeds):
            world = make_world(replace(world_cfg, seed=seed))
            if name == "chance":
                k = world_cfg.test_pairs
                runs.append(
                    {"a2i_r1": 1 / k, "a2i_r10": 10 / k, "i2a_r1": 1 / k, "i2a_r10": 10 / k}
                )
            else:
                runs.append(_score(*method(world, seed)))
        results[name] = _aggregate(runs) | {"seconds": time.perf_counter() - started}
        print(f"  done: {name} ({results[name]['seconds']:.0f} s)", flush=True)
    headers = ["method", "a->i R@1", "a->i R@10", "i->a R@1", "i->a R@10"]
    rows = [
        [name]
        + [
            f"{r[k]['mean']:.3f} ± {r[k]['std']:.3f}"
            for k in ("a2i_r1", "a2i_r10", "i2a_r1", "i2a_r10")
        ]
        for name, r in results.items()
    ]
    print(
        f"\nSynthetic world, {args.seeds} seed(s), {world_cfg.test_pairs} held-out audio-image "
        "pairs "
        f"(chance R@1 = {1 / world_cfg.test_pairs:.3f})"
    )
    print(format_table(headers, rows))
    write_json(
        args.json,
        {
            "benchmark": "synthetic",
            "args": vars(args),
            "world": world_cfg.__dict__,
            "projector": projector.__dict__,
            "train": base.__dict__,
            "results": results,
            "machine": machine_info(),
        },
    )
    return 0
