"""Vector indexes: FAISS index, manifest, locks, threading, coalescing, split scans (no torch)."""
