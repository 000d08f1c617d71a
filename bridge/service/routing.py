"""Which space answers a query (method.md section 5).

The bridged (shared) space loses quality for pairs that already share a native space, so:

    text  -> image   native CLIP  (CLIP text tower,  clip_image index)
    image -> image   native CLIP  (CLIP image tower, clip_image index)
    text  -> audio   native CLAP  (CLAP text tower,  clap_audio index)
    audio -> audio   native CLAP  (CLAP audio tower, clap_audio index)
    audio -> image   shared       (CLAP audio -> CLAP projector, shared_image index)
    image -> audio   shared       (CLIP image -> CLIP projector, shared_audio index)

A raw vector query names the space it lives in. A "clip" vector searched for audio (or a
"clap" vector searched for images) goes through that space's projector into the shared
space; a "shared" vector is searched in the shared index of the target as it is.

An Ex-MCR bridge (mode "exmcr", method.md section 9) has native CLIP as its shared space:
audio -> image goes through its CLAP head and searches the native clip_image index (such a
version builds no shared_image index); image -> audio is as above, the CLIP "projector"
being a normalisation.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from bridge.errors import InvalidInputError
from bridge.modalities import MODALITIES, MODALITY_SPACE, SPACES, NativeSpace, SpaceName

AnswerSpace = SpaceName

TARGETS = MODALITIES
# The native space that an Ex-MCR bridge's shared space is.
EXMCR_BASE: NativeSpace = "clip"


@dataclass(frozen=True)
class Route:
    """How one query is answered.

    source_space: the space the query vector is in after encoding ("shared" only for raw
    shared vectors); project: whether the source vector goes through the active bridge's
    projector of source_space; space: the space of the index searched; target: its modality.
    """

    source_space: AnswerSpace
    project: bool
    space: AnswerSpace
    target: str

    @property
    def index_name(self) -> str:
        """Name of the index searched: clip_image, clap_audio, shared_image or shared_audio."""
        return f"{self.space}_{self.target}"

    @property
    def needs_bridge(self) -> bool:
        return self.project or self.space == "shared"


def _check_target(target: str) -> None:
    if target not in TARGETS:
        raise InvalidInputError(f"target must be 'image' or 'audio', got {target!r}")


def route_for_space(source_space: str, target: str, mode: str = "cmcr") -> Route:
    """Route a query whose vector already lives in `source_space` ('clip', 'clap', 'shared');
    `mode`: the active bridge's ("cmcr" or "exmcr"; module docstring)."""
    _check_target(target)
    if source_space not in SPACES:
        raise InvalidInputError(f"space must be 'clip', 'clap' or 'shared', got {source_space!r}")
    native = MODALITY_SPACE[target]
    if source_space == "shared":
        route = Route("shared", False, "shared", target)
    elif source_space == native:
        return Route(native, False, native, target)
    else:
        other: NativeSpace = "clap" if native == "clip" else "clip"
        route = Route(other, True, "shared", target)
    if mode == "exmcr" and native == EXMCR_BASE:  # the shared index would be the native one
        return replace(route, space=EXMCR_BASE)
    return route


def route_text(target: str) -> Route:
    """Text is embedded by the text tower of the target's native space, so it stays native."""
    _check_target(target)
    return route_for_space(MODALITY_SPACE[target], target)


def route_media(query_modality: str, target: str, mode: str = "cmcr") -> Route:
    """Route an image or audio query (an upload or a stored item)."""
    if query_modality not in MODALITY_SPACE:
        raise InvalidInputError(
            f"query modality must be 'image' or 'audio', got {query_modality!r}"
        )
    return route_for_space(MODALITY_SPACE[query_modality], target, mode)
