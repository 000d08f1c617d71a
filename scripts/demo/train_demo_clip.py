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

import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import training  # noqa: E402
from training import anchor_loss, anchor_weight, class_anchors, soft_clip_loss  # noqa: E402,F401  (re-exported)

logger = logging.getLogger("train_demo_clip")


def build_processor(out_dir: Path) -> object:
    from transformers import CLIPImageProcessor, CLIPProcessor, CLIPTokenizer

    words = common.template_words(common.CLIP_TEMPLATES)
    tokenizer = common.word_tokenizer(CLIPTokenizer, common.write_clip_vocab, words, out_dir)
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
    return CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


def build_model(tokenizer: Any) -> torch.nn.Module:
    from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig

    text = CLIPTextConfig(**training.text_tower(tokenizer), max_position_embeddings=32)
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


def zero_shot(
    model: torch.nn.Module, processor: object, pixels: torch.Tensor, labels: np.ndarray
) -> float:
    """Text->image zero-shot accuracy: each image gets the class of the nearest prompt ensemble."""
    return training.zero_shot(
        model,
        processor.tokenizer,  # type: ignore[attr-defined]
        common.CLIP_TEMPLATES,
        lambda rows: model.get_image_features(pixel_values=pixels[rows]).pooler_output,
        len(pixels),
        500,
        labels,
    )


def main(argv: list[str] | None = None) -> int:
    parser = training.training_parser(__doc__, out="models/demo-clip", epochs=40, batch_size=256)
    args = parser.parse_args(argv)
    started = training.start_run(args)

    processor, tok, model = training.build_towers(args.out, build_processor, build_model)

    images, labels = common.load_mnist(args.data_dir)
    train_idx = np.array(common.MNIST_TRAIN)
    eval_idx = np.array(common.MNIST_EVAL)
    t0 = time.time()
    pix = processor.image_processor(common.mnist_pil(images), return_tensors="pt")["pixel_values"]  # type: ignore[attr-defined]
    logger.info("preprocessed %d images in %.1fs", len(pix), time.time() - t0)
    train_pix, eval_pix = pix[train_idx], pix[eval_idx]
    train_lab = torch.from_numpy(labels[train_idx])

    def image_features(idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        pixels = shift_augment(train_pix[idx], gen)
        return model.get_image_features(pixel_values=pixels).pooler_output

    recipe = training.Recipe(
        media_features=image_features,
        caption=lambda rng, d: common.sample_caption(rng, common.CLIP_TEMPLATES, d),
        logit_scale=model.logit_scale,
        eval_every=10,
        eval_message="zero-shot on eval subset: %.4f",
        evaluate=lambda: zero_shot(model, processor, eval_pix[:1000], labels[eval_idx][:1000]),
    )
    train_seconds = training.train_contrastive(model, tok, train_lab, recipe, args, started)
    acc = zero_shot(model, processor, eval_pix, labels[eval_idx])
    logger.info("zero-shot text->image accuracy on MNIST 5000-9999: %.4f", acc)
    data = {
        "train_data": "MNIST test images 0-4999",
        "eval_data": "MNIST test images 5000-9999",
    }
    training.save_run(model, processor, args, argv, "train_demo_clip.py", data, acc, train_seconds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
