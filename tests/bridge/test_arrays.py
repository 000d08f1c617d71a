from __future__ import annotations

import numpy as np
import pytest

from bridge.arrays import l2_normalize, validate_matrix
from bridge.errors import InvalidInputError


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_l2_normalize_gives_unit_float32_rows(dtype: type) -> None:
    rows = np.random.default_rng(0).normal(size=(5, 8)).astype(dtype)
    out = l2_normalize(rows)
    assert out.dtype == np.float32 and out.shape == rows.shape
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-6)


def test_l2_normalize_keeps_zero_rows_zero_and_scales_extreme_ones() -> None:
    rows = np.ones((4, 8), dtype=np.float32)
    rows[0] = 0.0
    rows[1] *= 1e20  # float32 square overflows
    rows[2] *= 1e-30  # float32 square underflows
    rows[3] = 1e-40  # subnormal float32 values
    out = l2_normalize(rows)
    assert not out[0].any()
    np.testing.assert_allclose(out[1:], np.full((3, 8), 1 / np.sqrt(8)), rtol=1e-6)


def test_validate_matrix_is_the_one_check_index_builds_use_too() -> None:
    """float64 values beyond float32's range were finite to the check and inf after the cast
    (validate_matrix), and the index had a second check of its own; now one check refuses
    them everywhere."""
    from bridge.index.vectors import VectorIndex

    huge = np.full((2, 4), 1e300)
    with pytest.raises(InvalidInputError, match="2 row\\(s\\) contain NaN or Inf"):
        validate_matrix(huge, "m")
    with pytest.raises(InvalidInputError, match="contain NaN or Inf"):
        VectorIndex.build("t", np.arange(2), huge, fingerprint="f", use_gpu=False)
    assert validate_matrix(np.zeros((0, 3)), "m", allow_empty=True).shape == (0, 3)
    with pytest.raises(InvalidInputError, match="dimension 0"):
        validate_matrix(np.zeros((2, 0)), "m")
