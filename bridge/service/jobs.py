"""Background jobs: a one-at-a-time runner, and the retrain pipeline it runs.

Policy: one job at a time. Starting a job while another is queued or running raises
ConflictError (HTTP 409) instead of queueing: a retrain re-projects every stored item and
builds new indexes, so two at once only compete for the same cores, and a client that wants a
second one can poll the first job and retry. Job records live in the item store, so their
status survives a restart; a job a crash interrupted is marked failed on the next start
(ItemStore.fail_interrupted_jobs).

Retrain (architecture.md, "Retrain"):
  captions -> both text towers -> train_bridge(progress -> job progress)
  -> checkpoint under data_dir/versions/<version>/checkpoint
  -> re-project every stored raw embedding -> shared indexes of the new version
  -> evaluate -> version "ready" (-> activated when asked).
The memories default to the stored items' raw embeddings (CLIP image / CLAP audio): the
retrain adapts the bridge to the user's own collection without paired data. When the store
holds no item of a modality and no memory file is given, that memory is None and train_bridge
lets the caption embeddings of the same space stand in (recorded in the report). Any failure
marks the job and the version failed with the message and removes the half-built version
folder; only a "ready" version can ever become active.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, get_args, get_origin, get_type_hints

import numpy as np

from bridge.errors import BridgeError, ConflictError, InvalidInputError, NotFoundError
from bridge.io import atomic_write_text
from bridge.model.config import MIN_TRAIN_CAPTIONS, ProjectorConfig, TrainConfig
from bridge.model.devices import resolve_device
from bridge.telemetry import JOBS, JOBS_RUNNING, StageTimer
from bridge.types import JobRecord, RetrainRequest

logger = logging.getLogger(__name__)

MAX_CAPTIONS = 2_000_000
CAPTIONS_FILE = "captions.txt"  # a version's training corpus, one caption per line
# data_dir/UPLOADS_DIR/<id>/: a multipart retrain's files, for as long as its job runs.
UPLOADS_DIR = "uploads"
EVAL_HOLDOUT_MIN_CAPTIONS = 40  # below this every caption trains and evaluation is in-sample
EVAL_HOLDOUT_FRACTION = 0.1
LABEL_EVAL_MAX_QUERIES = 500
LABEL_EVAL_MAX_GALLERY = 5000


class JobCancelledError(BridgeError):
    """Raised inside a job when the service is closing."""


class JobStore(Protocol):
    def create_job(self, kind: str, params: dict[str, Any]) -> dict[str, Any]: ...
    def update_job(self, job_id: str, **fields: Any) -> None: ...
    def get_job(self, job_id: str) -> dict[str, Any]: ...


def job_record(row: dict[str, Any]) -> JobRecord:
    """A store job row -> JobRecord. The version is in params; metrics in result."""
    result = row.get("result") or {}
    params = row.get("params") or {}
    return JobRecord(
        id=row["id"],
        kind=row["kind"],
        status=row["status"],
        progress=float(row["progress"]),
        message=row["message"],
        version=result.get("version", params.get("version")),
        metrics=dict(result.get("metrics") or {}),
        error=row.get("error"),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


@dataclass
class JobContext:
    """Handed to a running job: report progress, see whether the service is closing."""

    job_id: str
    store: JobStore
    cancelled: threading.Event
    min_interval_s: float = 0.25
    _last_write: float = 0.0

    def progress(self, fraction: float, message: str, force: bool = False) -> None:
        """Record progress (0..1) and a message; raises JobCancelledError when closing.

        Writes are throttled to one per `min_interval_s` (a training loop may call this
        every epoch), except with `force`.
        """
        if self.cancelled.is_set():
            raise JobCancelledError("the service is shutting down; job cancelled")
        now = time.monotonic()
        if force or now - self._last_write >= self.min_interval_s:
            self._last_write = now
            fraction = min(1.0, max(0.0, float(fraction)))
            self.store.update_job(self.job_id, status="running", progress=fraction, message=message)


JobWork = Callable[[JobContext], dict[str, Any]]


class JobRunner:
    """Runs at most one background job at a time in a daemon thread (module docstring)."""

    def __init__(self, store: JobStore) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._cancelled = threading.Event()

    def busy(self) -> bool:
        with self._lock:
            return self._thread is not None and self._thread.is_alive()

    def submit(
        self,
        kind: str,
        params: dict[str, Any],
        work: JobWork,
        on_failure: Callable[[BaseException], None] | None = None,
    ) -> JobRecord:
        """Create the job record and start `work` in a thread; ConflictError when busy.

        `work` returns the job result ({"version": ..., "metrics": ...}); an exception marks
        the job failed with its message, after `on_failure` had a chance to clean up.
        """
        with self._lock:
            if self._cancelled.is_set():
                raise ConflictError("the service is shutting down; no new jobs")
            if self._thread is not None and self._thread.is_alive():
                raise ConflictError(
                    "a job is already running (one at a time); poll it and retry when it ends"
                )
            row = self._store.create_job(kind, params)
            ctx = JobContext(row["id"], self._store, self._cancelled)
            self._thread = threading.Thread(
                target=self._run,
                args=(kind, ctx, work, on_failure),
                name=f"job-{kind}-{row['id'][:8]}",
                daemon=True,
            )
            self._thread.start()
        return job_record(row)

    def _run(
        self,
        kind: str,
        ctx: JobContext,
        work: JobWork,
        on_failure: Callable[[BaseException], None] | None,
    ) -> None:
        JOBS_RUNNING.inc()
        try:
            self._store.update_job(ctx.job_id, status="running", message="started")
            result = work(ctx)
        except BaseException as exc:  # the thread must record every failure
            logger.exception("job %s (%s) failed", ctx.job_id, kind)
            message = str(exc) or type(exc).__name__
            if not isinstance(exc, BridgeError):
                message = f"{type(exc).__name__}: {message}"
            if on_failure is not None:
                try:
                    on_failure(exc)
                except Exception:  # cleanup must not hide the original failure
                    logger.exception("cleanup after job %s failed", ctx.job_id)
            self._finish(ctx.job_id, kind, status="failed", message="failed", error=message)
        else:
            self._finish(
                ctx.job_id, kind, status="succeeded", message="done", progress=1.0, result=result
            )
        finally:
            JOBS_RUNNING.dec()

    def _finish(self, job_id: str, kind: str, **fields: Any) -> None:
        JOBS.labels(kind=kind, status=fields["status"]).inc()
        try:
            self._store.update_job(job_id, **fields)
        except Exception:  # e.g. the store closed under us during shutdown
            logger.exception("could not record the end of job %s", job_id)

    def get(self, job_id: str) -> JobRecord:
        return job_record(self._store.get_job(job_id))

    def close(self, timeout_s: float = 30.0) -> None:
        """Ask a running job to stop (at its next progress report) and wait for it."""
        with self._lock:
            self._cancelled.set()
            thread = self._thread
        if thread is not None and thread.is_alive():
            thread.join(timeout_s)
            if thread.is_alive():
                logger.warning("job thread %s still running after %.0f s", thread.name, timeout_s)


# -- retrain: validation (synchronous, so bad requests fail with 4xx before a job exists) ----


# The service's own storage under the data directory, never read as a retrain input: opening
# and closing the SQLite file from another handle drops the process's POSIX locks on it, after
# which an outside reader may delete the WAL with acknowledged writes in it.
RESERVED_STORE_FILE = "store.sqlite"  # and its -wal, -shm and -journal files
RESERVED_DIRS = ("blobs", "native", "versions")
RESERVED_DATA_PATHS = (RESERVED_STORE_FILE, *RESERVED_DIRS)


def _reserved(relative: Path) -> bool:
    first = relative.parts[0] if relative.parts else ""
    return first in RESERVED_DIRS or first.startswith(RESERVED_STORE_FILE)


def resolve_data_path(data_dir: Path, relative: str, what: str) -> Path:
    """`relative` under data_dir; absolute paths, anything resolving outside it (`..`,
    symlinks) and the service's own files (RESERVED_DATA_PATHS) raise InvalidInputError; a
    missing file raises NotFoundError."""
    if not isinstance(relative, str) or not relative.strip():
        raise InvalidInputError(f"{what}: expected a path relative to the data directory")
    if "\x00" in relative:
        raise InvalidInputError(f"{what}: the path contains a NUL byte")
    if Path(relative).is_absolute():
        raise InvalidInputError(
            f"{what}: absolute paths are not accepted; give a path relative to the data directory"
        )
    root = data_dir.resolve()
    try:
        path = (root / relative).resolve()
        is_file = path.is_file()
    except OSError as exc:  # a name too long for the file system, say
        raise InvalidInputError(f"{what}: not a usable path ({exc.strerror or exc})") from exc
    if not path.is_relative_to(root):
        raise InvalidInputError(f"{what}: {relative!r} resolves outside the data directory")
    if _reserved(path.relative_to(root)):
        raise InvalidInputError(
            f"{what}: {relative!r} is the service's own storage "
            f"({', '.join(RESERVED_DATA_PATHS)}); put input files elsewhere under the data "
            "directory, e.g. corpus/"
        )
    if not is_file:
        raise NotFoundError(f"{what}: no file {relative!r} under the data directory")
    return path


def read_captions(path: Path) -> list[str]:
    """UTF-8 text, one caption per line; blank lines are skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"captions file {path.name} is not UTF-8 text ({exc})") from exc
    return [line.strip() for line in text.splitlines() if line.strip()]


