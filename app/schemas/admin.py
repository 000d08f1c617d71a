"""Bodies of the admin endpoints (/v1/admin): retrain requests, jobs and bridge versions."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from app.schemas.common import RecordOut
from bridge.service.retrain_plan import MIN_TRAIN_CAPTIONS, overrides_json_schema
from bridge.types import MAX_CAPTIONS, JobStatus, RetrainInit, RetrainRequest, VersionStatus

Caption = Annotated[str, StringConstraints(pattern=r"\S")]  # blank lines are not captions


class RetrainIn(BaseModel):
    """A retrain from captions (inline and/or a file under the data dir) and optional memories."""

    # Strict, as the schema says (the multipart form, all text, validates with strict=False).
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        regex_engine="python-re",
        json_schema_extra={
            # Without a captions file the list alone must hold enough captions.
            "if": {"not": {"required": ["captions_path"]}},
            "then": {"properties": {"captions": {"minItems": MIN_TRAIN_CAPTIONS}}},
            "examples": [
                {
                    "captions": ["a dog barking", "rain on a window", "a car horn", "birdsong"],
                    "activate": True,
                },
                {"captions_path": "corpus/captions.txt", "train_overrides": {"epochs": 5}},
                {"captions_path": "corpus/captions.txt", "train_overrides": {"mode": "exmcr"}},
                {"captions_path": "corpus/captions.txt", "init": "active"},
            ],
        },
    )

    captions: list[Caption] | None = Field(default=None, min_length=1, max_length=MAX_CAPTIONS)
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
        default_factory=dict,
        json_schema_extra=overrides_json_schema(),
        description='TrainConfig fields, e.g. {"epochs": 5}, and the projector\'s hidden_dim, '
        'shared_dim, num_layers and mode ("cmcr" or "exmcr"; default: the active bridge\'s).',
    )
    activate: bool = Field(default=False, description="Activate the new version once it is ready.")
    init: RetrainInit = Field(
        default="fresh",
        description='Where training starts: "fresh" weights, or "active", the active '
        "version's weights (a warm start, e.g. from an imported bridge; overrides that change "
        "its hidden_dim, shared_dim, num_layers, mode or batchnorm_mode are refused).",
    )

    @model_validator(mode="after")
    def _some_corpus(self) -> RetrainIn:
        if self.captions is None and self.captions_path is None:
            raise ValueError("give captions (a list) and/or captions_path (a file)")
        return self

    def to_request(self) -> RetrainRequest:
        return RetrainRequest(**vars(self))  # the engine's fields have the body's names


class JobOut(RecordOut):
    # Read from JobRecord.id; by its own name too, as FastAPI validates the body it dumped.
    job_id: str = Field(validation_alias=AliasChoices("job_id", "id"))
    kind: str
    status: JobStatus
    progress: float
    message: str
    version: str | None
    metrics: dict[str, Any]
    error: str | None
    created_at: str
    updated_at: str


class VersionOut(RecordOut):
    version: str
    status: VersionStatus
    active: bool
    checkpoint_sha256: str | None
    created_at: str
    metrics: dict[str, Any]


class VersionsOut(BaseModel):
    active: str | None
    versions: list[VersionOut]


class ActivateIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    version: str = Field(min_length=1, max_length=200)
