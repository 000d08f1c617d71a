"""Tiny, seeded CLIP and CLAP models saved in Hugging Face format, for tests.

They are the service benchmarks' stand-in towers (bridge/bench/standins.py: a byte-level BPE
vocabulary with no merges, tiny transformer configs, `save_pretrained` of the model together
with its processor) at a projection width of 16. The folders load back through the same
`from_pretrained` path that real hub checkpoints use, with HF_HUB_OFFLINE=1.

Weights are deterministic: each builder seeds torch before constructing the model, so two
builds of the same model produce identical weights (and thus identical embeddings).

Public helpers (stable; other tests depend on them):
    build_tiny_clip(out_dir) -> Path     # CLIP: text + image, dim TINY_CLIP_DIM
    build_tiny_clap(out_dir) -> Path     # CLAP: text + audio (48 kHz), dim TINY_CLAP_DIM
"""

from __future__ import annotations

from pathlib import Path

from bridge.bench.standins import CLAP_SAMPLE_RATE, build_clap, build_clip

TINY_CLIP_DIM = 16
TINY_CLAP_DIM = 16
TINY_CLAP_SAMPLE_RATE = CLAP_SAMPLE_RATE


def build_tiny_clip(out_dir: str | Path) -> Path:
    """A ~100k-parameter CLIPModel + CLIPProcessor (projection dim 16) saved to `out_dir`."""
    return build_clip(Path(out_dir), TINY_CLIP_DIM)


def build_tiny_clap(out_dir: str | Path) -> Path:
    """A tiny ClapModel (unfused HTSAT, 48 kHz) + ClapProcessor (projection dim 16) saved to
    `out_dir`."""
    return build_clap(Path(out_dir), TINY_CLAP_DIM)