_PROJECTOR_KEYS = ("hidden_dim", "shared_dim", "num_layers")
_TRAIN_KEYS = tuple(f.name for f in dataclasses.fields(TrainConfig))


@functools.cache
def _override_types() -> dict[str, Any]:
    return {**get_type_hints(TrainConfig), **get_type_hints(ProjectorConfig)}


def _check_override_type(key: str, value: Any) -> None:
    """InvalidInputError unless ``value`` has the type of the TrainConfig/ProjectorConfig
    field ``key`` (JSON gives no types of its own: epochs 1.5 or a string hidden_dim used to
    pass here and fail inside the job, after the 202)."""
    expected = _override_types()[key]
    if get_origin(expected) is Literal:
        if value not in get_args(expected):
            raise InvalidInputError(
                f"train_overrides.{key} must be one of {list(get_args(expected))}, got {value!r}"
            )
        return
    kinds = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    ok = {
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, int | float) and not isinstance(value, bool),
        bool: isinstance(value, bool),
        str: isinstance(value, str),
    }.get(expected, True)  # other fields (`extra`) are checked by the config itself
    if not ok:
        raise InvalidInputError(f"train_overrides.{key} must be {kinds[expected]}, got {value!r}")


def split_overrides(
    overrides: dict[str, Any], base_projector: ProjectorConfig | None, device: str
) -> tuple[TrainConfig, ProjectorConfig | None]:
    """TrainConfig from the TrainConfig fields of `overrides`; hidden_dim/shared_dim/num_layers
    go to the projector (which otherwise copies the active bridge's shape)."""
    if not isinstance(overrides, dict):
        raise InvalidInputError("train_overrides must be a JSON object")
    unknown = sorted(set(overrides) - set(_TRAIN_KEYS) - set(_PROJECTOR_KEYS))
    if unknown:
        raise InvalidInputError(
            f"unknown train_overrides key(s) {unknown}; allowed: "
            f"{sorted(set(_TRAIN_KEYS) | set(_PROJECTOR_KEYS))}"
        )
    for key, value in overrides.items():
        _check_override_type(key, value)
    if "device" in overrides:  # a device this machine lacks failed only inside the job
        resolve_device(overrides["device"])
    train_kwargs: dict[str, Any] = {"device": device, "progress": False}
    train_kwargs.update({k: v for k, v in overrides.items() if k in _TRAIN_KEYS})
    try:
        config = TrainConfig(**train_kwargs)
        projector = base_projector
        shape = {k: v for k, v in overrides.items() if k in _PROJECTOR_KEYS}
        if shape:
            base = base_projector or ProjectorConfig()
            projector = dataclasses.replace(base, **shape)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"invalid train_overrides: {exc}") from exc
    return config, projector


