"""Cheaper exact or near-exact forms of a large kernel: low-rank terms and runs.

Three decompositions the cost model (:mod:`gpuconv._costmodel`) weighs against the
direct loop and the FFT:

- :func:`float_terms`: ``kernel ~= sum_k outer(column_k, row_k)`` from the SVD, truncated
  at the smallest rank whose reconstruction error is below a tolerance relative to the
  kernel's scale (``sum |kernel - reconstruction| <= tolerance * sum |kernel|``), so the
  output error it adds is below the accumulator's own rounding (see :func:`tolerance_for`);
- :func:`integer_terms`: the same with integer factors whose product is the kernel exactly
  (for the exact integer path), or None;
- :func:`kernel_runs`: each kernel row as runs of equal non-zero taps. A run of length
  ``n`` costs two taps over the row's prefix sums instead of ``n``: a disk, a box, any
  binary or few-valued kernel. Exact on integer images only (prefix sums of floats
  cancel, and would carry a NaN along the whole row).

Pure NumPy; nothing here touches pixels.
"""

from __future__ import annotations

import functools
import math

import numpy as np

# Relative kernel error a float low-rank form may add: below the rounding of one float32
# (or float64) sum over the kernel, so it is invisible under the contract's tolerances.
_FLOAT32_TERMS_TOLERANCE = 1e-7
_FLOAT64_TERMS_TOLERANCE = 1e-14


def tolerance_for(accumulator) -> float:
    """Relative kernel error allowed for low-rank terms summed in ``accumulator``."""
    if np.dtype(accumulator) == np.float64:
        return _FLOAT64_TERMS_TOLERANCE
    return _FLOAT32_TERMS_TOLERANCE


def float_terms(kernel: np.ndarray, tolerance: float, max_rank: int | None = None):
    """:func:`_float_terms`, remembered per kernel (plans of kernels over 4096 taps are not
    cached, and an SVD of a 65 x 65 kernel costs milliseconds while BLAS threads wake)."""
    kernel = np.ascontiguousarray(kernel, dtype=np.float64)
    found = _float_terms_cached(kernel.tobytes(), kernel.shape, tolerance, max_rank)
    return None if found is None else (found[0].copy(), found[1].copy())


@functools.lru_cache(maxsize=64)
def _float_terms_cached(data: bytes, shape, tolerance, max_rank):
    return _float_terms(np.frombuffer(data).reshape(shape), tolerance, max_rank)


def _float_terms(kernel: np.ndarray, tolerance: float, max_rank: int | None = None):
    """Return ``(columns, rows)`` of shapes ``(r, kh)`` and ``(r, kw)``, or None.

    ``sum_k outer(columns[k], rows[k])`` differs from ``kernel`` by at most
    ``tolerance * sum|kernel|`` in the sum of absolute differences; ``r`` is the smallest
    rank that does so, and at most ``max_rank`` (None: no limit but the kernel's size).
    None for an all-zero kernel or when no rank up to ``max_rank`` is close enough.
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    scale = float(np.abs(kernel).sum())
    if scale == 0.0:
        return None
    left, singular, right = np.linalg.svd(kernel, full_matrices=False)
    limit = singular.size if max_rank is None else min(max_rank, singular.size)
    approximation = np.zeros_like(kernel)
    for rank in range(1, limit + 1):
        approximation += singular[rank - 1] * np.outer(left[:, rank - 1], right[rank - 1])
        if np.abs(kernel - approximation).sum() <= tolerance * scale:
            columns = (left[:, :rank] * singular[:rank]).T.copy()
            rows = right[:rank].copy()
            return columns, rows
    return None


def integer_terms(kernel: np.ndarray, max_rank: int | None = None):
    """Integer ``(columns, rows)`` whose products sum to ``kernel`` exactly, or None.

    The rows are linearly independent rows of the kernel (chosen greedily), each divided
    by the gcd of its entries, and the columns their integer coefficients; None when a
    coefficient is not an integer, when the rank exceeds ``max_rank``, or for an all-zero
    kernel. ``kernel`` must hold integers.
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    if not np.any(kernel):
        return None
    basis: list[np.ndarray] = []
    for line in kernel:
        if not np.any(line):
            continue
        candidate = np.array([*basis, line])
        if np.linalg.matrix_rank(candidate) > len(basis):
            divisor = math.gcd(*(int(v) for v in line)) or 1
            basis.append(line / divisor)
            if max_rank is not None and len(basis) > max_rank:
                return None
    rows = np.array(basis)
    # Coefficients of every kernel row in the basis rows (least squares, then checked).
    solution, *_ = np.linalg.lstsq(rows.T, kernel.T, rcond=None)
    columns = np.round(solution)  # (r, kh)
    if not np.allclose(solution, columns, rtol=0, atol=1e-9):
        return None
    if not np.array_equal(columns.T @ rows, kernel):
        return None
    return columns, rows


def kernel_runs(kernel: np.ndarray):
    """The kernel's runs of equal non-zero taps along each row.

    Returns ``(rows, starts, stops, values)``: int64 arrays and float64 values, one entry
    per run, ``kernel[rows[n], starts[n]:stops[n]] == values[n]``; every non-zero tap is
    in exactly one run.
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    rows, starts, stops, values = [], [], [], []
    for i, line in enumerate(kernel):
        j = 0
        width = line.size
        while j < width:
            if line[j] == 0.0:
                j += 1
                continue
            stop = j + 1
            while stop < width and line[stop] == line[j]:
                stop += 1
            rows.append(i)
            starts.append(j)
            stops.append(stop)
            values.append(line[j])
            j = stop
    return (
        np.asarray(rows, dtype=np.int64),
        np.asarray(starts, dtype=np.int64),
        np.asarray(stops, dtype=np.int64),
        np.asarray(values, dtype=np.float64),
    )


def terms_amplification(columns: np.ndarray, rows: np.ndarray, kernel: np.ndarray) -> float:
    """``sum_k |column_k|_1 |row_k|_1 / |kernel|_1``: how much larger the terms' partial
    sums can be than the direct sum's, hence their rounding error (1 for rank 1)."""
    scale = float(np.abs(kernel).sum())
    if scale == 0.0:
        return 1.0
    total = float((np.abs(columns).sum(axis=1) * np.abs(rows).sum(axis=1)).sum())
    return total / scale
