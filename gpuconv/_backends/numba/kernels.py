"""The compiled loops of the Numba backend (imported only when numba is used).

The row helpers are ``numba.njit``-ed at import (lazily compiled, cached on
disk); the parallel driver :func:`convolve_bands` is compiled by
:func:`compiled` with one explicit signature per ``(input dtype, accumulator
dtype, output dtype)``. The pixels arrive as one flat, C-contiguous, read-only
array with the element strides of frames and rows (each row's ``W * C`` elements
contiguous: C-contiguous images, crops, stacks with gaps; ``backend.flat_rows``;
any other layout is copied first), so every line is one vectorised copy and a
C-contiguous array, a crop and a read-only array run the same machine code: one
compile per dtype triple, not one per memory layout, which keeps a cold-cache
test run short.

How a band of output rows is computed, without a padded copy of the image:

1. the ``kh - 1 + band`` source rows the band reads are converted, one at a
   time, into *lines* of the accumulator dtype, each ``W + kw - 1`` pixels
   wide; the interior is a straight copy, and only the ``kw - 1`` border
   pixels of a line go through the border rule (the precomputed
   ``col_index`` table); a row outside the image is found through
   ``row_index`` (``-1``: the constant row);
2. every output row is then a branch-free sum of shifted lines: a 3 x 3
   kernel in one fused pass (nine multiply-adds in registers, stored
   directly); otherwise the direct path (one vectorised pass per four
   non-skipped taps over a row of sums), a column pass over the lines
   followed by a row pass for each term (the separable path: one term;
   the low-rank path: several, summed before the one store), or the runs
   path: each line turned into its prefix sums, then the direct path with
   two taps per run of equal kernel taps (exact integer sums only);
3. the sums are written out: rounded half to even and saturated (NaN to 0)
   for integer outputs, cast for float outputs.

Memory besides input and output: per worker thread, one band of lines.

Float images with a 3 x 3 kernel (sums and output of the image's dtype), and uint8 images
to uint8 with int16 sums, take a shorter way, :func:`shifted_rows_3x3` (one thread) or :func:`shifted_rows_3x3_parallel` (bands on
the pool): no lines at all; each output row is summed from slices of its three source rows
read in place, and only the first and last columns, and rows of a constant border, go
through the tables. Zero taps are skipped optimistically, with NaN and inf checked on
values the loop loads anyway; where one is found the call reruns on the band loop above.
"""

from __future__ import annotations

import numpy as np

try:
    import numba
    from numba import prange
except ImportError:  # still importable (doctest collection); compiled() needs numba
    numba = None
    prange = range

# Pixels of one output row summed per block: the accumulator block (and the
# part of each line it reads) stays in the L1 cache while every tap passes.
_BLOCK = 2048

# How an output row is written (``store_mode``).
STORE_CAST = 0  # float output: a plain cast
STORE_CLAMP = 1  # integer sums to an integer output: saturate
STORE_ROUND = 2  # float sums to an integer output: NaN -> 0, rint, saturate

# How an output row is summed (``path``).
PATH_DIRECT = 0  # one multiply-add pass per four taps over a row of sums
PATH_SEPARABLE = 1  # column pass, then row pass
PATH_FUSED_3X3 = 2  # every tap of a 3 x 3 kernel in one pass, in registers
PATH_FUSED_PLUS = 3  # a 3 x 3 kernel with zero corners on an integer image: five taps
# The two above in int16 lines and sums (exact integer sums that fit int16: 8-bit images
# with small integer kernels); sixteen lanes per vector instead of eight.
PATH_FUSED_3X3_INT16 = 4
PATH_FUSED_PLUS_INT16 = 5
PATH_RUNS = 6  # the direct path over each line's prefix sums: two taps per run of equal taps
# A float image to a float output, a 3 x 3 kernel with three zero taps or more (Sobel):
# its (at most six) non-zero taps where the three lines are finite (0 * x adds nothing
# there), all nine where one holds NaN or inf (0 * inf is NaN, which the contract has
# propagate).
PATH_FUSED_SPARSE_FINITE = 7
# The same for zero corners (sharpen, laplacian): the five-tap loop on finite lines.
PATH_FUSED_PLUS_FINITE = 8

# "contract" lets LLVM fuse multiply-adds (one rounding instead of two); no
# other fast-math flag, so NaN and inf behave as IEEE says.
_JIT_OPTIONS = {"nogil": True, "cache": True, "fastmath": {"contract"}, "error_model": "numpy"}


def _jit(function):
    """``numba.njit`` with this module's options (the plain function without numba)."""
    return function if numba is None else numba.njit(**_JIT_OPTIONS)(function)


def _jit_checked(function):
    """:func:`_jit` for a loop that checks its values for NaN and inf in a sum,
    ``check += value * zero``: with ``reassoc`` LLVM keeps that sum in vector lanes (free,
    where a comparison per value cost the five-tap loop 60 % on a Xeon). Its other sums go
    through :func:`_jit` helpers, whose instructions keep their own flags when inlined, so
    they round as before, bit for bit. NaN and inf still propagate through any order of
    additions; the check's sum is NaN exactly when a value was NaN or inf."""
    if numba is None:
        return function
    options = {**_JIT_OPTIONS, "fastmath": {"contract", "reassoc"}}
    return numba.njit(**options)(function)


def _jit_inline(function):
    """:func:`_jit`, inlined into its callers by numba (a call per pixel costs a few ns)."""
    return function if numba is None else numba.njit(inline="always", **_JIT_OPTIONS)(function)


