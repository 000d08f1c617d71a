"""The caption corpus the demo bridge is trained on (C-MCR's caption pairs, method.md s.1).

Captions about digits in many phrasings, none of them a copy of either demo encoder's training
templates (checked at build time), plus unrelated everyday sentences. Deterministic: the same
call always returns the same list.

Usage:
    .venv/bin/python scripts/demo/captions.py --out models/demo-bridge/captions.txt
"""

from __future__ import annotations

import argparse
import itertools
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

# Neutral phrasings: neither "written/handwritten/image" (CLIP side) nor "says/spoken/voice"
# (CLAP side), so the corpus is not biased to one modality.
NEUTRAL = (
    "the number {w}",
    "number {w}",
    "the digit {w}",
    "it is a {w}",
    "this is a {w}",
    "that was a {w}",
    "a {w}",
    "the {w}",
    "{w} again",
    "just {w}",
    "exactly {w}",
    "{w} and nothing else",
    "the value {w}",
    "the answer is {w}",
    "my favourite number is {w}",
    "the next one is {w}",
    "think of {w}",
    "an example of {w}",
    "the digit {d}",
    "number {d}",
    "it is {d}",
    "{d} ({w})",
    "{w}, the digit",
    "the result was {w}",
    "we got {w}",
    "here is a {w}",
    "some {w}",
    "a single {w}",
    "the count is {w}",
    "{w} is the answer",
    "the numeral {d}",
    "the figure {w}",
)
# Lightly image-flavoured and audio-flavoured phrasings, again not the encoders' templates.
IMAGE_LIKE = (
    "a sketch of a {w}",
    "a {w} drawn on a page",
    "a printed {w}",
    "the shape of a {w}",
    "a {w} on a sheet of paper",
    "a close up of a {w}",
    "a {w} in thick strokes",
    "a digit that looks like a {w}",
)
AUDIO_LIKE = (
    "a person calls out {w}",
    "a {w} heard on the radio",
    "a child counting up to {w}",
    "someone whispers {w}",
    "a {w} in a quiet room",
    "a speaker reads {w}",
    "the word {w} said slowly",
    "an announcer says {w}",
)
MODIFIERS = ("", "clear", "small", "simple", "neat", "typical", "messy", "quick")

SUBJECTS = (
    "a dog", "the cat", "a red car", "an old man", "the river", "a tall tree", "my friend",
    "the teacher", "a bird", "the city", "a young woman", "the train", "a small boat",
    "the wind",
)  # fmt: skip
VERBS = (
    "runs across", "sleeps near", "looks at", "waits for", "walks past", "jumps over",
    "sits beside", "moves toward",
)  # fmt: skip
OBJECTS = (
    "the park", "a house", "the window", "the road", "a small table", "the garden",
    "the door", "a bridge", "the market",
)  # fmt: skip


def _with_modifier(text: str, modifier: str) -> str:
    """Insert an adjective before the digit word's article position ("a clear seven")."""
    if not modifier:
        return text
    for article in ("a ", "the "):
        if text.startswith(article):
            return article + modifier + " " + text[len(article) :]
    return f"{modifier} {text}"


def digit_captions() -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for digit in range(10):
        for template in NEUTRAL + IMAGE_LIKE + AUDIO_LIKE:
            base = common.fill(template, digit)
            for modifier in MODIFIERS:
                out.append((_with_modifier(base, modifier), digit))
    return out


def unrelated_captions() -> list[str]:
    return [f"{s} {v} {o}" for s, v, o in itertools.product(SUBJECTS, VERBS, OBJECTS)]


def build_corpus(seed: int = 0) -> tuple[list[str], list[int]]:
    """(captions, labels) with label -1 for unrelated sentences; shuffled, duplicates removed."""
    forbidden = {
        common.fill(t, d).lower()
        for t in common.CLIP_TEMPLATES + common.CLAP_TEMPLATES
        for d in range(10)
    }
    seen: set[str] = set()
    rows: list[tuple[str, int]] = []
    for text, label in digit_captions() + [(s, -1) for s in unrelated_captions()]:
        if text in seen or text.lower() in forbidden:
            continue
        seen.add(text)
        rows.append((text, label))
    random.Random(seed).shuffle(rows)
    return [t for t, _ in rows], [label for _, label in rows]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    captions, labels = build_corpus(args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(captions) + "\n")
    print(f"wrote {len(captions)} captions ({labels.count(-1)} unrelated) to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
