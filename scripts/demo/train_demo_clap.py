"""Train the demo CLAP: a small transformers ClapModel on FSDD training takes 5-49.

Audio is resampled 8 kHz -> 48 kHz with soxr and turned into log-mel features by the
model's own ClapFeatureExtractor (48 kHz, 32 mel bins up to 4 kHz, 2 s windows). Captions
come only from common.CLAP_TEMPLATES (speech phrasings), never from the CLIP side. Loss:
CLAP's symmetric contrastive loss with every same-digit caption in the batch counted as a
positive (soft targets over same-label pairs).

Usage:
    .venv/bin/python \
        scripts/demo/train_demo_clap.py --data-dir ../shared/data --out models/demo-clap

Writes a Hugging Face folder (ClapModel + ClapProcessor) loadable offline with
ClapModel.from_pretrained / ClapProcessor.from_pretrained, plus training_report.json.
"""

from __future__ import annotations

import logging
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import training  # noqa: E402

logger = logging.getLogger("train_demo_clap")

MAX_LENGTH_S = 1  # covers 2,980 of the 3,000 FSDD clips (median 0.42 s, longest 2.28 s)


def capitalize_some(rng: random.Random, text: str, p: float = 0.3) -> str:
    return text[:1].upper() + text[1:] if rng.random() < p else text


def build_processor(out_dir: Path) -> object:
    from transformers import ClapFeatureExtractor, ClapProcessor, RobertaTokenizer

    words = common.template_words(common.CLAP_TEMPLATES)
    words = sorted(set(words) | {w.capitalize() for w in words})
    tokenizer = common.word_tokenizer(RobertaTokenizer, common.write_roberta_vocab, words, out_dir)
    extractor = ClapFeatureExtractor(
        feature_size=32,
        sampling_rate=48000,
        hop_length=480,
        max_length_s=MAX_LENGTH_S,
        fft_window_size=1024,
        frequency_min=0,
        frequency_max=4000,
        truncation="rand_trunc",
        padding="repeatpad",
    )
    return ClapProcessor(feature_extractor=extractor, tokenizer=tokenizer)


def build_model(tokenizer: Any) -> torch.nn.Module:
    from transformers import ClapAudioConfig, ClapConfig, ClapModel, ClapTextConfig

    text = ClapTextConfig(
        **training.text_tower(tokenizer), max_position_embeddings=40, type_vocab_size=1
    )
    audio = ClapAudioConfig(
        window_size=8,
        num_mel_bins=32,
        spec_size=128,
        patch_size=8,
        patch_stride=[8, 8],
        depths=[2, 2],
        num_attention_heads=[2, 4],
        patch_embeds_hidden_size=32,
        hidden_size=64,
        projection_dim=64,
        enable_fusion=False,
        num_classes=10,
    )
    config = ClapConfig(text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=64)
    model = ClapModel(config)
    reinit_linears(model)
    return model


def reinit_linears(model: torch.nn.Module) -> None:
    """Re-initialise every Linear/Conv2d with LeCun normal (std 1/sqrt(fan_in)), zero bias.

    ClapModel's top-level init uses ClapConfig's hidden_size (768) and num_hidden_layers (16)
    for every layer, i.e. std 0.0064 whatever the towers' real widths. At our 64-wide towers
    the first (<s>) token, which CLAP's text pooler reads, then hardly mixes with the other
    tokens (its state varies by <1% across captions), the text embeddings collapse and the
    contrastive loss stays at chance. Fan-in scaling gives the attention real signal at init.
    """
    for module in model.modules():
        if isinstance(module, torch.nn.Linear | torch.nn.Conv2d):
            fan_in = module.weight[0].numel()
            torch.nn.init.normal_(module.weight, std=fan_in**-0.5)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)