@_jit
def _load_flat_line(
    pixels, start, row_length, source_row, col_index, anchor_x, channels, constant, line
):
    """Fill ``line`` with source row ``source_row`` widened by the horizontal border;
    return whether the line is finite (no NaN or inf).

    The row is ``pixels[start : start + row_length]`` (``start`` computed for that row;
    unused for a row of the constant border, ``source_row < 0``). One contiguous slice is
    one vectorised copy (with conversion); through an image's run-time strides (numba
    array layout "A") LLVM copied float32 rows one element at a time, 5x slower (72
    against 14 us for 512 rows of 512). The finiteness flag rides along in the same pass
    (for integer lines LLVM folds it away).
    """
    if source_row < 0:
        for k in range(line.shape[0]):
            line[k] = constant
        return constant - constant == 0
    base = anchor_x * channels
    source = pixels[start : start + row_length]
    target = line[base : base + row_length]
    bad = 0
    for k in range(row_length):
        value = source[k]
        target[k] = value
        bad |= np.int32(not (value - value == 0))  # inf - inf and NaN are NaN
    _fill_line_border(line, row_length // channels, channels, anchor_x, col_index, constant)
    if bad == 0 and not constant - constant == 0:  # the constant may sit in the border
        for p in range(line.shape[0] // channels - row_length // channels):
            if col_index[p if p < anchor_x else p + row_length // channels] < 0:
                return False
    return bad == 0


@_jit
def _fill_line_border(line, width, channels, anchor_x, col_index, constant):
    """The ``kw - 1`` border pixels of a line whose interior is loaded and converted:
    they copy interior pixels (``col_index[p]`` is an in-image column) or the constant."""
    padded_width = line.shape[0] // channels
    for p in range(padded_width - width):
        if p >= anchor_x:
            p += width  # the right border
        source_col = col_index[p]
        for c in range(channels):
            if source_col < 0:
                line[p * channels + c] = constant
            else:
                line[p * channels + c] = line[(source_col + anchor_x) * channels + c]


@_jit
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
            if value != value:  # noqa: PLR0124 (NaN) -> 0, as OpenCV's saturate_cast
                output_row[k] = 0
            else:
                value = np.rint(value)  # half to even
                if value < lowest:
                    value = lowest
                elif value > highest:
                    value = highest
                output_row[k] = value


@_jit
def _add_taps(sums, sources, rows, offsets, weights, length):
    """``sums[k] += sum_t weights[t] * sources[rows[t], offsets[t] + k]`` for k < length.

    Taps are added four per pass over ``sums`` (one load and store of the
    sums per four multiply-adds instead of per one); every inner loop runs
    over views indexed from 0, which LLVM vectorises.
    """
    count = weights.shape[0]
    t = 0
    while t + 8 <= count:
        s0 = sources[rows[t], offsets[t] : offsets[t] + length]
        s1 = sources[rows[t + 1], offsets[t + 1] : offsets[t + 1] + length]
        s2 = sources[rows[t + 2], offsets[t + 2] : offsets[t + 2] + length]
        s3 = sources[rows[t + 3], offsets[t + 3] : offsets[t + 3] + length]
        s4 = sources[rows[t + 4], offsets[t + 4] : offsets[t + 4] + length]
        s5 = sources[rows[t + 5], offsets[t + 5] : offsets[t + 5] + length]
        s6 = sources[rows[t + 6], offsets[t + 6] : offsets[t + 6] + length]
        s7 = sources[rows[t + 7], offsets[t + 7] : offsets[t + 7] + length]
        w0, w1, w2, w3 = weights[t], weights[t + 1], weights[t + 2], weights[t + 3]
        w4, w5, w6, w7 = weights[t + 4], weights[t + 5], weights[t + 6], weights[t + 7]
        for k in range(length):
            sums[k] += ((w0 * s0[k] + w1 * s1[k]) + (w2 * s2[k] + w3 * s3[k])) + (
                (w4 * s4[k] + w5 * s5[k]) + (w6 * s6[k] + w7 * s7[k])
            )
        t += 8
    while t + 4 <= count:
        s0 = sources[rows[t], offsets[t] : offsets[t] + length]
        s1 = sources[rows[t + 1], offsets[t + 1] : offsets[t + 1] + length]
        s2 = sources[rows[t + 2], offsets[t + 2] : offsets[t + 2] + length]
        s3 = sources[rows[t + 3], offsets[t + 3] : offsets[t + 3] + length]
        w0, w1, w2, w3 = weights[t], weights[t + 1], weights[t + 2], weights[t + 3]
        for k in range(length):
            sums[k] += (w0 * s0[k] + w1 * s1[k]) + (w2 * s2[k] + w3 * s3[k])
        t += 4
    while t < count:
        s0 = sources[rows[t], offsets[t] : offsets[t] + length]
        w0 = weights[t]
        for k in range(length):
            sums[k] += w0 * s0[k]
        t += 1


@_jit
def _direct_row(lines, first_line, tap_rows, tap_cols, tap_weights, channels, sums, rows, offsets):
    """``sums[k] = sum_t w_t * lines[first_line + i_t][k + j_t * C]`` (branch-free).

    ``rows`` and ``offsets`` are scratch of one entry per tap.
    """
    length = sums.shape[0]
    count = tap_weights.shape[0]
    for t in range(count):
        rows[t] = first_line + tap_rows[t]
    for start in range(0, length, _BLOCK):
        stop = min(start + _BLOCK, length)
        block = sums[start:stop]
        for k in range(stop - start):
            block[k] = 0
        for t in range(count):
            offsets[t] = start + tap_cols[t] * channels
        _add_taps(block, lines, rows, offsets, tap_weights, stop - start)


@_jit
def _separable_row(
    lines,
    first_line,
    column_taps,
    column_weights,
    column_splits,
    row_taps,
    row_weights,
    row_splits,
    channels,
    vertical,
    sums,
    rows,
    offsets,
):
    """For each term: column pass over the lines into ``vertical`` (padded width), then the
    row pass added to ``sums``. Term ``r`` uses taps ``splits[r]:splits[r + 1]``; one term
    is the rank-1 separable path, several the low-rank path (one rounding at the store)."""
    for k in range(sums.shape[0]):
        sums[k] = 0
    for term in range(column_splits.shape[0] - 1):
        for k in range(vertical.shape[0]):
            vertical[k] = 0
        first = column_splits[term]
        count = column_splits[term + 1] - first
        for t in range(count):
            rows[t] = first_line + column_taps[first + t]
            offsets[t] = 0
        _add_taps(
            vertical,
            lines,
            rows,
            offsets,
            column_weights[first : first + count],
            vertical.shape[0],
        )
        first = row_splits[term]
        count = row_splits[term + 1] - first
        for t in range(count):
            rows[t] = 0
            offsets[t] = row_taps[first + t] * channels
        _add_taps(
            sums,
            vertical.reshape(1, vertical.shape[0]),
            rows,
            offsets,
            row_weights[first : first + count],
            sums.shape[0],
        )


@_jit
def _prefix_line(line, padded_length, channels):
    """Turn a loaded line into its exclusive prefix sums, per channel, in place.

    Afterwards ``line[p] = sum of the old line[q] for q < p, q = p (mod C)``, for
    ``p <= padded_length + C - 1`` (the line has ``C`` more entries than it holds pixels),
    so a run ``[j0, j1)`` of taps is ``line[k + j1 C] - line[k + j0 C]``.
    """
    for c in range(channels):
        total = line[c] - line[c]
        for p in range(c, padded_length + channels, channels):
            value = line[p] if p < padded_length else total - total
            line[p] = total
            total += value


@_jit
def _fused3x3_row(lines, first_line, weights, channels, output_row, store_mode, lowest, highest):
    """A 3 x 3 kernel in one pass: nine multiply-adds in registers, then the store.

    OpenCV's small-kernel speed comes from never writing partial sums; this
    loop does the same, branch-free (the store mode is chosen outside it).
    """
    length = output_row.shape[0]
    shift = channels
    a0 = lines[first_line, 0:length]
    b0 = lines[first_line, shift : shift + length]
    c0 = lines[first_line, 2 * shift : 2 * shift + length]
    a1 = lines[first_line + 1, 0:length]
    b1 = lines[first_line + 1, shift : shift + length]
    c1 = lines[first_line + 1, 2 * shift : 2 * shift + length]
    a2 = lines[first_line + 2, 0:length]
    b2 = lines[first_line + 2, shift : shift + length]
    c2 = lines[first_line + 2, 2 * shift : 2 * shift + length]
    w0, w1, w2, w3, w4, w5, w6, w7, w8 = (
        weights[0],
        weights[1],
        weights[2],
        weights[3],
        weights[4],
        weights[5],
        weights[6],
        weights[7],
        weights[8],
    )
    if store_mode == STORE_CAST:
        for k in range(length):
            output_row[k] = (
                (w0 * a0[k] + w1 * b0[k] + w2 * c0[k])
                + (w3 * a1[k] + w4 * b1[k] + w5 * c1[k])
                + (w6 * a2[k] + w7 * b2[k] + w8 * c2[k])
            )
    elif store_mode == STORE_CLAMP:
        for k in range(length):
            value = (
                (w0 * a0[k] + w1 * b0[k] + w2 * c0[k])
                + (w3 * a1[k] + w4 * b1[k] + w5 * c1[k])
                + (w6 * a2[k] + w7 * b2[k] + w8 * c2[k])
            )
            output_row[k] = min(max(value, lowest), highest)
    else:
        for k in range(length):
            value = (
                (w0 * a0[k] + w1 * b0[k] + w2 * c0[k])
                + (w3 * a1[k] + w4 * b1[k] + w5 * c1[k])
                + (w6 * a2[k] + w7 * b2[k] + w8 * c2[k])
            )
            # NaN -> 0, else round half to even and saturate.
            is_nan = value != value  # noqa: PLR0124
            output_row[k] = 0 if is_nan else min(max(np.rint(value), lowest), highest)


@_jit
def _fused6_row(lines, first_line, rows, columns, weights, channels, output_row):
    """Six taps of a 3 x 3 kernel in one pass, cast to a float output: tap ``t`` reads
    line ``first_line + rows[t]`` from column ``columns[t]``. The non-zero taps of a sparse
    kernel, padded with zero-weight taps; only for finite lines (there 0 * x is 0). One
    store mode only: each loop variant costs seconds of compile time per dtype triple."""
    length = output_row.shape[0]
    v0 = lines[first_line + rows[0], columns[0] * channels : columns[0] * channels + length]
    v1 = lines[first_line + rows[1], columns[1] * channels : columns[1] * channels + length]
    v2 = lines[first_line + rows[2], columns[2] * channels : columns[2] * channels + length]
    v3 = lines[first_line + rows[3], columns[3] * channels : columns[3] * channels + length]
    v4 = lines[first_line + rows[4], columns[4] * channels : columns[4] * channels + length]
    v5 = lines[first_line + rows[5], columns[5] * channels : columns[5] * channels + length]
    w0, w1, w2, w3, w4, w5 = weights[0], weights[1], weights[2], weights[3], weights[4], weights[5]
    for k in range(length):
        output_row[k] = (
            (w0 * v0[k] + w1 * v1[k]) + (w2 * v2[k] + w3 * v3[k]) + (w4 * v4[k] + w5 * v5[k])
        )


@_jit
def _sparse_taps(weights, rows, columns, sparse_weights):
    """The non-zero taps of row-major 3 x 3 ``weights`` into ``rows``, ``columns`` and
    ``sparse_weights`` (six entries), padded with zero-weight centre taps."""
    count = 0
    for index in range(9):
        if weights[index] != 0:
            rows[count] = index // 3
            columns[count] = index % 3
            sparse_weights[count] = weights[index]
            count += 1
    for padding in range(count, 6):
        rows[padding] = 1
        columns[padding] = 1
        sparse_weights[padding] = 0


@_jit
def _fused_plus_row(lines, first_line, weights, channels, output_row, store_mode, lowest, highest):
    """:func:`_fused3x3_row` for a kernel whose corners are zero (sharpen, laplacian).

    Taken for integer images, where leaving a zero tap out changes nothing, and for
    rows of float images whose three lines are finite (0 * NaN must stay NaN).
    """
    length = output_row.shape[0]
    shift = channels
    top = lines[first_line, shift : shift + length]
    left = lines[first_line + 1, 0:length]
    centre = lines[first_line + 1, shift : shift + length]
    right = lines[first_line + 1, 2 * shift : 2 * shift + length]
    bottom = lines[first_line + 2, shift : shift + length]
    w1, w3, w4, w5, w7 = weights[1], weights[3], weights[4], weights[5], weights[7]
    if store_mode == STORE_CAST:
        for k in range(length):
            output_row[k] = (
                (w1 * top[k] + w3 * left[k]) + w4 * centre[k] + (w5 * right[k] + w7 * bottom[k])
            )
    elif store_mode == STORE_CLAMP:
        for k in range(length):
            value = (w1 * top[k] + w3 * left[k]) + w4 * centre[k] + (w5 * right[k] + w7 * bottom[k])
            output_row[k] = min(max(value, lowest), highest)
    else:
        for k in range(length):
            value = (w1 * top[k] + w3 * left[k]) + w4 * centre[k] + (w5 * right[k] + w7 * bottom[k])
            is_nan = value != value  # noqa: PLR0124
            output_row[k] = 0 if is_nan else min(max(np.rint(value), lowest), highest)


@_jit
def _fused_int16_row(lines, first_line, weights, channels, output_row, lowest, highest, plus):
    """The fused 3 x 3 (or five-tap ``plus``) row in int16, saturated at the store.

    The backend takes it only when every partial sum fits int16 (the sum of |taps| times
    the largest pixel is below 2**15), so each ``int16(...)`` below is exact; the casts keep
    LLVM's vector lanes 16 bits wide (numba would otherwise widen to int64).
    """
    length = output_row.shape[0]
    shift = channels
    a0 = lines[first_line, 0:length]
    b0 = lines[first_line, shift : shift + length]
    c0 = lines[first_line, 2 * shift : 2 * shift + length]
    a1 = lines[first_line + 1, 0:length]
    b1 = lines[first_line + 1, shift : shift + length]
    c1 = lines[first_line + 1, 2 * shift : 2 * shift + length]
    a2 = lines[first_line + 2, 0:length]
    b2 = lines[first_line + 2, shift : shift + length]
    c2 = lines[first_line + 2, 2 * shift : 2 * shift + length]
    w0, w1, w2, w3, w4, w5, w6, w7, w8 = (
        weights[0],
        weights[1],
        weights[2],
        weights[3],
        weights[4],
        weights[5],
        weights[6],
        weights[7],
        weights[8],
    )
    if plus:
        for k in range(length):
            value = np.int16(
                np.int16(np.int16(w1 * b0[k]) + np.int16(w3 * a1[k]))
                + np.int16(np.int16(w4 * b1[k]) + np.int16(w5 * c1[k]))
                + np.int16(w7 * b2[k])
            )
            output_row[k] = min(max(value, lowest), highest)
    else:
        for k in range(length):
            top = np.int16(
                np.int16(np.int16(w0 * a0[k]) + np.int16(w1 * b0[k])) + np.int16(w2 * c0[k])
            )
            middle = np.int16(
                np.int16(np.int16(w3 * a1[k]) + np.int16(w4 * b1[k])) + np.int16(w5 * c1[k])
            )
            bottom = np.int16(
                np.int16(np.int16(w6 * a2[k]) + np.int16(w7 * b2[k])) + np.int16(w8 * c2[k])
            )
            value = np.int16(np.int16(top + middle) + bottom)
            output_row[k] = min(max(value, lowest), highest)


# The loop's arguments besides pixels, strides and output come packed in two arrays
# (pack_arguments): a repeated small call then unboxes six arguments instead of 26, a
# microsecond less of numba's dispatch. ``integers`` (int64) opens with these scalars,
# then the bounds of its own tables and of the weights' tables (table ``k`` is
# ``values[integers[BOUNDS + k] : integers[BOUNDS + k + 1]]``), then its tables;
# ``weights`` (the accumulator dtype) opens with the constant and the output's range.
SCALARS = (
    "height",
    "width",
    "channels",
    "anchor_x",
    "kernel_height",
    "kernel_width",
    "path",
    "band_height",
    "workers",
    "store_mode",
)
HEIGHT, WIDTH, CHANNELS = 0, 1, 2  # = SCALARS.index("height")...: constants for numba
ANCHOR_X, KERNEL_HEIGHT, KERNEL_WIDTH = 3, 4, 5
PATH, BAND_HEIGHT, WORKERS, STORE_MODE = 6, 7, 8, 9
_INTEGER_SCALARS = len(SCALARS)
INTEGER_TABLES = (
    "row_index",
    "col_index",
    "tap_rows",
    "tap_cols",
    "column_taps",
    "column_splits",
    "row_taps",
    "row_splits",
)
ROW_INDEX, COL_INDEX, TAP_ROWS, TAP_COLS = 0, 1, 2, 3
COLUMN_TAPS, COLUMN_SPLITS, ROW_TAPS, ROW_SPLITS = 4, 5, 6, 7
WEIGHT_TABLES = ("tap_weights", "column_weights", "row_weights")
TAP_WEIGHTS, COLUMN_WEIGHTS, ROW_WEIGHTS = 0, 1, 2
INTEGER_BOUNDS = _INTEGER_SCALARS
WEIGHT_BOUNDS = INTEGER_BOUNDS + len(INTEGER_TABLES) + 1
CONSTANT, LOWEST, HIGHEST = 0, 1, 2
_WEIGHT_SCALARS = 3


def pack_arguments(scalars, tables, constant, lowest, highest, accumulator):
    """``(integers, weights)`` for :func:`convolve_bands`, read-only.

    ``scalars`` maps every name of :data:`SCALARS` to an int; ``tables`` maps every name
    of :data:`INTEGER_TABLES` and :data:`WEIGHT_TABLES` to a 1-D array; ``constant``,
    ``lowest`` and ``highest`` are already of the accumulator's type.
    """
    if set(scalars) != set(SCALARS) or set(tables) != {*INTEGER_TABLES, *WEIGHT_TABLES}:
        raise ValueError("pack_arguments needs every scalar and every table, and no other")
    header = np.zeros(WEIGHT_BOUNDS + len(WEIGHT_TABLES) + 1, np.int64)
    header[:_INTEGER_SCALARS] = [scalars[name] for name in SCALARS]
    integer_tables = [np.asarray(tables[name], np.int64) for name in INTEGER_TABLES]
    weight_tables = [np.asarray(tables[name], accumulator) for name in WEIGHT_TABLES]
    header[INTEGER_BOUNDS:WEIGHT_BOUNDS] = header.size + np.cumsum(
        [0] + [table.size for table in integer_tables]
    )
    header[WEIGHT_BOUNDS:] = _WEIGHT_SCALARS + np.cumsum([0] + [t.size for t in weight_tables])
    integers = np.concatenate([header, *integer_tables])
    weights = np.concatenate(
        [np.array([constant, lowest, highest], accumulator), *weight_tables]
    ).astype(accumulator, copy=False)
    integers.flags.writeable = weights.flags.writeable = False
    return integers, weights


@_jit
def _table(values, integers, bounds, k):
    """Table ``k`` of a packed array (see :func:`pack_arguments`)."""
    return values[integers[bounds + k] : integers[bounds + k + 1]]


def convolve_bands(pixels, frame_stride, row_stride, output, integers, weights):
    """Compute ``output`` (``(N, H, W * C)``) band by band on ``workers`` threads.

    The parallel loop runs over the bands of every frame at once, so a stack of small
    frames keeps every thread busy. ``pixels`` holds the stack's pixels as one flat
    array in which row ``y`` of frame ``n`` is the ``W * C`` elements from
    ``n * frame_stride + y * row_stride`` (``backend.flat_rows``): lines are loaded by
    contiguous copies. Everything else comes packed in ``integers`` and ``weights``
    (:func:`pack_arguments`): ``row_index[y + i]`` is the source row of output row
    ``y``'s kernel row ``i`` (``-1``: constant); ``col_index`` the same for padded
    columns. The weights have the accumulator dtype, which is also the lines' dtype.
    """
    frames, height = output.shape[0], integers[HEIGHT]
    width, channels = integers[WIDTH], integers[CHANNELS]
    anchor_x, path, store_mode = integers[ANCHOR_X], integers[PATH], integers[STORE_MODE]
    kernel_height, kernel_width = integers[KERNEL_HEIGHT], integers[KERNEL_WIDTH]
    band_height, workers = integers[BAND_HEIGHT], integers[WORKERS]
    row_index = _table(integers, integers, INTEGER_BOUNDS, ROW_INDEX)
    col_index = _table(integers, integers, INTEGER_BOUNDS, COL_INDEX)
    tap_rows = _table(integers, integers, INTEGER_BOUNDS, TAP_ROWS)
    tap_cols = _table(integers, integers, INTEGER_BOUNDS, TAP_COLS)
    column_taps = _table(integers, integers, INTEGER_BOUNDS, COLUMN_TAPS)
    column_splits = _table(integers, integers, INTEGER_BOUNDS, COLUMN_SPLITS)
    row_taps = _table(integers, integers, INTEGER_BOUNDS, ROW_TAPS)
    row_splits = _table(integers, integers, INTEGER_BOUNDS, ROW_SPLITS)
    tap_weights = _table(weights, integers, WEIGHT_BOUNDS, TAP_WEIGHTS)
    column_weights = _table(weights, integers, WEIGHT_BOUNDS, COLUMN_WEIGHTS)
    row_weights = _table(weights, integers, WEIGHT_BOUNDS, ROW_WEIGHTS)
    constant, lowest, highest = weights[CONSTANT], weights[LOWEST], weights[HIGHEST]
    padded_length = (width + kernel_width - 1) * channels
    band_count = (height + band_height - 1) // band_height
    # One set of scratch rows per thread, allocated once per call; bands are
    # handed out one at a time (the caller sets numba's chunk size to 1), so a
    # thread delayed by another process does not hold the others up.
    # Each line has C spare entries: the runs path turns it into prefix sums, one longer.
    all_lines = np.empty(
        (workers, band_height + kernel_height - 1, padded_length + channels), tap_weights.dtype
    )
    all_finite = np.ones((workers, band_height + kernel_height - 1), np.bool_)
    all_vertical = np.empty((workers, padded_length), tap_weights.dtype)
    all_sums = np.empty((workers, width * channels), tap_weights.dtype)
    sparse_rows = np.empty(6, np.int64)
    sparse_columns = np.empty(6, np.int64)
    sparse_weights = np.empty(6, tap_weights.dtype)
    if path == PATH_FUSED_SPARSE_FINITE:
        _sparse_taps(tap_weights, sparse_rows, sparse_columns, sparse_weights)
    for job in prange(frames * band_count):
        frame = job // band_count
        band = job - frame * band_count
        frame_output = output[frame]
        worker = numba.get_thread_id()
        lines = all_lines[worker]
        finite = all_finite[worker]
        vertical = all_vertical[worker]
        sums = all_sums[worker]
        rows = np.empty(
            max(tap_weights.shape[0], column_weights.shape[0], row_weights.shape[0]), np.int64
        )
        offsets = np.empty_like(rows)
        top = band * band_height
        bottom = min(height, top + band_height)
        for t in range(bottom - top + kernel_height - 1):
            line = lines[t]
            finite[t] = _load_flat_line(
                pixels,
                frame * frame_stride + row_index[top + t] * row_stride,
                width * channels,
                row_index[top + t],
                col_index,
                anchor_x,
                channels,
                constant,
                line[:padded_length],
            )
            if path == PATH_RUNS:
                _prefix_line(line, padded_length, channels)
        band = (lines, finite, top, bottom, frame_output, path, store_mode, lowest, highest)
        taps = (tap_rows, tap_cols, tap_weights, sparse_rows, sparse_columns, sparse_weights)
        separable = (column_taps, column_weights, column_splits, row_taps, row_weights)
        scratch = (row_splits, vertical, sums, rows, offsets, channels)
        _band_rows(band, taps, separable, scratch)


def _band_rows(band, taps, separable, scratch):
    """Output rows ``[top, bottom)`` of one band of :func:`convolve_bands`, from its loaded
    lines, by the path's row function. Int16 weights take :func:`_fused_int16_row` (the only
    path with int16 lines), other weights every other path: numba picks the body while
    typing (:func:`_band_rows_for_types`), so a variant compiles only the row functions its
    weights can reach (a branch at run time compiled all of them into every variant)."""
    int16 = taps[2].dtype == np.int16
    return _band_row_loops(int16)(band, taps, separable, scratch)


def _band_row_loops(int16: bool):
    """The body :func:`_band_rows` runs, for int16 weights or any other."""

    def int16_rows(band, taps, separable, scratch):
        lines, _, top, bottom, frame_output, path, _, lowest, highest = band
        tap_weights, channels = taps[2], scratch[5]
        for y in range(top, bottom):
            _fused_int16_row(
                lines,
                y - top,
                tap_weights,
                channels,
                frame_output[y],
                lowest,
                highest,
                path == PATH_FUSED_PLUS_INT16,
            )

    def other_rows(band, taps, separable, scratch):
        lines, finite, top, bottom, frame_output, path, store_mode, lowest, highest = band
        tap_rows, tap_cols, tap_weights, sparse_rows, sparse_columns, sparse_weights = taps
        column_taps, column_weights, column_splits, row_taps, row_weights = separable
        row_splits, vertical, sums, rows, offsets, channels = scratch
        for y in range(top, bottom):
            first = y - top
            sparse_row = (
                (path == PATH_FUSED_SPARSE_FINITE or path == PATH_FUSED_PLUS_FINITE)
                and finite[first]
                and finite[first + 1]
                and finite[first + 2]
            )
            if sparse_row and path == PATH_FUSED_SPARSE_FINITE:
                _fused6_row(
                    lines,
                    first,
                    sparse_rows,
                    sparse_columns,
                    sparse_weights,
                    channels,
                    frame_output[y],
                )
                continue
            if path == PATH_FUSED_PLUS or sparse_row:
                _fused_plus_row(
                    lines,
                    y - top,
                    tap_weights,
                    channels,
                    frame_output[y],
                    store_mode,
                    lowest,
                    highest,
                )
                continue
            if (
                path == PATH_FUSED_3X3
                or path == PATH_FUSED_SPARSE_FINITE
                or path == PATH_FUSED_PLUS_FINITE
            ):
                _fused3x3_row(
                    lines,
                    y - top,
                    tap_weights,
                    channels,
                    frame_output[y],
                    store_mode,
                    lowest,
                    highest,
                )
                continue
            if path == PATH_SEPARABLE:
                _separable_row(
                    lines,
                    y - top,
                    column_taps,
                    column_weights,
                    column_splits,
                    row_taps,
                    row_weights,
                    row_splits,
                    channels,
                    vertical,
                    sums,
                    rows,
                    offsets,
                )
            else:
                _direct_row(
                    lines, y - top, tap_rows, tap_cols, tap_weights, channels, sums, rows, offsets
                )
            _store_row(sums, frame_output[y], store_mode, lowest, highest)

    return int16_rows if int16 else other_rows


if numba is not None:

    @numba.extending.overload(_band_rows, jit_options=_JIT_OPTIONS)
    def _band_rows_for_types(band, taps, separable, scratch):
        """:func:`_band_rows` for numba: the weights' type (``taps[2]``) chooses at compile
        time."""
        return _band_row_loops(taps.types[2].dtype == numba.types.int16)


_COMPILED: dict = {}


def loaded() -> bool:
    """Whether this process has compiled (or loaded from the cache) any of the loops."""
    return bool(_COMPILED or _COMPILED_SHIFTED_ROWS)


def compiled(input_dtype, accumulator, output_dtype):
    """Return :func:`convolve_bands` compiled for one dtype triple (cached on disk)."""
    if numba is None:
        raise ImportError("numba is not installed: pip install 'gpuconv[numba]'")
    key = (np.dtype(input_dtype), np.dtype(accumulator), np.dtype(output_dtype))
    function = _COMPILED.get(key)
    if function is None:
        types = numba.types
        accumulate = numba.from_dtype(key[1])
        output = types.Array(numba.from_dtype(key[2]), 3, "C")
        integers = types.Array(types.int64, 1, "C", readonly=True)
        weights = types.Array(accumulate, 1, "C", readonly=True)
        rows = types.Array(numba.from_dtype(key[0]), 1, "C", readonly=True)
        stride = types.int64
        signature = types.void(rows, stride, stride, output, integers, weights)
        function = numba.njit(signature, parallel=True, **_JIT_OPTIONS)(convolve_bands)
        _COMPILED[key] = function
    return function


@_jit_inline
def _window_sum(pixels, top, middle, bottom, q0, q1, q2, weights, constant):
    """A 3 x 3 kernel's sum over one window, every tap: the source rows start at ``top``,
    ``middle`` and ``bottom`` in ``pixels``, the source columns sit at element offsets
    ``q0``, ``q1`` and ``q2`` in a row; ``-1`` (row or column) reads the constant. For the
    few pixels :func:`shifted_rows_3x3` does not reach by shifted rows; all nine taps, so
    NaN and inf propagate whatever the kernel's zeros. Unrolled: a loop over the taps cost
    15 ns a pixel, half the time of a 256 x 256 image's edge columns."""
    a0 = constant if top < 0 or q0 < 0 else pixels[top + q0]
    b0 = constant if top < 0 or q1 < 0 else pixels[top + q1]
    c0 = constant if top < 0 or q2 < 0 else pixels[top + q2]
    a1 = constant if middle < 0 or q0 < 0 else pixels[middle + q0]
    b1 = constant if middle < 0 or q1 < 0 else pixels[middle + q1]
    c1 = constant if middle < 0 or q2 < 0 else pixels[middle + q2]
    a2 = constant if bottom < 0 or q0 < 0 else pixels[bottom + q0]
    b2 = constant if bottom < 0 or q1 < 0 else pixels[bottom + q1]
    c2 = constant if bottom < 0 or q2 < 0 else pixels[bottom + q2]
    w = weights
    return (
        (w[0] * a0 + w[1] * b0 + w[2] * c0)
        + (w[3] * a1 + w[4] * b1 + w[5] * c1)
        + (w[6] * a2 + w[7] * b2 + w[8] * c2)
    )


@_jit_inline
def _edge_pixel(pixels, starts, col_index, x, c, channels, weights, constant):
    """:func:`_window_sum` for output column ``x``, channel ``c``, through the column table
    (``col_index[x : x + 3]``); ``starts``: the three source rows' starts (``-1``: the
    constant row)."""
    j0, j1, j2 = col_index[x], col_index[x + 1], col_index[x + 2]
    q0 = -1 if j0 < 0 else j0 * channels + c
    q1 = -1 if j1 < 0 else j1 * channels + c
    q2 = -1 if j2 < 0 else j2 * channels + c
    return _window_sum(pixels, starts[0], starts[1], starts[2], q0, q1, q2, weights, constant)


@_jit_inline
def _edge_value(pixels, starts, sources, e, weights, constant):
    """:func:`_window_sum` with the column offsets precomputed in ``sources[e]``. Indexed,
    not sliced: a slice costs an atomic reference count (numba), about as much as the sum."""
    return _window_sum(
        pixels,
        starts[0],
        starts[1],
        starts[2],
        sources[e, 0],
        sources[e, 1],
        sources[e, 2],
        weights,
        constant,
    )


@_jit
def _row_is_finite(pixels, start, length):
    bad = 0
    for k in range(length):
        value = pixels[start + k]
        bad |= np.int32(not (value - value == 0))
    return bad == 0


def shifted_rows_3x3(pixels, frame_stride, row_stride, output, integers, weights):
    """A 3 x 3 kernel on a float image into the same float type (or a uint8 image into
    uint8, in int16), on the calling thread.

    Same arguments as :func:`convolve_bands` (a fused 3 x 3 path); for small work
    (:func:`shifted_rows_3x3_parallel` takes large work). It skips what makes the band
    loop slow on small images (a parallel region, scratch lines, a border fill and a
    finiteness flag per line: a third of a 256 x 256 float32 call): it reads the three
    source rows straight from the image and sums shifted slices of them, so only the
    output's first and last columns, and rows of a constant border, go through the border
    tables (:func:`_edge_value`, :func:`_edge_pixel`). Kernels with zero taps
    (``PATH_FUSED_PLUS_FINITE``, ``PATH_FUSED_SPARSE_FINITE``) run their five or six
    non-zero taps optimistically and check in the same pass that every pixel read is
    finite; returns False if one was not (NaN or inf at a skipped tap must make the sum
    NaN): the caller then runs :func:`convolve_bands`, which decides line by line.
    Otherwise returns True.
    """
    setup = _shifted_rows_setup(integers, weights)
    height = integers[HEIGHT]
    bad = 0
    for frame in range(output.shape[0]):
        bad |= _shifted_rows(
            pixels, frame_stride, row_stride, output, integers, weights, setup, frame, 0, height
        )
    return bad == 0


def shifted_rows_3x3_parallel(pixels, frame_stride, row_stride, output, integers, weights):
    """:func:`shifted_rows_3x3` on numba's thread pool: bands of ``band_height`` rows
    (of every frame) handed out one at a time, so that on a busy machine a worker the OS
    has descheduled holds up only its own band (the caller sets the chunk size to 1)."""
    setup = _shifted_rows_setup(integers, weights)
    height, band_height = integers[HEIGHT], integers[BAND_HEIGHT]
    band_count = (height + band_height - 1) // band_height
    jobs = output.shape[0] * band_count
    bad = np.zeros(jobs, np.int64)
    for job in prange(jobs):
        frame = job // band_count
        top = (job - frame * band_count) * band_height
        bad[job] = _shifted_rows(
            pixels,
            frame_stride,
            row_stride,
            output,
            integers,
            weights,
            setup,
            frame,
            top,
            min(height, top + band_height),
        )
    return not bad.any()


@_jit
def _shifted_rows_setup(integers, weights):
    """What :func:`_shifted_rows` needs besides the packed arguments: ``(tap_rows,
    tap_columns, tap_weights, tap_count, first, stop, edge_outputs, edge_sources,
    check_column)``; ``tap_count`` is 9 where nothing is skipped (nor checked)."""
    width, channels = integers[WIDTH], integers[CHANNELS]
    anchor_x, path = integers[ANCHOR_X], integers[PATH]
    col_index = _table(integers, integers, INTEGER_BOUNDS, COL_INDEX)
    w = _table(weights, integers, WEIGHT_BOUNDS, TAP_WEIGHTS)
    # The taps summed: all nine, the five of zero corners, or the non-zero six (padded
    # with zero-weight bottom-centre taps), as (row, column, weight).
    tap_rows = np.empty(9, np.int64)
    tap_columns = np.empty(9, np.int64)
    tap_weights = np.empty(9, w.dtype)
    check_column = 1  # the bottom row's column whose slice is checked for NaN and inf
    plus = path == PATH_FUSED_PLUS_FINITE or path == PATH_FUSED_PLUS_INT16
    integer = path == PATH_FUSED_3X3_INT16 or path == PATH_FUSED_PLUS_INT16
    if path == PATH_FUSED_SPARSE_FINITE:
        _sparse_taps(w, tap_rows, tap_columns, tap_weights)
        tap_count = 6
        # The loop checks the values its last tap reads: a tap in the bottom row (the
        # row-major order puts such taps last, and zero-weight padding goes there too), so
        # the check loads nothing more (a seventh slice cost 15 % at 512 x 512).
        for t in range(6):
            if tap_weights[t] == 0:
                tap_rows[t], tap_columns[t] = 2, 1
        if tap_rows[5] == 2:
            check_column = tap_columns[5]
        else:  # six non-zero taps, none in the bottom row: all nine, nothing to check
            path = PATH_FUSED_3X3
    if path != PATH_FUSED_SPARSE_FINITE:
        tap_count = 0
        for index in range(9):
            if not plus or index % 2 == 1 or index == 4:
                tap_rows[tap_count] = index // 3
                tap_columns[tap_count] = index % 3
                tap_weights[tap_count] = w[index]
                tap_count += 1
    # Output columns [first, stop) read in-image columns only (x - anchor_x + j, j < 3).
    first = min(anchor_x, width)
    stop = max(first, width - 2 + anchor_x)
    # The output columns [0, first) and [stop, width), as element indices in an output
    # row, and the element offsets of their three source columns in a source row (-1:
    # the constant).
    edge_count = (first + width - stop) * channels
    edge_outputs = np.empty(edge_count, np.int64)
    edge_sources = np.empty((edge_count, 3), np.int64)
    e = 0
    for x in range(width):
        if first <= x < stop:
            continue
        for c in range(channels):
            edge_outputs[e] = x * channels + c
            for j in range(3):
                source_col = col_index[x + j]
                edge_sources[e, j] = -1 if source_col < 0 else source_col * channels + c
            e += 1
    return (
        tap_rows,
        tap_columns,
        tap_weights,
        tap_count,
        first,
        stop,
        edge_outputs,
        edge_sources,
        check_column,
        integer,
    )


@_jit
def _shifted_rows(
    pixels, frame_stride, row_stride, output, integers, weights, setup, frame, y_start, y_stop
):
    """Output rows ``[y_start, y_stop)`` of ``frame`` for :func:`shifted_rows_3x3`;
    returns 1 if a skipped tap met NaN or inf, else 0."""
    width, channels = integers[WIDTH], integers[CHANNELS]
    anchor_x = integers[ANCHOR_X]
    row_index = _table(integers, integers, INTEGER_BOUNDS, ROW_INDEX)
    col_index = _table(integers, integers, INTEGER_BOUNDS, COL_INDEX)
    w = _table(weights, integers, WEIGHT_BOUNDS, TAP_WEIGHTS)
    constant = weights[CONSTANT]
    tap_rows, tap_columns, tap_weights, tap_count = setup[0], setup[1], setup[2], setup[3]
    first, stop, edge_outputs, edge_sources, check_column, integer = setup[4:]
    checked = tap_count < 9 and not integer  # zero taps skipped on a float image
    lowest, highest = weights[LOWEST], weights[HIGHEST]  # of an integer output
    row_length = width * channels
    length = (stop - first) * channels
    offset = (first - anchor_x) * channels  # of the left taps' first column in a source row
    base = frame * frame_stride
    starts = np.empty(3, np.int64)  # of the three source rows in pixels (-1: constant)
    bad = 0
    y = y_start
    while y < y_stop:
        for i in range(3):
            source_row = row_index[y + i]
            starts[i] = -1 if source_row < 0 else base + source_row * row_stride
        if starts[0] < 0 or starts[1] < 0 or starts[2] < 0 or length == 0:
            # A row of a constant border (or an image under three columns wide).
            for x in range(width):
                for c in range(channels):
                    value = _edge_pixel(pixels, starts, col_index, x, c, channels, w, constant)
                    if integer:
                        value = min(max(value, lowest), highest)
                    output[frame, y, x * channels + c] = value
            y += 1
            continue
        # A run of rows [y, end) whose three source rows are all in the image.
        end = y + 1
        while end < y_stop and row_index[end + 2] >= 0:
            end += 1
        if checked:
            # Every pixel a skipped tap may read is checked for NaN and inf: each row's
            # bottom row (most columns by the row loop, the other two below) and the run's
            # first top and middle rows here.
            for i in range(2):
                if not _row_is_finite(pixels, starts[i], row_length):
                    bad = 1
        # Rows [flat_start, flat_stop) of the run read three rows that follow one another
        # in memory (the image's interior, its rows packed without gaps): their row loops
        # are one loop over a flat stretch of elements, from the first row's first
        # interior output to the last row's last. The outputs in between that are not
        # interior (the last columns of a row and the first of the next) get sums of
        # neighbouring pixels, all inside the image, which the edge loop below
        # overwrites. Per row, a loop costs its set-up and its vector loop's remainder:
        # 36 ns a row, a fifth of a 512 x 512 float32 call.
        flat_start, flat_stop = end, end
        if row_stride == row_length:
            flat_start, flat_stop = _consecutive_rows(row_index, y, end)
        taps = (tap_rows, tap_columns, tap_weights, output, frame, first * channels, length)
        arguments = (pixels, base + offset, row_stride, row_index, y, flat_start, channels)
        bad |= _sum_rows(arguments, taps, tap_count, lowest, highest)
        if flat_stop > flat_start:
            flat_output = output.reshape((output.shape[0], 1, output.shape[1] * row_length))
            flat_length = (flat_stop - 1 - flat_start) * row_length + length
            flat_first = flat_start * row_length + first * channels
            flat_taps = (
                tap_rows,
                tap_columns,
                tap_weights,
                flat_output,
                frame,
                flat_first,
                flat_length,
            )
            # One "row" whose source rows are row_index[flat_start + 0, 1, 2].
            flat_arguments = (
                pixels,
                base + offset,
                row_stride,
                row_index[flat_start:],
                0,
                1,
                channels,
            )
            bad |= _sum_rows(flat_arguments, flat_taps, tap_count, lowest, highest)
        arguments = (pixels, base + offset, row_stride, row_index, flat_stop, end, channels)
        bad |= _sum_rows(arguments, taps, tap_count, lowest, highest)
        for row in range(y, end):
            for i in range(3):
                starts[i] = base + row_index[row + i] * row_stride
            for e in range(edge_outputs.shape[0]):
                value = _edge_value(pixels, starts, edge_sources, e, w, constant)
                if integer:
                    value = min(max(value, lowest), highest)
                output[frame, row, edge_outputs[e]] = value
            if checked:
                # The row loop checked columns [check_column, check_column + width - 2).
                for k in range(check_column * channels):
                    value = pixels[starts[2] + k]
                    bad |= np.int32(not (value - value == 0))
                for k in range((width - 2 + check_column) * channels, row_length):
                    value = pixels[starts[2] + k]
                    bad |= np.int32(not (value - value == 0))
        y = end
    return bad


@_jit
def _consecutive_rows(row_index, y, end):
    """The longest ``[start, stop)`` within ``[y, end)`` (from its first such row) whose
    output rows read source rows ``row_index[start] + 0, 1, ...`` in order (none where
    fewer than two rows do: nothing to gain)."""
    start = y
    while start < end and not (
        row_index[start + 1] == row_index[start] + 1
        and row_index[start + 2] == row_index[start] + 2
    ):
        start += 1
    stop = start
    while stop < end and row_index[stop + 2] == row_index[start] + (stop - start) + 2:
        stop += 1
    if stop - start < 2:
        return end, end
    return start, stop


# The row loops of shifted_rows_3x3: output rows [y, end), elements [start, start +
# length) of each, by shifted rows. Tap t reads source row row_index[row + tap_rows[t]]
# (starting at pixels[base + ...]) from column tap_columns[t]. The checked ones also
# return 1 if a pixel of the bottom rows' centre taps is NaN or inf, else 0.
#
# One function per tap count, its loop bodies free of branches: numba counts references
# to each slice made in a branch of a loop (an atomic operation each), and with the row
# loop in shifted_rows_3x3's branches, or one function choosing the taps per row, a
# 256 x 256 image took 1.3-1.8x longer.


@_jit_inline
def _source_rows(pixels, base, row_stride, row_index, row):
    """The three source rows output ``row`` reads, as slices from ``pixels[base + ...]``."""
    return (
        pixels[base + row_index[row] * row_stride :],
        pixels[base + row_index[row + 1] * row_stride :],
        pixels[base + row_index[row + 2] * row_stride :],
    )


@_jit
def _tap(pixels, base, row_stride, row_index, row, channels, tap_rows, tap_columns, t):
    """The source values tap ``t`` reads for output ``row``: a slice from its first one."""
    return pixels[base + row_index[row + tap_rows[t]] * row_stride + tap_columns[t] * channels :]


@_jit
def _sum_rows_nine(rows, taps):
    pixels, base, row_stride, row_index, y, end, channels = rows
    _, _, w, output, frame, start, length = taps
    w0, w1, w2, w3, w4, w5, w6, w7, w8 = w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7], w[8]
    for row in range(y, end):
        target = output[frame, row, start : start + length]
        top, middle, bottom = _source_rows(pixels, base, row_stride, row_index, row)
        a0, b0, c0 = top, top[channels:], top[2 * channels :]
        a1, b1, c1 = middle, middle[channels:], middle[2 * channels :]
        a2, b2, c2 = bottom, bottom[channels:], bottom[2 * channels :]
        for k in range(length):
            target[k] = (
                (w0 * a0[k] + w1 * b0[k] + w2 * c0[k])
                + (w3 * a1[k] + w4 * b1[k] + w5 * c1[k])
                + (w6 * a2[k] + w7 * b2[k] + w8 * c2[k])
            )


@_jit
def _five_taps(w0, w1, w2, w3, w4, up, left, centre, right, down):
    """One output of :func:`_sum_rows_five`, rounded as written (``contract`` only)."""
    return (w0 * up + w1 * left) + w2 * centre + (w3 * right + w4 * down)


@_jit_checked
def _sum_rows_five(rows, taps):
    """Zero corners: ``w`` holds up, left, centre, right and down."""
    pixels, base, row_stride, row_index, y, end, channels = rows
    _, _, w, output, frame, start, length = taps
    w0, w1, w2, w3, w4 = w[0], w[1], w[2], w[3], w[4]
    zero = w0 - w0  # the weights are finite: 0 of the pixels' type
    check = zero
    for row in range(y, end):
        target = output[frame, row, start : start + length]
        top, middle, bottom = _source_rows(pixels, base, row_stride, row_index, row)
        up, left, centre = top[channels:], middle, middle[channels:]
        right, below = middle[2 * channels :], bottom[channels:]
        for k in range(length):
            down = below[k]
            check += down * zero  # NaN from here on if down is NaN or inf
            target[k] = _five_taps(w0, w1, w2, w3, w4, up[k], left[k], centre[k], right[k], down)
    return np.int32(check != check)


@_jit
def _six_taps(t0, t1, t2, t3, t4, t5, v0, v1, v2, v3, v4, v5):
    """One output of :func:`_sum_rows_six`, rounded as written (``contract`` only)."""
    return (t0 * v0 + t1 * v1) + (t2 * v2 + t3 * v3) + (t4 * v4 + t5 * v5)


@_jit_checked
def _sum_rows_six(rows, taps):
    """The non-zero taps of a sparse kernel (:func:`_sparse_taps`' order, padded with
    zero-weight bottom-centre taps); the last is in the bottom row and is checked."""
    pixels, base, row_stride, row_index, y, end, channels = rows
    tap_rows, tap_columns, w, output, frame, start, length = taps
    t0, t1, t2, t3, t4, t5 = w[0], w[1], w[2], w[3], w[4], w[5]
    zero = t0 - t0  # the weights are finite: 0 of the pixels' type
    check = zero
    for row in range(y, end):
        target = output[frame, row, start : start + length]
        v0 = _tap(pixels, base, row_stride, row_index, row, channels, tap_rows, tap_columns, 0)
        v1 = _tap(pixels, base, row_stride, row_index, row, channels, tap_rows, tap_columns, 1)
        v2 = _tap(pixels, base, row_stride, row_index, row, channels, tap_rows, tap_columns, 2)
        v3 = _tap(pixels, base, row_stride, row_index, row, channels, tap_rows, tap_columns, 3)
        v4 = _tap(pixels, base, row_stride, row_index, row, channels, tap_rows, tap_columns, 4)
        v5 = _tap(pixels, base, row_stride, row_index, row, channels, tap_rows, tap_columns, 5)
        for k in range(length):
            last = v5[k]  # a bottom-row tap: checked
            check += last * zero
            target[k] = _six_taps(t0, t1, t2, t3, t4, t5, v0[k], v1[k], v2[k], v3[k], v4[k], last)
    return np.int32(check != check)


@_jit
def _sum_rows_nine_int16(rows, taps, lowest, highest):
    """:func:`_sum_rows_nine` for 8-bit images whose sums fit int16 (``w`` int16), saturated
    to ``[lowest, highest]`` at the store; the casts keep LLVM's vector lanes 16 bits wide
    (as :func:`_fused_int16_row`: each ``int16(...)`` is exact)."""
    pixels, base, row_stride, row_index, y, end, channels = rows
    _, _, w, output, frame, start, length = taps
    w0, w1, w2, w3, w4, w5, w6, w7, w8 = w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7], w[8]
    for row in range(y, end):
        target = output[frame, row, start : start + length]
        top, middle, bottom = _source_rows(pixels, base, row_stride, row_index, row)
        a0, b0, c0 = top, top[channels:], top[2 * channels :]
        a1, b1, c1 = middle, middle[channels:], middle[2 * channels :]
        a2, b2, c2 = bottom, bottom[channels:], bottom[2 * channels :]
        for k in range(length):
            upper = np.int16(
                np.int16(np.int16(w0 * a0[k]) + np.int16(w1 * b0[k])) + np.int16(w2 * c0[k])
            )
            centre = np.int16(
                np.int16(np.int16(w3 * a1[k]) + np.int16(w4 * b1[k])) + np.int16(w5 * c1[k])
            )
            lower = np.int16(
                np.int16(np.int16(w6 * a2[k]) + np.int16(w7 * b2[k])) + np.int16(w8 * c2[k])
            )
            value = np.int16(np.int16(upper + centre) + lower)
            target[k] = min(max(value, lowest), highest)


@_jit
def _sum_rows_five_int16(rows, taps, lowest, highest):
    """:func:`_sum_rows_five` in int16 for 8-bit images (see :func:`_sum_rows_nine_int16`);
    nothing to check: integers are finite."""
    pixels, base, row_stride, row_index, y, end, channels = rows
    _, _, w, output, frame, start, length = taps
    w0, w1, w2, w3, w4 = w[0], w[1], w[2], w[3], w[4]
    for row in range(y, end):
        target = output[frame, row, start : start + length]
        top, middle, bottom = _source_rows(pixels, base, row_stride, row_index, row)
        up, left, centre = top[channels:], middle, middle[channels:]
        right, down = middle[2 * channels :], bottom[channels:]
        for k in range(length):
            value = np.int16(
                np.int16(np.int16(w0 * up[k]) + np.int16(w1 * left[k]))
                + np.int16(np.int16(w2 * centre[k]) + np.int16(w3 * right[k]))
                + np.int16(w4 * down[k])
            )
            target[k] = min(max(value, lowest), highest)


def _sum_rows(rows, taps, tap_count, lowest, highest):
    """The row loop for ``tap_count`` taps and the weights' type: int16 weights (a uint8
    image) take the int16 loops, float weights the float ones; returns the checked loops'
    flag (0 for the others). The loops of one number type only are compiled into a
    variant: numba picks them while typing (:func:`_sum_rows_for_types`), where a branch
    at run time compiled both kinds into every variant (10 s a variant, cold)."""
    integer = np.issubdtype(taps[2].dtype, np.integer)
    return _row_loops(integer, tap_count)(rows, taps, tap_count, lowest, highest)


def _row_loops(integer: bool, tap_count):
    """The body :func:`_sum_rows` runs, for integer (int16) or float weights."""

    def integer_loops(rows, taps, tap_count, lowest, highest):
        if tap_count == 9:
            _sum_rows_nine_int16(rows, taps, lowest, highest)
        else:
            _sum_rows_five_int16(rows, taps, lowest, highest)
        return 0

    def float_loops(rows, taps, tap_count, lowest, highest):
        if tap_count == 9:
            _sum_rows_nine(rows, taps)
            return 0
        if tap_count == 5:
            return _sum_rows_five(rows, taps)
        return _sum_rows_six(rows, taps)

    return integer_loops if integer else float_loops


if numba is not None:

    @numba.extending.overload(_sum_rows, jit_options=_JIT_OPTIONS)
    def _sum_rows_for_types(rows, taps, tap_count, lowest, highest):
        """:func:`_sum_rows` for numba: the weights' type (``taps[2]``) chooses at compile
        time."""
        return _row_loops(isinstance(taps.types[2].dtype, numba.types.Integer), tap_count)


_COMPILED_SHIFTED_ROWS: dict = {}


def compiled_shifted_rows(dtype, parallel=False):
    """:func:`shifted_rows_3x3` (or, ``parallel``, :func:`shifted_rows_3x3_parallel`)
    compiled for one dtype of image and output: float32, float64 (sums of that dtype) or
    uint8 (int16 sums); cached on disk."""
    if numba is None:
        raise ImportError("numba is not installed: pip install 'gpuconv[numba]'")
    key = (np.dtype(dtype), bool(parallel))
    function = _COMPILED_SHIFTED_ROWS.get(key)
    if function is None:
        types = numba.types
        value = numba.from_dtype(key[0])
        sums = types.int16 if key[0] == np.uint8 else value
        signature = types.boolean(
            types.Array(value, 1, "C", readonly=True),
            types.int64,
            types.int64,
            types.Array(value, 3, "C"),
            types.Array(types.int64, 1, "C", readonly=True),
            types.Array(sums, 1, "C", readonly=True),
        )
        if parallel:
            function = numba.njit(signature, parallel=True, **_JIT_OPTIONS)(
                shifted_rows_3x3_parallel
            )
        else:
            function = numba.njit(signature, **_JIT_OPTIONS)(shifted_rows_3x3)
        _COMPILED_SHIFTED_ROWS[key] = function
    return function
