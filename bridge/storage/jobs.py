"""The jobs table: background jobs (kind, status, progress, params, result), kept across
restarts; a job a crash interrupted is marked failed on the next start.

One job runs at a time across every process that shares the store (replicas): a queued or
running job whose ``updated_at`` is younger than ``JOB_LEASE_SECONDS`` holds the lease, and
its runner touches the row every ``JOB_HEARTBEAT_SECONDS`` (bridge/service/jobs.py). A job
whose row stopped being touched lost its process: ``fail_interrupted_jobs`` fails it.
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from bridge.errors import ConflictError, InvalidInputError
from bridge.storage.database import Database, dump_json, utc_now
from bridge.storage.dialects import Connection

logger = logging.getLogger(__name__)

JOB_ACTIVE_STATUSES = ("queued", "running")
JOB_HEARTBEAT_SECONDS = 2.0
JOB_LEASE_SECONDS = 15.0


def _utc_ago(seconds: float) -> str:
    """utc_now()'s format, ``seconds`` ago (ISO strings of one format compare as times)."""
    return (datetime.now(UTC) - timedelta(seconds=seconds)).isoformat(timespec="milliseconds")


# A queued or running job (its statuses are the statement's first parameters).
_ACTIVE = "status IN (" + ",".join("?" * len(JOB_ACTIVE_STATUSES)) + ")"


def _lease_holder(conn: Connection) -> str | None:
    """The id of the job that holds the lease (its heartbeat is fresh), if one does."""
    row = conn.execute(
        f"SELECT id FROM jobs WHERE {_ACTIVE} AND updated_at > ? LIMIT 1",
        (*JOB_ACTIVE_STATUSES, _utc_ago(JOB_LEASE_SECONDS)),
    ).fetchone()
    return None if row is None else str(row[0])


_JOB_FIELDS = ("status", "progress", "message", "result", "error", "params")


class JobTable(Database):
    """The ``jobs`` table (part of ItemStore)."""

    @staticmethod
    def _job_dict(row: tuple[Any, ...]) -> dict[str, Any]:
        (job_id, kind, status, progress, message, params, result, error, created, updated) = row
        return {
            "id": job_id,
            "kind": kind,
            "status": status,
            "progress": float(progress),
            "message": message,
            "params": json.loads(params),
            "result": None if result is None else json.loads(result),
            "error": error,
            "created_at": created,
            "updated_at": updated,
        }

    _JOB_COLUMNS = (
        "id, kind, status, progress, message, params, result, error, created_at, updated_at"
    )

    def create_job(self, kind: str, params: dict[str, Any]) -> dict[str, Any]:
        """A new job in status "queued" with progress 0; returns it as a dict. ConflictError
        while another job holds the lease (module docstring)."""
        params_json = dump_json(params, "job params")
        job_id = uuid.uuid4().hex
        now = utc_now()
        with self._write() as conn:
            holder = _lease_holder(conn)
            if holder is not None:
                raise ConflictError(
                    f"job {holder} is already running (one at a time); poll it and retry "
                    "when it ends"
                )
            conn.execute(
                f"INSERT INTO jobs ({self._JOB_COLUMNS}) VALUES (?, ?, 'queued', 0, '', ?, NULL,"
                " NULL, ?, ?)",
                (job_id, kind, params_json, now, now),
            )
        return self.get_job(job_id)

    def update_job(self, job_id: str, **fields: Any) -> None:
        """Update some of status, progress, message, result (JSON), error, params (JSON)."""
        unknown = set(fields) - set(_JOB_FIELDS)
        if unknown:
            raise InvalidInputError(
                f"unknown job field(s) {sorted(unknown)}; allowed: {list(_JOB_FIELDS)}"
            )
        if "progress" in fields and not (
            isinstance(fields["progress"], int | float) and math.isfinite(fields["progress"])
        ):
            raise InvalidInputError(f"job progress must be a number, got {fields['progress']!r}")
        values = {
            k: (dump_json(v, f"job {k}") if k in ("result", "params") and v is not None else v)
            for k, v in fields.items()
        }
        self._update_row("jobs", "id", job_id, values, f"no job with id {job_id!r}")

    def get_job(self, job_id: str) -> dict[str, Any]:
        """One job as a dict; NotFoundError if unknown."""
        missing = f"no job with id {job_id!r}"
        row = self._select_one("jobs", self._JOB_COLUMNS, "id", job_id, missing)
        return self._job_dict(row)

    def list_jobs(self, limit: int = 100) -> list[dict[str, Any]]:
        """The most recent jobs, newest first."""
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {self._JOB_COLUMNS} FROM jobs ORDER BY created_at DESC, rowid DESC"
                " LIMIT ?",
                (int(limit),),
            ).fetchall()
        return [self._job_dict(r) for r in rows]

    def touch_job(self, job_id: str) -> None:
        """The runner's heartbeat: the job's process is alive (module docstring)."""
        with self._write() as conn:
            conn.execute("UPDATE jobs SET updated_at=? WHERE id=?", (utc_now(), job_id))

    def stale_jobs(self) -> list[dict[str, Any]]:
        """Queued or running jobs whose heartbeat stopped (their process died)."""
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {self._JOB_COLUMNS} FROM jobs WHERE {_ACTIVE}"
                " AND updated_at < ? ORDER BY created_at",
                (*JOB_ACTIVE_STATUSES, _utc_ago(JOB_LEASE_SECONDS)),
            ).fetchall()
        return [self._job_dict(r) for r in rows]

    def claim_stale_job(self, job_id: str, message: str) -> bool:
        """Take over a job whose heartbeat stopped: renew its lease with `message`; False
        when it is not stale any more (another replica claimed it first, or it ended)."""
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE jobs SET status='queued', message=?, progress=0, updated_at=?"
                f" WHERE id=? AND {_ACTIVE} AND updated_at < ?",
                (message, utc_now(), job_id, *JOB_ACTIVE_STATUSES, _utc_ago(JOB_LEASE_SECONDS)),
            )
            return int(cursor.rowcount) == 1

    def live_job(self) -> str | None:
        """The id of the job that holds the lease, if one does."""
        with self._read() as conn:
            return _lease_holder(conn)

    def fail_interrupted_jobs(self, stale_only: bool = False) -> int:
        """Jobs a crash left queued/running become "failed"; returns how many. On a lone
        process's start every one of them; with ``stale_only`` (replicas) only those whose
        heartbeat stopped."""
        cutoff = _utc_ago(JOB_LEASE_SECONDS) if stale_only else "9999"
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE jobs SET status='failed', error=?, message=?, updated_at=?"
                f" WHERE {_ACTIVE} AND updated_at < ?",
                (
                    "interrupted: the service stopped before the job finished",
                    "interrupted",
                    utc_now(),
                    *JOB_ACTIVE_STATUSES,
                    cutoff,
                ),
            )
            count = int(cursor.rowcount)
        if count:
            logger.warning("marked %d interrupted job(s) as failed", count)
        return count
