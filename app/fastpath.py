"""JSON searches answered before FastAPI's routing: the service's hot path as plain ASGI.

`POST /v1/search` with a JSON body is most of a search service's traffic, and on it FastAPI's
own machinery (route matching over every router, dependency solving, request objects, the
exception wrapper layers) cost about a third of the event loop's time per request, more than
parsing the body and writing the answer (py-spy on `mbridge bench server-cpu`, docs/benchmarks.md
"Service benchmark"). This middleware sits inside the body-limit and metrics middlewares and
answers those requests itself with the same steps the route would take:

    API key (when BRIDGE_API_KEY is set) -> engine ready -> body (the limit still applies) ->
    SearchRequest (pydantic, one pass) -> SearchBatcher -> search_response_json

Errors go through the app's own exception handlers (app/errors.py), so every status code and
`{"detail": ...}` body is the one the route would give. Everything else (multipart searches,
every other path and method) passes straight through to FastAPI, and /v1/search stays in
the OpenAPI schema through its route (app/routes/search.py).
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING

from fastapi.routing import APIRoute
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from app.auth import check_api
from app.deps import api_bearer
from app.routes.search import SEARCH_PATH, answer_json_search, is_json, router

if TYPE_CHECKING:
    from fastapi import FastAPI

_JSON_HEADERS = [(b"content-type", b"application/json")]


class ClientGone(Exception):
    """The client disconnected before its request body was complete."""


class JSONSearchFastPath:
    """Answers `POST /v1/search` with a JSON body (module docstring); passes the rest on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # The documented route: what the metrics middleware labels requests by.
        self._route = next(r for r in router.routes if isinstance(r, APIRoute))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] != SEARCH_PATH
            or scope["method"] != "POST"
            or not is_json(_header(scope, b"content-type"))
        ):
            await self.app(scope, receive, send)
            return
        owner: FastAPI = scope["app"]
        scope["route"] = self._route
        try:
            body = await self._answer(owner, scope, receive)
        except ClientGone:
            return
        except Exception as exc:  # noqa: BLE001 - mapped as the app maps it, 500 included
            response = await _handle(owner, exc, scope, receive)
            await response(scope, receive, send)
            return
        headers = [*_JSON_HEADERS, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _answer(self, owner: FastAPI, scope: Scope, receive: Receive) -> bytes:
        state = owner.state
        api_key = state.settings.api_key
        if api_key is not None:
            check_api(await api_bearer(HTTPConnection(scope)), api_key)
        service = state.holder.require()
        return await answer_json_search(state.batcher, service, await _read_body(receive))


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _handle(owner: FastAPI, exc: Exception, scope: Scope, receive: Receive) -> Response:
    """The response the app's exception handlers give for ``exc`` (first match in its MRO,
    as Starlette's ExceptionMiddleware looks them up)."""
    for cls in type(exc).__mro__:
        handler = owner.exception_handlers.get(cls)
        if handler is not None:
            response = handler(Request(scope, receive), exc)
            return await response if inspect.isawaitable(response) else response
    raise exc
