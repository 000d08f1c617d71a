"""Write the model cards (README.md) of models/demo-clip, demo-clap and demo-bridge from the
reports their training scripts wrote, so every number on a card comes from a recorded run.

Usage:
    .venv/bin/python scripts/demo/cards.py [--clap-heldout bench-out/demo-clap-heldout]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

DATA_NOTE = {
    "clip": (
        "MNIST test set images 0-4999 (training) and 5000-9999 (evaluation only). Source: the "
        "MNIST database (Yann LeCun, Corinna Cortes, Christopher J.C. Burges), copy from "
        "github.com/kelas/mnist. License: commonly distributed under CC BY-SA 3.0."
    ),
    "clap": (
        "Free Spoken Digit Dataset (github.com/Jakobovski/free-spoken-digit-dataset, commit "
        "26eb9aa): takes 5-49 for training, takes 0-4 (the official test set) for evaluation "
        "only. 8 kHz recordings resampled to 48 kHz with soxr. License: CC BY-SA 4.0."
    ),
}


def _size(path: Path) -> str:
    total = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return f"{total / 1e6:.1f} MB"


def encoder_card(kind: str, folder: Path) -> str:
    report = json.loads((folder / "training_report.json").read_text())
    config = json.loads((folder / "config.json").read_text())
    title = "demo-clip: a small CLIP for handwritten digits"
    if kind == "clap":
        title = "demo-clap: a small CLAP for spoken digits"
    cls, proc = ("CLIPModel", "CLIPProcessor") if kind == "clip" else ("ClapModel", "ClapProcessor")
    lines = [
        f"# {title}",
        "",
        f"A Hugging Face `{cls}` + `{proc}` trained from scratch on CPU, so that this project",
        "can run and be measured offline with the same loading code as real CLIP/CLAP",
        "checkpoints. It is a demo model: it knows ten digits and little else.",
        "",
        "```python",
        f"from transformers import {cls}, {proc}",
        f'model = {cls}.from_pretrained("models/demo-{kind}")',
        f'processor = {proc}.from_pretrained("models/demo-{kind}")',
        "# or, in this project:",
        "from bridge.encode.encoders import load_encoder",
        f'encoder = load_encoder("{kind}", "models/demo-{kind}")',
        "```",
        "",
        "## Data and license",
        DATA_NOTE[kind],
        f"Training data: {report['train_data']}. Evaluation data: {report['eval_data']}.",
        "The two demo towers never saw each other's data or caption templates, and no",
        "audio-image pair was used anywhere.",
        "",
        "## Training",
        f"- Command: `HF_HUB_OFFLINE=1 .venv/bin/python {report['command']}`",
        f"- Seed {report['seed']}, {report['epochs']} epochs, batch {report['batch_size']}, "
        f"AdamW lr {report['lr']} (cosine, 5% warmup), {report['threads']} torch thread(s).",
        f"- Wall time: {report['train_wall_seconds']:.0f} s on a shared 2-core CPU "
        "(other jobs were running).",
        "- Loss: symmetric contrastive loss (CLIP/CLAP style) in which every caption of the same",
        "  digit in the batch counts as a positive. Captions come from the tower's own templates",
        "  (see `scripts/demo/common.py`) with random generic filler words.",
        "- Plus an anchor warm-up term (cross-entropy of both towers' embeddings against ten",
        "  fixed random orthonormal class vectors) whose weight decays linearly from 1 to 0",
        f"  over {report.get('anchor_fraction', 1.0):.0%} of the steps: without it the two",
        "  randomly initialised towers collapse to a single point and the contrastive loss",
        "  stays at log(batch) (measured; see `anchor_loss` in train_demo_clip.py).",
        *(
            [
                "- Linear and conv layers are re-initialised with std 1/sqrt(fan_in): ClapModel's",
                "  own init uses ClapConfig's 768-wide defaults and leaves a 64-wide text tower",
                "  unable to mix tokens into its pooled first token.",
            ]
            if kind == "clap"
            else []
        ),
        *(augment_lines(report["augment"]) if report.get("augment") else []),
        *(
            [
                "- Synthetic voices: eSpeak NG clips of the digit words (`synthetic_voices.py`,",
                "  Debian 12 package espeak-ng 1.51, GPL-3.0-or-later; its license does not cover",
                "  the audio it produces), each in a random English accent, voice variant, pitch",
                "  and speed, trimmed and resampled to 8 kHz, then augmented like the FSDD clips.",
            ]
            if "eSpeak" in report["train_data"]
            else []
        ),
        "",
        "## Metrics",
        f"- Zero-shot text->{'image' if kind == 'clip' else 'audio'} accuracy: "
        f"**{report['zero_shot_accuracy']:.3f}** on {report['eval_data']} "
        "(nearest class prompt ensemble built from the training templates).",
        *(speaker_lines(report, folder) if kind == "clap" else []),
        "- The digits benchmark (`mbridge bench digits`) also reports zero-shot accuracy with a",
        "  neutral prompt set; see docs/benchmarks.md.",
        "",
        "## Architecture",
        f"- {report['parameters']:,} parameters, {_size(folder)} on disk; "
        f"projection dim {config['projection_dim']}.",
    ]
    if kind == "clip":
        v, t = config["vision_config"], config["text_config"]
        lines += [
            f"- Vision: ViT, {v['num_hidden_layers']} layers, hidden {v['hidden_size']}, "
            f"{v['num_attention_heads']} heads, {v['image_size']}x{v['image_size']} input "
            f"(grayscale as RGB), patch {v['patch_size']}.",
            f"- Text: {t['num_hidden_layers']} layers, hidden {t['hidden_size']}, "
            f"max {t['max_position_embeddings']} tokens; `CLIPTokenizer` with a byte-level "
            f"vocabulary plus one token per caption word ({report['vocab_size']} tokens).",
        ]
    else:
        a, t = config["audio_config"], config["text_config"]
        fe = json.loads((folder / "processor_config.json").read_text()).get("feature_extractor", {})
        lines += [
            f"- Audio: unfused HTSAT, depths {a['depths']}, heads {a['num_attention_heads']}, "
            f"patch {a['patch_size']}, window {a['window_size']}, spec size {a['spec_size']}, "
            f"{a['num_mel_bins']} mel bins.",
            f"- Features: `ClapFeatureExtractor` at {fe.get('sampling_rate', 48000)} Hz, "
            f"{fe.get('feature_size')} mel bins up to {fe.get('frequency_max')} Hz, "
            f"{fe.get('max_length_s')} s window, repeat-pad.",
            f"- Text: RoBERTa-style, {t['num_hidden_layers']} layers, hidden {t['hidden_size']}; "
            f"`RobertaTokenizer` with a byte-level vocabulary plus caption words "
            f"({report['vocab_size']} tokens).",
        ]
    return "\n".join(lines) + "\n"


def augment_lines(augment: dict[str, Any]) -> list[str]:
    """The card's account of the demo CLAP's augmentation (scripts/demo/audio_augment.py)."""
    w = augment["wave"]
    return [
        "- Augmentation (`scripts/demo/audio_augment.py`), so that the tower hears more voices",
        f"  and rooms than FSDD's six: {augment['copies']} augmented copies of every clip,",
        "  made once at 8 kHz before resampling, epoch e trains on copy e mod "
        f"{augment['copies']}; each copy is",
        f"  the clean clip with probability {w['p_clean']}, else: speed perturbation by "
        f"resampling (factor {w['speed'][0]}-{w['speed'][1]},",
        "  log-uniform: tempo, pitch and formants together), a smooth random EQ "
        f"(+-{w['eq_db']} dB, p {w['p_eq']}),",
        "  reverberation with a synthetic exponentially decaying impulse response (RT60 "
        f"{w['rt60'][0]}-{w['rt60'][1]} s,",
        f"  direct-to-reverberant ratio {w['drr_db'][0]} to {w['drr_db'][1]} dB, p "
        f"{w['p_reverb']}), a crop keeping >= {w['min_keep']:.0%} and up to",
        f"  {w['max_pad_s']} s of leading silence (p {w['p_shift']}), white, pink or brown noise "
        f"at SNR {w['snr_db'][0]:g}-{w['snr_db'][1]:g} dB",
        f"  (p {w['p_noise']}) and a gain of {w['gain_db'][0]:g} to {w['gain_db'][1]:g} dB. "
        "Per batch on the log-mel features: a",
        f"  mel-axis warp by up to {augment['freq_warp']:.0%} (VTLP: formants without tempo), "
        f"a time stretch by up to {augment['time_stretch']:.0%},",
        "  then a circular time shift, one time and one frequency mask and a +-5 dB offset.",
        "  No external audio (noise or impulse responses) is used.",
    ]


def speaker_lines(report: dict[str, Any], folder: Path) -> list[str]:
    """Per-speaker zero-shot of this tower and, if its training report was copied beside it,
    of the same recipe trained without the benchmark's held-out speakers."""
    lines = []
    if "zero_shot_by_speaker" in report:
        lines.append(
            "- By speaker (test takes 0-4, 50 clips each): "
            + ", ".join(f"{s} {v:.2f}" for s, v in report["zero_shot_by_speaker"].items())
            + "."
        )
    heldout_path = folder / "heldout_training_report.json"
    if heldout_path.is_file():
        held = json.loads(heldout_path.read_text())
        names = " and ".join(held["excluded_speakers"])
        lines += [
            f"- Unseen voices: the same recipe trained without {names} (`{held['command']}`,",
            f"  {held['train_wall_seconds']:.0f} s; its report is "
            "`heldout_training_report.json`) gets",
            f"  **{held['zero_shot_excluded_speakers']:.3f}** zero-shot on {names}'s test "
            f"takes, which it never heard ({held['zero_shot_accuracy']:.3f} on all six "
            "speakers).",
        ]
    return lines


