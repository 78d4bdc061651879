"""The fast-path planner shared by the compiled backends (numba, cuda).

Given a checked :class:`~gpuconv._plan.ConvolutionPlan`, :func:`choose_strategy`
decides *how* to compute it; it never changes *what* is computed:

- **exact integer accumulation** when the kernel and the image are integers
  (bit-identical to OpenCV), in int32 when no sum can overflow it, else int64
  (float64 if even int64 could overflow: an astronomic constant border);
- **float64 instead of float32 sums** for a float kernel with an integer
  output when float32 rounding could turn more than about 0.1% of pixels to
  the other grey level (16-bit images, big or unnormalised kernels);
- **separable** (a column pass and a row pass) when the kernel has rank 1,
  detected from the numbers themselves, not from a kernel's name; integer
  kernels are split into integer factors so the exact path stays exact;
- **zero taps skipped** only for integer images: with a float image a zero tap
  still turns a NaN or inf pixel into NaN (IEEE), as the reference does.

The NumPy reference does not use it: the oracle stays the plain formula.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._plan import ConvolutionPlan

# A separable pass costs kh + kw taps per pixel against kh * kw, plus a pass
# over an intermediate; below this many taps the direct loop is as fast.
_MIN_TAPS_FOR_SEPARABLE = 9


@dataclass(frozen=True)
class Strategy:
    """How a compiled backend should run a plan.

    Attributes
    ----------
    separable : bool
        Run ``column`` down the rows, then ``row`` along the columns;
        ``numpy.outer(column, row)`` equals ``plan.kernel``.
    column, row : numpy.ndarray or None
        float64 factors of lengths kh and kw (integer-valued when ``integer``).
    integer : bool
        Accumulate exactly in integers of ``accumulator``.
    accumulator : numpy.dtype
        int32 or int64 when ``integer``; else float32 or float64.
    skip_zero_taps : bool
        Zero taps may be left out (integer images only).
    """

    separable: bool
    column: np.ndarray | None
    row: np.ndarray | None
    integer: bool
    accumulator: np.dtype
    skip_zero_taps: bool


def separable_factors(kernel: np.ndarray, integer: bool = False):
    """Return ``(column, row)`` with ``outer(column, row) == kernel``, or None.

    For an integer kernel the factors are integers (the row divided by the gcd
    of its entries), so the product is exact. For a float kernel the product
    must match to within 1e-14 of the largest tap.
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    magnitude = np.abs(kernel).max()
    if magnitude == 0:
        return None
    pivot_row = int(np.argmax(np.abs(kernel).sum(axis=1)))
    row = kernel[pivot_row].copy()
    if integer:
        divisor = math.gcd(*(int(v) for v in row)) or 1
        row /= divisor
    pivot_col = int(np.argmax(np.abs(row)))
    column = kernel[:, pivot_col] / row[pivot_col]
    if integer:
        if not np.array_equal(column, np.round(column)):
            return None
        if not np.array_equal(np.outer(column, row), kernel):
            return None
    elif np.abs(np.outer(column, row) - kernel).max() > 1e-14 * magnitude:
        return None
    return column, row


# Integer sums must stay inside int64 (with headroom); past this, float64.
_LARGEST_INTEGER_SUM = 2.0**62
# Float32 sums of a float kernel with an integer output may round a result to the
# other grey level with about this probability per pixel before float64 sums are
# used instead (the contract allows 1% of pixels one level off).
_FLOAT32_ERROR_LIMIT = 1e-3


def _largest_magnitude(plan: ConvolutionPlan) -> float:
    """The largest |pixel| a sum can see: the type's range, or the constant border."""
    if plan.input_dtype.kind == "f":
        return float("inf")
    info = np.iinfo(plan.input_dtype)
    return float(max(abs(int(info.min)), int(info.max), abs(plan.border_value)))


def _float32_typical_error(plan: ConvolutionPlan) -> float:
    """Typical float32 rounding error of one output, in grey levels.

    ``sqrt(taps) * 2**-24 * sum|k| * largest pixel``: a random walk of one
    half-ulp rounding per tap on the scale of the largest partial sum.
    """
    tap_sum = float(np.abs(plan.kernel).sum())
    if tap_sum == 0.0:
        return 0.0  # an all-zero kernel sums exactly (and 0 * inf would be NaN)
    return np.sqrt(plan.kernel.size) * 2.0**-24 * tap_sum * _largest_magnitude(plan)


def choose_strategy(plan: ConvolutionPlan, allow_separable: bool = True) -> Strategy:
    """Decide how to compute ``plan`` (see the module docstring)."""
    kernel = plan.kernel
    integer_image = plan.input_dtype.kind in "ui"
    # A non-integer constant border value makes integer sums inexact.
    integer = plan.exact_integer and plan.border_value == round(plan.border_value)
    factors = None
    if allow_separable and kernel.size >= _MIN_TAPS_FOR_SEPARABLE and min(kernel.shape) > 1:
        factors = separable_factors(kernel, integer=plan.integer_kernel)
    accumulator = plan.accumulate_dtype
    if integer:
        if factors is not None:
            column, row = factors
            tap_sum = float(np.abs(column).sum() * np.abs(row).sum())
        else:
            tap_sum = float(np.abs(kernel).sum())
        bound = tap_sum * _largest_magnitude(plan)
        if bound >= _LARGEST_INTEGER_SUM:  # an astronomic constant border
            integer, accumulator = False, np.dtype(np.float64)
        else:
            accumulator = np.dtype(np.int32) if bound < 2**31 else np.dtype(np.int64)
    elif (
        accumulator == np.float32
        and plan.output_dtype.kind in "ui"
        and _float32_typical_error(plan) >= _FLOAT32_ERROR_LIMIT
    ):
        # 16-bit sums, big or unnormalised kernels, float images rounded to integers:
        # float32 could round too many pixels to the other grey level.
        accumulator = np.dtype(np.float64)
    return Strategy(
        separable=factors is not None,
        column=None if factors is None else factors[0],
        row=None if factors is None else factors[1],
        integer=integer,
        accumulator=np.dtype(accumulator),
        skip_zero_taps=integer_image,
    )
