"""The FFT path: overlap-save over tiles, borders exact, scratch bounded by a band of tiles.

For a large kernel the direct loop costs ``kh * kw`` multiply-adds per pixel; a real FFT
over a tile of ``Ty x Tx`` pixels costs about ``log2(Ty Tx)`` per pixel whatever the kernel.
:func:`convolve_fft` computes the same correlation as every other path:

1. the output is cut into blocks of ``(Ty - kh + 1) x (Tx - kw + 1)`` pixels; a band of
   source rows, widened by the kernel's halo, is gathered through
   :func:`gpuconv._borders.source_indices`, the one border mapping (rows through the
   table, the halo columns copied from the inside columns it names, as the numba loop
   does), so the halo follows the border rule exactly as the direct loop reads it; each
   block's tile is a strided window of that band;
2. a band of tiles (one row of blocks across the image) is transformed at once
   (``rfft2`` over the last two axes, sizes from ``next_fast_len``), multiplied by the
   conjugate spectrum of the kernel (correlation: no flip) and transformed back; the
   first ``Ty - kh + 1`` rows and ``Tx - kw + 1`` columns of each tile are the block,
   free of circular wrap-around (overlap-save);
3. the block is stored as every path stores: cast, or rounded half to even and saturated.

Scratch memory is one band of tiles and its spectrum, whatever the image's height.
The kernel's spectrum is cached per (kernel, tile shape, precision).

Accuracy (the contract's "Accuracy" section): an FFT spreads rounding over the whole tile,
so the path is taken only where an error estimate allows it. While the tiles are
gathered, the largest ``|pixel|`` is measured (a non-finite pixel, seen as non-finite
sums, means no FFT: a NaN must stay local to the taps that touch it); then the estimate

    error <= u * log2(Ty Tx) * max|pixel| * max|K(w)|

(``u`` the unit roundoff of the FFT's precision, ``K(w)`` the kernel's spectrum on the
tile: the ``O(u log n)`` relative error of a floating-point FFT, applied to the image's
norm and amplified at most by the kernel's largest gain) is held against the contract's
tolerance for the output's magnitude with a margin of 2: float32 output within
``1e-5 * max|output|``; float64 within ``1e-12 * max|output|``; integer output within
``1e-3`` grey levels (so that rounding moves as few pixels as float32 direct sums do).
Measured errors (uniform, normal, difference-of-Gaussians kernels of 25 to 63 taps a side;
uniform, offset and spiky images) stayed below a fifth of the estimate; tests/test_large_kernels.py
checks the contract on the cases the estimate admits.
A complex64 result that fails is recomputed in complex128; one that still fails returns
None and the caller runs its loop path. Exact integer plans never come here: an FFT
cannot give the bit-identical sums the contract requires (the cost model does not offer it).

``xp`` and ``fft`` are NumPy and :func:`cpu_transforms` (``ducc0``, else ``scipy.fft``) on
the CPU, CuPy and ``cupy.fft`` on a GPU.
A GPU transforms few, large tiles (:func:`gpu_tile_shape`): each band costs a few launches
and host round trips, and cuFFT is fast on any 2-3-5-smooth length, so the tiles are the
fewest that keep one band's scratch within :data:`GPU_BAND_ELEMENTS`.
"""

from __future__ import annotations

import collections
import math
import threading

import numpy as np

from ._borders import source_indices
from ._plan import Border, ConvolutionPlan

#: Tile lengths tried along each axis (after next_fast_len), besides the whole axis.
_TILE_SIDES = (256, 320, 384, 512, 640)
#: Work per element besides the ``log2 n`` butterflies, in butterfly units. On 2 cores
#: (scipy.fft, 2048 x 2048 float32, 31 x 31 and 63 x 63 kernels) tiles of 256 to 768
#: ran within the noise of each other, 1024 two to three times slower.
_PER_ELEMENT = 6.0
#: Margin between the error estimate and the contract's tolerance.
_SAFETY = 2.0
_INTEGER_OUTPUT_LEVELS = 1e-3

