"""Request body size limits, enforced while the body streams in.

A pure ASGI middleware picks the limit for the request path, answers 413 at once when
Content-Length already exceeds it (the body is never read), and otherwise counts the bytes
as the app receives them, raising RequestBodyTooLarge past the limit. That exception is a
Starlette HTTPException on purpose: FastAPI re-raises HTTPExceptions met while parsing a
body (any other exception becomes a generic 400), so it reaches app.errors' handler and
answers 413 with the usual `{"detail": ...}`.

(FastAPI's own `max_body_size` answers an oversized Content-Length in plain text, which
would break the one-error-shape rule; hence this module.)
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import error_body


class RequestBodyTooLarge(StarletteHTTPException):
    """The request body passed the limit of its endpoint (413)."""

    def __init__(self, limit: int, setting: str) -> None:
        super().__init__(
            status_code=413,
            detail=f"request body is larger than this endpoint's limit of {limit} bytes "
            f"({setting})",
        )


class PathLimit:
    """`limit` bytes for paths equal to `prefix` or under `prefix/`."""

    __slots__ = ("limit", "prefix", "setting")

    def __init__(self, prefix: str, limit: int, setting: str) -> None:
        self.prefix = prefix.rstrip("/")
        self.limit = limit
        self.setting = setting

    def matches(self, path: str) -> bool:
        return path == self.prefix or path.startswith(self.prefix + "/")


class BodyLimitMiddleware:
    """Per-path body limits; the first matching PathLimit wins, else `default`."""

    def __init__(self, app: ASGIApp, limits: Sequence[PathLimit], default: PathLimit) -> None:
        self.app = app
        self.limits = tuple(limits)
        self.default = default

    def limit_for(self, path: str) -> PathLimit:
        return next((rule for rule in self.limits if rule.matches(path)), self.default)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rule = self.limit_for(scope["path"])
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > rule.limit:
            error = RequestBodyTooLarge(rule.limit, rule.setting)
            response = JSONResponse(
                error_body(str(error.detail)), status_code=413, headers={"Connection": "close"}
            )
            await response(scope, receive, send)
            return

        received = 0

        async def receive_with_limit() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > rule.limit:
                    raise RequestBodyTooLarge(rule.limit, rule.setting)
            return message

        await self.app(scope, receive_with_limit, send)
