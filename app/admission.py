"""Admission control: a bounded wait in front of the engine (search and ingest).

Past what the engine can answer, every extra request only waits longer, and so does every
request behind it: latency grows without bound while throughput stays flat. Here a request
to an engine route is admitted only when (1) fewer than BRIDGE_MAX_PENDING such requests are
in the server (waiting or running) and (2) the wait it would face, estimated as the requests
ahead of it divided by the rate at which the server finishes them while busy (Little's law,
over its last COMPLETIONS answers; time with nothing in progress does not count, or a quiet
server's few answers would read as a slow one), is at most BRIDGE_MAX_QUEUE_MS. Otherwise it
is answered 503 with `Retry-After` at once, before its body is read, so a refusal costs about a
millisecond and admitted requests keep their latency. (`mbridge bench overload` measures
both; docs/benchmarks.md.) A request that finds nothing ahead of it is always admitted.

Health, admin, item reads and the page are never refused: an operator can always see and
steer an overloaded server.
"""

from __future__ import annotations

import time
from collections import deque

from prometheus_client import Counter
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from app.errors import error_body

RETRY_AFTER_SECONDS = 1
# Answers the throughput estimate is taken over, and the most it may be out of date.
COMPLETIONS = 64
MIN_COMPLETIONS = 8
RATE_MAX_AGE_SECONDS = 5.0
ENGINE_ROUTES = frozenset(
    {
        ("POST", "/v1/search"),
        ("POST", "/v1/search/batch"),
        ("POST", "/v1/items"),
        ("POST", "/v1/items/batch"),
    }
)

REFUSED = Counter(
    "bridge_requests_refused_total",
    "Engine requests answered 503 at once (BRIDGE_MAX_PENDING or BRIDGE_MAX_QUEUE_MS)",
)


class AdmissionMiddleware:
    """Admit an engine request only within `max_pending` and an estimated wait of
    `max_queue_ms` (module docstring); the rest get 503 at once."""

    def __init__(self, app: ASGIApp, max_pending: int, max_queue_ms: float = 0.0) -> None:
        self.app = app
        self.max_pending = max_pending
        self.max_queue_s = max_queue_ms / 1000.0  # 0: no bound on the wait
        self.pending = 0  # the event loop is single-threaded: plain counters are exact
        # Busy time: seconds with at least one engine request in progress, up to busy_since.
        self.busy_seconds = 0.0
        self.busy_since = 0.0
        # (monotonic end time, busy seconds by then) of the last answers.
        self.finished: deque[tuple[float, float]] = deque(maxlen=COMPLETIONS)

    def busy_at(self, now: float) -> float:
        """Busy seconds up to `now`."""
        return self.busy_seconds + (now - self.busy_since if self.pending else 0.0)

    def expected_wait(self, now: float) -> float | None:
        """Seconds a request admitted now would wait: those ahead of it over the recent
        completion rate (None: too few recent answers to tell)."""
        if (
            len(self.finished) < MIN_COMPLETIONS
            or now - self.finished[-1][0] > RATE_MAX_AGE_SECONDS
        ):
            return None
        busy = self.busy_at(now) - self.finished[0][1]
        if busy <= 0:
            return None
        return self.pending / (len(self.finished) / busy)

    def refusal(self, now: float) -> str | None:
        """Why a request arriving now is refused (None: admitted)."""
        if self.pending >= self.max_pending:
            return (
                f"{self.pending} search and ingest requests are in progress "
                f"(BRIDGE_MAX_PENDING={self.max_pending})"
            )
        if self.max_queue_s > 0 and self.pending > 0:
            wait = self.expected_wait(now)
            if wait is not None and wait > self.max_queue_s:
                return (
                    f"a new request would wait about {wait * 1000:.0f} ms "
                    f"(BRIDGE_MAX_QUEUE_MS={self.max_queue_s * 1000:g})"
                )
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["method"], scope["path"]) not in ENGINE_ROUTES:
            await self.app(scope, receive, send)
            return
        reason = self.refusal(time.monotonic())
        if reason is not None:
            REFUSED.inc()
            response = JSONResponse(
                error_body(
                    f"the server is at capacity: {reason}; retry after {RETRY_AFTER_SECONDS} s"
                ),
                status_code=503,
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
            await response(scope, receive, send)
            return
        if self.pending == 0:
            self.busy_since = time.monotonic()
        self.pending += 1
        try:
            await self.app(scope, receive, send)
        finally:
            now = time.monotonic()
            self.finished.append((now, self.busy_at(now)))
            self.pending -= 1
            if self.pending == 0:
                self.busy_seconds += now - self.busy_since
