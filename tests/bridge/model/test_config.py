"""Configuration helpers: one flat dict of overrides split between the two configs."""

from __future__ import annotations

import pytest

from bridge.errors import InvalidInputError
from bridge.model.config import ProjectorConfig, TrainConfig, with_overrides


def test_with_overrides_sends_each_field_to_its_config() -> None:
    train, projector = with_overrides(
        TrainConfig(epochs=3), ProjectorConfig(hidden_dim=64), {"loss": "cwcl", "mode": "exmcr"}
    )
    assert (train.loss, train.epochs) == ("cwcl", 3)
    assert (projector.mode, projector.hidden_dim) == ("exmcr", 64)
    with pytest.raises(InvalidInputError, match="unknown configuration field"):
        with_overrides(TrainConfig(), ProjectorConfig(), {"epoch": 3})
