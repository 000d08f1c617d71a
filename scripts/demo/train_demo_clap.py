"""Train the demo CLAP: a small transformers ClapModel on FSDD training takes 5-49.

Audio is resampled 8 kHz -> 48 kHz with soxr and turned into log-mel features by the
model's own ClapFeatureExtractor (48 kHz, 32 mel bins up to 4 kHz, 1 s windows). Captions
come only from common.CLAP_TEMPLATES (speech phrasings), never from the CLIP side. Loss:
CLAP's symmetric contrastive loss with every same-digit caption in the batch counted as a
positive (soft targets over same-label pairs).

FSDD has six speakers, so by default the clips are augmented (scripts/demo/audio_augment.py)
to make the tower hear new voices and rooms: `--copies` augmented copies of every clip are
made once (speed perturbation, random EQ, synthetic-RIR reverberation, coloured noise at
5-40 dB SNR, gain, leading silence and crops), epoch e trains on copy e mod copies, and every
batch gets a mel-axis (VTLP) warp, a time stretch and SpecAugment on top. By default 100
clips of each digit word from eSpeak NG in random voices (synthetic_voices.py; needs the
Debian package espeak-ng) join the training set, as more vocal tracts. `--no-augment`
trains on the clean clips with SpecAugment only (with `--epochs 25 --lr 1e-3
--synthetic-voices 0`, as the first demo CLAP was).

Usage:
    .venv/bin/python \
        scripts/demo/train_demo_clap.py --data-dir ../shared/data --out models/demo-clap

Writes a Hugging Face folder (ClapModel + ClapProcessor) loadable offline with
ClapModel.from_pretrained / ClapProcessor.from_pretrained, plus training_report.json.
"""

from __future__ import annotations

import os

# numpy's BLAS (the feature extractor's mel projection) on one thread, set before numpy
# loads: with one thread per core it spun against the torch thread and made augmenting and
# featurising 6x slower on a shared 2-core machine.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import dataclasses
import logging
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import soxr
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import audio_augment  # noqa: E402
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


def build_model(tokenizer: Any, audio_width: int = 32) -> torch.nn.Module:
    """The demo ClapModel; `audio_width` is HTSAT's patch-embedding width (its second stage
    is twice as wide)."""
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
        patch_embeds_hidden_size=audio_width,
        hidden_size=2 * audio_width,
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