def bridge_card(folder: Path) -> str:
    report = json.loads((folder / "report.json").read_text())
    config = json.loads((folder / "config.json").read_text())
    ev: dict[str, Any] = report["digits_eval"]
    proj, train = config["projector"], config["train"]
    data = report["data"]
    lines = [
        "# demo-bridge: C-MCR projectors connecting demo-clip and demo-clap",
        "",
        "Two projectors (one per space) trained with `mbridge train` on caption pairs only:",
        f"{data['caption_pairs']} captions (`captions.txt`, written by `scripts/demo/captions.py`:",
        "digit phrasings that are not copies of either tower's templates, plus unrelated",
        "sentences) encoded by both text towers; image memory = demo-CLIP embeddings of MNIST",
        f"0-4999 ({data['image_memory']}), audio memory = demo-CLAP embeddings of FSDD takes 5-49",
        f"({data['audio_memory']}). No audio-image pair was used.",
        "",
        "## Command",
        "```",
        "HF_HUB_OFFLINE=1 .venv/bin/python scripts/demo/make_demo_bridge.py \\",
        "    --data-dir ../shared/data",
        "# which runs:",
        ev["mbridge_command"],
        "```",
        f"Seed {train['seed']}; training {ev['train_seconds']:.0f} s, embedding "
        f"{ev['embed_seconds']:.0f} s (cached after the first run) on a shared 2-core CPU.",
        "",
        "## Metrics (class level)",
        f"Split: {ev['split']}.",
        "",
        "| direction | P@1 | mAP | R@5 | R@10 |",
        "|---|---|---|---|---|",
    ]
    for direction in ("audio_to_image", "image_to_audio"):
        m = ev[direction]
        lines.append(
            f"| {direction.replace('_', ' ')} | {m['p_at_1']:.3f} | {m['map']:.3f} | "
            f"{m['r_at_5']:.3f} | {m['r_at_10']:.3f} |"
        )
    lines += [
        "",
        "Chance P@1 is about 0.10. Tower zero-shot accuracy in their own spaces: "
        + ", ".join(f"{k} {v:.3f}" for k, v in ev["zero_shot"].items())
        + ". Full ablation grid: docs/benchmarks.md.",
        "",
        "## Architecture",
        f"- Per projector: Linear({proj['clip_dim']}, {proj['hidden_dim']}) -> BatchNorm -> ReLU "
        "-> "
        f"Linear({proj['hidden_dim']}, {proj['shared_dim']}) -> BatchNorm, then L2 (CLAP side "
        f"input {proj['clap_dim']}). Weights: {_size(folder)} folder.",
        f"- Loss {train['loss']}, temperature {train['temperature']}, memory temperature "
        f"{train['memory_temperature']}, noise variance {train['noise_variance']}, intra weight "
        f"{train['intra_weight']}, {train['epochs']} epochs, batch {train['batch_size']}, "
        f"lr {train['lr']}.",
        "",
        "## Data licenses",
        "MNIST (CC BY-SA 3.0 as commonly distributed) and FSDD (CC BY-SA 4.0); see",
        "models/samples/ATTRIBUTION.md.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument(
        "--clap-heldout",
        type=Path,
        default=None,
        help="a demo CLAP trained without the benchmark's held-out speakers "
        "(train_demo_clap.py --exclude-speakers ...): its training_report.json is copied to "
        "demo-clap/heldout_training_report.json and cited on the card",
    )
    args = parser.parse_args(argv)
    if args.clap_heldout is not None:
        shutil.copyfile(
            args.clap_heldout / "training_report.json",
            args.models / "demo-clap" / "heldout_training_report.json",
        )
    for kind in ("clip", "clap"):
        folder = args.models / f"demo-{kind}"
        if (folder / "training_report.json").is_file():
            (folder / "README.md").write_text(encoder_card(kind, folder))
            print(f"wrote {folder / 'README.md'}")
    folder = args.models / "demo-bridge"
    if (folder / "report.json").is_file():
        (folder / "README.md").write_text(bridge_card(folder))
        print(f"wrote {folder / 'README.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
