"""Modalities, spaces and the index names built from them: the one home of these names.

Two frozen contrastive models share the text modality: CLIP embeds images (and text), CLAP
embeds audio (and text). Each stored media modality lives in its tower's native space; the
bridge projects both native spaces into one shared space (docs/method.md).
"""

from __future__ import annotations

from typing import Literal, get_args

from bridge.errors import InvalidInputError

Modality = Literal["image", "audio"]
NativeSpace = Literal["clip", "clap"]
SpaceName = Literal["clip", "clap", "shared"]
QueryModality = Literal["text", "image", "audio", "vector"]

MODALITIES: tuple[str, ...] = get_args(Modality)  # what items can be
NATIVE_SPACES: tuple[NativeSpace, ...] = get_args(NativeSpace)
SPACES: tuple[SpaceName, ...] = get_args(SpaceName)
QUERY_MODALITIES: tuple[QueryModality, ...] = get_args(QueryModality)
EMBED_MODALITIES = ("text", "image", "audio")  # what `mbridge embed` reads

# The tower that embeds each media modality (its native space).
MODALITY_SPACE: dict[str, NativeSpace] = {"image": "clip", "audio": "clap"}


def native_index_name(modality: str) -> str:
    """The native index of a modality's items: "clip_image", "clap_audio"."""
    return f"{MODALITY_SPACE[modality]}_{modality}"


def shared_index_name(modality: str) -> str:
    """A bridge version's shared index of a modality's items: "shared_image", "shared_audio"."""
    return f"shared_{modality}"


def check_modality(modality: str) -> str:
    """`modality` itself, or InvalidInputError unless it is one of MODALITIES."""
    if modality not in MODALITIES:
        raise InvalidInputError(f"modality must be one of {MODALITIES}, got {modality!r}")
    return modality