@dataclass(frozen=True)
class RetrainPlan:
    """A validated retrain request."""

    version: str
    captions: list[str]
    image_memory_path: Path | None
    audio_memory_path: Path | None
    train_config: TrainConfig
    projector: ProjectorConfig | None
    activate: bool
    params: dict[str, Any] = field(default_factory=dict)  # what the job record shows
    inputs_dir: Path | None = None  # removed when the job ends (RetrainRequest.inputs_dir)


def check_memory_header(path: Path, what: str, dim: int | None) -> None:
    """InvalidInputError unless ``path`` is a .npy file of a float (N >= 1, dim) array whose
    data is all there: read from the header and a memory map, not the data (memories can be
    hundreds of MB; the job checks the values). A wrong width or a truncated file used to
    pass with a 202 and fail inside the job."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:  # not .npy, a pickle, or fewer bytes than declared
        raise InvalidInputError(f"{what}: not a readable .npy array ({exc})") from exc
    shape, dtype = array.shape, array.dtype
    del array  # close the map
    if len(shape) != 2 or shape[0] == 0 or dtype.kind != "f":
        raise InvalidInputError(
            f"{what}: expected a 2-D float array (N, D) with N >= 1, got {dtype} {shape}"
        )
    if dim is not None and shape[1] != dim:
        raise InvalidInputError(
            f"{what}: rows have {shape[1]} values, the encoder's embeddings {dim}"
        )


def plan_retrain(
    request: RetrainRequest,
    data_dir: Path,
    version: str,
    base_projector: ProjectorConfig | None,
    device: str,
    memory_dims: tuple[int, int] | None = None,
) -> RetrainPlan:
    """Validate a request: captions (list and/or file, at least MIN_TRAIN_CAPTIONS), memory
    paths, overrides."""
    captions: list[str] = []
    if request.captions is not None:
        if not isinstance(request.captions, list) or not all(
            isinstance(c, str) for c in request.captions
        ):
            raise InvalidInputError("captions must be a list of strings")
        captions += [c.strip() for c in request.captions if c.strip()]
    if request.captions_path is not None:
        captions += read_captions(resolve_data_path(data_dir, request.captions_path, "captions"))
    if request.captions is None and request.captions_path is None:
        raise InvalidInputError("a retrain needs captions: give `captions` or `captions_path`")
    if len(captions) < MIN_TRAIN_CAPTIONS:
        raise InvalidInputError(
            f"a retrain needs at least {MIN_TRAIN_CAPTIONS} non-blank captions, got {len(captions)}"
        )
    if len(captions) > MAX_CAPTIONS:
        raise InvalidInputError(f"at most {MAX_CAPTIONS} captions, got {len(captions)}")
    image_path = audio_path = None
    clip_dim, clap_dim = memory_dims or (None, None)
    if request.image_memory_path is not None:
        image_path = resolve_data_path(data_dir, request.image_memory_path, "image memory")
        check_memory_header(image_path, "image memory", clip_dim)
    if request.audio_memory_path is not None:
        audio_path = resolve_data_path(data_dir, request.audio_memory_path, "audio memory")
        check_memory_header(audio_path, "audio memory", clap_dim)
    config, projector = split_overrides(request.train_overrides, base_projector, device)
    params = {
        "version": version,
        "captions": len(captions),
        "captions_path": request.captions_path,
        "image_memory_path": request.image_memory_path,
        "audio_memory_path": request.audio_memory_path,
        "train_overrides": request.train_overrides,
        "activate": request.activate,
    }
    inputs_dir = None
    if request.inputs_dir is not None:
        inputs_dir = (data_dir / request.inputs_dir).resolve()
        if not inputs_dir.is_relative_to((data_dir / UPLOADS_DIR).resolve()):
            raise InvalidInputError("inputs_dir must be a folder under the data dir's uploads/")
    return RetrainPlan(
        version,
        captions,
        image_path,
        audio_path,
        config,
        projector,
        request.activate,
        params,
        inputs_dir,
    )


# -- retrain: the pipeline -----------------------------------------------------------------


class RetrainEnv(Protocol):
    """What the retrain pipeline needs from the service (BridgeService implements it)."""

    data_dir: Path

    def encode_captions(self, captions: list[str]) -> tuple[np.ndarray, np.ndarray]: ...
    def stored_memory(self, modality: str) -> np.ndarray | None: ...
    def memory_dims(self) -> tuple[int, int]: ...
    def encoder_ids(self) -> dict[str, str]: ...
    def checkpoint_dir(self, version: str) -> Path: ...
    def install_version(self, version: str, checkpoint_dir: Path, ctx: JobContext) -> Any: ...
    def evaluate_version(
        self, checkpoint: Any, held_out: tuple[np.ndarray, np.ndarray]
    ) -> dict[str, Any]: ...  # noqa: E501
    def mark_ready(self, version: str, sha256: str, metrics: dict[str, Any]) -> None: ...
    def activate(self, version: str) -> Any: ...


def _load_memory(path: Path | None, dim: int, what: str) -> np.ndarray | None:
    from bridge.arrays import load_matrix

    return None if path is None else load_matrix(path, what, dim)


def holdout_split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) caption indices: 10% (at least 4) held out from N >= 40 captions;
    with fewer, everything trains and the evaluation reuses all captions (in-sample)."""
    order = np.random.default_rng(seed + 7919).permutation(n)
    if n < EVAL_HOLDOUT_MIN_CAPTIONS:
        return order, order
    n_eval = max(4, int(round(n * EVAL_HOLDOUT_FRACTION)))
    return order[n_eval:], order[:n_eval]


