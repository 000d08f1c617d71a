"""Shared helpers for the demo encoders, the demo bridge and the digits benchmark.

Data (see ../shared/data/README.md):
- MNIST test set as IDX gz files; images 0-4999 train image-side models and memories,
  images 5000-9999 are evaluation only.
- FSDD recordings `{digit}_{speaker}_{take}.wav` at 8 kHz; takes 0-4 are the test set,
  takes 5-49 training.

Also builds the small word-level tokenizers of the demo towers: a byte-level BPE vocabulary
(so any text still tokenizes) plus one merge chain per known word, so every word of the
caption vocabulary is a single token.
"""

from __future__ import annotations

import json
import logging
import random
import re
import shutil
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

# GPT-2 / CLIP byte -> printable unicode map (the alphabet of byte-level BPE).
from transformers.convert_slow_tokenizer import bytes_to_unicode

from bridge.bench.digits_data import (  # noqa: E402,F401  (re-exported for the scripts)
    DIGIT_WORDS,
    FSDD_LICENSE,
    FSDD_SOURCE,
    FSDD_SPEAKERS,
    FSDD_TEST_TAKES,
    FSDD_TRAIN_TAKES,
    MNIST_EVAL,
    MNIST_LICENSE,
    MNIST_SOURCE,
    MNIST_TRAIN,
    Clip,
    list_fsdd,
    load_mnist,
    mnist_pil,
    read_wav,
)

logger = logging.getLogger(__name__)


def load_clips(clips: Sequence[Clip], target_rate: int) -> list[np.ndarray]:
    """Read clips and resample each to `target_rate` with soxr (8 kHz -> 48 kHz for CLAP)."""
    import soxr

    out = []
    for clip in clips:
        wave, rate = read_wav(clip.path)
        if rate != target_rate:
            wave = soxr.resample(wave, rate, target_rate).astype(np.float32)
        out.append(wave)
    return out


# --------------------------------------------------------------------------- captions

# Demo CLIP sees only these (image side: handwriting, ink, writing).
CLIP_TEMPLATES = (
    "a handwritten {w}",
    "a handwritten {d}",
    "the digit {d} written in ink",
    "the digit {w} written by hand",
    "a scan of a handwritten {w}",
    "a photo of the number {d}",
    "a photo of the digit {w}",
    "an image of a {w}",
    "a picture of the numeral {d}",
    "a black and white image of a {w}",
    "a scanned digit {w}",
    "a drawing of the number {w}",
    "{w}",
    "{d}",
    "a grayscale picture showing {w}",
    "someone wrote a {w} on paper",
    "a pen drawn {d}",
    "handwriting of the digit {w}",
    "a small image of the number {w} in white on black",
    "the numeral {w} written with a pen",
)

# Demo CLAP sees only these (audio side: speech, voice, recording).
CLAP_TEMPLATES = (
    "someone says {w}",
    "a recording of the spoken number {w}",
    "a person saying the word {w}",
    "the sound of a voice saying {w}",
    "a man speaks the digit {w}",
    "a spoken {w}",
    "the word {w} said out loud",
    "audio of someone counting {w}",
    "a voice pronounces {w}",
    "{w}",
    "speech: {w}",
    "a short clip of a speaker saying {w}",
    "you can hear the number {w}",
    "an utterance of {w}",
    "a talker reads the digit {d} aloud",
    "a sound recording where a person says {w}",
    "the spoken digit {d}",
    "a microphone recording of the word {w}",
    "a quiet voice saying {w} once",
    "listen to someone say {w}",
)

# Generic filler words (no modality words) inserted into captions during training so that
# the text towers learn to find the digit word among words they will meet in other phrasings.
FILLER_WORDS = tuple(
    """a the this that very clear small large big tiny quick slow old new neat messy bold thin
    thick faint soft sharp clean short long single simple random typical nice odd here there
    now again please just really quite maybe probably certainly exactly only also still then
    today yesterday example sample item number digit value of is it its was be with for
    and or on at to from in by as an my your our their some any another every first last
    next good bad great little other same different kind sort type thing something nothing
    what which who this these those i we you they think see know show find look called""".split()  # noqa: SIM905
)


def fill(template: str, digit: int) -> str:
    return template.format(w=DIGIT_WORDS[digit], d=str(digit))


def sample_caption(
    rng: random.Random, templates: Sequence[str], digit: int, filler_p: float = 0.3
) -> str:
    """A random template for `digit`, with a random filler word inserted with prob filler_p."""
    words = fill(rng.choice(templates), digit).split()
    if rng.random() < filler_p:
        words.insert(rng.randrange(len(words) + 1), rng.choice(FILLER_WORDS))
    return " ".join(words)


