"""Shared training recipe of the demo towers (train_demo_clip.py, train_demo_clap.py).

Both scripts train a two-tower transformers model (CLIPModel / ClapModel) the same way:
- CLIP's symmetric contrastive loss with soft targets over same-digit pairs in the batch,
  plus a warm-up pull towards fixed per-digit anchors whose weight decays linearly to 0;
- AdamW (weight decay 0.05, none on the logit scale), linear warm-up over the first 5% of
  steps then cosine decay to 0;
- one `torch.randperm` order per epoch from a seeded generator, captions drawn from a seeded
  `random.Random`, augmentation drawn from the same generator as the order;
- the same command-line options, set-up and zero-shot evaluation (a prompt ensemble per
  digit, the nearest one wins).

Only the media side (pixels or log-mel features, their augmentation and tower) and the
caption sampler differ; the scripts pass those in as callables.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

logger = logging.getLogger(__name__)


def soft_clip_loss(
    image: torch.Tensor, text: torch.Tensor, labels: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """Symmetric CLIP loss with targets uniform over same-label pairs."""
    logits = scale * image @ text.T  # (B, B)
    same = (labels[:, None] == labels[None, :]).float()
    targets = same / same.sum(dim=1, keepdim=True)
    loss_i = -(targets * F.log_softmax(logits, dim=1)).sum(1).mean()
    loss_t = -(targets * F.log_softmax(logits.T, dim=1)).sum(1).mean()
    return (loss_i + loss_t) / 2


def class_anchors(dim: int, seed: int) -> torch.Tensor:
    """Ten fixed random orthonormal vectors (10, dim), one per digit."""
    gen = torch.Generator().manual_seed(seed + 1)
    q, _ = torch.linalg.qr(torch.randn(dim, 10, generator=gen))
    return q.T.contiguous()


def anchor_loss(x: torch.Tensor, labels: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Warm-up term: cross-entropy of normalised embeddings against fixed class anchors.

    Two randomly initialised towers trained only against each other first collapse to one
    point (every embedding shares a large common component, so the contrastive loss sits at
    log(batch) where its gradient vanishes). Pulling both towers' embeddings of a digit
    towards the same fixed anchor breaks that symmetry; its weight decays linearly to zero
    (by default over the whole run), so the contrastive loss alone shapes the end.
    """
    return F.cross_entropy(14.0 * x @ anchors.T, labels)


def anchor_weight(step: int, total: int, fraction: float = 1.0) -> float:
    """1 at the start, linearly down to 0 at `fraction` of training."""
    return max(0.0, 1.0 - step / max(1.0, fraction * total))


def training_parser(
    doc: str | None, out: str, epochs: int, batch_size: int
) -> argparse.ArgumentParser:
    """A training script's parser (its module docstring as the description) with the options
    both scripts share, at the script's defaults."""
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path(out))
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--anchor-fraction",
        type=float,
        default=1.0,
        help="the anchor warm-up weight decays linearly from 1 to 0 over this fraction of steps",
    )
    parser.add_argument("--threads", type=int, default=1)
    return parser


def start_run(args: argparse.Namespace) -> float:
    """Logging, thread count and global seeds; returns the start time."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    common.seed_everything(args.seed)
    return time.time()


def text_tower(tokenizer: Any) -> dict[str, Any]:
    """The text transformer both demo towers use: hidden 64, MLP 256, 2 layers, 4 heads, a
    64-d projection; vocabulary size and special tokens from the tokenizer."""
    return {
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "projection_dim": 64,
    }


def build_towers(
    out: Path, build_processor: Callable[[Path], Any], build_model: Callable[[Any], Any]
) -> tuple[Any, Any, Any]:
    """(processor, its tokenizer, the untrained model built for that tokenizer); logs the
    model's size."""
    processor = build_processor(out)
    tokenizer = processor.tokenizer
    model = build_model(tokenizer)
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("%s with %d parameters, vocab %d", type(model).__name__, n_params, len(tokenizer))
    return processor, tokenizer, model


@dataclass
class Recipe:
    """What differs between the two towers' training loops.

    media_features(idx, gen): the augmented media batch `idx` through the media tower,
    unnormalised (B, D); it may draw from `gen` (called after the captions are drawn and
    before the text tower runs, as the original scripts did).
    caption(rng, digit): one training caption for a digit.
    logit_scale: the model's logit-scale parameter (CLIP: logit_scale, CLAP: logit_scale_a).
    eval_every / eval_message / evaluate: periodic zero-shot report during training.
    start_epoch(epoch): called before each epoch's order is drawn (e.g. to swap in that
    epoch's augmented copy of the media); None: nothing to do.
    """

    media_features: Callable[[torch.Tensor, torch.Generator], torch.Tensor]
    caption: Callable[[random.Random, int], str]
    logit_scale: torch.nn.Parameter
    eval_every: int
    eval_message: str
    evaluate: Callable[[], float | str]
    start_epoch: Callable[[int], None] | None = None