def augmented_views(
    waves: list[np.ndarray],
    rate: int,
    model_rate: int,
    processor: object,
    augment: audio_augment.WaveAugment,
    seed: int,
    copy: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of augmented copy number `copy` of every clip (its own seeded generator,
    so a copy is the same whichever epoch first asks for it)."""
    import soxr

    rng = np.random.default_rng([seed, copy])
    out = []
    for wave in waves:
        aug = augment(wave, rate, rng)
        out.append(np.asarray(soxr.resample(aug, rate, model_rate), dtype=np.float32))
    return featurize(processor, out)


def load_native(clips: list[common.Clip]) -> tuple[list[np.ndarray], int]:
    """The clips' waveforms at their own (common) sample rate."""
    waves, rates = zip(*(common.read_wav(c.path) for c in clips), strict=True)
    if len(set(rates)) != 1:
        raise ValueError(f"FSDD clips with mixed sample rates {sorted(set(rates))}")
    return list(waves), rates[0]


def main(argv: list[str] | None = None) -> int:
    parser = training.training_parser(__doc__, out="models/demo-clap", epochs=40, batch_size=128)
    parser.set_defaults(lr=2e-3)  # augmented clips train slower; 1e-3 underfit in 40 epochs
    parser.add_argument(
        "--exclude-speakers",
        nargs="*",
        default=[],
        help="train without these FSDD speakers (for the speaker-held-out benchmark)",
    )
    parser.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="waveform augmentation (audio_augment.WaveAugment: speed, EQ, reverb, noise, "
        "gain, shift/crop) and mel-domain warps; --no-augment trains on the clean clips",
    )
    parser.add_argument(
        "--copies",
        type=int,
        default=10,
        help="distinct augmented copies of each clip; epoch e trains on copy e mod copies",
    )
    parser.add_argument(
        "--freq-warp", type=float, default=0.08, help="mel-axis warp range (VTLP), 0: off"
    )
    parser.add_argument(
        "--time-stretch", type=float, default=0.1, help="feature time-stretch range, 0: off"
    )
    parser.add_argument(
        "--speed",
        type=float,
        nargs=2,
        default=[0.87, 1.15],
        metavar=("MIN", "MAX"),
        help="speed-perturbation factor range (log-uniform)",
    )
    parser.add_argument(
        "--p-clean", type=float, default=0.25, help="share of augmented copies left clean"
    )
    parser.add_argument(
        "--gain-db",
        type=float,
        nargs=2,
        default=[-30.0, 6.0],
        metavar=("MIN", "MAX"),
        help="gain range of the augmented copies, dB (FSDD's quietest speakers are ~20 dB "
        "below its loudest)",
    )
    parser.add_argument(
        "--synthetic-voices",
        type=int,
        default=100,
        metavar="N",
        help="add N eSpeak NG clips of each digit word in random voices "
        "(synthetic_voices.py; needs the espeak-ng binary; 0: FSDD only)",
    )
    parser.add_argument(
        "--audio-width", type=int, default=32, help="HTSAT patch-embedding width (stage 1)"
    )
    args = parser.parse_args(argv)
    started = training.start_run(args)

    processor, tok, model = training.build_towers(
        args.out, build_processor, lambda tokenizer: build_model(tokenizer, args.audio_width)
    )

    model_rate = processor.feature_extractor.sampling_rate  # type: ignore[attr-defined]
    unknown = set(args.exclude_speakers) - set(common.FSDD_SPEAKERS)
    if unknown:
        parser.error(f"unknown speakers {sorted(unknown)}; known: {common.FSDD_SPEAKERS}")
    if args.copies < 1:
        parser.error("--copies must be >= 1")
    speakers = [s for s in common.FSDD_SPEAKERS if s not in args.exclude_speakers]
    train_clips = common.list_fsdd(args.data_dir, common.FSDD_TRAIN_TAKES, speakers)
    test_clips = common.list_fsdd(args.data_dir, common.FSDD_TEST_TAKES)
    t0 = time.time()
    train_waves, rate = load_native(train_clips)
    train_digits = [c.digit for c in train_clips]
    if args.synthetic_voices:
        import synthetic_voices

        waves, digits, _ = synthetic_voices.synthesize(
            common.DIGIT_WORDS, args.synthetic_voices, args.seed, rate
        )
        train_waves += waves
        train_digits += digits
        logger.info("%d synthetic clips in %.1fs", len(waves), time.time() - t0)
    clean_x, clean_long = featurize(
        processor, [soxr.resample(w, rate, model_rate).astype(np.float32) for w in train_waves]
    )
    test_x, test_long = featurize(processor, common.load_clips(test_clips, model_rate))
    logger.info("features %s in %.1fs", tuple(clean_x.shape), time.time() - t0)
    train_lab = torch.tensor(train_digits)
    test_lab = np.array([c.digit for c in test_clips])
    test_spk = np.array([c.speaker for c in test_clips])

    augment = audio_augment.WaveAugment(
        p_clean=args.p_clean, speed=tuple(args.speed), gain_db=tuple(args.gain_db)
    )
    views: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    current = [clean_x, clean_long]

    def start_epoch(epoch: int) -> None:
        if not args.augment:
            return
        copy = epoch % args.copies
        if copy not in views:
            t = time.time()
            views[copy] = augmented_views(
                train_waves, rate, model_rate, processor, augment, args.seed, copy
            )
            logger.info("augmented copy %d in %.1fs", copy, time.time() - t)
        current[0], current[1] = views[copy]

    def audio_features(idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        feats = current[0][idx]
        if args.augment:
            feats = audio_augment.warp_features(feats, gen, args.freq_warp, args.time_stretch)
        feats = spec_augment(feats, gen)
        return model.get_audio_features(
            input_features=feats, is_longer=current[1][idx]
        ).pooler_output

    def evaluate(rows: np.ndarray) -> float:
        return zero_shot(model, processor, test_x[rows], test_long[rows], test_lab[rows])

    everyone = np.arange(len(test_clips))
    excluded = np.flatnonzero(np.isin(test_spk, args.exclude_speakers))
    recipe = training.Recipe(
        media_features=audio_features,
        caption=lambda rng, d: capitalize_some(
            rng, common.sample_caption(rng, common.CLAP_TEMPLATES, d)
        ),
        logit_scale=model.logit_scale_a,
        eval_every=5,
        eval_message="zero-shot on test takes (all speakers, excluded speakers): %s",
        evaluate=lambda: (
            f"{evaluate(everyone):.4f}, {evaluate(excluded):.4f}"
            if len(excluded)
            else f"{evaluate(everyone):.4f}"
        ),
        start_epoch=start_epoch,
    )
    train_seconds = training.train_contrastive(model, tok, train_lab, recipe, args, started)
    acc = evaluate(everyone)
    by_speaker = {
        s: round(evaluate(np.flatnonzero(test_spk == s)), 4) for s in common.FSDD_SPEAKERS
    }
    logger.info("zero-shot text->audio accuracy on FSDD test takes 0-4: %.4f", acc)
    logger.info("by speaker: %s", by_speaker)
    data: dict[str, Any] = {
        "train_data": f"FSDD takes 5-49 of {', '.join(speakers)} ({len(train_clips)} clips)"
        + (
            f" and {args.synthetic_voices * 10} eSpeak NG clips ({args.synthetic_voices} per "
            "digit word, each in a random voice)"
            if args.synthetic_voices
            else ""
        ),
        "excluded_speakers": list(args.exclude_speakers),
        "eval_data": "FSDD takes 0-4 (300 clips)",
        "augment": (
            {
                "wave": dataclasses.asdict(augment),
                "copies": args.copies,
                "freq_warp": args.freq_warp,
                "time_stretch": args.time_stretch,
            }
            if args.augment
            else None
        ),
        "zero_shot_by_speaker": by_speaker,
    }
    if len(excluded):
        data["zero_shot_excluded_speakers"] = round(evaluate(excluded), 4)
    training.save_run(model, processor, args, argv, "train_demo_clap.py", data, acc, train_seconds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