_SPECTRA: collections.OrderedDict = collections.OrderedDict()
_SPECTRA_LOCK = threading.Lock()
#: Kernel spectra kept (least recently used dropped first).
SPECTRUM_CACHE_SIZE = 32


class DuccTransforms:
    """``rfft2`` and ``irfft2`` as :mod:`scipy.fft` spells them (the arguments this module
    passes), computed by ``ducc0.fft``, the successor of the pocketfft that ``scipy.fft``
    ships. Why: on 2 cores (2048 x 2048 float32, a 2160 x 2160 tile, forward transform,
    product and inverse) it took 14-15 ms against scipy.fft's 21-27 ms, half of that from
    letting the inverse overwrite its input, a product this module owns and discards
    (scipy's ``overwrite_x`` changed nothing).
    """

    @staticmethod
    def rfft2(x, axes=(-2, -1), workers=1):
        import ducc0

        return ducc0.fft.r2c(x, axes=axes, nthreads=workers)

    @staticmethod
    def irfft2(x, s, axes=(-2, -1), workers=1):
        """The inverse, divided by the transform's size; ``x`` is overwritten."""
        import ducc0

        return ducc0.fft.c2r(
            x,
            axes=axes,
            lastsize=s[-1],
            forward=False,
            inorm=2,
            nthreads=workers,
            allow_overwriting_input=True,
        )


def cpu_transforms():
    """The CPU's real FFTs: :class:`DuccTransforms` where ``ducc0`` is installed (the
    ``numba`` extra brings it), else :mod:`scipy.fft`."""
    try:
        import ducc0  # noqa: F401
    except ImportError:
        import scipy.fft

        return scipy.fft
    return DuccTransforms


def fast_length(n: int) -> int:
    """The smallest length >= n that scipy.fft transforms fast (2, 3, 5 smooth)."""
    import scipy.fft

    return int(scipy.fft.next_fast_len(int(n), real=True))


