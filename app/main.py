"""The FastAPI application: `create_app(settings)` and its lifespan.

The lifespan opens the engine (bridge.service.facade.BridgeService) in a worker thread while the
server already answers /healthz (and /readyz with 503); on shutdown it closes the engine,
which persists the indexes. Routers get their body-size limits here, from the settings.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.routing import BaseRoute, Match, Mount
from starlette.types import Scope

import bridge
from app.admission import AdmissionMiddleware
from app.batcher import SearchBatcher
from app.errors import BACKEND_RETRY_AFTER_SECONDS, install_error_handlers
from app.fastpath import JSONSearchFastPath
from app.limits import BodyLimitMiddleware, PathLimit
from app.observability import MetricsMiddleware
from app.offload import make_executor
from app.openapi import install_openapi
from app.routes import admin, health, items, search
from app.settings import Settings
from app.state import ServiceHolder
from bridge.errors import BackendUnavailableError
from bridge.memory import release_free_memory

if TYPE_CHECKING:
    from bridge.service import BridgeService

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"

DESCRIPTION = """\
Cross-modal search over images and audio. Text and same-modality queries are answered in
the native CLIP (images) or CLAP (audio) space; audio->image and image->audio go through a
C-MCR bridge trained without paired data. Bridges are retrained and swapped live under
/v1/admin. Every error answers `{"detail": "<what was wrong>"}`.
"""


# Bodies of every other endpoint (JSON calls, admin activate...) are small.
HEAP_TRIM_SECONDS = 60.0  # bridge/memory.py
SMALL_BODY = PathLimit("/", 65_536, "fixed limit for this endpoint")


def body_limits(settings: Settings) -> list[PathLimit]:
    """Body limit per path prefix (first match wins): uploads get the file limit plus room
    for form fields; batches and admin uploads their own limits."""
    return [
        PathLimit("/v1/items/batch", settings.batch_body_limit, "BRIDGE_MAX_REQUEST_BYTES"),
        PathLimit("/v1/items", settings.upload_body_limit, "BRIDGE_MAX_UPLOAD_BYTES"),
        PathLimit("/v1/search", settings.upload_body_limit, "BRIDGE_MAX_UPLOAD_BYTES"),
        PathLimit("/v1/admin/retrain", settings.admin_body_limit, "BRIDGE_MAX_ADMIN_UPLOAD_BYTES"),
    ]


def _open_service(settings: Settings) -> BridgeService:
    from bridge.service import BridgeService  # torch, transformers, faiss load here

    return BridgeService.open(settings.service_config())


async def _load(
    holder: ServiceHolder,
    settings: Settings,
    on_load_failure: Callable[[BaseException], None] | None,
    stopping: anyio.Event,
) -> None:
    """Open the engine; while the vector backend (a Milvus server) is unreachable, wait and
    try again (phase "waiting") until it answers or the server stops."""
    while True:
        try:
            service = await run_in_threadpool(_open_service, settings)
        except BackendUnavailableError as exc:
            holder.set_waiting(str(exc))
            logger.warning(
                "vector backend unavailable at start; retrying in %d s: %s",
                BACKEND_RETRY_AFTER_SECONDS,
                exc,
            )
            with anyio.move_on_after(BACKEND_RETRY_AFTER_SECONDS):
                await stopping.wait()
            if stopping.is_set():
                return
            continue
        except Exception as exc:
            logger.error("the engine failed to start: %s", exc, exc_info=True)
            holder.set_failed(f"{type(exc).__name__}: {exc}")
            if on_load_failure is not None:
                on_load_failure(exc)
            return
        holder.set_ready(service)
        logger.info("engine ready")
        return


def create_app_from_environment() -> FastAPI:
    """The app of one worker process when BRIDGE_WORKERS > 1 (uvicorn's factory): settings
    from the environment, as `python -m app` read them."""
    from app.__main__ import configure_logging
    from app.settings import load_settings

    settings = load_settings()
    configure_logging(settings.log_level)
    return create_app(settings)


def create_app(
    settings: Settings,
    service: BridgeService | None = None,
    on_load_failure: Callable[[BaseException], None] | None = None,
) -> FastAPI:
    """Build the app. With `service` given, use it as is (and leave closing it to the caller);
    otherwise open one from `settings` in the background at start-up and close it at
    shutdown. `on_load_failure` is called (on the event loop) if opening fails."""
    holder = ServiceHolder()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.executor = make_executor()
        app.state.batcher = SearchBatcher(app.state.executor, inline_lone=settings.inline_searches)
        try:
            async with _engine(app), anyio.create_task_group() as background:
                background.start_soon(_trim_heap)
                yield
                background.cancel_scope.cancel()  # this scope only: the engine closes after
        finally:
            app.state.executor.shutdown(wait=True)

    async def _trim_heap() -> None:
        # Freed memory goes back to the system once a minute (a few ms when there is little
        # to return), so that RSS, which container limits count, follows the live heap.
        while True:
            await anyio.sleep(HEAP_TRIM_SECONDS)
            await anyio.to_thread.run_sync(release_free_memory)

    @asynccontextmanager
    async def _engine(app: FastAPI) -> AsyncIterator[None]:
        if service is not None:
            holder.set_ready(service)
            yield
            holder.take_for_close()
            return
        # Loading runs beside the server; at shutdown we wait for it to finish (a thread
        # cannot be cancelled) so that a service opened late is still closed.
        stopping = anyio.Event()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(_load, holder, settings, on_load_failure, stopping)
            yield
            stopping.set()
        opened = holder.take_for_close()
        if opened is not None:
            await run_in_threadpool(opened.close)
            logger.info("engine closed")

    app = FastAPI(
        title="modality-bridge",
        version=bridge.__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        openapi_tags=[
            {"name": "items", "description": "Add, read and delete images and audio."},
            {"name": "search", "description": "Search across CLIP, CLAP and the bridge."},
            {"name": "admin", "description": "Retrain and swap bridge versions."},
            {"name": "health", "description": "Liveness, readiness, metrics."},
        ],
    )
    app.state.settings = settings
    app.state.holder = holder
    install_error_handlers(app)
    app.add_middleware(JSONSearchFastPath)  # innermost: body limits and metrics still apply
    app.add_middleware(BodyLimitMiddleware, limits=body_limits(settings), default=SMALL_BODY)
    app.add_middleware(
        AdmissionMiddleware,
        max_pending=settings.max_pending,
        max_queue_ms=settings.max_queue_ms,
    )
    app.add_middleware(MetricsMiddleware)  # counts 413s from the limiter too
    if settings.cors_origin_list:  # outermost: a preflight is answered before anything runs
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
            max_age=600,
        )

    for router in (
        health.router,
        items.batch_router,
        items.router,
        search.batch_router,
        search.router,
        admin.router,
    ):
        app.include_router(router)
    _mount_page(app)
    install_openapi(app, settings, holder)
    return app


class PageMount(Mount):
    """The search page at "/", matching no path that an API route serves: a request to
    such a path with a method the route lacks then gets the route's own 405 and `Allow`
    (a mount at "/" matches every path and answered `Allow: GET, HEAD`)."""

    def __init__(self, api_routes: list[BaseRoute]) -> None:
        super().__init__("/", StaticFiles(directory=STATIC_DIR, html=True), name="page")
        self.api_routes = api_routes

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if any(route.matches(scope)[0] is not Match.NONE for route in self.api_routes):
            return Match.NONE, {}
        return super().matches(scope)


def _mount_page(app: FastAPI) -> None:
    """Serve app/static (the search page) at "/" when it exists; else "/" points to /docs."""
    if (STATIC_DIR / "index.html").is_file():
        app.router.routes.append(PageMount(list(app.router.routes)))
        return

    @app.get("/", include_in_schema=False)
    async def root() -> dict[str, Any]:
        return {"service": "modality-bridge", "docs": "/docs", "openapi": "/openapi.json"}
