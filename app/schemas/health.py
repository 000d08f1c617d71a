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
    engine: dict[str, Any] = Field(default_factory=dict)
