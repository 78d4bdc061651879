"""The Numba CPU backend: multi-threaded, exact where it can be, no padded image copy.

This module imports without numba (the registry imports it to call
:func:`probe`); the compiled loops live in :mod:`.kernels`, imported on
the first :func:`convolve`. The fast path (exact integer sums, separable
passes, skipped zero taps) is chosen by :func:`gpuconv._strategy.choose_strategy`,
and the border index tables come from :func:`gpuconv._borders.source_indices`,
so this backend reads exactly the pixels the reference reads.

Threads: numba's pool, sized by ``NUMBA_NUM_THREADS`` (default: every core),
or fewer with ``numba.set_num_threads``.
"""

from __future__ import annotations

import collections
import contextlib
import threading
from dataclasses import dataclass, replace

import numpy as np

from ..._borders import source_indices
from ..._plan import ConvolutionPlan
from ..._strategy import Strategy, choose_strategy

_INSTALL_HINT = "pip install 'gpuconv[numba]'"

# Bytes of accumulator lines one worker holds: a band of rows small enough to
# stay in the L2 cache, large enough that the kh - 1 halo rows read again per
# band are a small fraction of the band.
_LINES_BUDGET_BYTES = 1 << 20
_MAX_BAND_HEIGHT = 64

# Multiply-adds (about a millisecond on one core) below which one thread runs
# the call: see workers_for.
_SERIAL_WORK = 4 * 2**20
# float32 represents every integer of magnitude up to 2**24 exactly.
_FLOAT32_EXACT_INTEGERS = 2.0**24
# Integer sums below this stay exact in int16 lines and sums (the fused 3 x 3 paths).
_INT16_EXACT_SUMS = 2.0**15


