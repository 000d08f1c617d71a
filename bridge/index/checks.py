"""Checks of what enters an index: vectors (finite float rows, then L2-normalised), search
queries (the same, in fewer NumPy passes) and ids (unique non-negative int64).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from bridge.arrays import l2_normalize, validate_matrix
from bridge.errors import InvalidInputError

# A row whose float64 sum of squares is this close to 1 is already unit length: normalising it
# again would move each value by at most an ulp or two.
UNIT_SQUARE_TOLERANCE = 1e-5


def check_vectors(vectors: Any, name: str, dim: int | None, allow_empty: bool) -> np.ndarray:
    """The engine's matrix check (bridge/arrays.py), then L2-normalised rows. Rows that are
    unit length already (a projector's or an encoder's output) are returned as they are:
    no normalised copy, which at a build is as large as the whole index."""
    x = validate_matrix(vectors, name, dim, allow_empty=allow_empty)
    squares = np.einsum("ij,ij->i", x, x, dtype=np.float64)
    if squares.size and bool(np.all(np.abs(squares - 1.0) <= UNIT_SQUARE_TOLERANCE)):
        return x
    return l2_normalize(x, squares)


def usable_square(row: np.ndarray) -> float | None:
    """The float32 sum of squares of the float32 ``row`` when it alone shows every value
    finite and one not zero (0 < sum < inf), in one NumPy call; else None, and the caller's
    exact checks decide (NaN, Inf, float32 overflow of large finite values, underflow of tiny
    ones). The search path runs this cold, right after a scan."""
    with np.errstate(over="ignore"):  # overflow means "decide exactly", not a warning
        square = float(np.dot(row, row))
    return square if 0.0 < square < math.inf else None


def check_queries(queries: Any, dim: int) -> np.ndarray:
    """``check_vectors`` for search queries with fewer NumPy passes: a search runs right
    after the previous one streamed the index through the caches, so every pass here runs
    cold. Float64 sums of squares of float32 values are finite exactly when the values are."""
    array = np.asarray(queries)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] != dim:
        return check_vectors(array, "queries", dim, allow_empty=False)  # its error message
    if not np.issubdtype(array.dtype, np.floating):
        raise InvalidInputError(f"queries: expected float values, got dtype {array.dtype}")
    if array.dtype != np.float32:
        with np.errstate(over="ignore"):  # beyond float32's range: inf, rejected just below
            array = array.astype(np.float32)
    if array.shape[0] == 1:  # the common case, in two NumPy calls
        square = usable_square(array[0])
        if square is not None:
            return array / np.float32(math.sqrt(square))
    squares = np.einsum("ij,ij->i", array, array, dtype=np.float64)
    if not np.isfinite(squares).all():
        raise InvalidInputError("queries: contains NaN or Inf")
    # Norms and division in float64: a norm above ~1.8e19 or below ~1e-19 has a square
    # outside float32's range (rows of such vectors came out all zeros or unscaled).
    norms = np.maximum(np.sqrt(squares), np.finfo(np.float64).tiny)[:, None]
    return np.ascontiguousarray(array / norms, dtype=np.float32)


def check_ids(ids: Any, n: int | None, name: str = "ids") -> np.ndarray:
    array = np.asarray(ids)
    if array.ndim != 1:
        raise InvalidInputError(f"{name}: expected a 1-D array of ids, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise InvalidInputError(f"{name}: expected integer ids, got dtype {array.dtype}")
    array = array.astype(np.int64, copy=False)
    if n is not None and array.shape[0] != n:
        raise InvalidInputError(f"{name}: {array.shape[0]} ids for {n} vectors")
    if array.size and array.min() < 0:
        raise InvalidInputError(f"{name}: ids must be >= 0")
    if np.unique(array).shape[0] != array.shape[0]:
        raise InvalidInputError(f"{name}: ids must be unique")
    return np.ascontiguousarray(array)


def search_params_with(
    params: dict[str, Any], kind: str, ef_search: int | None, nprobe: int | None
) -> dict[str, Any]:
    """An index's search parameters with a new HNSW ``ef_search`` or IVF ``nprobe`` (each
    ignored for the kinds it does not apply to; nprobe capped at nlist)."""
    params = dict(params)
    if ef_search is not None:
        if ef_search < 1:
            raise InvalidInputError(f"ef_search must be >= 1, got {ef_search}")
        if kind == "hnsw":
            params["ef_search"] = int(ef_search)
    if nprobe is not None:
        if nprobe < 1:
            raise InvalidInputError(f"nprobe must be >= 1, got {nprobe}")
        if kind == "ivf":
            params["nprobe"] = min(int(nprobe), int(params["nlist"]))
    return params
