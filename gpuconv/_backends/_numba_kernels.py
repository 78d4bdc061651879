"""The compiled loops of the Numba backend (imported only when numba is used).

The functions here are plain Python until :func:`compiled` hands them to
``numba.njit`` with one explicit signature per ``(input dtype, accumulator
dtype, output dtype)``. Explicit signatures with an ``"A"``-layout, read-only,
possibly unaligned image type mean a C-contiguous array, a strided view and a
read-only array all run the same machine code: one compile per dtype triple,
not one per memory layout, which keeps a cold-cache test run short.

How a band of output rows is computed, without a padded copy of the image:

1. the ``kh - 1 + band`` source rows the band reads are converted, one at a
   time, into *lines* of the accumulator dtype, each ``W + kw - 1`` pixels
   wide; the interior is a straight copy, and only the ``kw - 1`` border
   pixels of a line go through the border rule (the precomputed
   ``col_index`` table); a row outside the image is found through
   ``row_index`` (``-1``: the constant row);
2. every output row is then a branch-free sum of shifted lines (the direct
   path: one vectorised multiply-add per non-skipped tap) or a column pass
   over the lines followed by a row pass (the separable path);
3. the sums are written out: rounded half to even and saturated (NaN to 0)
   for integer outputs, cast for float outputs.

Memory besides input and output: per worker thread, one band of lines.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

# Pixels of one output row summed per block: the accumulator block (and the
# part of each line it reads) stays in the L1 cache while every tap passes.
_BLOCK = 2048

# How an output row is written (``store_mode``).
STORE_CAST = 0  # float output: a plain cast
STORE_CLAMP = 1  # integer sums to an integer output: saturate
STORE_ROUND = 2  # float sums to an integer output: NaN -> 0, rint, saturate

# "contract" lets LLVM fuse multiply-adds (one rounding instead of two); no
# other fast-math flag, so NaN and inf behave as IEEE says.
_JIT_OPTIONS = dict(nogil=True, cache=True, fastmath={"contract"}, error_model="numpy")


@numba.njit(**_JIT_OPTIONS)
def _load_line(image, source_row, col_index, anchor_x, constant, line):
    """Fill ``line`` with source row ``source_row`` widened by the horizontal border."""
    width = image.shape[1]
    channels = image.shape[2]
    padded_width = line.shape[0] // channels
    if source_row < 0:  # a row of the constant border
        for k in range(line.shape[0]):
            line[k] = constant
        return
    base = anchor_x * channels
    # Views indexed from 0 let LLVM prove indices non-negative, drop numba's
    # negative-index wraparound and vectorise (about 9x faster).
    for c in range(channels):
        source = image[source_row, :, c]
        target = line[base + c : base + c + width * channels : channels]
        for x in range(width):
            target[x] = source[x]
    # Only these kw - 1 pixels use the border rule; they copy interior pixels
    # of the line already converted (col_index[p] is an in-image column).
    for p in range(padded_width):
        if anchor_x <= p < anchor_x + width:
            continue
        source_col = col_index[p]
        for c in range(channels):
            if source_col < 0:
                line[p * channels + c] = constant
            else:
                line[p * channels + c] = line[(source_col + anchor_x) * channels + c]


@numba.njit(**_JIT_OPTIONS)
def _store_row(sums, output_row, store_mode, lowest, highest):
    if store_mode == STORE_CAST:
        for k in range(sums.shape[0]):
            output_row[k] = sums[k]
    elif store_mode == STORE_CLAMP:
        for k in range(sums.shape[0]):
            value = sums[k]
            if value < lowest:
                value = lowest
            elif value > highest:
                value = highest
            output_row[k] = value
    else:
        for k in range(sums.shape[0]):
            value = sums[k]
            if value != value:  # NaN -> 0, as OpenCV's saturate_cast
                output_row[k] = 0
            else:
                value = np.rint(value)  # half to even
                if value < lowest:
                    value = lowest
                elif value > highest:
                    value = highest
                output_row[k] = value


@numba.njit(**_JIT_OPTIONS)
def _direct_row(lines, first_line, tap_rows, tap_cols, tap_weights, channels, sums):
    """``sums[k] = sum_t w_t * lines[first_line + i_t][k + j_t * C]`` (branch-free)."""
    length = sums.shape[0]
    for start in range(0, length, _BLOCK):
        stop = min(start + _BLOCK, length)
        block = sums[start:stop]
        for k in range(stop - start):
            block[k] = 0
        for t in range(tap_weights.shape[0]):
            shift = start + tap_cols[t] * channels
            source = lines[first_line + tap_rows[t], shift : shift + stop - start]
            weight = tap_weights[t]
            for k in range(stop - start):
                block[k] += weight * source[k]


@numba.njit(**_JIT_OPTIONS)
def _separable_row(
    lines, first_line, column_taps, column_weights, row_taps, row_weights, channels, vertical, sums
):
    """Column pass over the lines into ``vertical`` (padded width), then the row pass."""
    padded_length = vertical.shape[0]
    for k in range(padded_length):
        vertical[k] = 0
    for t in range(column_weights.shape[0]):
        line = lines[first_line + column_taps[t]]
        weight = column_weights[t]
        for k in range(padded_length):
            vertical[k] += weight * line[k]
    length = sums.shape[0]
    for k in range(length):
        sums[k] = 0
    for t in range(row_weights.shape[0]):
        shift = row_taps[t] * channels
        source = vertical[shift : shift + length]
        weight = row_weights[t]
        for k in range(length):
            sums[k] += weight * source[k]


def convolve_bands(
    image,
    output,
    row_index,
    col_index,
    anchor_x,
    kernel_height,
    kernel_width,
    constant,
    separable,
    tap_rows,
    tap_cols,
    tap_weights,
    column_taps,
    column_weights,
    row_taps,
    row_weights,
    band_height,
    workers,
    store_mode,
    lowest,
    highest,
):
    """Compute ``output`` (``(H, W * C)``) band by band, ``workers`` threads in parallel.

    ``row_index[y + i]`` is the source row of output row ``y``'s kernel row
    ``i`` (``-1``: constant); ``col_index`` the same for padded columns. The
    weights arrays have the accumulator dtype, which is also the lines' dtype.
    """
    height, width, channels = image.shape
    padded_length = (width + kernel_width - 1) * channels
    band_count = (height + band_height - 1) // band_height
    for worker in prange(workers):
        lines = np.empty((band_height + kernel_height - 1, padded_length), tap_weights.dtype)
        vertical = np.empty(padded_length, tap_weights.dtype)
        sums = np.empty(width * channels, tap_weights.dtype)
        # Bands are dealt out round-robin: equal work per thread on any image.
        for band in range(worker, band_count, workers):
            top = band * band_height
            bottom = min(height, top + band_height)
            for t in range(bottom - top + kernel_height - 1):
                _load_line(image, row_index[top + t], col_index, anchor_x, constant, lines[t])
            for y in range(top, bottom):
                if separable:
                    _separable_row(
                        lines, y - top, column_taps, column_weights, row_taps, row_weights,
                        channels, vertical, sums,
                    )
                else:
                    _direct_row(lines, y - top, tap_rows, tap_cols, tap_weights, channels, sums)
                _store_row(sums, output[y], store_mode, lowest, highest)


_COMPILED: dict = {}


def compiled(input_dtype, accumulator, output_dtype):
    """Return :func:`convolve_bands` compiled for one dtype triple (cached on disk)."""
    key = (np.dtype(input_dtype), np.dtype(accumulator), np.dtype(output_dtype))
    function = _COMPILED.get(key)
    if function is None:
        types = numba.types
        image = types.Array(numba.from_dtype(key[0]), 3, "A", readonly=True, aligned=False)
        accumulate = numba.from_dtype(key[1])
        output = types.Array(numba.from_dtype(key[2]), 2, "C")
        index = types.Array(types.int64, 1, "C", readonly=True)
        weights = types.Array(accumulate, 1, "C", readonly=True)
        integer = types.int64
        signature = types.void(
            image, output, index, index, integer, integer, integer, accumulate,
            types.boolean, index, index, weights, index, weights, index, weights,
            integer, integer, integer, accumulate, accumulate,
        )
        function = numba.njit(signature, parallel=True, **_JIT_OPTIONS)(convolve_bands)
        _COMPILED[key] = function
    return function
