"""Bodies of the liveness and readiness endpoints."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class HealthOut(BaseModel):
    status: Literal["ok"] = "ok"


class ReadyOut(BaseModel):
    ready: bool
    phase: str
    detail: str | None = None
    engine: dict[str, Any] = Field(
        default_factory=dict,
        description="The engine's readiness (BridgeService.readiness): ready, backend (the "
        "vector backend: name, reachable, serving (the collections in use are loaded), "
        "repair_pending, and for Milvus its uri, collections, loading or error), encoders "
        "(model, dim and device of each), indexes (vectors per index; null for a shared index "
        "the active version has none of, or while the vector backend cannot say), items, "
        "active_version, active_mode (the active version's bridge mode, cmcr or exmcr; null "
        "with no active version), job_running (a job of this process) and replica (pid and "
        "host of the process that answered, and shared: whether it serves the data directory "
        "with other replicas).",
    )
