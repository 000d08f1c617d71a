"""Search: check the query, resolve its vector, route, project, rank and hydrate the hits.

decode/encode the query (or take a raw vector / a stored item's raw embedding) -> route
(bridge/routing.py) -> project with the active bridge when the route is bridged -> FAISS ->
hydrate ids from the store, filter, page. Readers take no service lock: the caller passes
the ActiveBridge snapshot it read once, and the whole answer uses it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from bridge.errors import ConflictError, InvalidInputError
from bridge.metrics import SEARCHES, StageTimer
from bridge.records import check_item_id, public_metadata
from bridge.routing import Route, route_for_space, route_media, route_text
from bridge.service_types import SearchHit, SearchQuery, SearchResponse
from bridge.towers import MODALITIES, Towers
from bridge.versions import ActiveBridge, shared_index

if TYPE_CHECKING:
    from bridge.catalog import IndexCatalog
    from bridge.index import VectorIndex
    from bridge.store import ItemStore

OVERFETCH_FACTOR = 4
OVERFETCH_MIN = 64


def check_query(query: SearchQuery, max_k: int) -> None:
    """InvalidInputError unless the query is well formed (exactly one source, sane paging)."""
    given = [
        name
        for name, value in (
            ("text", query.text),
            ("vector", query.vector),
            ("item_id", query.item_id),
            ("media", query.media),
        )
        if value is not None
    ]
    if len(given) != 1:
        raise InvalidInputError(
            "give exactly one of text, vector (with space), item_id or a file; "
            f"got {given or 'none'}"
        )
    if query.target not in MODALITIES:
        raise InvalidInputError(f"target must be 'image' or 'audio', got {query.target!r}")
    for name, value, low in (("k", query.k, 1), ("offset", query.offset, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InvalidInputError(f"{name} must be an integer >= {low}, got {value!r}")
    if query.k + query.offset > max_k:
        raise InvalidInputError(f"k + offset must be at most {max_k}, got {query.k + query.offset}")
    if query.min_score is not None and not (
        isinstance(query.min_score, int | float) and np.isfinite(query.min_score)
    ):
        raise InvalidInputError(f"min_score must be a finite number, got {query.min_score!r}")
    if not isinstance(query.filters, dict):
        raise InvalidInputError("filters must be an object of metadata key -> value")
    for key, wanted in query.filters.items():
        if not isinstance(key, str) or not isinstance(wanted, str | int | float | bool):
            raise InvalidInputError(f"filter {key!r}: values must be strings, numbers or booleans")


def check_vector(
    values: Any, space: str, active: ActiveBridge | None, dims: tuple[int, int]
) -> np.ndarray:
    """(1, D) float32 query vector of `space` ("clip", "clap" or "shared"); dims = (clip, clap)."""
    if space == "shared":
        if active is None:
            raise ConflictError("a 'shared' vector needs an active bridge version; none is")
        dim = active.checkpoint.projector_config.shared_dim
    else:
        dim = dims[0] if space == "clip" else dims[1]
    if not isinstance(values, list | tuple | np.ndarray) or len(values) != dim:
        got = len(values) if isinstance(values, list | tuple | np.ndarray) else type(values)
        raise InvalidInputError(f"a {space!r} vector must have {dim} numbers, got {got}")
    try:
        vector = np.asarray(values, dtype=np.float32).reshape(1, dim)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"vector must be a list of {dim} numbers ({exc})") from exc
    if not np.isfinite(vector).all():
        raise InvalidInputError("vector contains NaN or infinite values")
    if not np.any(vector):
        raise InvalidInputError("vector is all zeros; it has no direction to search")
    return vector


class Searcher:
    """Answers SearchQuery objects against the store, the catalog's indexes and the towers."""

    def __init__(self, store: ItemStore, catalog: IndexCatalog, towers: Towers, max_k: int) -> None:
        self.store = store
        self.catalog = catalog
        self.towers = towers
        self.max_k = max_k

    def search(self, query: SearchQuery, active: ActiveBridge | None) -> SearchResponse:
        """Answer `query` with the `active` snapshot (taken once by the caller)."""
        check_query(query, self.max_k)
        timer = StageTimer()
        route, vector, exclude, query_modality = self._query_vector(query, active, timer)
        if route.needs_bridge and active is None:
            raise ConflictError(
                f"{query_modality}->{query.target} search needs an active bridge version; "
                "none is active (train one with /v1/admin/retrain and activate it)"
            )
        if route.project:
            assert active is not None
            with timer.stage("project"):
                vector = active.checkpoint.project(route.source_space, vector)  # type: ignore[arg-type]
        index = (
            shared_index(self.catalog, active, query.target) if route.needs_bridge and active
            else self.catalog.native(query.target)
        )  # fmt: skip
        hits = self._ranked_hits(index, vector, query, exclude, timer) if index else []
        SEARCHES.labels(query=query_modality, space=route.space).inc()
        return SearchResponse(
            results=hits,
            space=route.space,
            bridge_version=active.version if active else None,
            query_modality=query_modality,
            timings_ms=timer.timings_ms,
        )

    def _query_vector(
        self, query: SearchQuery, active: ActiveBridge | None, timer: StageTimer
    ) -> tuple[Route, np.ndarray, int | None, str]:
        """(route, (1, D) query vector in the route's source space, rowid to exclude, kind)."""
        if query.text is not None:
            if not isinstance(query.text, str) or not query.text.strip():
                raise InvalidInputError("text must be a non-empty string")
            route = route_text(query.target)
            with timer.stage("encode"):
                vector = self.towers.encode_text(route.source_space, query.text)
            return route, vector, None, "text"
        if query.vector is not None:
            if query.space is None:
                raise InvalidInputError("a vector query needs `space`: 'clip', 'clap' or 'shared'")
            route = route_for_space(query.space, query.target)
            vector = check_vector(query.vector, query.space, active, self.towers.dims())
            return route, vector, None, "vector"
        if query.item_id is not None:
            with timer.stage("hydrate"):
                item, raw = self.store.raw_embedding(check_item_id(query.item_id))
            route = route_media(item.modality, query.target)
            return route, raw[None, :], item.rowid, item.modality
        assert query.media is not None
        with timer.stage("decode"):
            decoded = self.towers.decode(query.media, query.media.filename or "query")
        with timer.stage("encode"):
            vector = self.towers.encode(decoded.modality, [decoded.media])
        return route_media(decoded.modality, query.target), vector, None, decoded.modality

    def _ranked_hits(
        self,
        index: VectorIndex,
        vector: np.ndarray,
        query: SearchQuery,
        exclude: int | None,
        timer: StageTimer,
    ) -> list[SearchHit]:
        """Top offset+k hits after exclusion, filters and min_score; over-fetches (x4, at
        least 64 with filters) until enough hits pass or the index is exhausted."""
        want = query.offset + query.k
        total = index.ntotal
        if total == 0:
            return []
        fetch = want + (1 if exclude is not None else 0)
        if query.filters:
            fetch = max(fetch * OVERFETCH_FACTOR, OVERFETCH_MIN)
        fetch = min(fetch, total)
        while True:
            with timer.stage("search"):
                scores, ids = index.search(vector, fetch)
            with timer.stage("hydrate"):
                hits, cut = self._hydrate(scores[0], ids[0], query, exclude)
            if len(hits) >= want or cut or fetch >= total:
                return hits[query.offset : want]
            fetch = min(total, fetch * OVERFETCH_FACTOR)

    def _hydrate(
        self, scores: np.ndarray, ids: np.ndarray, query: SearchQuery, exclude: int | None
    ) -> tuple[list[SearchHit], bool]:
        """Hits in score order and whether min_score cut the list (no point fetching more)."""
        cut = False
        keep = ids >= 0
        if query.min_score is not None:
            above = scores >= query.min_score
            cut = bool((keep & ~above).any())
            keep &= above
        ids, scores = ids[keep], scores[keep]
        items = self.store.get_by_rowids(ids)
        hits: list[SearchHit] = []
        for rowid, score in zip(ids.tolist(), scores.tolist(), strict=True):
            item = items.get(rowid)
            if item is None or rowid == exclude:  # deleted meanwhile, or the query item itself
                continue
            if query.filters and not self.store.matches(item, query.filters):
                continue
            hits.append(
                SearchHit(item.id, float(score), item.modality, public_metadata(item.metadata))
            )
        return hits, cut
