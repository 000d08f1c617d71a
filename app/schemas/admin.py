"""Bodies of the admin endpoints (/v1/admin): retrain requests, jobs and bridge versions."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bridge.types import (
    MAX_CAPTIONS,
    JobRecord,
    JobStatus,
    RetrainRequest,
    VersionRecord,
    VersionStatus,
)


class RetrainIn(BaseModel):
    """A retrain from captions (inline and/or a file under the data dir) and optional memories."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"captions": ["a dog barking", "rain on a window"], "activate": True},
                {"captions_path": "corpus/captions.txt", "train_overrides": {"epochs": 5}},
            ]
        },
    )

    captions: list[str] | None = Field(default=None, min_length=1, max_length=MAX_CAPTIONS)
    captions_path: str | None = Field(
        default=None, min_length=1, description="Relative to the data dir."
    )
    image_memory_path: str | None = Field(
        default=None,
        description=".npy of CLIP image embeddings under the data dir; default: stored.",
    )
    audio_memory_path: str | None = Field(
        default=None,
        description=".npy of CLAP audio embeddings under the data dir; default: stored.",
    )
    train_overrides: dict[str, Any] = Field(
        default_factory=dict, description='TrainConfig fields, e.g. {"epochs": 5}.'
    )
    activate: bool = Field(default=False, description="Activate the new version once it is ready.")

    @model_validator(mode="after")
    def _some_corpus(self) -> RetrainIn:
        if self.captions is None and self.captions_path is None:
            raise ValueError("give captions (a list) and/or captions_path (a file)")
        return self

    def to_request(self) -> RetrainRequest:
        return RetrainRequest(
            captions=self.captions,
            captions_path=self.captions_path,
            image_memory_path=self.image_memory_path,
            audio_memory_path=self.audio_memory_path,
            train_overrides=dict(self.train_overrides),
            activate=self.activate,
        )


class JobOut(BaseModel):
    job_id: str
    kind: str
    status: JobStatus
    progress: float
    message: str
    version: str | None
    metrics: dict[str, Any]
    error: str | None
    created_at: str
    updated_at: str

    @classmethod
    def of(cls, job: JobRecord) -> JobOut:
        return cls(
            job_id=job.id,
            kind=job.kind,
            status=job.status,
            progress=job.progress,
            message=job.message,
            version=job.version,
            metrics=job.metrics,
            error=job.error,
            created_at=job.created_at,
            updated_at=job.updated_at,
        )


class VersionOut(BaseModel):
    version: str
    status: VersionStatus
    active: bool
    checkpoint_sha256: str | None
    created_at: str
    metrics: dict[str, Any]

    @classmethod
    def of(cls, record: VersionRecord) -> VersionOut:
        return cls(
            version=record.version,
            status=record.status,
            active=record.active,
            checkpoint_sha256=record.checkpoint_sha256,
            created_at=record.created_at,
            metrics=record.metrics,
        )


class VersionsOut(BaseModel):
    active: str | None
    versions: list[VersionOut]


class ActivateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str = Field(min_length=1, max_length=200)
