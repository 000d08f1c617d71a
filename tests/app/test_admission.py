"""Admission control (app/admission.py): past BRIDGE_MAX_PENDING search and ingest requests in
the server, the next ones are refused at once with 503 and Retry-After; the admitted ones
are answered, and the server admits again once they are done. Real app and engine, requests
sent together over ASGI."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from app.admission import REFUSED
from app.main import create_app


async def burst(app: Any, requests: list[tuple[str, str, dict[str, Any]]]) -> list[httpx.Response]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return list(
                await asyncio.gather(
                    *(client.request(method, path, **kw) for method, path, kw in requests)
                )
            )


@pytest.mark.parametrize("backend", ["faiss"], indirect=True)
def test_past_max_pending_requests_are_refused_at_once(
    make_settings: Callable[..., Any], service: Any
) -> None:
    app = create_app(make_settings(max_pending=2, inline_searches=False), service=service)
    search = ("POST", "/v1/search", {"json": {"text": "a dog", "target": "image"}})
    health = ("GET", "/readyz", {})
    before = REFUSED._value.get()
    answers = asyncio.run(burst(app, [search] * 12 + [health] * 3))
    statuses = [r.status_code for r in answers]
    assert statuses[:2] == [200, 200]  # the first two are admitted and answered
    assert statuses[2:12] == [503] * 10  # the rest of the burst: refused, not queued
    assert statuses[12:] == [200] * 3  # health is never refused
    refusal = answers[2]
    assert refusal.headers["retry-after"] == "1"
    assert "BRIDGE_MAX_PENDING=2" in refusal.json()["detail"]
    assert REFUSED._value.get() - before == 10
    again = asyncio.run(burst(app, [search, search]))  # the admitted ones are done: room again
    assert [r.status_code for r in again] == [200, 200]


def test_the_estimated_wait_bounds_admission() -> None:
    """Requests ahead over the completion rate while busy (Little's law) against
    BRIDGE_MAX_QUEUE_MS; nothing ahead is always admitted; too few answers: no estimate; a
    quiet server's sparse answers do not read as a slow server."""
    from app.admission import MIN_COMPLETIONS, AdmissionMiddleware

    gate = AdmissionMiddleware(app=None, max_pending=64, max_queue_ms=50)  # type: ignore[arg-type]
    now = 1000.0
    gate.pending = 10
    gate.busy_since = now - 1.0  # busy for the last second
    gate.finished.extend((now - 0.01 * i, 1.0 - 0.01 * i) for i in range(MIN_COMPLETIONS - 1))
    assert gate.expected_wait(now) is None  # one answer short of an estimate
    gate.finished.clear()
    # 64 answers over 0.64 busy seconds: 100 per second
    gate.finished.extend((now - 0.01 * (64 - i), 0.36 + 0.01 * i) for i in range(64))
    wait = gate.expected_wait(now)
    assert wait == pytest.approx(10 / 100)
    assert "BRIDGE_MAX_QUEUE_MS=50" in str(gate.refusal(now))
    gate.pending = 3  # about 30 ms ahead: admitted
    assert gate.refusal(now) is None
    gate.pending = 0
    gate.max_queue_s = 1e-9
    assert gate.refusal(now) is None  # nothing ahead: always admitted
    gate.pending = 1
    assert gate.refusal(now + 10) is None  # answers older than 5 s: no estimate
    # A quiet server: 64 answers of 16 ms each, one every few seconds. Busy time counts
    # only the 16 ms each, so one request ahead is a 16 ms wait, not minutes.
    quiet = AdmissionMiddleware(app=None, max_pending=64, max_queue_ms=250)  # type: ignore[arg-type]
    quiet.finished.extend((now - 3.0 * (63 - i), 0.016 * (i + 1)) for i in range(64))
    quiet.busy_seconds, quiet.pending, quiet.busy_since = 64 * 0.016, 1, now
    assert quiet.expected_wait(now) == pytest.approx(1 / (64 / (64 * 0.016 - 0.016)))
    assert quiet.refusal(now) is None