def featurize(processor: object, waves: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    out = processor.feature_extractor(waves, sampling_rate=48000, return_tensors="pt")  # type: ignore[attr-defined]
    return out["input_features"], out["is_longer"]


def spec_augment(feats: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """(B, 1, T, F) log-mel: random circular time shift, one time and one frequency mask,
    and a random gain offset in dB."""
    B, _, T, Fq = feats.shape
    out = feats.clone()
    shifts = torch.randint(0, T, (B,), generator=gen)
    t_len = torch.randint(0, 21, (B,), generator=gen)
    t_start = torch.randint(0, T, (B,), generator=gen)
    f_len = torch.randint(0, 5, (B,), generator=gen)
    f_start = torch.randint(0, Fq, (B,), generator=gen)
    gain = (torch.rand(B, generator=gen) - 0.5) * 10.0
    for i in range(B):
        x = torch.roll(out[i], int(shifts[i]), dims=1) + gain[i]
        floor = float(x.min())
        x[:, int(t_start[i]) : int(t_start[i] + t_len[i]), :] = floor
        x[:, :, int(f_start[i]) : int(f_start[i] + f_len[i])] = floor
        out[i] = x
    return out


def zero_shot(
    model: torch.nn.Module,
    processor: object,
    feats: torch.Tensor,
    longer: torch.Tensor,
    labels: np.ndarray,
) -> float:
    """Text->audio zero-shot accuracy with a prompt ensemble per digit."""
    return training.zero_shot(
        model,
        processor.tokenizer,  # type: ignore[attr-defined]
        common.CLAP_TEMPLATES,
        lambda rows: (
            model.get_audio_features(
                input_features=feats[rows], is_longer=longer[rows]
            ).pooler_output
        ),
        len(feats),
        100,
        labels,
    )


def main(argv: list[str] | None = None) -> int:
    parser = training.training_parser(__doc__, out="models/demo-clap", epochs=25, batch_size=128)
    parser.add_argument(
        "--exclude-speakers",
        nargs="*",
        default=[],
        help="train without these FSDD speakers (for the speaker-held-out benchmark)",
    )
    args = parser.parse_args(argv)
    started = training.start_run(args)

    processor, tok, model = training.build_towers(args.out, build_processor, build_model)

    rate = processor.feature_extractor.sampling_rate  # type: ignore[attr-defined]
    unknown = set(args.exclude_speakers) - set(common.FSDD_SPEAKERS)
    if unknown:
        parser.error(f"unknown speakers {sorted(unknown)}; known: {common.FSDD_SPEAKERS}")
    speakers = [s for s in common.FSDD_SPEAKERS if s not in args.exclude_speakers]
    train_clips = common.list_fsdd(args.data_dir, common.FSDD_TRAIN_TAKES, speakers)
    test_clips = common.list_fsdd(args.data_dir, common.FSDD_TEST_TAKES)
    t0 = time.time()
    train_x, train_long = featurize(processor, common.load_clips(train_clips, rate))
    test_x, test_long = featurize(processor, common.load_clips(test_clips, rate))
    logger.info("features %s in %.1fs", tuple(train_x.shape), time.time() - t0)
    train_lab = torch.tensor([c.digit for c in train_clips])
    test_lab = np.array([c.digit for c in test_clips])

    def audio_features(idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        feats = spec_augment(train_x[idx], gen)
        return model.get_audio_features(
            input_features=feats, is_longer=train_long[idx]
        ).pooler_output

    recipe = training.Recipe(
        media_features=audio_features,
        caption=lambda rng, d: capitalize_some(
            rng, common.sample_caption(rng, common.CLAP_TEMPLATES, d)
        ),
        logit_scale=model.logit_scale_a,
        eval_every=5,
        eval_message="zero-shot on test takes: %.4f",
        evaluate=lambda: zero_shot(model, processor, test_x, test_long, test_lab),
    )
    train_seconds = training.train_contrastive(model, tok, train_lab, recipe, args, started)
    acc = zero_shot(model, processor, test_x, test_long, test_lab)
    logger.info("zero-shot text->audio accuracy on FSDD test takes 0-4: %.4f", acc)
    data = {
        "train_data": f"FSDD takes 5-49 of {', '.join(speakers)} ({len(train_clips)} clips)",
        "excluded_speakers": list(args.exclude_speakers),
        "eval_data": "FSDD takes 0-4 (300 clips)",
    }
    training.save_run(model, processor, args, argv, "train_demo_clap.py", data, acc, train_seconds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
