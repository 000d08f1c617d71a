"""Search: check the query, resolve its vector, route, project, rank and hydrate the hits.

decode/encode the query (or take a raw vector / a stored item's raw embedding) -> route
(bridge/service/routing.py, by the active bridge's mode) -> project with the active bridge when
the route is bridged -> FAISS (the version's shared index, or a native one) ->
hydrate ids from the store, filter, page. An index that can apply a query's filters itself
(Milvus: bridge/index/milvus_filters.py) gets them and returns matching rows only; otherwise
the hits are over-fetched and filtered in the store. Readers take no service lock: the caller passes
the ActiveBridge snapshot it read once, and the whole answer uses it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from bridge.encode.pair import EncoderPair
from bridge.errors import ConflictError, InvalidInputError
from bridge.index.checks import usable_square
from bridge.modalities import MODALITIES
from bridge.service.records import check_item_id, public_metadata
from bridge.service.routing import Route, route_for_space, route_media, route_text
from bridge.service.versions import ActiveBridge, shared_index
from bridge.telemetry import StageTimer, count_search
from bridge.types import SearchHit, SearchQuery, SearchResponse

if TYPE_CHECKING:
    from bridge.index.backends import SearchIndex
    from bridge.service.catalog import IndexCatalog
    from bridge.storage.items import ItemStore

OVERFETCH_FACTOR = 4
OVERFETCH_MIN = 64
# A query is "quick" (app/batcher.py may run it on the event loop) when it needs no encoding
# and an exact scan of its target's indexes reads at most this many vectors: about 20 ms
# here at 100,000 x 512. HNSW and IVF indexes read a small part per query and always pass.
QUICK_FLAT_ITEMS = 200_000


def _first_fetch(query: SearchQuery, exclude: int | None, pushed: bool = False) -> int:
    """How many neighbours to ask the index for first (before any over-fetch retry);
    ``pushed``: the index applies the query's filters itself."""
    fetch = query.offset + query.k + (1 if exclude is not None else 0)
    if query.filters and not pushed:
        fetch = max(fetch * OVERFETCH_FACTOR, OVERFETCH_MIN)
    return fetch


def _pushes_filters(index: SearchIndex, query: SearchQuery) -> bool:
    """Whether ``index`` applies ``query``'s filters itself."""
    return bool(query.filters) and index.can_filter(query.filters)


def _enough(hits: list[SearchHit], cut: bool, query: SearchQuery, fetch: int, total: int) -> bool:
    """Whether a fetch settles the query: enough hits, a min_score cut, or nothing more."""
    return len(hits) >= query.offset + query.k or cut or fetch >= total


@dataclass(frozen=True)
class _Encoded:
    """A text query's (1, D) vector from a batch encode, and that encode's wall time."""

    vector: np.ndarray
    seconds: float


@dataclass
class _Plan:
    """A checked query, ready to rank: its route, (1, D) vector and index."""

    route: Route
    vector: np.ndarray
    exclude: int | None
    query_modality: str
    index: SearchIndex | None
    timer: StageTimer
    hits: list[SearchHit] | None = None  # filled when ranked together with others


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
        with np.errstate(over="ignore"):  # beyond float32: inf, rejected below
            vector = np.asarray(values, dtype=np.float32).reshape(1, dim)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"vector must be a list of {dim} numbers ({exc})") from exc
    if usable_square(vector[0]) is not None:
        return vector  # finite and not all zeros
    if not np.isfinite(vector).all():
        raise InvalidInputError(
            "vector contains NaN or infinite values (or values beyond float32, about 3.4e38)"
        )
    if not np.any(vector):
        raise InvalidInputError("vector is all zeros; it has no direction to search")
    return vector


