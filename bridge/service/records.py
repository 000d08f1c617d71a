"""Store rows -> the public records the facade returns (bridge/types.py).

The reserved content reference (bridge/blobs.CONTENT_KEY) never leaves the service.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bridge.errors import NotFoundError
from bridge.storage.blobs import CONTENT_KEY
from bridge.types import ItemRecord, VersionRecord

if TYPE_CHECKING:
    from bridge.storage.items import StoredItem


def check_item_id(item_id: str) -> str:
    """The id itself, or NotFoundError for anything that cannot be an item id."""
    if not isinstance(item_id, str) or not item_id or len(item_id) > 128:
        raise NotFoundError(f"no item with id {item_id!r}")
    return item_id


def public_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    if CONTENT_KEY not in metadata:
        return metadata
    return {k: v for k, v in metadata.items() if k != CONTENT_KEY}


def item_record(item: StoredItem) -> ItemRecord:
    return ItemRecord(
        id=item.id,
        modality=item.modality,  # type: ignore[arg-type]
        metadata=public_metadata(item.metadata),
        created_at=item.created_at,
    )


def version_record(row: dict[str, Any], active: str | None) -> VersionRecord:
    return VersionRecord(
        version=row["version"],
        status=row["status"],
        active=row["version"] == active,
        checkpoint_sha256=row.get("sha256"),
        created_at=row["created_at"],
        metrics=dict(row.get("metrics") or {}),
    )
