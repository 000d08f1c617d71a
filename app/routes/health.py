"""Liveness, readiness and Prometheus metrics (no auth: no data is exposed)."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.concurrency import run_in_threadpool

from app.deps import HolderDep
from app.schemas.health import HealthOut, ReadyOut

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthOut, summary="The process is alive")
async def healthz() -> HealthOut:
    return HealthOut()


@router.get(
    "/readyz",
    response_model=ReadyOut,
    summary="Models and indexes are loaded (503 until then)",
    responses={503: {"model": ReadyOut, "description": "Still loading, or failed to load."}},
)
async def readyz(holder: HolderDep) -> ReadyOut | JSONResponse:
    service = holder.peek()
    if service is None:
        why = {
            "failed": f"the engine failed to start: {holder.error}",
            "waiting": f"waiting for the vector backend: {holder.error}",
        }.get(holder.phase, f"the engine is {holder.phase}")
        body = ReadyOut(ready=False, phase=holder.phase, detail=why)
        return JSONResponse(body.model_dump(), status_code=status.HTTP_503_SERVICE_UNAVAILABLE)
    engine = await run_in_threadpool(service.readiness)
    ready = bool(engine.get("ready"))
    backend = engine.get("backend") or {}
    detail = None
    if not ready:
        detail = "the engine reports not ready"
        if not backend.get("reachable", True):
            detail = f"the vector backend is unreachable: {backend.get('error')}"
        elif not backend.get("serving", True):
            detail = f"the vector backend is loading collections: {backend.get('loading')}"
    body = ReadyOut(
        ready=ready,
        phase=holder.phase,
        detail=detail,
        engine=engine,
    )
    if not ready:
        return JSONResponse(
            body.model_dump(mode="json"), status_code=status.HTTP_503_SERVICE_UNAVAILABLE
        )
    return body


@router.get(
    "/metrics",
    response_class=Response,
    summary="Prometheus metrics",
    description="HTTP requests by route template and status, request latency, and the "
    "engine's per-stage latency histogram (bridge_stage_seconds: decode, encode, project, "
    "search, hydrate).",
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Text exposition."}},
)
async def metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