def _side(length: int, kernel_length: int) -> int:
    """FFT length along one axis: the fewest transform operations for the whole axis.

    Each candidate length ``n`` needs ``ceil(length / (n - k + 1))`` tiles of cost
    ``n (log2 n + c)``: the halo favours long tiles, ``n log n`` short ones, and ``c``
    (:data:`_PER_ELEMENT`) is the per-element work beside the butterflies (gather,
    product, store). One tile of exactly the needed length is always a candidate.
    """
    needed = fast_length(length + kernel_length - 1)
    candidates = {needed} if needed <= _TILE_SIDES[-1] else set()
    for side in _TILE_SIDES:
        side = fast_length(max(side, 2 * kernel_length))
        if side < needed:
            candidates.add(side)

    def cost(side: int) -> float:
        tiles = -(-length // (side - kernel_length + 1))
        return tiles * side * (math.log2(side) + _PER_ELEMENT)

    return min(sorted(candidates), key=cost)


def tile_shape(plan: ConvolutionPlan) -> tuple[int, int]:
    """``(Ty, Tx)``, the FFT size of one tile for ``plan`` on the CPU."""
    height, width, _ = plan.shape
    return _side(height, plan.kernel_height), _side(width, plan.kernel_width)


#: Elements of one band of tiles on a GPU (the band, its spectrum and its inverse each hold
#: about this many reals: some 200 MB of float32 scratch beside cuFFT's work area).
GPU_BAND_ELEMENTS = 2**24


def _fewest_tiles(length: int, kernel_length: int, largest: int) -> tuple[int, int]:
    """``(tiles, side)``: the fewest tiles of a fast side ``<= largest`` covering ``length``
    outputs, or one tile of the smallest side that can hold the kernel if none fits."""
    for tiles in range(1, length + 1):
        side = fast_length(-(-length // tiles) + kernel_length - 1)
        if side <= largest:
            return tiles, side
        if -(-length // tiles) == 1:
            break
    return length, fast_length(kernel_length)


def gpu_tile_shape(plan: ConvolutionPlan) -> tuple[int, int]:
    """``(Ty, Tx)`` for a GPU: the whole width in one tile where a band of at least
    ``4 * kh`` rows still fits :data:`GPU_BAND_ELEMENTS`, else the fewest columns of tiles
    that leave room for such a band; then the fewest bands of rows that fit."""
    height, width, _ = plan.shape
    kernel_height, kernel_width = plan.kernel.shape
    shortest = fast_length(min(height, 4 * kernel_height) + kernel_height - 1)
    tiles_x, side_x = _fewest_tiles(width, kernel_width, GPU_BAND_ELEMENTS // shortest)
    _, side_y = _fewest_tiles(
        height, kernel_height, max(GPU_BAND_ELEMENTS // (tiles_x * side_x), 1)
    )
    return side_y, side_x


def work_per_pixel(plan: ConvolutionPlan) -> float:
    """Transform work per output pixel: ``Ty Tx log2(Ty Tx)`` over the block's pixels."""
    tile_y, tile_x = tile_shape(plan)
    useful = (tile_y - plan.kernel_height + 1) * (tile_x - plan.kernel_width + 1)
    return tile_y * tile_x * math.log2(tile_y * tile_x) / useful


def _spectrum(plan: ConvolutionPlan, tile: tuple[int, int], real_dtype, xp, fft):
    """``(conj(rfft2(kernel zero-padded to tile)), max |K(w)|)``, cached: the gain the error
    estimate needs is read back once per spectrum, not once per call."""
    libraries = (xp.__name__, fft.__name__)  # spectra of two FFT libraries differ in rounding
    key = (plan.kernel.tobytes(), plan.kernel.shape, tile, np.dtype(real_dtype).str, libraries)
    with _SPECTRA_LOCK:
        entry = _SPECTRA.get(key)
        if entry is not None:
            _SPECTRA.move_to_end(key)
            return entry
    padded = np.zeros(tile, dtype=real_dtype)
    padded[: plan.kernel_height, : plan.kernel_width] = plan.kernel
    spectrum = xp.conj(fft.rfft2(xp.asarray(padded)))
    entry = spectrum, float(xp.abs(spectrum).max())
    with _SPECTRA_LOCK:
        _SPECTRA[key] = entry
        while len(_SPECTRA) > SPECTRUM_CACHE_SIZE:
            _SPECTRA.popitem(last=False)
    return entry


def clear_cache() -> None:
    """Forget every cached kernel spectrum (tests)."""
    with _SPECTRA_LOCK:
        _SPECTRA.clear()


def _store(values, output_dtype, xp):
    """Cast, or round half to even and saturate (as every path stores)."""
    dtype = np.dtype(output_dtype)
    if dtype.kind == "f":
        return values.astype(dtype, copy=False)  # no second image-sized array
    info = np.iinfo(dtype)
    return xp.clip(xp.rint(values), info.min, info.max).astype(dtype)


def _allowed_error(plan: ConvolutionPlan, output_magnitude: float) -> float:
    dtype = plan.output_dtype
    if dtype.kind in "ui":
        return _INTEGER_OUTPUT_LEVELS
    relative = 1e-12 if dtype == np.float64 else 1e-5
    return relative * output_magnitude / _SAFETY


def error_bound(tile: tuple[int, int], largest: float, gain: float, real_dtype) -> float:
    """The estimate of the module docstring: ``gain`` is ``max|K(w)|``."""
    unit = float(np.finfo(real_dtype).eps) / 2
    return unit * math.log2(tile[0] * tile[1]) * largest * gain


def _float32_may_fail(plan: ConvolutionPlan, tile, xp, fft) -> bool:
    """Whether a float32 transform of an integer image to an integer output might fail the
    error estimate, known before transforming: the tolerance of an integer output does not
    depend on the sums, and no pixel exceeds the dtype's range (or the border constant).
    Measured on an H200, a failed float32 attempt cost as much as the float64 transform that
    followed it (uint8, 8192 x 8192: 10.8 ms for both against 4.9 for float32 alone)."""
    if plan.input_dtype.kind not in "ui" or plan.output_dtype.kind not in "ui":
        return False
    info = np.iinfo(plan.input_dtype)
    largest = max(-float(info.min), float(info.max), abs(plan.border_value))
    _, gain = _spectrum(plan, tile, np.float32, xp, fft)
    return error_bound(tile, largest, gain, np.float32) > _allowed_error(plan, 0.0)


def first_transform_dtype(plan: ConvolutionPlan, tile, xp, fft) -> np.dtype:
    """The real dtype of the FFT's first transform for ``plan`` over ``tile``: float64 where
    the plan sums in float64 or where float32 might fail the estimate for an integer
    output (:func:`_float32_may_fail`), else float32 (which may still fail for a float
    output: that is known only from the sums)."""
    if plan.accumulate_dtype == np.float64 or _float32_may_fail(plan, tile, xp, fft):
        return np.dtype(np.float64)
    return np.dtype(np.float32)


def convolve_fft(image3d, plan: ConvolutionPlan, *, workers: int = 1, xp=np, fft=None, tile=None):
    """The plan's result through overlap-save FFTs, or None where the estimate forbids it.

    ``image3d`` is read, never written. ``workers``: the CPU transforms' threads. A
    non-finite pixel (or constant) makes the sums non-finite: then None, and the caller's
    loop path keeps the NaN or inf local to the taps that touch it. ``tile``: the FFT size
    ``(Ty, Tx)`` (default :func:`tile_shape`, the CPU's).
    """
    if not math.isfinite(plan.border_value):
        return None
    if fft is None:
        fft = cpu_transforms()
    tile = tile_shape(plan) if tile is None else tile
    # float64 at once where float32 is known to fail: not a float32 transform thrown away
    first = first_transform_dtype(plan, tile, xp, fft)
    for real_dtype in dict.fromkeys((first, np.dtype(np.float64))):
        sums, largest, magnitude = _overlap_save(image3d, plan, tile, real_dtype, workers, xp, fft)
        _, gain = _spectrum(plan, tile, real_dtype, xp, fft)
        if magnitude is None:
            # One transfer for the two figures the estimate needs (on a GPU each float() of a
            # device value would wait for the stream: once per call, not once per figure).
            magnitude = xp.maximum(sums.max(), -sums.min())
            magnitude, largest = xp.stack([magnitude, largest]).tolist()
        magnitude, largest = float(magnitude), float(largest)
        if not (math.isfinite(magnitude) and math.isfinite(largest)):
            return None
        if error_bound(tile, largest, gain, real_dtype) <= _allowed_error(plan, magnitude):
            return _store(sums, plan.output_dtype, xp)
        del sums
    return None


def _overlap_save(image3d, plan, tile, real_dtype, workers, xp, fft):
    """Raw float sums ``(H, W, C)`` in ``real_dtype``, the largest ``|source pixel|`` and, on
    the CPU, the largest ``|sum|`` (None on a GPU: one reduction at the end there, not two
    small launches per band)."""
    height, width, channels = plan.shape
    kernel_height, kernel_width = plan.kernel.shape
    tile_y, tile_x = tile
    block_y = tile_y - kernel_height + 1
    block_x = tile_x - kernel_width + 1
    spectrum, _ = _spectrum(plan, tile, real_dtype, xp, fft)
    output = xp.empty((height, width, channels), dtype=real_dtype)
    starts_x = np.arange(0, width, block_x)
    # One band of source rows, every tile's columns side by side: tile t is the window
    # band[:, t * block_x : t * block_x + Tx] (a strided view, no copy per tile).
    band_width = (starts_x.size - 1) * block_x + tile_x
    columns = source_indices(np.arange(band_width) - plan.anchor_x, width, plan.border)
    inside = slice(plan.anchor_x, plan.anchor_x + width)
    # Columns outside [anchor_x, anchor_x + W) copy an inside column (or the constant).
    outside = np.flatnonzero(
        (np.arange(band_width) < inside.start) | (np.arange(band_width) >= inside.stop)
    )
    outside_sources = columns[outside]
    outside_constant = xp.asarray(outside[outside_sources < 0])
    outside_copied = xp.asarray(outside[outside_sources >= 0])
    outside_from = xp.asarray(outside_sources[outside_sources >= 0] + plan.anchor_x)
    band = xp.empty((tile_y, band_width), dtype=real_dtype)
    item = band.itemsize
    windows = xp.lib.stride_tricks.as_strided(
        band,
        shape=(tile_y, starts_x.size, tile_x),
        strides=(band_width * item, block_x * item, item),
    )
    keyword = {"workers": workers} if xp is np else {}
    source = xp.asarray(image3d)
    single = starts_x.size == 1  # one tile across: the band is the tile, a plain 2-D FFT
    largest = None  # the largest |source pixel| so far, kept where the band is (no wait)
    magnitude = None  # the CPU's largest |sum| so far, taken per band while it is in cache
    for top in range(0, height, block_y):
        rows = source_indices(
            np.arange(top - plan.anchor_y, top - plan.anchor_y + tile_y), height, plan.border
        )
        bottom = min(height, top + block_y)
        contiguous = rows[0] >= 0 and np.array_equal(rows, np.arange(rows[0], rows[0] + tile_y))
        for c in range(channels):
            if contiguous:
                band[:, inside] = source[rows[0] : rows[0] + tile_y, :, c]
            else:
                band[:, inside] = source[:, :, c].take(xp.asarray(np.maximum(rows, 0)), axis=0)
                if plan.border == Border.CONSTANT:
                    band[xp.asarray(np.flatnonzero(rows < 0)), inside] = plan.border_value
            band[:, outside_copied] = band[:, outside_from]
            band[:, outside_constant] = plan.border_value
            band_largest = xp.maximum(band.max(), -band.min())
            largest = band_largest if largest is None else xp.maximum(largest, band_largest)
            if single:
                spectra = fft.rfft2(band, **keyword)  # (Ty, Tx // 2 + 1)
                spectra *= spectrum
                result = fft.irfft2(spectra, s=tile, **keyword)
                blocks = result[: bottom - top, :width]
            else:
                spectra = fft.rfft2(windows, axes=(0, 2), **keyword)  # (Ty, tiles, Tx // 2 + 1)
                spectra *= spectrum[:, None, :]
                result = fft.irfft2(spectra, s=tile, axes=(0, 2), **keyword)
                # tile t's block is result[:, t, :block_x]: side by side, they are the band's
                # output row. On a GPU one copy (a small one per tile is a launch each); on
                # the CPU one copy per tile straight into the output, not two copies.
                if xp is np:
                    for t, left in enumerate(starts_x.tolist()):
                        right = min(width, left + block_x)
                        output[top:bottom, left:right, c] = result[
                            : bottom - top, t, : right - left
                        ]
                    blocks = None
                else:
                    blocks = result[: bottom - top, :, :block_x].reshape(bottom - top, -1)
                    blocks = blocks[:, :width]
            del spectra
            if blocks is not None:
                output[top:bottom, :, c] = blocks
            del result, blocks
            if xp is np:
                stored = output[top:bottom, :, c]
                band_magnitude = np.maximum(stored.max(), -stored.min())
                magnitude = (
                    band_magnitude if magnitude is None else np.maximum(magnitude, band_magnitude)
                )
    return output, largest, magnitude