def run_retrain(ctx: JobContext, plan: RetrainPlan, env: RetrainEnv) -> dict[str, Any]:
    """The retrain job body (module docstring). Returns {"version", "metrics"}."""
    from bridge.model.trainer import train_bridge

    timer = StageTimer()
    ctx.progress(0.01, "encoding captions", force=True)
    with timer.stage("encode"):
        clip_text, clap_text = env.encode_captions(plan.captions)
    clip_dim, clap_dim = env.memory_dims()
    image_memory = _load_memory(plan.image_memory_path, clip_dim, "image memory")
    audio_memory = _load_memory(plan.audio_memory_path, clap_dim, "audio memory")
    memory_source = {
        "image": "file" if image_memory is not None else "store",
        "audio": "file" if audio_memory is not None else "store",
    }
    if image_memory is None:
        image_memory = env.stored_memory("image")
    if audio_memory is None:
        audio_memory = env.stored_memory("audio")
    for modality, memory in (("image", image_memory), ("audio", audio_memory)):
        if memory is None:
            memory_source[modality] = "captions (no stored items)"
    train_idx, eval_idx = holdout_split(len(plan.captions), plan.train_config.seed)
    ctx.progress(0.05, "training", force=True)

    def on_epoch(fraction: float, message: str) -> None:
        ctx.progress(0.05 + 0.75 * fraction, message)

    checkpoint_dir = env.checkpoint_dir(plan.version)
    with timer.stage("train"):
        result = train_bridge(
            clip_text[train_idx],
            clap_text[train_idx],
            image_memory=image_memory,
            audio_memory=audio_memory,
            config=plan.train_config,
            projector=plan.projector,
            out_dir=checkpoint_dir,
            progress_callback=on_epoch,
            encoders=env.encoder_ids(),
        )
    # The corpus stays with the version (an uploaded captions file is removed with the job).
    lines = (" ".join(caption.splitlines()) for caption in plan.captions)
    atomic_write_text(checkpoint_dir / CAPTIONS_FILE, "\n".join(lines) + "\n")
    ctx.progress(0.8, "re-projecting stored items", force=True)
    with timer.stage("reproject"):
        checkpoint = env.install_version(plan.version, checkpoint_dir, ctx)
    ctx.progress(0.95, "evaluating", force=True)
    with timer.stage("evaluate"):
        metrics = env.evaluate_version(checkpoint, (clip_text[eval_idx], clap_text[eval_idx]))
    metrics["train"] = {
        "final": result.report.get("final", {}),
        "data": result.report.get("data", {}),
        "wall_seconds": result.report.get("wall_seconds"),
    }
    metrics["memory_source"] = memory_source
    metrics["held_out_captions"] = int(len(eval_idx)) if len(eval_idx) < len(plan.captions) else 0
    metrics["timings_s"] = {k: v / 1000.0 for k, v in timer.timings_ms.items()}
    env.mark_ready(plan.version, checkpoint.sha256, metrics)
    if plan.activate:
        ctx.progress(0.99, "activating", force=True)
        env.activate(plan.version)
    return {"version": plan.version, "metrics": metrics}


def remove_version_dir(path: Path) -> None:
    """Remove a failed version's folder (checkpoint and partial indexes)."""
    shutil.rmtree(path, ignore_errors=True)
