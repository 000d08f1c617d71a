"""Admission control: a bounded number of requests in front of the engine (search and ingest).

Past what the engine can answer, every extra request only waits longer, and so does every
request behind it: latency grows without bound while throughput stays flat. Here a request
to an engine route is admitted only while fewer than BRIDGE_MAX_PENDING such requests are in
the server (waiting or running); the next one is answered 503 with `Retry-After` at once,
before its body is read, so a refusal costs microseconds and admitted requests keep their
latency. (`mbridge bench overload` measures both; docs/benchmarks.md.)

Health, admin, item reads and the page are never refused: an operator can always see and
steer an overloaded server.
"""

from __future__ import annotations

from prometheus_client import Counter
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from app.errors import error_body

RETRY_AFTER_SECONDS = 1
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
    "Engine requests answered 503 at once because BRIDGE_MAX_PENDING were in the server",
)


class AdmissionMiddleware:
    """At most `max_pending` engine requests in the server; the rest get 503 at once."""

    def __init__(self, app: ASGIApp, max_pending: int) -> None:
        self.app = app
        self.max_pending = max_pending
        self.pending = 0  # the event loop is single-threaded: a plain counter is exact

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["method"], scope["path"]) not in ENGINE_ROUTES:
            await self.app(scope, receive, send)
            return
        if self.pending >= self.max_pending:
            REFUSED.inc()
            response = JSONResponse(
                error_body(
                    f"the server is at capacity: {self.pending} search and ingest requests are "
                    f"in progress (BRIDGE_MAX_PENDING={self.max_pending}); retry after "
                    f"{RETRY_AFTER_SECONDS} s"
                ),
                status_code=503,
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
            await response(scope, receive, send)
            return
        self.pending += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.pending -= 1