def train_contrastive(
    model: Any,
    tokenizer: Any,
    train_labels: torch.Tensor,
    recipe: Recipe,
    args: argparse.Namespace,
    started: float,
) -> float:
    """Train `model` in place; returns the wall seconds since `started` at the end."""
    n_train = len(train_labels)
    rng = random.Random(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    steps_per_epoch = math.ceil(n_train / args.batch_size)
    total = steps_per_epoch * args.epochs
    warmup = max(1, total // 20)
    decay = [p for n, p in model.named_parameters() if "logit_scale" not in n]
    no_decay = [p for n, p in model.named_parameters() if "logit_scale" in n]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
    )
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total))),
    )
    anchors = class_anchors(model.config.projection_dim, args.seed)
    model.train()
    step = 0
    for epoch in range(args.epochs):
        if recipe.start_epoch is not None:
            recipe.start_epoch(epoch)
        order = torch.randperm(n_train, generator=gen)
        epoch_loss = 0.0
        for start in range(0, len(order), args.batch_size):
            idx = order[start : start + args.batch_size]
            lab = train_labels[idx]
            captions = [recipe.caption(rng, int(d)) for d in lab]
            enc = tokenizer(captions, padding=True, return_tensors="pt")
            media = F.normalize(recipe.media_features(idx, gen), dim=-1)
            txt = F.normalize(model.get_text_features(**enc).pooler_output, dim=-1)
            scale = recipe.logit_scale.exp().clamp(max=100.0)
            loss = soft_clip_loss(media, txt, lab, scale)
            weight = anchor_weight(step, total, args.anchor_fraction)
            if weight > 0:
                loss = loss + weight * (
                    anchor_loss(media, lab, anchors) + anchor_loss(txt, lab, anchors)
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            epoch_loss += loss.item()
        logger.info(
            "epoch %d/%d loss %.4f scale %.1f elapsed %.0fs",
            epoch + 1,
            args.epochs,
            epoch_loss / steps_per_epoch,
            float(scale),
            time.time() - started,
        )
        if (epoch + 1) % recipe.eval_every == 0 and epoch + 1 < args.epochs:
            logger.info(recipe.eval_message, recipe.evaluate())
    return time.time() - started


@torch.no_grad()
def zero_shot(
    model: Any,
    tokenizer: Any,
    templates: Sequence[str],
    media_features: Callable[[slice], torch.Tensor],
    n: int,
    batch: int,
    labels: np.ndarray,
) -> float:
    """Text->media zero-shot accuracy over `n` items: each gets the digit whose prompt
    ensemble (the mean of its normalised template embeddings) is nearest.

    media_features(rows): the media tower's unnormalised features of items `rows` (B, D),
    called for `batch` items at a time. The model is left in training mode.
    """
    model.eval()
    class_emb = []
    for prompts in common.class_prompts(templates):
        enc = tokenizer(prompts, padding=True, return_tensors="pt")
        t = model.get_text_features(**enc).pooler_output
        class_emb.append(F.normalize(F.normalize(t, dim=-1).mean(0), dim=-1))
    classes = torch.stack(class_emb)  # (10, D)
    preds = []
    for start in range(0, n, batch):
        media = media_features(slice(start, start + batch))
        preds.append((F.normalize(media, dim=-1) @ classes.T).argmax(1))
    model.train()
    return float((torch.cat(preds).numpy() == labels).mean())


def save_run(
    model: Any,
    processor: Any,
    args: argparse.Namespace,
    argv: list[str] | None,
    script: str,
    data: dict[str, Any],
    accuracy: float,
    train_seconds: float,
) -> None:
    """Save the model + processor and training_report.json.

    `data` holds the script's own report fields (train/eval data), placed between the
    hyper-parameters and the measured numbers.
    """
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(args.out))
    processor.save_pretrained(str(args.out))
    report = {
        "model": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(processor.tokenizer),
        "seed": args.seed,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "anchor_fraction": args.anchor_fraction,
        **data,
        "zero_shot_accuracy": accuracy,
        "train_wall_seconds": round(train_seconds, 1),
        "threads": args.threads,
        "command": f"scripts/demo/{script} " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    (args.out / "training_report.json").write_text(json.dumps(report, indent=2) + "\n")
    logger.info("saved to %s (%d bytes)", args.out, common.dir_size_bytes(args.out))
