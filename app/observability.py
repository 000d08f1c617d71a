"""HTTP request metrics (Prometheus) as a pure ASGI middleware.

Requests are counted by method, route template (e.g. /v1/items/{item_id}, never the raw
path, so ids do not explode the label set) and status; latency goes into a histogram by
method and route. The engine's stage histograms live in bridge/telemetry.py.
"""

from __future__ import annotations

import time

from prometheus_client import Counter, Histogram
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bridge.telemetry import child

HTTP_REQUESTS = Counter(
    "bridge_http_requests_total", "HTTP requests by method, route template and status",
    ["method", "route", "status"],
)  # fmt: skip
HTTP_LATENCY = Histogram(
    "bridge_http_request_duration_seconds",
    "Wall time from request start to the end of the response body",
    ["method", "route"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


def route_label(scope: Scope) -> str:
    """The matched route's template; "static" for the page, "unmatched" for 404s."""
    route = scope.get("route")
    if isinstance(route, Mount):
        return "static"
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class MetricsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status_code = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - start
            route = route_label(scope)
            method = scope.get("method", "GET")
            child(HTTP_REQUESTS, method, route, str(status_code)).inc()
            child(HTTP_LATENCY, method, route).observe(elapsed)
