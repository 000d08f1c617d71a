"""Plain data types of the service facade (bridge/service/facade.py).

Kept free of heavy imports (no numpy, torch or faiss) so that app/ can import them cheaply
for its request/response schemas. Every type is a frozen dataclass; dict fields are never
mutated by the service after construction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from bridge.modalities import Modality, SpaceName

IndexType = Literal["flat", "hnsw", "ivf"]
BackendName = Literal["faiss", "milvus"]  # bridge/index/backends.py
JobStatus = Literal["queued", "running", "succeeded", "failed"]
VersionStatus = Literal["training", "ready", "failed"]
# Where a retrain's weights start: a fresh initialisation, or the active version's weights
# (a warm start, which keeps the active version's projector shape and mode).
RetrainInit = Literal["fresh", "active"]
RETRAIN_INITS: tuple[str, ...] = get_args(RetrainInit)
FilterValue = str | int | float | bool

# Largest k + offset one search may ask for (bounds the over-fetch); the HTTP schema's limit
# and ServiceConfig.max_k's default.
MAX_K = 1000

# The device names a configuration may carry (BRIDGE_DEVICE, ServiceConfig.device,
# TrainConfig.device, --device). bridge/model/devices.py resolves them against the machine.
DEVICE_NAMES = "auto, cpu, cuda, cuda:N or mps"
_DEVICE = re.compile(r"auto|cpu|mps|cuda(?::[0-9]+)?")


def parse_device(value: str) -> str | None:
    """The canonical spelling of a device name (" CUDA:1" -> "cuda:1"), or None when `value`
    names none of DEVICE_NAMES. Whether this machine has the device is resolve_device's call."""
    name = value.strip().lower()
    return name if _DEVICE.fullmatch(name) else None


@dataclass(frozen=True)
class ServiceConfig:
    """Runtime settings of one BridgeService. app/settings.py feeds each field from the
    BRIDGE_* setting of the same name, whose default is the one written here."""

    data_dir: Path = Path("var")
    clip_model: str = "models/demo-clip"  # hub id or folder
    clap_model: str = "models/demo-clap"
    # Registered as the first bridge version when the store holds none.
    initial_bridge: Path | None = Path("models/demo-bridge")
    device: str = "auto"  # one of DEVICE_NAMES
    index_type: IndexType = "flat"
    faiss_gpu: bool = True  # used only when faiss.get_num_gpus() > 0
    # Where the vectors live: in-process FAISS files, or Milvus (bridge/index/backends.py).
    backend: BackendName = "faiss"
    # Milvus server URI (http://host:19530), or a Milvus Lite file; empty: <data_dir>/milvus.db.
    milvus_uri: str = ""
    milvus_token: str = ""  # "user:password" or an API key, for a server with auth
    milvus_db: str = ""  # Milvus database; empty: the server's default
    # Seconds one Milvus call may take (pymilvus retries within it) before the request
    # fails with BackendUnavailableError (HTTP 503).
    milvus_timeout: float = 10.0
    # The item store: empty for a SQLite file in the data directory; a postgresql:// URL for
    # a PostgreSQL database that replicas on several machines share.
    database_url: str = ""
    # Seconds a write to a SQLite store waits while another process holds its write lock
    # (SQLite retries within it) before the request fails with StoreBusyError (HTTP 503).
    store_busy_timeout: float = 10.0
    max_audio_seconds: float = 30.0
    # Seed from samples_dir/manifest.jsonl when the store is empty; None = off.
    samples_dir: Path | None = Path("models/samples")
    encode_threads: int = 2
    # Largest k + offset the engine answers; no setting feeds it, as the HTTP API's schema
    # caps requests at MAX_K itself.
    max_k: int = MAX_K
    # OpenMP threads for FAISS index builds and large query batches (0 = one per core).
    # Single-query searches always run on one thread (bridge/index/vectors.py explains why).
    faiss_threads: int = 0
    # Threads a lone query's exact scan of a big flat index may use (0 = one per core,
    # 1 = never split); bridge/index/split_scan.py.
    search_threads: int = 0
    # After an activation, the previous version's shared indexes stay live this long, so that
    # a rollback is an instant swap; then they are saved and unloaded (a rollback later
    # reloads them from disk and brings them up to date with the store). 0: unloaded at the
    # activation, so that memory holds one version's indexes, not two, after every retrain.
    keep_previous_seconds: float = 0.0

    @property
    def shares_indexes(self) -> bool:
        """Whether processes (replicas) may serve the data directory together: the vectors
        are on a Milvus server, which every replica reaches (bridge/service/replicas.py), not
        in this process (FAISS) or in a Milvus Lite file."""
        return self.backend == "milvus" and not is_milvus_lite_uri(self.milvus_uri)


def is_milvus_lite_uri(uri: str) -> bool:
    """Milvus Lite: a local ``.db`` file (or none: the data directory's) instead of an
    http(s)/tcp server address."""
    return not re.match(r"^[a-z]+://", uri)


@dataclass(frozen=True)
class Upload:
    """One uploaded media file: raw bytes plus what the client said about them."""

    data: bytes
    filename: str | None = None
    content_type: str | None = None


@dataclass(frozen=True)
class ItemRecord:
    id: str
    modality: Modality
    metadata: dict[str, Any]
    created_at: str


@dataclass(frozen=True)
class SearchQuery:
    """Exactly one of text, vector (+ space), item_id or media must be given."""

    target: Modality
    text: str | None = None
    vector: list[float] | None = None
    space: SpaceName | None = None  # required with `vector`: the space the vector lives in
    item_id: str | None = None
    media: Upload | None = None
    k: int = 10
    offset: int = 0
    min_score: float | None = None
    filters: dict[str, FilterValue] = field(default_factory=dict)  # exact match on metadata keys


@dataclass(frozen=True)
class SearchHit:
    id: str
    score: float
    modality: str
    metadata: dict[str, Any]


@dataclass(frozen=True)
class SearchResponse:
    results: list[SearchHit]
    space: SpaceName  # the space that answered
    bridge_version: str | None  # the version whose shared index answered; None for native spaces
    query_modality: str  # "text", "image", "audio" or "vector"
    timings_ms: dict[str, float]


# Most captions one retrain takes (list and file together): both text towers' embeddings of
# 1M captions are about 4 GB in float32. The HTTP schema and the engine share this limit.
MAX_CAPTIONS = 1_000_000


@dataclass(frozen=True)
class RetrainRequest:
    """A retrain job. Paths are relative to data_dir; anything resolving outside it is rejected."""

    captions: list[str] | None = None
    captions_path: str | None = None  # UTF-8 text, one caption per line (blank lines skipped)
    image_memory_path: str | None = None  # .npy (N, D_clip); None = stored images' raw embeddings
    audio_memory_path: str | None = None  # .npy (N, D_clap); None = stored audio's raw embeddings
    train_overrides: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields
    activate: bool = False  # activate automatically once the version is ready
    init: RetrainInit = "fresh"  # "active": start from the active version's weights
    # A folder under data_dir that holds only this request's uploaded inputs (the HTTP layer's
    # uploads/<id>/): removed when the job ends, as the captions are kept in the checkpoint.
    inputs_dir: str | None = None


@dataclass(frozen=True)
class JobRecord:
    id: str
    kind: str
    status: JobStatus
    progress: float  # 0..1
    message: str
    version: str | None
    metrics: dict[str, Any]
    error: str | None
    created_at: str
    updated_at: str


@dataclass(frozen=True)
class VersionRecord:
    version: str
    status: VersionStatus
    active: bool
    checkpoint_sha256: str | None
    created_at: str
    metrics: dict[str, Any]