@dataclass(frozen=True)
class Searcher:
    """Answers SearchQuery objects against the store, the catalog's indexes and the towers."""

    store: ItemStore
    catalog: IndexCatalog
    towers: EncoderPair
    max_k: int

    def search(self, query: SearchQuery, active: ActiveBridge | None) -> SearchResponse:
        """Answer `query` with the `active` snapshot (taken once by the caller)."""
        plan = self._plan(query, active)
        hits = self._ranked_hits(plan.index, plan.vector, query, plan.exclude, plan.timer)
        return self._respond(plan, hits, active)

    def is_quick(self, query: SearchQuery, active: ActiveBridge | None) -> bool:
        """No encoding, no call to another process (a Milvus index) and no exact scan longer
        than QUICK_FLAT_ITEMS vectors in any index the query could be answered from (native
        or shared, for its target)."""
        if query.text is not None or query.media is not None or query.target not in MODALITIES:
            return False  # an encoder to run, or a query that fails on its own
        candidates = [self.catalog.native(query.target)]
        if active is not None:
            candidates.append(shared_index(self.catalog, active, query.target))
        return all(
            index is None
            or (
                index.inline_searches and (index.kind != "flat" or index.ntotal <= QUICK_FLAT_ITEMS)
            )
            for index in candidates
        )

    def search_each(
        self, queries: list[SearchQuery], active: ActiveBridge | None
    ) -> list[SearchResponse | Exception]:
        """Answer independent queries together: those on the same index share one FAISS call
        (a BLAS product for exact search) and one store lookup. A query's error is returned
        in its slot. Results equal `search` one by one."""
        results: list[SearchResponse | Exception | None] = [None] * len(queries)
        plans: dict[int, _Plan] = {}
        texts = self._encode_texts_together(queries)
        for i, query in enumerate(queries):
            try:
                plans[i] = self._plan(query, active, texts.get(i))
            except Exception as exc:  # noqa: BLE001 - this query's own error
                results[i] = exc
        groups: dict[int, list[int]] = {}
        for i, plan in plans.items():
            # A filtered search inside the index is one call per filter: ranked alone.
            if plan.index is not None and not _pushes_filters(plan.index, queries[i]):
                groups.setdefault(id(plan.index), []).append(i)
        for members in groups.values():
            self._rank_together([(queries[i], plans[i]) for i in members])
        for i, plan in plans.items():
            try:
                hits = plan.hits
                if hits is None:  # no index, a single query, or the batch came up short
                    hits = self._ranked_hits(
                        plan.index, plan.vector, queries[i], plan.exclude, plan.timer
                    )
                results[i] = self._respond(plan, hits, active)
            except Exception as exc:  # noqa: BLE001
                results[i] = exc
        answered = [r for r in results if r is not None]
        assert len(answered) == len(queries)  # every slot holds an answer or an error
        return answered

    def _encode_texts_together(self, queries: list[SearchQuery]) -> dict[int, _Encoded]:
        """Text queries of one batch that go to the same tower, encoded in one forward pass
        (one by one, a batch of text queries ran the tower once per query). Queries this
        skips, or a group whose encoding fails, are encoded alone in `_plan`, which then
        raises each query's own error."""
        groups: dict[str, list[int]] = {}
        for i, query in enumerate(queries):
            if isinstance(query.text, str) and query.text.strip() and query.target in MODALITIES:
                groups.setdefault(route_text(query.target).source_space, []).append(i)
        encoded: dict[int, _Encoded] = {}
        for space, members in groups.items():
            if len(members) < 2:
                continue
            started = time.perf_counter()
            try:
                vectors = self.towers.encode_texts(space, [str(queries[i].text) for i in members])
            except Exception:  # noqa: BLE001 - each query retries alone and reports its error
                continue
            seconds = time.perf_counter() - started
            for row, i in enumerate(members):
                encoded[i] = _Encoded(vectors[row : row + 1], seconds)
        return encoded

    def _plan(
        self, query: SearchQuery, active: ActiveBridge | None, text: _Encoded | None = None
    ) -> _Plan:
        """Check the query, resolve and project its vector, pick the index. `text`: the
        query's text already encoded with others of its batch."""
        check_query(query, self.max_k)
        timer = StageTimer()
        route, vector, exclude, query_modality = self._query_vector(query, active, timer, text)
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
            shared_index(self.catalog, active, query.target) if route.space == "shared" and active
            else self.catalog.native(query.target)  # an Ex-MCR bridge's audio->image too
        )  # fmt: skip
        return _Plan(route, vector, exclude, query_modality, index, timer)

    def _respond(
        self, plan: _Plan, hits: list[SearchHit], active: ActiveBridge | None
    ) -> SearchResponse:
        count_search(plan.query_modality, plan.route.space)
        return SearchResponse(
            results=hits,
            space=plan.route.space,
            bridge_version=active.version if active else None,
            query_modality=plan.query_modality,
            timings_ms=plan.timer.timings_ms,
        )

    def _rank_together(self, members: list[tuple[SearchQuery, _Plan]]) -> None:
        """One FAISS call and one store lookup for queries on the same index; sets
        `plan.hits` unless the first fetch is not enough (filters, min_score, exclusions),
        which leaves the query to `_ranked_hits`."""
        if len(members) < 2:
            return
        index = members[0][1].index
        assert index is not None
        total = index.ntotal
        if total == 0:
            return
        fetches = [min(_first_fetch(query, plan.exclude), total) for query, plan in members]
        stacked = np.concatenate([plan.vector for _, plan in members])
        started = time.perf_counter()
        scores, ids = index.search(stacked, max(fetches))
        search_seconds = time.perf_counter() - started
        started = time.perf_counter()
        items = self.store.hits(np.unique(ids[ids >= 0]))
        hydrate_seconds = (time.perf_counter() - started) / len(members)
        for row, ((query, plan), fetch) in enumerate(zip(members, fetches, strict=True)):
            plan.timer.record("search", search_seconds)
            started = time.perf_counter()
            hits, cut = self._hydrate(
                scores[row, :fetch], ids[row, :fetch], query, plan.exclude, items
            )
            plan.timer.record("hydrate", hydrate_seconds + time.perf_counter() - started)
            if _enough(hits, cut, query, fetch, total):
                plan.hits = hits[query.offset : query.offset + query.k]

    def _query_vector(
        self,
        query: SearchQuery,
        active: ActiveBridge | None,
        timer: StageTimer,
        text: _Encoded | None = None,
    ) -> tuple[Route, np.ndarray, int | None, str]:
        """(route, (1, D) query vector in the route's source space, rowid to exclude, kind)."""
        mode = active.mode if active is not None else "cmcr"
        if query.text is not None:
            if not isinstance(query.text, str) or not query.text.strip():
                raise InvalidInputError("text must be a non-empty string")
            route = route_text(query.target)
            if text is not None:  # encoded together with its batch: that call's wall time
                timer.record("encode", text.seconds)
                return route, text.vector, None, "text"
            with timer.stage("encode"):
                vector = self.towers.encode_text(route.source_space, query.text)
            return route, vector, None, "text"
        if query.vector is not None:
            if query.space is None:
                raise InvalidInputError("a vector query needs `space`: 'clip', 'clap' or 'shared'")
            route = route_for_space(query.space, query.target, mode)
            vector = check_vector(query.vector, query.space, active, self.towers.dims())
            return route, vector, None, "vector"
        if query.item_id is not None:
            with timer.stage("hydrate"):
                item, raw = self.store.raw_embedding(check_item_id(query.item_id))
            route = route_media(item.modality, query.target, mode)
            return route, raw[None, :], item.rowid, item.modality
        assert query.media is not None
        with timer.stage("decode"):
            decoded = self.towers.decode(query.media, query.media.filename or "query")
        with timer.stage("encode"):
            vector = self.towers.encode(decoded.modality, [decoded.media])
        route = route_media(decoded.modality, query.target, mode)
        return route, vector, None, decoded.modality

    def _ranked_hits(
        self,
        index: SearchIndex | None,
        vector: np.ndarray,
        query: SearchQuery,
        exclude: int | None,
        timer: StageTimer,
    ) -> list[SearchHit]:
        """Top offset+k hits after exclusion, filters and min_score; over-fetches (x4, at
        least 64 with filters the index cannot apply) until enough hits pass or the index is
        exhausted."""
        if index is None:
            return []
        want = query.offset + query.k
        total = index.ntotal
        if total == 0:
            return []
        pushed = _pushes_filters(index, query)
        fetch = min(_first_fetch(query, exclude, pushed), total)
        while True:
            with timer.stage("search"):
                scores, ids = index.search(vector, fetch, query.filters if pushed else None)
            with timer.stage("hydrate"):
                hits, cut = self._hydrate(scores[0], ids[0], query, exclude)
            # Filtered in the index: fewer rows than asked for means no more match.
            no_more = pushed and int((ids[0] >= 0).sum()) < fetch
            if _enough(hits, cut, query, fetch, total) or no_more:
                return hits[query.offset : want]
            fetch = min(total, fetch * OVERFETCH_FACTOR)

    def _hydrate(
        self,
        scores: np.ndarray,
        ids: np.ndarray,
        query: SearchQuery,
        exclude: int | None,
        items: dict[int, Any] | None = None,
    ) -> tuple[list[SearchHit], bool]:
        """Hits in score order and whether min_score cut the list (no point fetching more).
        `items` (rowid -> stored item) is looked up in the store when not given."""
        cut = False
        keep = ids >= 0
        if query.min_score is not None:
            above = scores >= query.min_score
            cut = bool((keep & ~above).any())
            keep &= above
        ids, scores = ids[keep], scores[keep]
        if items is None:
            items = self.store.hits(ids)
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
