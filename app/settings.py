"""Runtime settings of the HTTP service, read from BRIDGE_* environment variables.

Validated once at start (pydantic-settings) with messages that name the variable and what
was expected. Relative paths are relative to the current directory. `Settings` builds the
engine's `ServiceConfig`; nothing else in app/ reads the environment.

A setting that configures the engine has the name of its ServiceConfig field and takes its
default from there; `service_config()` copies every such field by name, and ENGINE_ONLY names
the ServiceConfig fields that no setting feeds.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import re
from pathlib import Path
from typing import Annotated, Literal, cast

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bridge.memory import DEFAULT_ARENAS
from bridge.types import DEVICE_NAMES, BackendName, IndexType, ServiceConfig, parse_device

logger = logging.getLogger(__name__)

ENV_PREFIX = "BRIDGE_"
MB = 1_000_000
# Room for multipart boundaries, headers and small form fields (metadata, k, filters...)
# on top of the file bytes themselves.
FORM_OVERHEAD_BYTES = 1_048_576
LogLevel = Literal["critical", "error", "warning", "info", "debug"]

# ServiceConfig's defaults are the engine settings' defaults.
_ENGINE = ServiceConfig()
# ServiceConfig fields that no setting feeds, and why.
ENGINE_ONLY: dict[str, str] = {
    "max_k": "the HTTP schema caps k + offset at MAX_K (bridge/types.py) itself",
}


def fed_fields() -> list[str]:
    """The ServiceConfig fields a setting of the same name feeds."""
    return [f.name for f in dataclasses.fields(ServiceConfig) if f.name not in ENGINE_ONLY]


# scheme://host[:port], as a browser sends it in the Origin header.
_ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(:\d{1,5})?|https?://\[[0-9A-Fa-f:]+\](:\d{1,5})?")


class Settings(BaseSettings):
    """Every BRIDGE_* variable the service reads; defaults suit `make serve` on a laptop.

    Engine settings take their defaults from ServiceConfig (the module docstring says how).
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, case_sensitive=False, extra="ignore", frozen=True
    )

    host: str = Field(default="127.0.0.1", description="Address to bind (loopback by default).")
    port: Annotated[int, Field(ge=1, le=65535)] = 8000
    data_dir: Path = Field(
        default=_ENGINE.data_dir, description="Store, raw embeddings, indexes, versions."
    )
    clip_model: str = Field(default=_ENGINE.clip_model, description="CLIP hub id or HF folder.")
    clap_model: str = Field(
        default=_ENGINE.clap_model, description="CLAP hub id, HF folder or laion-clap .pt file."
    )
    # Read from the environment by the encoder loader itself (bridge/encode/laion_clap.py),
    # so that the server and every `mbridge` command see the same value; listed here so that
    # --help and the settings table name it.
    clap_tokenizer: str | None = Field(
        default=None,
        description="RoBERTa tokenizer (hub id or folder) for a laion-clap .pt CLAP model; "
        "unset: FacebookAI/roberta-base.",
    )
    initial_bridge: Path | None = Field(
        default=_ENGINE.initial_bridge,
        description="Checkpoint registered as the first version; empty or 'none' = none.",
    )
    device: str = Field(default=_ENGINE.device, description=f"{DEVICE_NAMES}.")
    index_type: IndexType = _ENGINE.index_type
    faiss_gpu: bool = _ENGINE.faiss_gpu
    backend: BackendName = Field(
        default=_ENGINE.backend, description="Vector backend: faiss (in-process) or milvus."
    )
    milvus_uri: str = Field(
        default=_ENGINE.milvus_uri,
        description="Milvus server (http://host:19530) or Milvus Lite file; "
        "empty: <data_dir>/milvus.db.",
    )
    milvus_token: SecretStr | None = Field(
        default=None, description="Milvus token (user:password or API key)."
    )
    milvus_db: str = Field(default=_ENGINE.milvus_db, description="Milvus database name.")
    milvus_timeout: Annotated[float, Field(gt=0, le=600)] = Field(
        default=_ENGINE.milvus_timeout,
        description="Seconds a Milvus call may take before the request answers 503.",
    )
    database_url: SecretStr | None = Field(
        default=None,
        description="Item store on PostgreSQL (postgresql://user:password@host:5432/db), "
        "shared by replicas on several machines; unset: SQLite in the data dir.",
    )
    store_busy_timeout: Annotated[float, Field(gt=0, le=600)] = Field(
        default=_ENGINE.store_busy_timeout,
        description="Seconds a write waits for another process's lock on the SQLite store "
        "before the request answers 503.",
    )
    admin_key: SecretStr | None = Field(default=None, description="Bearer key for /v1/admin/*.")
    api_key: SecretStr | None = Field(
        default=None, description="Bearer key for item and search endpoints; unset = open."
    )
    max_upload_bytes: Annotated[int, Field(gt=0)] = 20 * MB
    max_batch: Annotated[int, Field(ge=1, le=10_000)] = 32
    max_pending: int = Field(
        default=64,
        ge=1,
        le=100_000,
        description="Search and ingest requests in the server at once (per process); past "
        "it, 503 with Retry-After at once instead of a growing wait (app/admission.py).",
    )
    max_queue_ms: float = Field(
        default=250.0,
        ge=0,
        description="Longest estimated wait for the engine a new search or ingest request "
        "may face (per process; 0: no bound): past it, 503 with Retry-After at once.",
    )
    max_request_bytes: Annotated[int, Field(gt=0)] = 200 * MB
    max_admin_upload_bytes: Annotated[int, Field(gt=0)] = 1_000 * MB
    max_audio_seconds: Annotated[float, Field(gt=0)] = _ENGINE.max_audio_seconds
    seed_samples: bool = True
    # ServiceConfig folds seed_samples into samples_dir (None: off); its default is on.
    samples_dir: Path = cast(Path, _ENGINE.samples_dir)
    encode_threads: Annotated[int, Field(ge=1, le=256)] = _ENGINE.encode_threads
    faiss_threads: Annotated[int, Field(ge=0, le=1024)] = Field(
        default=_ENGINE.faiss_threads,
        description="OpenMP threads for FAISS builds and big query batches (0: one per core).",
    )
    search_threads: Annotated[int, Field(ge=0, le=256)] = Field(
        default=_ENGINE.search_threads,
        description="Threads one query's exact scan of a big flat index may use (0: one per core).",
    )
    inline_searches: bool = Field(
        default=True,
        description="Run a lone vector or stored-item search on the event loop (app/batcher.py).",
    )
    log_level: LogLevel = "info"
    cors_origins: str = Field(
        default="",
        description="Browser origins allowed to call the API from their pages (CORS), "
        "comma-separated, e.g. https://app.example.com; empty: none (the search page is "
        "served from the API's own origin and needs none).",
    )
    malloc_arenas: int = Field(
        default=DEFAULT_ARENAS,
        ge=0,
        le=1024,
        description="malloc arenas per server process (glibc; 0: the C library's default, "
        "8 per core). Fewer arenas keep RSS following what the server holds (bridge/memory.py); "
        "MALLOC_ARENA_MAX, when set, wins.",
    )
    keep_previous_seconds: Annotated[float, Field(ge=0)] = Field(
        default=_ENGINE.keep_previous_seconds,
        description="Seconds the previously active bridge version's shared indexes stay in "
        "memory after an activation, for an instant rollback; later, a rollback reloads them "
        "from disk.",
    )
    workers: int = Field(
        default=1,
        description=(
            "Server processes. Above 1 only with the indexes on a Milvus server "
            "(BRIDGE_BACKEND=milvus, BRIDGE_MILVUS_URI=http://...): they serve as replicas."
        ),
    )

    @field_validator("initial_bridge", mode="before")
    @classmethod
    def _none_words(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() in ("", "none", "null", "off"):
            return None
        return value

    @field_validator("admin_key", "api_key", "database_url", mode="before")
    @classmethod
    def _empty_key_is_unset(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_level(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        device = parse_device(value)  # the list resolve_device knows (bridge/types.py)
        if device is None:
            raise ValueError(f"expected {DEVICE_NAMES}, got {value!r}")
        return device

    @field_validator("host")
    @classmethod
    def _check_host(cls, value: str) -> str:
        v = value.strip()
        if not v or any(c.isspace() for c in v):
            raise ValueError(f"expected an IP address or host name, got {value!r}")
        return v

    @field_validator("cors_origins")
    @classmethod
    def _check_origins(cls, value: str) -> str:
        origins = [o.strip().rstrip("/") for o in value.split(",") if o.strip()]
        bad = [o for o in origins if o != "*" and not _ORIGIN.fullmatch(o)]
        if bad:
            raise ValueError(
                f"expected origins such as https://app.example.com or *, comma-separated; "
                f"not origins: {bad}"
            )
        return ",".join(origins)

    @property
    def cors_origin_list(self) -> list[str]:
        """BRIDGE_CORS_ORIGINS as a list (empty: CORS closed)."""
        return [o for o in self.cors_origins.split(",") if o]

    @field_validator("workers")
    @classmethod
    def _positive_workers(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"must be at least 1, got {value}")
        return value

    @model_validator(mode="after")
    def _workers_need_shared_indexes(self) -> Settings:
        if self.workers > 1 and not self.service_config().shares_indexes:
            raise ValueError(
                f"BRIDGE_WORKERS={self.workers} needs the indexes on a Milvus server "
                "(BRIDGE_BACKEND=milvus and BRIDGE_MILVUS_URI=http://host:19530): FAISS and "
                "Milvus Lite keep them in one process"
            )
        return self

    def service_config(self) -> ServiceConfig:
        """The engine's configuration: each ServiceConfig field from the setting of the same
        name (samples_dir only while seed_samples is on), ENGINE_ONLY fields at their defaults."""
        fed = {name: getattr(self, name) for name in fed_fields()}
        if not self.seed_samples:
            fed["samples_dir"] = None
        for secret in ("milvus_token", "database_url"):  # plain strings for the engine
            value = getattr(self, secret)
            fed[secret] = value.get_secret_value() if value is not None else ""
        return ServiceConfig(**fed)

    @property
    def upload_body_limit(self) -> int:
        """Cap on a single-upload request body (one file plus its form fields)."""
        return self.max_upload_bytes + FORM_OVERHEAD_BYTES

    @property
    def batch_body_limit(self) -> int:
        """Cap on a batch request body (several files or queries)."""
        return self.max_request_bytes + FORM_OVERHEAD_BYTES

    @property
    def admin_body_limit(self) -> int:
        """Cap on an admin upload (captions file and memory .npy files together)."""
        return self.max_admin_upload_bytes + FORM_OVERHEAD_BYTES


def is_loopback_host(host: str) -> bool:
    """True when `host` only accepts connections from this machine.

    "localhost" and loopback addresses (127.0.0.0/8, ::1) are loopback; wildcard addresses
    (0.0.0.0, ::), other addresses and any other host name count as reachable from outside.
    """
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def bind_refusal(settings: Settings) -> str | None:
    """Why the server must not start with these settings, or None when it may.

    A server reachable from other machines must protect its admin endpoints (retrain,
    activate, rollback), so a non-loopback host requires BRIDGE_ADMIN_KEY.
    """
    if not is_loopback_host(settings.host) and settings.admin_key is None:
        return (
            f"refusing to start: BRIDGE_HOST={settings.host} is reachable from other machines "
            "but BRIDGE_ADMIN_KEY is not set. Set BRIDGE_ADMIN_KEY to a long random secret "
            "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`), "
            "or bind to 127.0.0.1."
        )
    return None


def format_validation_error(error: ValidationError) -> str:
    """One line per bad variable: `BRIDGE_PORT: Input should be ... (got '70000')`."""
    lines = []
    for item in error.errors():
        name = ENV_PREFIX + ".".join(str(p) for p in item["loc"]).upper() if item["loc"] else ""
        got = item.get("input")
        secret = name.endswith(("_KEY", "_TOKEN", "_DATABASE_URL"))
        shown = "" if secret or isinstance(got, dict) or got is None else f" (got {str(got)!r})"
        lines.append(f"{name}: {item['msg']}{shown}" if name else item["msg"])
    return "invalid settings:\n  " + "\n  ".join(lines)


def load_settings() -> Settings:
    """Read the environment; raises pydantic.ValidationError on bad values."""
    return Settings()
