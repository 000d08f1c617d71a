"""Vector indexes: FAISS index, on-disk format, locks, threading, coalescing, split scans.

No torch: the index layer sees only float32 vectors and int64 ids (tests/test_layers.py).
"""