def class_prompts(templates: Sequence[str]) -> list[list[str]]:
    """For each digit, all templates filled in (a prompt ensemble for zero-shot)."""
    return [[fill(t, d) for t in templates] for d in range(10)]


# --------------------------------------------------------------------------- tokenizers


def _apply_bpe(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Standard BPE: repeatedly merge the lowest-ranked adjacent pair."""
    while len(symbols) > 1:
        pairs = [
            (ranks.get((a, b), 1 << 30), i)
            for i, (a, b) in enumerate(zip(symbols, symbols[1:], strict=False))
        ]
        rank, i = min(pairs)
        if rank == 1 << 30:
            break
        symbols = symbols[:i] + [symbols[i] + symbols[i + 1]] + symbols[i + 2 :]
    return symbols


def word_merges(words: Iterable[list[str]]) -> tuple[list[tuple[str, str]], list[str]]:
    """Merges that turn each symbol sequence in `words` into one token.

    For each word, run BPE with the merges so far and append a left-to-right chain that joins
    what is left. Later merges never change earlier words (each earlier word is already one
    token), so every listed word ends as a single token.
    """
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    new_tokens: list[str] = []
    for symbols in words:
        parts = _apply_bpe(list(symbols), ranks)
        acc = parts[0]
        for nxt in parts[1:]:
            pair = (acc, nxt)
            ranks[pair] = len(merges)
            merges.append(pair)
            acc = acc + nxt
            new_tokens.append(acc)
    return merges, new_tokens


def caption_words(texts: Iterable[str]) -> list[str]:
    """Lower-case word and punctuation pieces of `texts`, sorted, without duplicates."""
    found: set[str] = set()
    for text in texts:
        found.update(re.findall(r"[a-z]+|[0-9]|[^\sa-z0-9]+", text.lower()))
    return sorted(found)


def template_words(templates: Sequence[str]) -> list[str]:
    """The word pieces of `templates` filled in for every digit, and of the filler words."""
    return caption_words([fill(t, d) for t in templates for d in range(10)] + list(FILLER_WORDS))


def word_tokenizer(
    cls: Any, write_vocab: Callable[[Path, Sequence[str]], None], words: Sequence[str], out: Path
) -> Any:
    """A `cls` tokenizer (at most 32 tokens) over the vocabulary `write_vocab` makes of `words`;
    the files are written to out/_tokenizer_src and removed once loaded (the processor saves
    its own copy)."""
    scratch = out / "_tokenizer_src"
    write_vocab(scratch, words)
    tokenizer = cls.from_pretrained(str(scratch), model_max_length=32)
    shutil.rmtree(scratch)
    return tokenizer


def write_clip_vocab(out_dir: Path, words: Sequence[str]) -> None:
    """CLIP-format vocab.json + merges.txt: 256 bytes, their `</w>` forms, words, specials."""
    byte_chars = list(bytes_to_unicode().values())
    seqs = []
    for word in words:
        chars = [bytes_to_unicode()[b] for b in word.encode("utf-8")]
        chars[-1] = chars[-1] + "</w>"
        seqs.append(chars)
    head = byte_chars + [c + "</w>" for c in byte_chars]
    _write_word_vocab(out_dir, head, seqs, ["<|startoftext|>", "<|endoftext|>"])


def write_roberta_vocab(out_dir: Path, words: Sequence[str]) -> None:
    """RoBERTa/GPT-2-format vocab.json + merges.txt: specials, 256 bytes, words with and
    without the leading-space marker."""
    b2u = bytes_to_unicode()
    seqs = []
    for word in words:
        for prefix in ("", " "):
            seqs.append([b2u[b] for b in (prefix + word).encode("utf-8")])
    head = ["<s>", "<pad>", "</s>", "<unk>"] + list(b2u.values())
    _write_word_vocab(out_dir, head, seqs, ["<mask>"])


def _write_word_vocab(
    out_dir: Path, head: list[str], seqs: list[list[str]], tail: list[str]
) -> None:
    """vocab.json + merges.txt of `head`, then the tokens of the merge chains that make each
    symbol sequence in `seqs` one token (those not already listed), then `tail`."""
    merges, new_tokens = word_merges(seqs)
    vocab = list(head)
    seen = set(vocab)
    for tok in new_tokens:
        if tok not in seen:
            vocab.append(tok)
            seen.add(tok)
    vocab += tail
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    (out_dir / "merges.txt").write_text("\n".join(lines) + "\n")


# --------------------------------------------------------------------------- misc


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def dir_size_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())
