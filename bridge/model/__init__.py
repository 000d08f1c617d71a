"""The ML core: projectors, losses, memory retrieval, trainer, evaluation.

Torch only: no FAISS, no SQLite, no HTTP framework (tests/test_layers.py keeps it so).
"""
