"""The one place where exceptions become HTTP responses.

Every error body has the same shape, `{"detail": "<what was wrong>"}` (validation errors add
an `errors` list with the location of each problem). Engine errors (bridge.errors) map to
status codes by class; app-level errors (auth, service not ready) carry their own status.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from app.openapi import allowed_methods
from bridge.errors import (
    BackendUnavailableError,
    BridgeError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PayloadTooLargeError,
    StorageFullError,
    UnsupportedMediaError,
)

logger = logging.getLogger(__name__)

# Checked in order: MediaDecodeError is an InvalidInputError and maps with it.
BRIDGE_ERROR_STATUS: tuple[tuple[type[BridgeError], int], ...] = (
    (InvalidInputError, 422),
    (UnsupportedMediaError, 415),
    (PayloadTooLargeError, 413),
    (NotFoundError, 404),
    (ConflictError, 409),
    (BackendUnavailableError, 503),
    (StorageFullError, 507),  # Insufficient Storage (RFC 4918)
)
# Seconds a client should wait before retrying after a 503 from an unreachable backend.
BACKEND_RETRY_AFTER_SECONDS = 5


class AppError(Exception):
    """An HTTP-level failure raised outside routes (auth, readiness); mapped here."""

    status_code = 500

    def __init__(self, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers


class AuthenticationError(AppError):
    """Missing or wrong bearer key (401 with WWW-Authenticate)."""

    status_code = 401


class ForbiddenError(AppError):
    """The endpoint is disabled for every caller (e.g. no admin key configured)."""

    status_code = 403


class ServiceUnavailableError(AppError):
    """The engine is still loading, or failed to load."""

    status_code = 503


def status_for(error: BridgeError) -> int:
    """HTTP status of an engine error; 500 for BridgeError subclasses without a mapping."""
    for cls, status in BRIDGE_ERROR_STATUS:
        if isinstance(error, cls):
            return status
    return 500


def error_body(detail: str, **extra: Any) -> dict[str, Any]:
    return {"detail": detail, **extra}


async def _bridge_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, BridgeError)
    status = status_for(exc)
    if isinstance(exc, BackendUnavailableError):
        logger.warning("backend unavailable on %s %s: %s", request.method, request.url.path, exc)
        return JSONResponse(
            error_body(f"the {exc.dependency} is {exc.condition}, retry later: {exc}"),
            status_code=status,
            headers={"Retry-After": str(BACKEND_RETRY_AFTER_SECONDS)},
        )
    if isinstance(exc, StorageFullError):  # its message says so and what was not written
        logger.error("disk full on %s %s: %s", request.method, request.url.path, exc)
        return JSONResponse(error_body(str(exc)), status_code=status)
    if status >= 500:
        logger.error("engine error on %s %s: %s", request.method, request.url.path, exc)
        detail = f"internal engine error ({type(exc).__name__}): {exc}"
    else:
        detail = str(exc) or type(exc).__name__
    return JSONResponse(error_body(detail), status_code=status)


async def _app_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    return JSONResponse(error_body(exc.detail), status_code=exc.status_code, headers=exc.headers)


def _location(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(part) for part in loc)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": _location(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type")}
        for e in exc.errors()
    ]
    detail = "; ".join(f"{e['loc']}: {e['msg']}" if e["loc"] else e["msg"] for e in errors)
    return JSONResponse(error_body(detail or "invalid request", errors=errors), status_code=422)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    headers = exc.headers
    # Starlette's 405 names the first matching route's methods only (GET /v1/items/{id}
    # hid DELETE); the served OpenAPI document knows them all.
    if exc.status_code == 405 and (allow := allowed_methods(request.app, request.url.path)):
        headers = {**(headers or {}), "Allow": allow}
    return JSONResponse(error_body(detail), status_code=exc.status_code, headers=headers)


# nginx's "client closed request": nobody reads the answer, but /metrics shows it apart
# from server errors (an upload cut off mid-body used to count, and log a traceback, as 500).
CLIENT_CLOSED_REQUEST = 499


async def _client_gone(request: Request, exc: Exception) -> JSONResponse:
    method, path = request.method, request.url.path
    logger.info("client disconnected before its %s %s body was complete", method, path)
    return JSONResponse(
        error_body("the client disconnected before the request body was complete"),
        status_code=CLIENT_CLOSED_REQUEST,
    )


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse(
        error_body(f"internal server error ({type(exc).__name__})"), status_code=500
    )


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers above on `app`."""
    app.add_exception_handler(BridgeError, _bridge_error)
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(Exception, _unexpected_error)
