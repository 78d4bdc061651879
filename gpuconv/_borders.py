"""Where a source index outside the image reads from, for every border mode.

One vectorised function used by the NumPy reference, the Dask halo code and
the tests. The patterns repeat for indices any distance outside the image
(kernels larger than the image), exactly as scipy.ndimage extends a line.
"""

from __future__ import annotations

import numpy as np

from ._plan import Border


def source_indices(positions, size: int, border: Border) -> np.ndarray:
    """Map positions (any integers) along an axis of length ``size`` into ``[0, size)``.

    Returns an int64 array; for ``Border.CONSTANT`` positions outside the
    image map to ``-1`` (read the constant instead).

    Examples
    --------
    >>> source_indices(range(-3, 11), 8, Border.REFLECT101).tolist()
    [3, 2, 1, 0, 1, 2, 3, 4, 5, 6, 7, 6, 5, 4]
    """
    positions = np.asarray(positions, dtype=np.int64)
    if border == Border.CONSTANT:
        return np.where((positions >= 0) & (positions < size), positions, -1)
    if border == Border.REPLICATE:
        return np.clip(positions, 0, size - 1)
    if border == Border.WRAP:
        return np.mod(positions, size)
    if border == Border.REFLECT:  # fedcba|abcdefgh|hgfedcb, period 2n
        folded = np.mod(positions, 2 * size)
        return np.where(folded >= size, 2 * size - 1 - folded, folded)
    if border == Border.REFLECT101:  # gfedcb|abcdefgh|gfedcba, period 2n - 2
        if size == 1:
            return np.zeros_like(positions)
        period = 2 * size - 2
        folded = np.mod(positions, period)
        return np.where(folded >= size, period - folded, folded)
    raise AssertionError(f"unhandled border {border!r}")
