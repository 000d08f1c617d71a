"""Device and precision resolution (bridge/model/devices.py) on the machine the tests run on."""

from __future__ import annotations

import pytest
import torch

from bridge.errors import InvalidInputError
from bridge.model import devices
from bridge.model.config import TrainConfig
from bridge.types import DEVICE_NAMES

HAS_CUDA = torch.cuda.is_available()
HAS_MPS = torch.backends.mps.is_available()


def test_cpu_and_auto_resolve_in_any_spelling() -> None:
    assert devices.resolve_device("cpu") == devices.resolve_device(" CPU ") == "cpu"
    assert devices.resolve_device("auto") == ("cuda" if HAS_CUDA else "cpu")
    assert devices.resolve_device() == devices.resolve_device("AUTO")


@pytest.mark.skipif(HAS_MPS, reason="this machine has an MPS device")
def test_auto_never_picks_mps_and_mps_without_one_says_so() -> None:
    assert devices.resolve_device("auto") != "mps"
    with pytest.raises(InvalidInputError, match="'mps' requested but torch sees no MPS device"):
        devices.resolve_device("mps")


@pytest.mark.skipif(not HAS_MPS, reason="no MPS device (Apple silicon) here")
def test_mps_resolves_where_torch_has_it() -> None:
    assert devices.resolve_device("MPS") == "mps"
    assert devices.resolve_device("auto") == ("cuda" if HAS_CUDA else "cpu")


def test_mps_is_taken_when_torch_reports_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The branch the skipped test above runs on a Mac, here with torch's MPS probe answering
    yes (no Apple GPU on this machine)."""
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert devices.resolve_device(" mps") == "mps"
    assert devices.resolve_device("auto") == ("cuda" if HAS_CUDA else "cpu")


@pytest.mark.skipif(HAS_CUDA, reason="this machine has a CUDA device")
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "CUDA:1"])
def test_cuda_without_a_gpu_says_so(name: str) -> None:
    with pytest.raises(InvalidInputError, match="torch sees no CUDA device"):
        devices.resolve_device(name)


@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device here")
def test_cuda_resolves_up_to_the_last_gpu() -> None:
    count = torch.cuda.device_count()
    assert devices.resolve_device("CUDA") == "cuda"
    assert devices.resolve_device(f"cuda:{count - 1}") == f"cuda:{count - 1}"
    with pytest.raises(InvalidInputError, match=f"torch sees {count} CUDA device"):
        devices.resolve_device(f"cuda:{count}")


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "cudax", "mps:0", ""])
def test_names_of_no_device_are_refused_with_the_list(name: str) -> None:
    with pytest.raises(InvalidInputError, match=f"device must be {DEVICE_NAMES}"):
        devices.resolve_device(name)


def test_train_config_takes_the_same_device_names() -> None:
    """A service on mps passes its device to the retrain's TrainConfig, which took only
    auto, cpu and cuda."""
    for name in ("auto", "cpu", "cuda", "cuda:2", "mps", "MPS"):
        assert TrainConfig(device=name).device == name
    with pytest.raises(InvalidInputError, match=f"device must be {DEVICE_NAMES}, got 'gpu'"):
        TrainConfig(device="gpu")


def test_precision_auto_resolves_per_device(monkeypatch: pytest.MonkeyPatch) -> None:
    assert devices.resolve_precision("fp32", "cpu") == "fp32"
    assert devices.resolve_precision("bf16", "cpu") == "bf16"
    assert devices.resolve_precision("bf16", "mps") == "bf16"
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: True)
    assert devices.resolve_precision("auto", "cpu") == "bf16"
    assert devices.resolve_precision("auto", "mps") == "fp32"
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: False)
    assert devices.resolve_precision("auto", "cpu") == "fp32"
    with pytest.raises(InvalidInputError, match="precision"):
        devices.resolve_precision("fp8", "cpu")
    with pytest.raises(InvalidInputError, match="precision"):
        TrainConfig(precision="half")  # type: ignore[arg-type]
