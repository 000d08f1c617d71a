"""Routing table (method.md section 5): native spaces for same-space pairs, shared otherwise."""

from __future__ import annotations

import pytest

from bridge.errors import InvalidInputError
from bridge.service.routing import route_for_space, route_media, route_text


@pytest.mark.parametrize(
    ("query", "target", "space", "source", "project", "index"),
    [
        ("image", "image", "clip", "clip", False, "clip_image"),
        ("audio", "audio", "clap", "clap", False, "clap_audio"),
        ("audio", "image", "shared", "clap", True, "shared_image"),
        ("image", "audio", "shared", "clip", True, "shared_audio"),
    ],
)
def test_media_routes(
    query: str, target: str, space: str, source: str, project: bool, index: str
) -> None:
    route = route_media(query, target)
    assert (route.space, route.source_space, route.project) == (space, source, project)
    assert route.index_name == index
    assert route.needs_bridge == (space == "shared")


@pytest.mark.parametrize(("target", "space"), [("image", "clip"), ("audio", "clap")])
def test_text_stays_native(target: str, space: str) -> None:
    route = route_text(target)
    assert (route.space, route.source_space, route.project) == (space, space, False)


@pytest.mark.parametrize(
    ("space", "target", "answer", "project"),
    [
        ("clip", "image", "clip", False),
        ("clap", "audio", "clap", False),
        ("clip", "audio", "shared", True),
        ("clap", "image", "shared", True),
        ("shared", "image", "shared", False),
        ("shared", "audio", "shared", False),
    ],
)
def test_vector_routes(space: str, target: str, answer: str, project: bool) -> None:
    route = route_for_space(space, target)
    assert (route.space, route.source_space, route.project) == (answer, space, project)


@pytest.mark.parametrize(
    ("source", "target", "answer", "project"),
    [
        ("clap", "image", "clip", True),  # audio -> image: the head, then native clip_image
        ("shared", "image", "clip", False),  # the shared space is native CLIP
        ("clip", "audio", "shared", True),  # image -> audio: normalised, shared_audio
        ("shared", "audio", "shared", False),
        ("clip", "image", "clip", False),
        ("clap", "audio", "clap", False),
    ],
)
def test_an_exmcr_bridge_answers_images_in_native_clip(
    source: str, target: str, answer: str, project: bool
) -> None:
    route = route_for_space(source, target, "exmcr")
    assert (route.space, route.source_space, route.project) == (answer, source, project)
    assert route.needs_bridge == (project or answer == "shared")
    assert route_media("audio", "image", "exmcr").index_name == "clip_image"
    assert route_text("image") == route_for_space("clip", "image", "exmcr")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: route_text("video"), "target"),
        (lambda: route_media("text", "image"), "query modality"),
        (lambda: route_for_space("siglip", "image"), "space"),
    ],
)
def test_bad_routes_are_invalid_input(call: object, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        call()  # type: ignore[operator]
