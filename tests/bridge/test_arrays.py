from __future__ import annotations

import numpy as np
import pytest

from bridge.arrays import l2_normalize


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
