"""The data directory: its layout, the item store (SQLite), blobs, bridge registry, jobs."""
