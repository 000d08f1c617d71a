from __future__ import annotations

import numpy as np
import pytest

from bridge.errors import InvalidInputError
from bridge.service.search import check_vector

DIMS = (8, 6)  # (clip, clap)


@pytest.mark.parametrize("scale", [1.0, 1e25, 1e-25])  # float32 squares overflow / underflow
def test_check_vector_gives_a_float32_row_at_any_usable_scale(scale: float) -> None:
    vector = check_vector([scale] * 6, "clap", None, DIMS)
    assert vector.dtype == np.float32 and vector.shape == (1, 6)
    np.testing.assert_allclose(vector[0], np.float32(scale), rtol=1e-6)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ([1.0] * 7, "must have 8 numbers"),
        ([0.0] * 8, "all zeros"),
        ([float("nan")] + [1.0] * 7, "NaN or infinite"),
        ([1e39] + [1.0] * 7, "beyond float32"),
    ],
)
def test_check_vector_rejects_bad_vectors(values: list[float], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        check_vector(values, "clip", None, DIMS)
