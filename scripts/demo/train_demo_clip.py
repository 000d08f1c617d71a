"""Train the demo CLIP: a small transformers CLIPModel on MNIST test images 0-4999.

Captions come only from common.CLIP_TEMPLATES (handwriting phrasings) with random generic
filler words. Loss: CLIP's symmetric contrastive loss, with every caption of the same digit
in the batch counted as a positive (soft targets spread over same-label pairs), since two
captions "a handwritten seven" in one batch both describe every seven in it.

Usage:
    .venv/bin/python \
        scripts/demo/train_demo_clip.py --data-dir ../shared/data --out models/demo-clip

Writes a Hugging Face folder (CLIPModel + CLIPProcessor) loadable offline with
CLIPModel.from_pretrained / CLIPProcessor.from_pretrained, plus training_report.json and a
model card README.md with the measured numbers.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

logger = logging.getLogger("train_demo_clip")


def build_processor(out_dir: Path) -> object:
    from transformers import CLIPImageProcessor, CLIPProcessor, CLIPTokenizer

    texts = [common.fill(t, d) for t in common.CLIP_TEMPLATES for d in range(10)]
    words = common.caption_words(texts + list(common.FILLER_WORDS))
    tok_dir = out_dir / "_tokenizer_src"
    common.write_clip_vocab(tok_dir, words)
    tokenizer = CLIPTokenizer.from_pretrained(str(tok_dir), model_max_length=32)
    image_processor = CLIPImageProcessor(
        do_resize=True,
        size={"shortest_edge": 28},
        do_center_crop=True,
        crop_size={"height": 28, "width": 28},
        do_rescale=True,
        do_normalize=True,
        image_mean=[0.1307, 0.1307, 0.1307],
        image_std=[0.3081, 0.3081, 0.3081],
        do_convert_rgb=True,
    )
    processor = CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)
    for f in tok_dir.iterdir():
        f.unlink()
    tok_dir.rmdir()
    return processor


def build_model(vocab_size: int, bos: int, eos: int, pad: int) -> torch.nn.Module:
    from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig

    text = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=32,
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=pad,
        projection_dim=64,
    )
    vision = CLIPVisionConfig(
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        image_size=28,
        patch_size=7,
        num_channels=3,
        projection_dim=64,
    )
    config = CLIPConfig(
        text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=64
    )
    return CLIPModel(config)


def shift_augment(pixels: torch.Tensor, gen: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Random translation by up to max_shift pixels, filling with the background value."""
    B, C, H, W = pixels.shape
    background = float(pixels.min())
    padded = F.pad(pixels, (max_shift,) * 4, value=background)  # (B, C, H+2s, W+2s)
    offs = torch.randint(0, 2 * max_shift + 1, (B, 2), generator=gen)
    out = torch.empty_like(pixels)
    for i in range(B):
        y, x = int(offs[i, 0]), int(offs[i, 1])
        out[i] = padded[i, :, y : y + H, x : x + W]
    return out


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


@torch.no_grad()
def zero_shot(
    model: torch.nn.Module, processor: object, pixels: torch.Tensor, labels: np.ndarray
) -> float:
    """Text->image zero-shot accuracy: each image gets the class of the nearest prompt ensemble."""
    model.eval()
    class_emb = []
    for prompts in common.class_prompts(common.CLIP_TEMPLATES):
        enc = processor.tokenizer(prompts, padding=True, return_tensors="pt")  # type: ignore[attr-defined]
        t = model.get_text_features(**enc).pooler_output
        class_emb.append(F.normalize(F.normalize(t, dim=-1).mean(0), dim=-1))
    classes = torch.stack(class_emb)  # (10, D)
    preds = []
    for start in range(0, len(pixels), 500):
        v = model.get_image_features(pixel_values=pixels[start : start + 500]).pooler_output
        preds.append((F.normalize(v, dim=-1) @ classes.T).argmax(1))
    model.train()
    return float((torch.cat(preds).numpy() == labels).mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("models/demo-clip"))
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--anchor-fraction",
        type=float,
        default=1.0,
        help="the anchor warm-up weight decays linearly from 1 to 0 over this fraction of steps",
    )
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    common.seed_everything(args.seed)
    started = time.time()

    processor = build_processor(args.out)
    tok = processor.tokenizer  # type: ignore[attr-defined]
    model = build_model(len(tok), tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("CLIPModel with %d parameters, vocab %d", n_params, len(tok))

    images, labels = common.load_mnist(args.data_dir)
    train_idx = np.array(common.MNIST_TRAIN)
    eval_idx = np.array(common.MNIST_EVAL)
    t0 = time.time()
    pix = processor.image_processor(common.mnist_pil(images), return_tensors="pt")["pixel_values"]  # type: ignore[attr-defined]
    logger.info("preprocessed %d images in %.1fs", len(pix), time.time() - t0)
    train_pix, eval_pix = pix[train_idx], pix[eval_idx]
    train_lab = torch.from_numpy(labels[train_idx])

    rng = random.Random(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    steps_per_epoch = math.ceil(len(train_idx) / args.batch_size)
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
        order = torch.randperm(len(train_idx), generator=gen)
        epoch_loss = 0.0
        for start in range(0, len(order), args.batch_size):
            idx = order[start : start + args.batch_size]
            lab = train_lab[idx]
            captions = [common.sample_caption(rng, common.CLIP_TEMPLATES, int(d)) for d in lab]
            enc = tok(captions, padding=True, return_tensors="pt")
            pixels = shift_augment(train_pix[idx], gen)
            img = F.normalize(model.get_image_features(pixel_values=pixels).pooler_output, dim=-1)
            txt = F.normalize(model.get_text_features(**enc).pooler_output, dim=-1)
            scale = model.logit_scale.exp().clamp(max=100.0)
            loss = soft_clip_loss(img, txt, lab, scale)
            weight = anchor_weight(step, total, args.anchor_fraction)
            if weight > 0:
                loss = loss + weight * (
                    anchor_loss(img, lab, anchors) + anchor_loss(txt, lab, anchors)
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
        if (epoch + 1) % 10 == 0 and epoch + 1 < args.epochs:
            logger.info(
                "zero-shot on eval subset: %.4f",
                zero_shot(model, processor, eval_pix[:1000], labels[eval_idx][:1000]),
            )

    train_seconds = time.time() - started
    acc = zero_shot(model, processor, eval_pix, labels[eval_idx])
    logger.info("zero-shot text->image accuracy on MNIST 5000-9999: %.4f", acc)
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(args.out))
    processor.save_pretrained(str(args.out))  # type: ignore[attr-defined]
    report = {
        "model": "CLIPModel",
        "parameters": n_params,
        "vocab_size": len(tok),
        "seed": args.seed,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "anchor_fraction": args.anchor_fraction,
        "train_data": "MNIST test images 0-4999",
        "eval_data": "MNIST test images 5000-9999",
        "zero_shot_accuracy": acc,
        "train_wall_seconds": round(train_seconds, 1),
        "threads": args.threads,
        "command": "scripts/demo/train_demo_clip.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    (args.out / "training_report.json").write_text(json.dumps(report, indent=2) + "\n")
    logger.info("saved to %s (%d bytes)", args.out, common.dir_size_bytes(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
