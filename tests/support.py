"""Helpers the test modules import: the oracle and the contract's accuracy rule."""

from __future__ import annotations

import numpy as np

import gpuconv


def reference(image, kernel, **options):
    """The oracle: the NumPy backend (itself checked against scipy and OpenCV)."""
    return gpuconv.convolve(image, kernel, backend="numpy", **options)


def assert_contract_accuracy(actual, expected, *, exact: bool = False):
    """Assert the accuracy the contract promises against the float64 reference.

    ``exact``: integer kernel on an integer image, must be bit-identical.
    Otherwise integer outputs may differ by one grey level on under 1% of
    pixels; float16 outputs by 1e-3, float32 outputs by 1e-5 and float64 by
    1e-12 of the output's magnitude.
    """
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    if exact:
        np.testing.assert_array_equal(actual, expected)
        return
    if actual.dtype.kind in "ui":
        difference = np.abs(actual.astype(np.int64) - expected.astype(np.int64))
        assert difference.max(initial=0) <= 1, f"max difference {difference.max()} > 1 level"
        identical = float((difference == 0).mean())
        assert identical > 0.99, f"only {identical:.4%} of pixels identical"
        return
    finite = np.isfinite(expected)
    np.testing.assert_array_equal(np.isfinite(actual), finite)
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    magnitude = float(np.abs(expected[finite]).max(initial=0.0)) or 1.0
    relative = {np.dtype(np.float16): 1e-3, np.dtype(np.float32): 1e-5}.get(actual.dtype, 1e-12)
    tolerance = relative * magnitude
    error = float(np.abs(actual[finite].astype(np.float64) - expected[finite]).max(initial=0.0))
    assert error <= tolerance, f"error {error:.3g} > {tolerance:.3g} ({actual.dtype})"


def saturate(values, dtype) -> np.ndarray:
    """OpenCV's ``saturate_cast`` written out for the oracles: float64 sums to ``dtype``.

    Integer types: round half to even, clamp to the type's range, NaN to 0. Float types:
    a plain cast.
    """
    values = np.asarray(values, dtype=np.float64)
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return values.astype(dtype)
    info = np.iinfo(dtype)
    clamped = np.clip(np.rint(values), info.min, info.max)
    return np.where(np.isnan(values), 0.0, clamped).astype(dtype)
