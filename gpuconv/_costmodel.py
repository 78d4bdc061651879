"""Which path computes a plan: direct, separable, low-rank, runs or FFT, by estimated time.

Every path computes the same correlation (the contract); this module only decides which
is fastest for a plan, from the kernel's size, rank and runs, the image's size and the
dtypes, with constants per backend kept here and nowhere else. The constants are seconds
per output pixel (one channel) on the machine the figures in ``benchmarks/results/`` came
from (2 cores, both used), fitted from ``gpuconv bench --kernel-sizes`` runs; only their
ratios matter for the choice, so another machine mostly shifts every path alike.

The paths (numba backend):

- ``direct``: one multiply-add per (non-skipped) tap;
- ``separable``: rank 1, a column pass and a row pass (``kh + kw`` taps);
- ``lowrank``: ``r`` separable terms summed before the one rounding (``r (kh + kw)``
  taps); float factors from the SVD within :func:`gpuconv._lowrank.tolerance_for`, or
  exact integer factors for the exact integer path;
- ``runs``: two taps per run of equal taps along a kernel row, over each line's prefix
  sums; integer images only, where the prefix sums are exact in the accumulator;
- ``fft``: overlap-save FFTs (:mod:`gpuconv._fft`); never for the exact integer path, and
  at run time not over non-finite pixels or where its error bound fails (then the best
  loop path runs instead).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import _fft, _lowrank
from ._plan import ConvolutionPlan
from ._strategy import Strategy, _largest_magnitude

PATHS = ("direct", "separable", "lowrank", "runs", "fft")

# Exactly represented integers: float32 up to 2**24, float64 up to 2**53.
_FLOAT32_EXACT = 2.0**24
_FLOAT64_EXACT = 2.0**53
# A float low-rank form whose terms' partial sums exceed the direct sum's by more than
# this factor would round visibly worse in float32: its terms are summed in float64.
_AMPLIFICATION_LIMIT = 4.0
# Below this many taps two terms save too little over the direct loop to be worth
# finding (measured: a rank-2 9 x 9 kernel ran within 5% either way).
_LOWRANK_MIN_TAPS = 64


@dataclass(frozen=True)
class BackendCosts:
    """Seconds per output pixel and channel of each piece of work (one backend).

    Attributes
    ----------
    tap : float
        One multiply-add of a loop path in float32 (vector lanes, every thread busy).
    float64_tap : float
        The same in float64 (half the lanes).
    line : float
        Loading the lines and storing a pixel, paid once by every loop path.
    term : float
        Each separable or low-rank term: clearing and writing the intermediate line.
    prefix : float
        The prefix sums of the runs path.
    run_tap : float
        One tap of the runs path (two per run; scattered offsets over longer lines).
    fft : float
        One unit of ``Ty Tx log2(Ty Tx) / block pixels`` in complex64
        (see :func:`gpuconv._fft.work_per_pixel`), transforms both ways and the product.
    float64_fft : float
        The same in complex128.
    fft_fixed : float
        Gathering tiles, the finiteness check and the store.
    """

    tap: float
    float64_tap: float
    line: float
    term: float
    prefix: float
    run_tap: float
    fft: float
    float64_fft: float
    fft_fixed: float


#: Fitted (by hand, to the nearest round figure) from one run of ``gpuconv bench
#: --kernel-sizes`` style timings of every forced path on 2048 x 2048 images (numba,
#: 2 threads, 2 cores shared with other work: load average about 3): direct box5..random63,
#: separable box5..box25, low-rank dog9..dog25, runs disk7..disk31, FFT random15..random63.
#: Rescaled once the loops took eight taps per pass and the FFT moved to ducc0: in the sweep
#: benchmarks/results/kernel-sizes-2core-eight-taps.json the loops ran at 0.41-0.42 of these
#: figures' estimates from 13 taps a side (direct and separable alike; less below), the FFT
#: at 0.55-0.65 (random float32; 0.7-0.9 for uint8 images), so the loop constants were
#: scaled by 0.42 and the FFT's by 0.6: the order among the loop paths is unchanged, and
#: the direct-to-FFT crossover moved from 17 to 19 taps a side, where that sweep measured it
#: (17: direct 22.7 ms, FFT 27.1; 19: 27.9 and 28.8; 21: 32.8 and 27.8).
NUMBA = BackendCosts(
    tap=1.7e-11,
    float64_tap=3.4e-11,
    line=6.0e-10,
    term=4.0e-11,
    prefix=4.0e-10,
    run_tap=3.4e-11,
    fft=3.0e-10,
    float64_fft=6.0e-10,
    fft_fixed=9.0e-10,
)

COSTS = {"numba": NUMBA}


@dataclass(frozen=True)
class PathChoice:
    """The chosen path and what it needs.

    Attributes
    ----------
    path : str
        One of :data:`PATHS`.
    estimates : dict
        Estimated seconds of every path that may run this plan (the chosen one included).
    columns, rows : numpy.ndarray or None
        ``(r, kh)`` and ``(r, kw)`` factors of the separable or low-rank path.
    runs : tuple or None
        :func:`gpuconv._lowrank.kernel_runs` of the runs path.
    loop : str
        The best path other than the FFT: ``path`` itself, or what runs where the FFT is
        refused at run time. ``columns``, ``rows``, ``runs`` and ``accumulator`` are its.
    accumulator : numpy.dtype
        The accumulator of ``loop``.
    """

    path: str
    loop: str
    estimates: dict = field(compare=False)
    columns: np.ndarray | None
    rows: np.ndarray | None
    runs: tuple | None
    accumulator: np.dtype


def _tap_cost(costs: BackendCosts, accumulator) -> float:
    return costs.float64_tap if np.dtype(accumulator).itemsize == 8 else costs.tap


def _exact_accumulator(bound: float, default: np.dtype):
    """float32 when every partial sum is an integer it holds, else float64, else None."""
    if bound < _FLOAT32_EXACT and default.itemsize <= 4:
        return np.dtype(np.float32)
    if bound < _FLOAT64_EXACT:
        return np.dtype(np.float64)
    return None


def _lowrank_candidate(plan: ConvolutionPlan, strategy: Strategy):
    """``(columns, rows, accumulator)`` of the low-rank path, or None."""
    kernel = plan.kernel
    kernel_height, kernel_width = kernel.shape
    if min(kernel.shape) < 2 or kernel.size < _LOWRANK_MIN_TAPS:
        return None
    # Only ranks cheaper than the direct loop are worth finding.
    max_rank = (kernel.size - 1) // (kernel_height + kernel_width)
    if max_rank < 2:
        return None
    if strategy.integer:
        terms = _lowrank.integer_terms(kernel, max_rank=max_rank)
        if terms is None or terms[0].shape[0] < 2:
            return None
        columns, rows = terms
        partial = float((np.abs(columns).sum(axis=1) * np.abs(rows).sum(axis=1)).sum())
        accumulator = _exact_accumulator(partial * _largest_magnitude(plan), strategy.accumulator)
        return None if accumulator is None else (columns, rows, accumulator)
    accumulator = plan.accumulate_dtype
    if strategy.accumulator == np.float64:
        accumulator = np.dtype(np.float64)
    terms = _lowrank.float_terms(kernel, _lowrank.tolerance_for(accumulator), max_rank)
    if terms is None or terms[0].shape[0] < 2:
        return None
    columns, rows = terms
    if (
        accumulator == np.float32
        and _lowrank.terms_amplification(columns, rows, kernel) > _AMPLIFICATION_LIMIT
    ):
        accumulator = np.dtype(np.float64)
        # Held to float64's tolerance instead: refit (a rank-2 DoG stays rank 2).
        terms = _lowrank.float_terms(kernel, _lowrank.tolerance_for(accumulator), max_rank)
        if terms is None or terms[0].shape[0] < 2:
            return None
        columns, rows = terms
    return columns, rows, accumulator


def _runs_candidate(plan: ConvolutionPlan, strategy: Strategy):
    """``(runs, accumulator)`` of the runs path, or None (inexact plans, or too few runs)."""
    if not strategy.integer or plan.kernel.size < 25:
        return None  # exact integer sums only: float weights times prefix sums round badly
    runs = _lowrank.kernel_runs(plan.kernel)
    count = runs[0].size
    if count == 0 or 2 * count >= np.count_nonzero(plan.kernel):
        return None
    _, width, _ = plan.shape
    largest = _largest_magnitude(plan)
    prefix = largest * (width + plan.kernel_width)
    # Partial sums: four taps of |value| * prefix at once, and the running sum itself.
    bound = max(
        4 * float(np.abs(runs[3]).max()) * prefix, float(np.abs(plan.kernel).sum()) * largest
    )
    default = strategy.accumulator if strategy.accumulator.kind == "f" else np.dtype(np.float32)
    if plan.output_dtype == np.float64:
        default = np.dtype(np.float64)
    accumulator = _exact_accumulator(bound, default)
    return None if accumulator is None else (runs, accumulator)


#: The CUDA backend has no calibrated constants (no GPU in this project's CI): it runs the
#: low-rank path where the terms need at most this fraction of the direct kernel's taps,
#: since each extra launch reads the image and writes a float scratch image again.
GPU_LOWRANK_TAP_FRACTION = 0.25


def gpu_lowrank_terms(plan: ConvolutionPlan, strategy: Strategy):
    """``(columns, rows, accumulator)`` of the CUDA low-rank path, or None.

    Float plans only (exact integer plans keep the direct kernel), rank 2 or more (rank 1
    is the separable kernel already), and only where ``r (kh + kw)`` is at most
    :data:`GPU_LOWRANK_TAP_FRACTION` of ``kh kw``.
    """
    if strategy.integer or strategy.separable:
        return None
    terms = _lowrank_candidate(plan, strategy)
    if terms is None:
        return None
    columns, rows, accumulator = terms
    taps = columns.shape[0] * (plan.kernel_height + plan.kernel_width)
    if taps > GPU_LOWRANK_TAP_FRACTION * plan.kernel.size:
        return None
    return columns, rows, np.dtype(accumulator)


#: The CUDA backend's FFT against its loops, measured on an NVIDIA H200 (2026-11-26,
#: benchmarks/results/gpu-retune-h200-2026-11-26/call3/fft.log, gpu_fft_crossover.py: dense
#: kernels of 9 to 63 taps a side on 2048 x 2048 and 8192 x 8192 float32 and uint8 images):
#: the direct kernel took 1.4e-13 to 1.8e-13 s per pixel-tap in float32 sums, about 2.8e-13
#: in float64 (a uint8 image under most float kernels); the FFT path 4.4e-11 s per
#: transformed element in float32 (8192 x 8192: 4.2-4.3 ms, five bands of 1728 x 8640),
#: 1.3e-10 where the sums are float64 (a uint8 image: 10.8 ms at 8192 x 8192 where the
#: float32 transform failed its error bound and was redone in float64; 4.9 ms where it
#: passed), plus some 0.7 ms a call whatever the size: the host enqueues some 30 small
#: operations, and the error estimate waits for the stream. The transforms are costed in
#: the precision they are known to run in (:func:`gpuconv._fft.first_transform_dtype`: an
#: integer image to an integer output knows before transforming whether float32 passes),
#: else in the direct kernel's accumulator (a float32 attempt that may be redone).
GPU_TAP_SECONDS = {np.dtype(np.float32): 1.6e-13, np.dtype(np.float64): 2.8e-13}
GPU_FFT_ELEMENT_SECONDS = {np.dtype(np.float32): 4.4e-11, np.dtype(np.float64): 1.3e-10}
GPU_FFT_CALL_SECONDS = 7.0e-4
GPU_FFT_BAND_SECONDS = 5.0e-5
#: Below this many taps the FFT never pays on a GPU (64 x 1.6e-13 s per pixel against more
#: than 5.5e-11 s per element); it also keeps the FFT away from the register-window
#: kernels, whose launch may cover a whole stack (the FFT runs frame by frame).
GPU_FFT_MIN_TAPS = 64


def gpu_fft_pays(
    plan: ConvolutionPlan, strategy: Strategy, transform_dtype: np.dtype | None = None
) -> bool:
    """Whether the CUDA backend should try the FFT for ``plan`` (one frame).

    Never for exact integer sums, rank-1 kernels (the separable kernel) or kernels whose
    non-zero taps are few; otherwise when the transforms of the GPU's tiles
    (:func:`gpuconv._fft.gpu_tile_shape`) are estimated faster than the direct kernel.
    ``transform_dtype``: the precision the transforms are known to run in (float32 or
    float64), or None to cost them in the direct kernel's accumulator. At run time the FFT
    still declines non-finite pixels and a failed error bound.
    """
    if strategy.integer or strategy.separable or plan.kernel.size < GPU_FFT_MIN_TAPS:
        return False
    height, width, channels = plan.shape
    taps = np.count_nonzero(plan.kernel) if strategy.skip_zero_taps else plan.kernel.size
    float64 = np.dtype(strategy.accumulator) == np.float64
    real = np.dtype(np.float64 if float64 else np.float32)
    transform_dtype = real if transform_dtype is None else np.dtype(transform_dtype)
    loops = height * width * channels * taps * GPU_TAP_SECONDS[real]
    tile_y, tile_x = _fft.gpu_tile_shape(plan)
    block_y = tile_y - plan.kernel_height + 1
    block_x = tile_x - plan.kernel_width + 1
    bands = -(-height // block_y) * channels
    elements = bands * tile_y * tile_x * -(-width // block_x)
    transforms = (
        GPU_FFT_CALL_SECONDS
        + bands * GPU_FFT_BAND_SECONDS
        + elements * GPU_FFT_ELEMENT_SECONDS[transform_dtype]
    )
    return transforms < loops


def estimate(plan: ConvolutionPlan, path: str, costs: BackendCosts, **details) -> float:
    """Estimated seconds of ``path`` for ``plan`` (``details``: what the path needs)."""
    height, width, channels = plan.shape
    pixels = height * width * channels
    accumulator = details.get("accumulator", plan.accumulate_dtype)
    tap = _tap_cost(costs, accumulator)
    if path == "direct":
        return pixels * (costs.line + details["taps"] * tap)
    if path in ("separable", "lowrank"):
        columns, rows = details["columns"], details["rows"]
        padded = (width + plan.kernel_width - 1) / width
        taps = np.count_nonzero(columns) * padded + np.count_nonzero(rows)
        return pixels * (costs.line + columns.shape[0] * costs.term + taps * tap)
    if path == "runs":
        run_tap = costs.run_tap * (2 if np.dtype(accumulator).itemsize == 8 else 1)
        return pixels * (costs.line + costs.prefix + 2 * details["runs"][0].size * run_tap)
    if path == "fft":
        per_unit = costs.float64_fft if np.dtype(accumulator) == np.float64 else costs.fft
        return pixels * (costs.fft_fixed + per_unit * _fft.work_per_pixel(plan))
    raise ValueError(f"unknown path {path!r}")


def choose_path(
    plan: ConvolutionPlan,
    strategy: Strategy,
    backend: str = "numba",
    *,
    fft: bool = True,
    force: str | None = None,
) -> PathChoice:
    """The fastest path for ``plan`` that keeps the contract (see the module docstring).

    ``strategy`` is the backend's :func:`gpuconv._strategy.choose_strategy` result (exact
    integer sums, accumulator, rank-1 factors); ``fft=False`` leaves the FFT out.
    ``force`` names the path to take whatever it costs (``gpuconv bench`` times every
    path); a ``ValueError`` if that path cannot compute this plan within the contract.
    """
    costs = COSTS[backend]
    kernel = plan.kernel
    skip = strategy.skip_zero_taps
    direct_taps = np.count_nonzero(kernel) if skip else kernel.size
    options: dict[str, dict] = {
        "direct": {"taps": max(direct_taps, 1), "accumulator": strategy.accumulator}
    }
    if strategy.separable:
        options["separable"] = {
            "columns": strategy.column[None, :],
            "rows": strategy.row[None, :],
            "accumulator": strategy.accumulator,
        }
    else:
        lowrank = _lowrank_candidate(plan, strategy)
        if lowrank is not None:
            options["lowrank"] = dict(zip(("columns", "rows", "accumulator"), lowrank))
    runs = _runs_candidate(plan, strategy)
    if runs is not None:
        options["runs"] = {"runs": runs[0], "accumulator": runs[1]}
    if fft and not strategy.integer and kernel.size > 1:
        accumulator = np.float64 if strategy.accumulator == np.float64 else np.float32
        options["fft"] = {"accumulator": np.dtype(accumulator)}
    estimates = {name: estimate(plan, name, costs, **detail) for name, detail in options.items()}
    path = min(estimates, key=estimates.get)
    loops = {name: seconds for name, seconds in estimates.items() if name != "fft"}
    loop = min(loops, key=loops.get)
    if force is not None:
        if force not in options:
            raise ValueError(
                f"path {force!r} cannot compute this plan; possible: {', '.join(options)}"
            )
        path = force
        loop = loop if force == "fft" else force
    chosen = options[loop]
    return PathChoice(
        path=path,
        loop=loop,
        estimates=estimates,
        columns=chosen.get("columns"),
        rows=chosen.get("rows"),
        runs=chosen.get("runs"),
        accumulator=np.dtype(chosen["accumulator"]),
    )
