"""Write the small committed evaluation subset under models/samples/.

- images/mnist_{index:05d}_{label}.png: the first `--per-digit` MNIST images of each digit
  among evaluation images 5000-9999 (28x28 grayscale PNG).
- audio/{digit}_{speaker}_{take}.wav: the 300 FSDD test clips (takes 0-4), the original
  8 kHz files copied byte for byte.
- manifest.jsonl: one JSON object per file, images first then audio:
  {"file": "audio/3_theo_0.wav", "modality": "audio",
   "metadata": {"label": 3, "speaker": "theo", "take": 0, "source": "...", "license": "..."}}
  The service seeds itself from this file; keep the format stable.
- ATTRIBUTION.md: sources and licenses.

Usage:
    .venv/bin/python scripts/demo/make_samples.py --data-dir ../shared/data --out models/samples
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

ATTRIBUTION = """# Sample items: sources and licenses

This folder holds a small evaluation subset used by the tests, the digits benchmark's
committed-subset checks and as the service's sample items. It was written by
`scripts/demo/make_samples.py --data-dir ../shared/data --out models/samples
--per-digit {per_digit}`.

None of these files was used to train the demo encoders or the demo bridge (MNIST images
0-4999 and FSDD takes 5-49 were).

## images/: MNIST ({n_images} files)
- `mnist_{{index:05d}}_{{label}}.png`: the first {per_digit} images of each digit among MNIST
  test-set images 5000-9999 (the evaluation half; `index` is the position in the MNIST test set).
- Source: the MNIST database by Yann LeCun, Corinna Cortes and Christopher J.C. Burges;
  copy from github.com/kelas/mnist (`t10k-images-idx3-ubyte.gz`, `t10k-labels-idx1-ubyte.gz`).
- License: commonly distributed under Creative Commons Attribution-ShareAlike 3.0
  (CC BY-SA 3.0).

## audio/: Free Spoken Digit Dataset ({n_audio} files)
- `{{digit}}_{{speaker}}_{{take}}.wav`: the official FSDD test set (takes 0-4 of six speakers),
  8 kHz mono 16-bit PCM, copied unchanged.
- Source: Free Spoken Digit Dataset, github.com/Jakobovski/free-spoken-digit-dataset,
  commit 26eb9aa. Contributors: Zohar Jackson and the FSDD contributors.
- License: Creative Commons Attribution-ShareAlike 4.0 International (CC BY-SA 4.0).
  These files are redistributed under the same license.

## manifest.jsonl
One line per file: `{{"file": ..., "modality": "image" | "audio", "metadata": {{"label": ...,
"source": ..., "license": ..., ...}}}}`. Images carry `mnist_index`; audio carries `speaker`
and `take`.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("models/samples"))
    parser.add_argument("--per-digit", type=int, default=30)
    args = parser.parse_args(argv)
    from PIL import Image

    images, labels = common.load_mnist(args.data_dir)
    (args.out / "images").mkdir(parents=True, exist_ok=True)
    (args.out / "audio").mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    counts = [0] * 10
    chosen: list[int] = []
    for index in common.MNIST_EVAL:
        label = int(labels[index])
        if counts[label] < args.per_digit:
            counts[label] += 1
            chosen.append(index)
    for index in chosen:
        label = int(labels[index])
        name = f"images/mnist_{index:05d}_{label}.png"
        Image.fromarray(images[index], mode="L").save(args.out / name, optimize=True)
        rows.append(
            {
                "file": name,
                "modality": "image",
                "metadata": {
                    "label": label,
                    "mnist_index": index,
                    "source": common.MNIST_SOURCE,
                    "license": common.MNIST_LICENSE,
                },
            }
        )
    clips = common.list_fsdd(args.data_dir, common.FSDD_TEST_TAKES)
    for clip in sorted(clips, key=lambda c: (c.digit, c.speaker, c.take)):
        name = f"audio/{clip.name}"
        shutil.copyfile(clip.path, args.out / name)
        rows.append(
            {
                "file": name,
                "modality": "audio",
                "metadata": {
                    "label": clip.digit,
                    "speaker": clip.speaker,
                    "take": clip.take,
                    "source": common.FSDD_SOURCE,
                    "license": common.FSDD_LICENSE,
                },
            }
        )
    with (args.out / "manifest.jsonl").open("w") as handle:
        for row in rows:
            handle.write(json.dumps(row, sort_keys=True) + "\n")
    (args.out / "ATTRIBUTION.md").write_text(
        ATTRIBUTION.format(per_digit=args.per_digit, n_images=len(chosen), n_audio=len(clips))
    )
    print(f"wrote {len(chosen)} images and {len(clips)} clips to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
