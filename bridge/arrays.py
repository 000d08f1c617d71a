"""Reading, validating and atomically writing the .npy files that join the pipeline stages.

Format: float32 (N, D) arrays, one row per item or caption, any norm on input.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from bridge.errors import InvalidInputError, NotFoundError


def validate_matrix(
    array: np.ndarray, name: str, dim: int | None = None, *, allow_empty: bool = False
) -> np.ndarray:
    """Check that `array` is a finite float (N, D) matrix with D > 0 (and N > 0 unless
    `allow_empty`); return it as C-contiguous float32. The one matrix check of the engine:
    .npy stages, projectors, evaluation and index builds all use it. Finiteness is checked
    after the float32 conversion, so float64 values beyond float32's range are refused."""
    array = np.asarray(array)
    if array.ndim != 2:
        raise InvalidInputError(f"{name}: expected a 2-D array (N, D), got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.floating):
        raise InvalidInputError(f"{name}: expected float values, got dtype {array.dtype}")
    if array.shape[0] == 0 and not allow_empty:
        raise InvalidInputError(f"{name}: the array has no rows")
    if array.shape[1] == 0:
        raise InvalidInputError(f"{name}: vectors have dimension 0 (shape {array.shape})")
    if dim is not None and array.shape[1] != dim:
        raise InvalidInputError(
            f"{name}: expected dimension {dim}, got {array.shape[1]} (shape {array.shape})"
        )
    if array.dtype != np.float32:
        with np.errstate(over="ignore"):  # out of float32's range: inf, refused just below
            array = array.astype(np.float32)
    finite = np.isfinite(array)
    if not finite.all():
        bad = int((~finite).any(axis=1).sum())
        raise InvalidInputError(f"{name}: {bad} row(s) contain NaN or Inf")
    return np.ascontiguousarray(array)


def load_npy(path: str | Path, name: str | None = None) -> np.ndarray:
    """Load any .npy file without pickles; NotFoundError / InvalidInputError name the file."""
    path = Path(path)
    label = name or str(path)
    if not path.is_file():
        raise NotFoundError(f"{label}: file not found: {path}")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise InvalidInputError(f"{label}: not a readable .npy file ({exc})") from exc


def load_matrix(path: str | Path, name: str | None = None, dim: int | None = None) -> np.ndarray:
    """Load and validate a float (N, D) .npy file."""
    label = name or str(path)
    array = load_npy(path, label)
    if array.dtype != np.float32 and np.issubdtype(array.dtype, np.floating):
        # float64/float16 are accepted and converted; ints and objects are not.
        array = array.astype(np.float32)
    return validate_matrix(array, label, dim)


def l2_normalize(array: np.ndarray, squares: np.ndarray | None = None) -> np.ndarray:
    """Row-wise L2 normalisation of a (N, D) float array into a new float32 array; all-zero
    rows stay zero. ``squares``: the rows' float64 sums of squares, when the caller has them.

    Norms and division run in float64: in float32 a row of values around 1e20 has a square
    that overflows (the row came out all zeros) and one around 1e-25 a square that underflows
    (the row came out unscaled). NumPy's ufunc buffering keeps the float64 work in small
    blocks, so memory stays at the float32 output (no float64 copy of the array).
    """
    if squares is None:
        squares = np.einsum("ij,ij->i", array, array, dtype=np.float64)
    norms = np.maximum(np.sqrt(squares), np.finfo(np.float64).tiny)[:, None]
    out = np.empty(array.shape, dtype=np.float32)
    np.divide(array, norms, out=out, casting="unsafe")
    return out


def atomic_save_npy(path: str | Path, array: np.ndarray) -> None:
    """Write `array` to `path` through a temp file + rename, so no partial file is ever visible."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.save(handle, array, allow_pickle=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
