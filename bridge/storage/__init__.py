"""The data directory: its layout, the item store, blobs, bridge registry and jobs table."""
