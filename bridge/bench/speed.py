"""Training throughput: `mbridge bench speed [--json OUT]`.

Compares the trainer as shipped (memory soft retrieval computed once per corpus) with a naive
step that redoes the retrieval for every batch, in the same run, on the same data and seed.
Default: batch 4096, 20,000-entry image and audio memories, 512-d spaces, CPU. Throughput is
caption pairs per second including the one-off memory pass. With noise off both variants
produce the same weights (checked here and in tests), so metrics are equal by construction;
the validation R@1 of each is printed as evidence.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from bridge.arrays import l2_normalize
from bridge.bench.report import format_table, machine_info, set_threads, write_json
from bridge.model.config import PRECISIONS, ProjectorConfig, TrainConfig


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    return l2_normalize(rng.normal(size=(n, d)).astype(np.float32))


def cwcl_gradient_errors(batch: int, dim: int, scale: float = 20.0) -> dict[str, float]:
    """Relative error (gradient norm) of one CWCL term's input gradients against float64, per
    precision path, at this batch size. Inputs cluster around 64 concepts (so the soft
    targets matter) and are rounded to bfloat16 as the projectors' outputs are under bf16."""
    import torch
    import torch.nn.functional as F

    from bridge.model.losses import cwcl_symmetric, cwcl_weights

    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(64, dim, generator=gen)
    labels = torch.randint(0, 64, (batch,), generator=gen)

    def noisy(spread: float) -> torch.Tensor:
        return F.normalize(
            centres[labels] + spread * torch.randn(batch, dim, generator=gen), dim=-1
        )

    frozen = torch.cat([noisy(0.7), noisy(0.7)], dim=1)  # the "mean" reference: both towers
    a, b = noisy(1.0).bfloat16().double(), noisy(1.0).bfloat16().double()

    def gradients(dtype: torch.dtype, autocast: bool) -> list[torch.Tensor]:
        p, q = (x.to(dtype).requires_grad_() for x in (a, b))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = cwcl_symmetric(p, q, cwcl_weights(frozen.to(dtype)), scale)
        return [g.double() for g in torch.autograd.grad(loss, (p, q))]

    exact = gradients(torch.float64, autocast=False)

    def error(grads: list[torch.Tensor]) -> float:
        return max(float((g - e).norm() / e.norm()) for g, e in zip(grads, exact, strict=True))

    return {
        "fp32": error(gradients(torch.float32, autocast=False)),
        "bf16 (shipped: fp32 logits and targets, bf16 backward products)": error(
            gradients(torch.float32, autocast=True)
        ),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mbridge bench speed", description=__doc__)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--memory", type=int, default=20_000)
    parser.add_argument("--captions", type=int, default=4096 * 4)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS)
    parser.add_argument(
        "--loss",
        default="infonce",
        choices=["infonce", "cwcl"],
        help="cwcl: its logits and soft targets run in float32 whatever --precision says",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    import torch

    from bridge.model.trainer import train_bridge

    rng = np.random.default_rng(0)
    # Captions share structure between the two spaces (a random rotation plus noise) so that
    # the validation metric is meaningful; memories are unpaired.
    clip_text = _unit(rng, args.captions, args.dim)
    rotation, _ = np.linalg.qr(rng.normal(size=(args.dim, args.dim)))
    clap_text = clip_text @ rotation.astype(np.float32) + 0.05 * _unit(rng, args.captions, args.dim)
    image_memory = _unit(rng, args.memory, args.dim)
    audio_memory = _unit(rng, args.memory, args.dim)
    projector = ProjectorConfig(clip_dim=args.dim, clap_dim=args.dim)
    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        use_noise=False,
        progress=False,
        device=args.device,
        precision=args.precision,
        loss=args.loss,
        val_fraction=0.02,
    )
    results: dict[str, Any] = {}
    models = {}
    for name, naive in (
        ("precomputed memory (shipped)", False),
        ("naive: retrieval every step", True),
    ):
        result = train_bridge(
            clip_text,
            clap_text,
            image_memory,
            audio_memory,
            config,
            projector,
            recompute_memory_each_step=naive,
        )
        report = result.report
        pairs = report["steps"] * min(args.batch_size, report["data"]["train_pairs"])
        seconds = report["memory_prep_seconds"] + report["train_seconds"]
        results[name] = {
            "pairs_per_second": pairs / seconds,
            "seconds": seconds,
            "memory_prep_seconds": report["memory_prep_seconds"],
            "steps": report["steps"],
            "val_mean_r_at_1": report["final"].get("val_mean_r_at_1"),
            "precision": report["precision"],
        }
        models[name] = result.model
    fast, naive = results.values()
    speedup = fast["pairs_per_second"] / naive["pairs_per_second"]
    same = all(
        torch.allclose(a, b, atol=1e-4)
        for a, b in zip(*(m.state_dict().values() for m in models.values()), strict=True)
    )
    rows = [
        [n, r["pairs_per_second"], r["seconds"], r["steps"], r["val_mean_r_at_1"]]
        for n, r in results.items()
    ]
    print(
        f"batch {args.batch_size}, memories {args.memory} x {args.dim}, {args.captions} captions, "
        f"{args.epochs} epochs, device {args.device}, precision {fast['precision']}, "
        f"loss {args.loss}"
    )
    print(format_table(["variant", "pairs/s", "seconds", "steps", "val R@1"], rows))
    print(f"speed-up: {speedup:.2f}x; identical weights: {same}")
    gradient_errors = None
    if args.loss == "cwcl":
        gradient_errors = cwcl_gradient_errors(args.batch_size, args.dim)
        print("CWCL input-gradient error against float64, one term at this batch size:")
        print(
            format_table(
                ["path", "relative error"],
                [[path, f"{error:.2e}"] for path, error in gradient_errors.items()],
            )
        )
    write_json(
        args.json,
        {
            "benchmark": "speed",
            "args": vars(args),
            "results": results,
            "speedup": speedup,
            "identical_weights": same,
            "cwcl_gradient_errors": gradient_errors,
            "machine": machine_info(),
        },
    )
    return 0
