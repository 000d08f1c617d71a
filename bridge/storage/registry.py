"""The bridge registry: versions (checkpoint folder, status, sha256, metrics) and which one is
active, with the previously active one kept for rollback (``meta.active`` / ``meta.previous``).
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

from bridge.errors import ConflictError, InvalidInputError, NotFoundError
from bridge.storage.database import Database, dump_json, utc_now

_VERSION_FIELDS = ("checkpoint_dir", "status", "sha256", "metrics")
_SET_META = (
    "INSERT INTO meta (key, value) VALUES (?, ?)"
    " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)


class VersionRegistry(Database):
    """The ``versions`` table and the active pointer (part of ItemStore)."""

    @staticmethod
    def _version_dict(row: tuple[Any, ...]) -> dict[str, Any]:
        version, checkpoint_dir, status, sha256, metrics, created_at, updated_at = row
        return {
            "version": version,
            "checkpoint_dir": checkpoint_dir,
            "status": status,
            "sha256": sha256,
            "metrics": json.loads(metrics),
            "created_at": created_at,
            "updated_at": updated_at,
        }

    _VERSION_COLUMNS = "version, checkpoint_dir, status, sha256, metrics, created_at, updated_at"

    def add_version(
        self,
        version: str,
        checkpoint_dir: str,
        status: str,
        sha256: str | None,
        metrics: dict[str, Any],
    ) -> None:
        """Record a bridge version; ConflictError if the name exists."""
        metrics_json = dump_json(metrics, "version metrics")
        now = utc_now()
        with self._write() as conn:
            try:
                conn.execute(
                    f"INSERT INTO versions ({self._VERSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (version, str(checkpoint_dir), status, sha256, metrics_json, now, now),
                )
            except self.dialect.integrity_errors as exc:
                raise ConflictError(f"bridge version {version!r} already exists") from exc

    def update_version(self, version: str, **fields: Any) -> None:
        """Update checkpoint_dir, status, sha256 or metrics (NotFoundError, InvalidInputError)."""
        unknown = set(fields) - set(_VERSION_FIELDS)
        if unknown:
            raise InvalidInputError(
                f"unknown version field(s) {sorted(unknown)}; allowed: {list(_VERSION_FIELDS)}"
            )
        if not fields:
            return
        values = {
            k: (dump_json(v, "version metrics") if k == "metrics" else v) for k, v in fields.items()
        }
        self._update_row("versions", "version", version, values, f"no bridge version {version!r}")

    def list_versions(self) -> list[dict[str, Any]]:
        """Every version, oldest first, each with an ``active`` flag."""
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {self._VERSION_COLUMNS} FROM versions ORDER BY created_at, rowid"
            ).fetchall()
            active = conn.execute("SELECT value FROM meta WHERE key='active'").fetchone()
        out = [self._version_dict(r) for r in rows]
        for entry in out:
            entry["active"] = active is not None and entry["version"] == active[0]
        return out

    def get_version(self, version: str) -> dict[str, Any]:
        """One version as a dict; NotFoundError if unknown."""
        missing = f"no bridge version {version!r}"
        row = self._select_one("versions", self._VERSION_COLUMNS, "version", version, missing)
        return self._version_dict(row)

    def get_active(self) -> tuple[str | None, str | None]:
        """(active version, previous version); None where unset."""
        with self._read() as conn:
            rows = dict(
                conn.execute(
                    "SELECT key, value FROM meta WHERE key IN ('active', 'previous')"
                ).fetchall()
            )
        return rows.get("active"), rows.get("previous")

    def set_active(self, version: str, allowed_statuses: Collection[str] | None = None) -> None:
        """Make ``version`` active and the old active one ``previous``, in one transaction.

        NotFoundError for an unknown version; ConflictError when ``allowed_statuses`` is given and
        the version's status is not in it. Activating the active version changes nothing.
        """
        with self._write() as conn:
            row = conn.execute("SELECT status FROM versions WHERE version=?", (version,)).fetchone()
            if row is None:
                raise NotFoundError(f"no bridge version {version!r}")
            if allowed_statuses is not None and row[0] not in allowed_statuses:
                raise ConflictError(
                    f"bridge version {version!r} is {row[0]!r}; only a version that is "
                    f"{sorted(allowed_statuses)} can be activated"
                )
            current = conn.execute("SELECT value FROM meta WHERE key='active'").fetchone()
            if current is not None and current[0] == version:
                return
            if current is not None:
                conn.execute(_SET_META, ("previous", current[0]))
            conn.execute(_SET_META, ("active", version))
