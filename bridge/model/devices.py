"""Device selection shared by encoders, the trainer and the service.

The device names a configuration may carry are spelled once, in bridge/types.py
(DEVICE_NAMES, parse_device), for the BRIDGE_DEVICE check, TrainConfig and resolve_device
alike; here they are resolved against what torch sees on this machine.
"""

from __future__ import annotations

from bridge.errors import InvalidInputError
from bridge.model.config import PRECISIONS
from bridge.types import DEVICE_NAMES, parse_device


def resolve_device(device: str = "auto") -> str:
    """The torch device to run on for a device name (DEVICE_NAMES, any case).

    'auto' -> 'cuda' when torch sees a GPU, else 'cpu'. It never picks 'mps': the service is
    run and measured on CUDA and CPU, so Apple-silicon users opt in with 'mps'. 'cuda',
    'cuda:N' and 'mps' fail when torch sees no such device here, as does any other name.
    """
    import torch

    name = parse_device(device)
    if name is None:
        raise InvalidInputError(f"device must be {DEVICE_NAMES}, got {device!r}")
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InvalidInputError(f"device {device!r} requested but torch sees no CUDA device")
        count = torch.cuda.device_count()
        if int(name.partition(":")[2] or 0) >= count:
            raise InvalidInputError(
                f"device {device!r} requested but torch sees {count} CUDA device(s): "
                f"cuda:0 to cuda:{count - 1}"
            )
    if name == "mps" and not torch.backends.mps.is_available():
        raise InvalidInputError(
            f"device {device!r} requested but torch sees no MPS device "
            "(Apple silicon with a torch build that has MPS)"
        )
    return name


def cpu_has_native_bf16() -> bool:
    """True on CPUs with bfloat16 instructions (AVX512-BF16 or AMX), where oneDNN runs bf16
    matrix products 2-3x faster than fp32. Elsewhere bf16 is emulated and not worth it."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:  # not Linux: be conservative
        return False
    return False


def resolve_precision(precision: str, device: str) -> str:
    """'auto' -> 'bf16' where the device computes bfloat16 natively, else 'fp32'."""
    import torch

    if precision not in PRECISIONS:
        raise InvalidInputError(f"precision must be auto, fp32 or bf16, got {precision!r}")
    if precision != "auto":
        return precision
    if device.startswith("cuda"):
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device == "mps":  # bf16 autocast on MPS depends on the torch and macOS versions
        return "fp32"
    return "bf16" if cpu_has_native_bf16() else "fp32"
