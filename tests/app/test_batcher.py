"""The event-loop search batcher: concurrent submits share one call, each gets its own answer."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from app.batcher import SearchBatcher


class Engine:
    """Doubles each query, fails on negative ones, records the batches it was called with."""

    def __init__(self, delay: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.delay = delay
        self.release = threading.Event()
        self.release.set()

    def run(self, queries: list[int]) -> list[Any]:
        self.release.wait(5)
        self.batches.append(list(queries))
        return [ValueError(f"bad {q}") if q < 0 else 2 * q for q in queries]


def test_a_lone_query_runs_alone_and_concurrent_ones_share_batches() -> None:
    engine = Engine()
    executor = ThreadPoolExecutor(4)

    async def scenario() -> list[Any]:
        batcher = SearchBatcher(executor)
        assert await batcher.submit(engine.run, 5) == 10
        engine.release.clear()  # hold the first batch so that the others queue behind it
        first = asyncio.ensure_future(batcher.submit(engine.run, 1))
        await asyncio.sleep(0.05)
        rest = [asyncio.ensure_future(batcher.submit(engine.run, q)) for q in (2, -3, 4)]
        await asyncio.sleep(0.05)
        engine.release.set()
        return await asyncio.gather(first, *rest, return_exceptions=True)

    results = asyncio.run(scenario())
    assert results[0] == 2 and results[1] == 4 and results[3] == 8
    assert isinstance(results[2], ValueError) and str(results[2]) == "bad -3"
    assert engine.batches == [[5], [1], [2, -3, 4]]
    executor.shutdown()


def test_a_failing_call_fails_every_query_in_its_batch_and_the_batcher_recovers() -> None:
    executor = ThreadPoolExecutor(2)
    calls = {"n": 0}

    def flaky(queries: list[int]) -> list[Any]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("engine closed")
        return queries

    async def scenario() -> Any:
        batcher = SearchBatcher(executor)
        with pytest.raises(RuntimeError, match="engine closed"):
            await batcher.submit(flaky, 1)
        return await batcher.submit(flaky, 7)

    assert asyncio.run(scenario()) == 7
    executor.shutdown()


def test_search_response_json_matches_the_response_model() -> None:
    """The hot path writes the response JSON by hand; it must equal the documented model's."""
    import json

    from app.schemas.search import SearchResponseOut, search_response_json
    from bridge.types import SearchHit, SearchResponse

    response = SearchResponse(
        results=[
            SearchHit("a1", 0.5, "image", {"label": 3, "tags": ["x"], "nested": {"k": None}}),
            SearchHit("b2", -0.25, "audio", {}),
        ],
        space="shared",
        bridge_version="v2",
        query_modality="audio",
        timings_ms={"search": 0.4},
    )
    by_hand = json.loads(search_response_json(response))
    assert by_hand == json.loads(SearchResponseOut.of(response).model_dump_json())
    assert SearchResponseOut.model_validate(by_hand).results[0].metadata["label"] == 3


class ThreadRecorder:
    """Records which thread ran each batch."""

    def __init__(self) -> None:
        self.batches: list[tuple[list[int], int]] = []

    def run(self, queries: list[int]) -> list[Any]:
        self.batches.append((list(queries), threading.get_ident()))
        return list(queries)


def test_lone_cheap_queries_run_inline_once_traffic_is_one_at_a_time() -> None:
    from app.batcher import LONE_SUBMITS_BEFORE_INLINE

    engine = ThreadRecorder()
    executor = ThreadPoolExecutor(2)

    async def scenario() -> int:
        batcher = SearchBatcher(executor)
        for q in range(LONE_SUBMITS_BEFORE_INLINE + 2):
            assert await batcher.submit(engine.run, q, cheap=True) == q
        assert await batcher.submit(engine.run, 99) == 99  # not cheap: never inline
        return threading.get_ident()

    loop_thread = asyncio.run(scenario())
    threads = [thread for _, thread in engine.batches]
    warm = LONE_SUBMITS_BEFORE_INLINE - 1  # the submit that completes the streak is inline
    assert all(t != loop_thread for t in threads[:warm])  # the first lone ones: executor
    assert all(t == loop_thread for t in threads[warm:-1])  # then inline on the loop
    assert threads[-1] != loop_thread
    executor.shutdown()


def test_a_burst_after_lone_traffic_shares_one_executor_batch() -> None:
    engine = ThreadRecorder()
    executor = ThreadPoolExecutor(2)

    async def scenario() -> tuple[int, list[Any]]:
        batcher = SearchBatcher(executor)
        for q in range(5):
            await batcher.submit(engine.run, q, cheap=True)
        assert engine.batches[-1][1] == threading.get_ident()  # lone traffic ran inline
        burst = await asyncio.gather(
            *(batcher.submit(engine.run, q, cheap=True) for q in (7, 8, 9))
        )
        return threading.get_ident(), burst

    loop_thread, burst = asyncio.run(scenario())
    assert burst == [7, 8, 9]
    queries, thread = engine.batches[-1]
    assert queries == [7, 8, 9] and thread != loop_thread
    executor.shutdown()


def test_inline_can_be_turned_off() -> None:
    engine = ThreadRecorder()
    executor = ThreadPoolExecutor(2)

    async def scenario() -> int:
        batcher = SearchBatcher(executor, inline_lone=False)
        for q in range(6):
            await batcher.submit(engine.run, q, cheap=True)
        return threading.get_ident()

    loop_thread = asyncio.run(scenario())
    assert all(thread != loop_thread for _, thread in engine.batches)
    executor.shutdown()