def probe() -> str | None:
    """None when numba imports here, else why not and what to install."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return f"numba is not installed: {_INSTALL_HINT}"
    except Exception as error:  # noqa: BLE001 (e.g. a numba built for another NumPy)
        return (
            f"numba failed to import ({type(error).__name__}: {error}); reinstall: {_INSTALL_HINT}"
        )
    return None


def describe() -> str:
    """The numba version and the number of threads a call uses."""
    import numba

    return f"numba {numba.__version__}, {numba.get_num_threads()} threads"


@dataclass(frozen=True)
class Execution:
    """The arguments of one compiled call, derived from a plan (no pixels touched).

    Attributes
    ----------
    strategy : Strategy
        The planner's decision (demoted to float64 sums for a huge constant border).
    path : int
        ``kernels.PATH_*``: direct, separable, or fused 3 x 3 (which
        wins over separable for 3 x 3 kernels).
    row_index, col_index : numpy.ndarray
        int64 source row of every output row's kernel rows (``H + kh - 1``
        entries) and source column of every padded column (``W + kw - 1``);
        ``-1`` reads the constant.
    taps : tuple of numpy.ndarray
        ``(tap_rows, tap_cols, tap_weights)`` of the direct path.
    column_taps, row_taps : tuple of numpy.ndarray
        ``(indices, weights)`` of the separable factors (empty when direct).
    band_height, workers : int
    store_mode : int
        How sums become output (``kernels.STORE_*``).
    lowest, highest : float
        The output type's range (integer outputs).
    """

    strategy: Strategy
    path: int
    row_index: np.ndarray
    col_index: np.ndarray
    taps: tuple
    column_taps: tuple
    row_taps: tuple
    band_height: int
    workers: int
    store_mode: int
    lowest: float
    highest: float

    @property
    def accumulator(self) -> np.dtype:
        return self.strategy.accumulator

    def scratch_bytes(self, plan: ConvolutionPlan) -> int:
        """Bytes of working memory the call allocates besides the output."""
        _, width, channels = plan.shape
        padded = (width + plan.kernel_width - 1) * channels
        lines = (self.band_height + plan.kernel_height - 1) * padded
        per_worker = (lines + padded + width * channels) * self.accumulator.itemsize
        return self.workers * per_worker + self.row_index.nbytes + self.col_index.nbytes


def _strategy(plan: ConvolutionPlan) -> Strategy:
    strategy = choose_strategy(plan)
    if not strategy.integer:
        return strategy
    if _largest_integer_sum(plan, strategy) < _FLOAT32_EXACT_INTEGERS:
        # Every partial sum is an integer float32 holds exactly, so the result
        # is still bit-exact, and float multiply-adds are about 1.5x faster
        # than int32 ones (and share the float kernels' compiled code).
        return replace(strategy, accumulator=np.dtype(np.float32))
    return strategy


def _largest_integer_sum(plan: ConvolutionPlan, strategy: Strategy) -> float:
    info = np.iinfo(plan.input_dtype)
    largest_pixel = max(abs(int(info.min)), int(info.max), abs(plan.border_value))
    taps = float(np.abs(plan.kernel).sum())
    if strategy.separable:
        taps = max(taps, float(np.abs(strategy.column).sum() * np.abs(strategy.row).sum()))
    return taps * largest_pixel


def _taps(weights: np.ndarray, skip_zero: bool, dtype: np.dtype):
    """(indices, weights) of a 1-D factor, zero taps left out when allowed."""
    indices = np.flatnonzero(weights) if skip_zero else np.arange(weights.size)
    return indices.astype(np.int64), weights[indices].astype(dtype)


def band_height_for(plan: ConvolutionPlan, accumulator: np.dtype, workers: int) -> int:
    """Output rows per band: lines within the budget, and work for every worker."""
    height, width, channels = plan.shape
    line_bytes = (width + plan.kernel_width - 1) * channels * np.dtype(accumulator).itemsize
    fitting = _LINES_BUDGET_BYTES // line_bytes - (plan.kernel_height - 1)
    # At least four bands per worker (over every frame), so dynamic scheduling can
    # balance them; a band never spans two frames.
    per_worker = -(-height * plan.frames // (4 * workers))
    return int(max(1, min(_MAX_BAND_HEIGHT, fitting, per_worker)))


def workers_for(plan: ConvolutionPlan, available: int) -> int:
    """Threads worth waking for ``plan``: one for small work, else all ``available``.

    Waking a second thread costs tens of microseconds, and measured about 5 ms
    per call when interleaved with cv2 on 2 cores; work under about a
    millisecond runs on the calling thread alone.
    """
    height, width, channels = plan.shape
    taps = min(plan.kernel.size, plan.kernel_height + plan.kernel_width + 9)
    work = plan.frames * height * width * channels * max(taps, 9)
    return 1 if work < _SERIAL_WORK else available


def execution_for(plan: ConvolutionPlan, workers: int) -> Execution:
    """Everything the compiled loop needs for ``plan`` with up to ``workers`` threads."""
    height, width, _ = plan.shape
    kernel_height, kernel_width = plan.kernel.shape
    strategy = _strategy(plan)
    accumulator = strategy.accumulator
    row_index = source_indices(
        np.arange(-plan.anchor_y, height - plan.anchor_y + kernel_height - 1), height, plan.border
    )
    col_index = source_indices(
        np.arange(-plan.anchor_x, width - plan.anchor_x + kernel_width - 1), width, plan.border
    )
    from . import kernels

    workers = workers_for(plan, workers)
    skip = strategy.skip_zero_taps
    small_sums = (
        plan.kernel.shape == (3, 3)
        and strategy.integer
        and plan.output_dtype.kind in "ui"
        and _largest_integer_sum(plan, strategy) < _INT16_EXACT_SUMS
    )
    if small_sums:  # 8-bit images, small integer kernels: exact in int16, twice the lanes
        strategy = replace(strategy, accumulator=np.dtype(np.int16))
        accumulator = strategy.accumulator
    empty = (np.zeros(0, np.int64), np.zeros(0, accumulator))
    if plan.kernel.shape == (3, 3):
        # Nine multiply-adds in registers beat two passes through memory,
        # separable or not; zero taps cost nothing in a vector lane.
        path = kernels.PATH_FUSED_3X3_INT16 if small_sums else kernels.PATH_FUSED_3X3
        corners = plan.kernel[::2, ::2]
        if skip and not corners.any():  # sharpen, laplacian: five taps, not nine
            path = kernels.PATH_FUSED_PLUS_INT16 if small_sums else kernels.PATH_FUSED_PLUS
        column_taps = row_taps = empty
        indices = np.arange(9)
        taps = (indices // 3, indices % 3, plan.kernel.ravel().astype(accumulator))
    elif strategy.separable:
        path = kernels.PATH_SEPARABLE
        column_taps = _taps(strategy.column, skip, accumulator)
        row_taps = _taps(strategy.row, skip, accumulator)
        taps = (empty[0], empty[0], empty[1])
    else:
        path = kernels.PATH_DIRECT
        column_taps = row_taps = empty
        flat = plan.kernel.ravel()
        indices = np.flatnonzero(flat) if skip else np.arange(flat.size)
        taps = (
            (indices // kernel_width).astype(np.int64),
            (indices % kernel_width).astype(np.int64),
            flat[indices].astype(accumulator),
        )

    output = plan.output_dtype
    if output.kind == "f":
        store_mode, lowest, highest = kernels.STORE_CAST, 0.0, 0.0
    else:
        info = np.iinfo(output)
        store_mode = kernels.STORE_CLAMP if strategy.integer else kernels.STORE_ROUND
        lowest, highest = float(info.min), float(info.max)
        if small_sums:  # every sum fits int16: clamping to its range as well changes nothing
            lowest, highest = max(lowest, -(2.0**15)), min(highest, 2.0**15 - 1)
    return Execution(
        strategy=strategy,
        path=path,
        row_index=row_index,
        col_index=col_index,
        taps=taps,
        column_taps=column_taps,
        row_taps=row_taps,
        band_height=band_height_for(plan, accumulator, workers),
        workers=workers,
        store_mode=store_mode,
        lowest=lowest,
        highest=highest,
    )


#: Executions kept for repeated calls: plans are cached objects (gpuconv._plan), so a
#: repeated call finds its border tables, taps and band height here by the plan's identity.
EXECUTION_CACHE_SIZE = 128
_EXECUTIONS: collections.OrderedDict = collections.OrderedDict()
_EXECUTIONS_LOCK = threading.Lock()


def cached_execution(plan: ConvolutionPlan, workers: int) -> Execution:
    """:func:`execution_for`, computed once per (plan object, thread count)."""
    key = (id(plan), workers)
    with _EXECUTIONS_LOCK:
        entry = _EXECUTIONS.get(key)
        # The entry holds its plan, so an id cannot be reused while the entry lives.
        if entry is not None and entry[0] is plan:
            _EXECUTIONS.move_to_end(key)
            return entry[1]
    run = execution_for(plan, workers)
    with _EXECUTIONS_LOCK:
        _EXECUTIONS[key] = (plan, run)
        while len(_EXECUTIONS) > EXECUTION_CACHE_SIZE:
            _EXECUTIONS.popitem(last=False)
    return run


# numba's fallback "workqueue" threading layer aborts the process when two threads
# launch parallel kernels at once (Dask's threaded scheduler does); omp and tbb do not.
_WORKQUEUE_LOCK = threading.Lock()


def _serialised_if_not_threadsafe(numba):
    """A lock around the call unless numba runs on a thread-safe layer (omp or tbb)."""
    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet: the layer is not chosen
        layer = None
    return contextlib.nullcontext() if layer in ("omp", "tbb") else _WORKQUEUE_LOCK


def convolve(image, plan: ConvolutionPlan, library: str = "numpy", output=None) -> np.ndarray:
    """Run ``plan`` on an ``(H, W, C)`` image or ``(N, H, W, C)`` stack (any strides).

    Returns a new array of the image's shape, or writes ``output`` (C-contiguous, the
    image's shape) and returns it. float16 (which numba cannot load) is widened to
    float32 first and the float32 sums rounded once to float16 at the end.
    """
    stack = image if image.ndim == 4 else image[None]
    if output is None:
        output = np.empty(stack.shape, dtype=plan.output_dtype)
        result = output if image.ndim == 4 else output[0]
    else:
        result = output
    output_stack = output if output.ndim == 4 else output[None]
    if plan.input_dtype == np.float16:
        stack = stack.astype(np.float32)
    if plan.output_dtype == np.float16:
        sums = np.empty(stack.shape, dtype=np.float32)
        _run(stack, replace(plan, output_dtype=np.dtype(np.float32)), sums)
        output_stack[...] = sums  # the one rounding, to nearest
    else:
        _run(stack, plan, output_stack)
    return result


def _run(stack: np.ndarray, plan: ConvolutionPlan, output: np.ndarray) -> None:
    import numba

    from . import kernels

    if plan.input_dtype == np.float16:
        plan = replace(plan, input_dtype=np.dtype(np.float32))
    workers = numba.get_num_threads()
    run = cached_execution(plan, workers)
    frames = stack.shape[0]
    height, width, channels = plan.shape
    accumulator = run.accumulator
    scalar = accumulator.type
    if accumulator.kind == "f":
        constant = scalar(plan.border_value)
    else:
        constant = scalar(int(plan.border_value)) if np.isfinite(plan.border_value) else scalar(0)
    function = kernels.compiled(plan.input_dtype, accumulator, plan.output_dtype)
    # Thread settings are thread-local and cost microseconds each: changed only when needed
    # (a small call runs on the calling thread, where the chunk size does not matter).
    parallel = run.workers > 1
    if run.workers != workers:
        numba.set_num_threads(run.workers)
    previous_chunk_size = numba.set_parallel_chunksize(1) if parallel else None  # dynamic bands
    try:
        with _serialised_if_not_threadsafe(numba):
            function(
                stack,
                output.reshape(frames, height, width * channels),
                run.row_index,
                run.col_index,
                plan.anchor_x,
                plan.kernel_height,
                plan.kernel_width,
                constant,
                run.path,
                *run.taps,
                *run.column_taps,
                *run.row_taps,
                run.band_height,
                run.workers,
                run.store_mode,
                scalar(run.lowest) if accumulator.kind == "f" else scalar(int(run.lowest)),
                scalar(run.highest) if accumulator.kind == "f" else scalar(int(run.highest)),
            )
    finally:
        if parallel:
            numba.set_parallel_chunksize(previous_chunk_size)
        if run.workers != workers:
            numba.set_num_threads(workers)
