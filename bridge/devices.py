"""Device selection shared by encoders and the trainer."""

from __future__ import annotations

from bridge.errors import InvalidInputError


def resolve_device(device: str = "auto") -> str:
    """'auto' -> 'cuda' when torch sees a GPU, else 'cpu'. Explicit 'cuda' without a GPU fails."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidInputError(f"device {device!r} requested but torch sees no CUDA device")
    if device != "cpu" and not device.startswith("cuda"):
        raise InvalidInputError(f"device must be auto, cpu or cuda[:N], got {device!r}")
    return device
