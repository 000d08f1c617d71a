"""Train the demo bridge (models/demo-bridge) with `mbridge train`, as a user would.

1. Write the caption corpus (scripts/demo/captions.py); it is copied to <out>/captions.txt.
2. Encode it with both demo text towers; image memory = demo-CLIP embeddings of MNIST
   0-4999; audio memory = demo-CLAP embeddings of FSDD takes 5-49 (through
   bridge.encode.encoders, cached like the digits benchmark). No audio-image pair is used.
3. `mbridge train` on those .npy files with the digits benchmark's full-method settings.
4. Evaluate the checkpoint on the benchmark's main split (FSDD takes 0-4 vs MNIST
   5000-9999), add the numbers to report.json under "digits_eval".

Usage:
    .venv/bin/python scripts/demo/make_demo_bridge.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import captions as caption_corpus  # noqa: E402

from bridge.arrays import atomic_save_npy  # noqa: E402
from bridge.bench import digits  # noqa: E402
from bridge.cli import main as mbridge  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--clip", type=Path, default=Path("models/demo-clip"))
    parser.add_argument("--clap", type=Path, default=Path("models/demo-clap"))
    parser.add_argument("--out", type=Path, default=Path("models/demo-bridge"))
    parser.add_argument("--work-dir", type=Path, default=Path("bench-out/demo-bridge-inputs"))
    parser.add_argument("--cache-dir", type=Path, default=Path("bench-out/digits-cache"))
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--hidden-dim", type=int, default=512)
    parser.add_argument("--shared-dim", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    import torch

    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    # mbridge train replaces the whole checkpoint folder, so the corpus is copied in afterwards.
    captions_path = args.work_dir / "captions.txt"
    caption_corpus.main(["--out", str(captions_path)])
    world = digits.load_world(args.data_dir, args.clip, args.clap, captions_path, args.cache_dir)
    main_split = world.splits[0]
    inputs = {
        "clip_text": world.clip_text,
        "clap_text": world.clap_text,
        "image_memory": main_split.image_memory,
        "audio_memory": main_split.audio_memory,
    }
    for name, array in inputs.items():
        atomic_save_npy(args.work_dir / f"{name}.npy", array)
    embed_seconds = time.perf_counter() - started

    config = digits.bridge_config(args.epochs, args.batch_size)
    command = [
        "train",
        "--clip-text", str(args.work_dir / "clip_text.npy"),
        "--clap-text", str(args.work_dir / "clap_text.npy"),
        "--image-memory", str(args.work_dir / "image_memory.npy"),
        "--audio-memory", str(args.work_dir / "audio_memory.npy"),
        "--out", str(args.out),
        "--epochs", str(config.epochs),
        "--batch-size", str(config.batch_size),
        "--lr", str(config.lr),
        "--weight-decay", str(config.weight_decay),
        "--temperature", str(config.temperature),
        "--memory-temperature", str(config.memory_temperature),
        "--noise-variance", str(config.noise_variance),
        "--intra-weight", str(config.intra_weight),
        "--loss", config.loss,
        "--hidden-dim", str(args.hidden_dim),
        "--shared-dim", str(args.shared_dim),
        "--seed", str(args.seed),
        "--device", "cpu",
        "--precision", "fp32",  # as the committed weights were made; bf16 scores the same
        "--clip-model", str(args.clip),
        "--clap-model", str(args.clap),
        "--quiet",
    ]  # fmt: skip
    print("mbridge " + " ".join(command))
    train_started = time.perf_counter()
    code = mbridge(command)
    if code != 0:
        return code
    train_seconds = time.perf_counter() - train_started
    shutil.copyfile(captions_path, args.out / "captions.txt")

    from bridge.model.projectors import load_checkpoint

    checkpoint = load_checkpoint(args.out)
    metrics = digits._both_directions(
        checkpoint.project("clap", main_split.audio),
        checkpoint.project("clip", main_split.image),
        main_split.audio_labels,
        main_split.image_labels,
    )
    report_path = args.out / "report.json"
    report = json.loads(report_path.read_text())
    report["digits_eval"] = {
        "split": main_split.description,
        **metrics,
        "zero_shot": world.zero_shot,
        "mbridge_command": "mbridge " + " ".join(command),
        "embed_seconds": round(embed_seconds, 1),
        "train_seconds": round(train_seconds, 1),
    }
    report_path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    print(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
