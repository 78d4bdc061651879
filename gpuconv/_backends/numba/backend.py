"""The Numba CPU backend: multi-threaded, exact where it can be, no padded image copy.

This module imports without numba (the registry imports it to call
:func:`probe`); the compiled loops live in :mod:`.kernels`, imported on
the first :func:`convolve`. The fast path (exact integer sums, separable
passes, skipped zero taps) is chosen by :func:`gpuconv._strategy.choose_strategy`;
for kernels larger than 3 x 3, :func:`gpuconv._costmodel.choose_path` then picks
direct, separable, low-rank, runs or the FFT (:mod:`gpuconv._fft`, through
``ducc0.fft``, else ``scipy.fft``, on this backend's thread count) by estimated time; 3 x 3
kernels on float (and uint8) images run the shifted-rows loop
(:attr:`Execution.shifted_rows_loop`), serial for small work, so a small call enters no
parallel region. The border
index tables come from :func:`gpuconv._borders.source_indices`, so this backend
reads exactly the pixels the reference reads.

Threads: numba's pool, sized by ``NUMBA_NUM_THREADS`` (default: every core),
or fewer with ``numba.set_num_threads``. The pool is numba's ``tbb`` layer where the
``tbb`` package is installed (a dependency of ``gpuconv[numba]`` on Linux x86-64; see
:func:`offer_tbb`): work stealing, with the calling thread taking part, keeps a
descheduled worker from holding a call up on a busy machine.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import site
import sys
import threading
from dataclasses import dataclass, replace

import numpy as np

from ... import _costmodel, _fft
from ..._borders import source_indices
from ..._cache import BoundedCache
from ..._plan import ConvolutionPlan
from ..._strategy import Strategy, choose_strategy

_INSTALL_HINT = "pip install 'gpuconv[numba]'"

# Bytes of accumulator lines one worker holds: a band of rows small enough to
# stay in the L2 cache, large enough that the kh - 1 halo rows read again per
# band are a small fraction of the band.
_LINES_BUDGET_BYTES = 1 << 20
_MAX_BAND_HEIGHT = 64

# Multiply-adds (as workers_for counts them) below which one thread runs the call. A
# 512 x 512 float32 7 x 7 box counts 6 M and takes 0.45 ms on one core (2-core Xeon,
# 2026-11-27); run on two threads it was slower, in every one of six alternating runs
# interleaved with cv2.filter2D, idle and beside a busy process: p90 against cv2 0.96-1.09
# with two threads (the 4 M this was), 1.06-1.20 with one.
_SERIAL_WORK = 8 * 2**20
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


#: The TBB runtime numba's tbb layer links to, as pip's ``tbb`` package installs it.
_TBB_LIBRARY = "libtbb.so.12"
_tbb_offered = False
_tbb_path: str | None = None
_tbb_lock = threading.Lock()  # a second thread must not call numba before TBB is loaded


def offer_tbb() -> str | None:
    """Load pip's TBB runtime so that numba can choose its ``tbb`` threading layer.

    numba prefers ``tbb`` over ``omp`` and ``workqueue`` when it can load TBB, but finds
    the library only on the loader's path, where pip's ``tbb`` package (which puts it in
    ``<prefix>/lib``) is not. Measured on 2 cores with one other busy process, 2048 x 2048
    sharpen: GNU OpenMP's static split made a call wait for a descheduled worker (median
    3-6x cv2's), tbb's work stealing kept it level with cv2 (``gpuconv bench --busy 1``).

    ``NUMBA_THREADING_LAYER`` still decides (loading TBB makes ``tbb`` loadable, it does
    not choose it), and nothing changes once numba has chosen its layer. Returns the path
    loaded (now or by an earlier call), or None.
    """
    global _tbb_offered, _tbb_path
    with _tbb_lock:
        if not _tbb_offered and sys.platform == "linux":
            _tbb_path = _load_tbb()
        _tbb_offered = True
    return _tbb_path


def _load_tbb() -> str | None:
    """dlopen pip's libtbb.so.12 (in the environment's or the user's lib/), if there."""
    candidates = [os.path.join(sys.prefix, "lib", _TBB_LIBRARY)]
    user_base = getattr(site, "USER_BASE", None)
    if user_base:
        candidates.append(os.path.join(user_base, "lib", _TBB_LIBRARY))
    for path in candidates:
        if os.path.exists(path):
            try:
                # RTLD_GLOBAL: numba's tbbpool, loaded later, resolves libtbb.so.12 to it.
                ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            except OSError:
                continue
            return path
    return None


#: Seconds a fresh process pays before its first numba call computes anything: importing
#: numba and loading the compiled loop from numba's on-disk cache (0.4-0.9 s measured on
#: 2 cores; a cold cache compiles for seconds more).
LOADING_SECONDS = 0.5
#: Seconds per multiply-add of the NumPy reference (0.9-4.5 ns measured on 2 cores).
REFERENCE_SECONDS_PER_TAP = 2.5e-9
_rent_seconds = 0.0  # spent on stand-ins (the reference, OpenCV) instead of loading numba
_expected_calls: list[list[int]] = []  # [calls still to come] per expecting() in force
_rent_lock = threading.Lock()


@functools.cache
def _installed() -> bool:
    """Whether numba is installed, without importing it (0.3 s)."""
    import importlib.util

    return importlib.util.find_spec("numba") is not None


def worth_loading(plan: ConvolutionPlan, stand_in_seconds=None) -> bool:
    """Whether ``backend="auto"`` should load numba for ``plan`` now, or run a stand-in.

    The stand-in is the NumPy reference, or OpenCV where it gives the same bits
    (:mod:`gpuconv._backends.opencv`): ``stand_in_seconds()`` then returns
    OpenCV's predicted seconds, else None (or it is None).

    Once numba's loops are loaded, always. Before, a ski rental: the stand-in runs
    while the time it has taken, this call's included, stays under the cost of
    loading numba (:data:`LOADING_SECONDS`); the call that would pass it loads
    numba. So a process that filters one image never pays for the JIT, and one that
    filters many pays at most about twice the better of the two choices. Where the
    caller announced more calls like this one (:func:`expecting`: the bands of a
    file, a batch of files), they count too, so numba loads at the first call when
    all of them together would pass the cost.
    """
    global _rent_seconds
    kernels = sys.modules.get(f"{__package__}.kernels")  # imported once numba is used
    if (kernels is not None and kernels.loaded()) or not _installed():
        return True  # loaded; or nothing to load, and the probe says why
    rent = None if stand_in_seconds is None else stand_in_seconds()
    if rent is None:
        height, width, channels = plan.shape
        pixels = plan.frames * height * width * channels
        rent = pixels * plan.kernel.size * REFERENCE_SECONDS_PER_TAP
    with _rent_lock:
        coming = max((remaining[0] for remaining in _expected_calls), default=1)
        if _rent_seconds + rent * coming >= LOADING_SECONDS:
            return True
        _rent_seconds += rent
        for remaining in _expected_calls:  # this call was one of them
            remaining[0] = max(1, remaining[0] - 1)
        return False


@contextlib.contextmanager
def expecting(calls: int):
    """Tell :func:`worth_loading` that about ``calls`` calls like the next one are coming.

    Why: the ski rental weighs an unknown future one call at a time, so the first
    bands of a big file, or the first few dozen files of a batch, would run on the
    stand-in before numba loads, even where the whole job clearly pays for it. Each
    call on the stand-in counts one off. Nests and is shared by threads: the largest
    announcement in force counts.
    """
    remaining = [max(1, int(calls))]
    with _rent_lock:
        _expected_calls.append(remaining)
    try:
        yield
    finally:
        with _rent_lock:
            _expected_calls.remove(remaining)


def describe() -> str:
    """The numba version, the number of threads a call uses and numba's threading layer."""
    import numba

    try:
        layer = f"{numba.threading_layer()} layer"
    except ValueError:  # chosen at the first parallel call
        layer = "tbb layer loadable" if offer_tbb() else "layer chosen at the first call"
    return f"numba {numba.__version__}, {numba.get_num_threads()} threads, {layer}"


@dataclass(frozen=True)
class Execution:
    """The arguments of one compiled call, derived from a plan (no pixels touched).

    Attributes
    ----------
    strategy : Strategy
        The planner's decision (demoted to float64 sums for a huge constant border).
    path : int
        ``kernels.PATH_*``: direct, separable (one term, or several: low-rank), runs, or
        fused 3 x 3 (which wins over separable for 3 x 3 kernels).
    row_index, col_index : numpy.ndarray
        int64 source row of every output row's kernel rows (``H + kh - 1``
        entries) and source column of every padded column (``W + kw - 1``);
        ``-1`` reads the constant.
    taps : tuple of numpy.ndarray
        ``(tap_rows, tap_cols, tap_weights)`` of the direct path.
    column_taps, row_taps : tuple of numpy.ndarray
        ``(indices, weights, splits)`` of the separable or low-rank factors, term ``r``
        being entries ``splits[r]:splits[r + 1]`` (no term when not separable).
    band_height, workers : int
    store_mode : int
        How sums become output (``kernels.STORE_*``).
    lowest, highest : float
        The output type's range (integer outputs).
    accumulator_dtype : numpy.dtype
        The dtype of lines and sums (the strategy's, or the chosen path's).
    path_name : str
        What :func:`gpuconv._costmodel.choose_path` chose: ``"direct"``, ``"separable"``,
        ``"lowrank"``, ``"runs"`` or ``"fft"`` (``"direct"`` for the fused 3 x 3 loop).
    choice : PathChoice or None
        The cost model's decision and estimates (None for 3 x 3 kernels).
    plan : ConvolutionPlan
        The plan this execution runs (the arguments of :attr:`compiled_loop` come from it).
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
    accumulator_dtype: np.dtype
    path_name: str = "direct"
    choice: _costmodel.PathChoice | None = None
    plan: ConvolutionPlan | None = None

    @property
    def accumulator(self) -> np.dtype:
        return self.accumulator_dtype

    @property
    def uses_fft(self) -> bool:
        return self.path_name == "fft"

    @functools.cached_property  # works on a frozen dataclass: it writes the instance's dict
    def compiled_loop(self) -> tuple:
        """``(function, arguments)``: :func:`kernels.convolve_bands` compiled for the plan's
        types, and :attr:`loop_arguments`. Compiled on first use only: a 3 x 3 call that
        the shifted-rows loop finishes never compiles it (seconds with a cold cache)."""
        from . import kernels

        plan = self.plan
        function = kernels.compiled(plan.input_dtype, self.accumulator, plan.output_dtype)
        return function, self.loop_arguments

    @functools.cached_property
    def loop_arguments(self) -> tuple:
        """Every argument of the compiled loops after the image and output (packed tables
        and scalars). Built once per execution, on first use (it imports numba's kernels
        module): a repeated small call would pay microseconds for each NumPy scalar."""
        from . import kernels

        plan = self.plan
        accumulator = self.accumulator
        scalar = accumulator.type
        if accumulator.kind == "f":
            constant = scalar(plan.border_value)
            lowest, highest = scalar(self.lowest), scalar(self.highest)
        else:
            finite = np.isfinite(plan.border_value)
            constant = scalar(int(plan.border_value)) if finite else scalar(0)
            lowest, highest = scalar(int(self.lowest)), scalar(int(self.highest))
        height, width, channels = plan.shape
        tap_rows, tap_cols, tap_weights = self.taps
        column_taps, column_weights, column_splits = self.column_taps
        row_taps, row_weights, row_splits = self.row_taps
        arguments = kernels.pack_arguments(
            {
                "height": height,
                "width": width,
                "channels": channels,
                "anchor_x": plan.anchor_x,
                "kernel_height": plan.kernel_height,
                "kernel_width": plan.kernel_width,
                "path": self.path,
                "band_height": self.band_height,
                "workers": self.workers,
                "store_mode": self.store_mode,
            },
            {
                "row_index": self.row_index,
                "col_index": self.col_index,
                "tap_rows": tap_rows,
                "tap_cols": tap_cols,
                "column_taps": column_taps,
                "column_splits": column_splits,
                "row_taps": row_taps,
                "row_splits": row_splits,
                "tap_weights": tap_weights,
                "column_weights": column_weights,
                "row_weights": row_weights,
            },
            constant,
            lowest,
            highest,
            accumulator,
        )
        return arguments

    @functools.cached_property
    def shifted_rows_loop(self):
        """``(function, arguments)``: :func:`kernels.shifted_rows_3x3` (one worker) or
        :func:`kernels.shifted_rows_3x3_parallel` compiled for the plan (see
        :attr:`shifted_rows_variant`), or None where they do not apply."""
        variant = self.shifted_rows_variant
        if variant is None:
            return None
        from . import kernels

        return kernels.compiled_shifted_rows(*variant), self.loop_arguments

    @functools.cached_property
    def shifted_rows_variant(self):
        """``(dtype, parallel)`` of the shifted-rows loop this plan runs, or None. It takes
        a 3 x 3 kernel on a float image, with sums and output of its dtype, and on a uint8
        image to a uint8 output with int16 sums; in parallel for more than one worker.
        Reading the source rows in place, it beats the band loop at every size measured
        (256 to 2048, float32, 2 cores)."""
        from . import kernels

        plan = self.plan
        dtype = plan.input_dtype
        float_paths = (
            kernels.PATH_FUSED_3X3,
            kernels.PATH_FUSED_PLUS_FINITE,
            kernels.PATH_FUSED_SPARSE_FINITE,
        )
        int16_paths = (kernels.PATH_FUSED_3X3_INT16, kernels.PATH_FUSED_PLUS_INT16)
        float_sums = (
            self.path in float_paths
            and dtype.kind == "f"
            and dtype == self.accumulator == plan.output_dtype
        )
        int16_sums = self.path in int16_paths and dtype == np.uint8 == plan.output_dtype
        if not (float_sums or int16_sums):
            return None
        return dtype, self.workers > 1

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
    per call when interleaved with cv2 on 2 cores; work under about half a
    millisecond on one core (:data:`_SERIAL_WORK`) runs on the calling thread alone.
    """
    height, width, channels = plan.shape
    taps = min(plan.kernel.size, plan.kernel_height + plan.kernel_width + 9)
    work = plan.frames * height * width * channels * max(taps, 9)
    return 1 if work < _SERIAL_WORK else available


def execution_for(plan: ConvolutionPlan, workers: int, force: str | None = None) -> Execution:
    """Everything the compiled loop needs for ``plan`` with up to ``workers`` threads.

    ``force``: the cost model's path to take whatever it costs (see :func:`convolve_path`).
    """
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
    choice = None
    path_name = "direct"
    small_sums = (
        plan.kernel.shape == (3, 3)
        and strategy.integer
        and plan.output_dtype.kind in "ui"
        and _largest_integer_sum(plan, strategy) < _INT16_EXACT_SUMS
    )
    if small_sums:  # 8-bit images, small integer kernels: exact in int16, twice the lanes
        strategy = replace(strategy, accumulator=np.dtype(np.int16))
        accumulator = strategy.accumulator
    if plan.kernel.shape == (3, 3):
        # Nine multiply-adds in registers beat two passes through memory,
        # separable or not; zero taps cost nothing in a vector lane.
        empty = (np.zeros(0, np.int64), np.zeros(0, accumulator))
        path = kernels.PATH_FUSED_3X3_INT16 if small_sums else kernels.PATH_FUSED_3X3
        zero_corners = not plan.kernel[::2, ::2].any()
        if skip and zero_corners:  # sharpen, laplacian: five taps, not nine
            path = kernels.PATH_FUSED_PLUS_INT16 if small_sums else kernels.PATH_FUSED_PLUS
        elif (
            np.count_nonzero(plan.kernel) <= 6
            and accumulator.kind == "f"
            and plan.input_dtype.kind == "f"
            and plan.output_dtype.kind == "f"
        ):
            # Their <= 6 taps on rows free of NaN and inf: five for zero corners, else six.
            path = (
                kernels.PATH_FUSED_PLUS_FINITE if zero_corners else kernels.PATH_FUSED_SPARSE_FINITE
            )
        column_taps = row_taps = (*empty, np.zeros(1, np.int64))
        indices = np.arange(9)
        taps = (indices // 3, indices % 3, plan.kernel.ravel().astype(accumulator))
    else:
        choice = _costmodel.choose_path(plan, strategy, "numba", force=force)
        path_name = choice.path
        accumulator = choice.accumulator
        empty = (np.zeros(0, np.int64), np.zeros(0, accumulator))
        column_taps = row_taps = (*empty, np.zeros(1, np.int64))
        taps = (empty[0], empty[0], empty[1])
        if choice.loop in ("separable", "lowrank"):
            path = kernels.PATH_SEPARABLE
            column_taps = _terms(choice.columns, skip, accumulator)
            row_taps = _terms(choice.rows, skip, accumulator)
        elif choice.loop == "runs":
            path = kernels.PATH_RUNS
            run_rows, starts, stops, values = choice.runs
            # A run [j0, j1) of value v: v * (prefix[k + j1] - prefix[k + j0]).
            taps = (
                np.repeat(run_rows, 2),
                np.stack([stops, starts], axis=1).ravel(),
                np.stack([values, -values], axis=1).ravel().astype(accumulator),
            )
        else:
            path = kernels.PATH_DIRECT
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
        accumulator_dtype=np.dtype(accumulator),
        path_name=path_name,
        choice=choice,
        plan=plan,
    )


def _terms(factors: np.ndarray, skip_zero: bool, dtype: np.dtype):
    """(indices, weights, splits) of ``r`` stacked 1-D factors (see :class:`Execution`)."""
    pieces = [_taps(factor, skip_zero, dtype) for factor in factors]
    splits = np.cumsum([0] + [piece[0].size for piece in pieces]).astype(np.int64)
    indices = np.concatenate([piece[0] for piece in pieces]).astype(np.int64)
    weights = np.concatenate([piece[1] for piece in pieces]).astype(dtype)
    return indices, weights, splits


#: Executions kept for repeated calls: plans are cached objects (gpuconv._plan), so a
#: repeated call finds its border tables, taps and band height here by the plan's identity.
EXECUTION_CACHE_SIZE = 128
_EXECUTIONS = BoundedCache(EXECUTION_CACHE_SIZE)
# A dtype's type code tells float16 in 40 ns, ``dtype == np.float16`` in 200 (it converts).
_FLOAT16 = np.dtype(np.float16).char
#: float16 plans as the loop runs them (float32), one object per plan (so that their
#: executions are cached too, instead of being planned again at every call).
_FLOAT32_TWINS = BoundedCache(EXECUTION_CACHE_SIZE)


def cached_execution(plan: ConvolutionPlan, workers: int, force: str | None = None) -> Execution:
    """:func:`execution_for`, computed once per (plan object, thread count, forced path)."""
    # Two arguments when not forced: execution_for keeps its two-argument call (tests wrap it).
    if force is None:
        make = lambda: execution_for(plan, workers)  # noqa: E731
    else:
        make = lambda: execution_for(plan, workers, force)  # noqa: E731
    return _EXECUTIONS.get((id(plan), workers, force), make, plan)


def _float32_twin(plan: ConvolutionPlan, field: str) -> ConvolutionPlan:
    """``plan`` with ``field`` (``"input_dtype"`` or ``"output_dtype"``) float32, cached."""
    return _FLOAT32_TWINS.get(
        (id(plan), field), lambda: replace(plan, **{field: np.dtype(np.float32)}), plan
    )


def _thread_count(numba) -> int:
    """``numba.get_num_threads()``, without its process lock once the pool is up.

    numba's Python-level getter and setter take a lock each call (about 1 us apiece);
    a small cached call made four of them.
    """
    parallel = numba.np.ufunc.parallel
    if getattr(parallel, "_is_initialized", False):
        count = parallel._get_num_threads()
        if count > 0:
            return count
    return numba.get_num_threads()


def _set_thread_count(numba, count: int) -> None:
    """``numba.set_num_threads(count)`` (1 <= count <= NUMBA_NUM_THREADS), lock-free once up."""
    parallel = numba.np.ufunc.parallel
    if getattr(parallel, "_is_initialized", False) and hasattr(parallel, "_set_num_threads"):
        parallel._set_num_threads(count)
    else:
        numba.set_num_threads(count)


# numba's fallback "workqueue" threading layer aborts the process when two threads
# launch parallel kernels at once (Dask's threaded scheduler does); omp and tbb do not.
_WORKQUEUE_LOCK = threading.Lock()


_NO_LOCK = contextlib.nullcontext()
_NEEDS_LOCK: bool | None = None  # known once numba's layer is chosen


def _serialised_if_not_threadsafe(numba):
    """A lock around the call unless numba runs on a thread-safe layer (omp or tbb)."""
    global _NEEDS_LOCK
    if _NEEDS_LOCK is False:  # the layer, once chosen, stays for the process
        return _NO_LOCK
    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet: the layer is not chosen
        return _WORKQUEUE_LOCK
    _NEEDS_LOCK = layer not in ("omp", "tbb")
    return _WORKQUEUE_LOCK if _NEEDS_LOCK else _NO_LOCK


def convolve(image, plan: ConvolutionPlan, library: str = "numpy", output=None) -> np.ndarray:
    """Run ``plan`` on an ``(H, W, C)`` image or ``(N, H, W, C)`` stack (any strides).

    Returns a new array of the image's shape, or writes ``output`` (C-contiguous, the
    image's shape) and returns it. float16 (which numba cannot load) is widened to
    float32 first and the float32 sums rounded once to float16 at the end.
    """
    if not _tbb_offered:
        offer_tbb()  # before numba's first parallel call chooses the layer
    import numba

    return _convolve_stack(image, plan, output, _thread_count(numba))


def repeat_runner(plan: ConvolutionPlan):
    """For :mod:`gpuconv._convolve`'s repeated calls: a function that runs ``plan`` on a
    C-contiguous image of its shape, or None where ``plan`` does not run serially by the
    shifted-rows loop (small 3 x 3 filters, where the call's fixed cost matters most).

    The function returns the result, or None where a NaN or inf met a skipped zero tap
    (the whole call then runs, and the band loop decides line by line). The plan's
    execution for one worker does not depend on the thread count, so the function stays
    valid whatever ``numba.set_num_threads`` says later.
    """
    import numba

    if plan.frames != 1 or plan.input_dtype.char == _FLOAT16:
        return None
    run = cached_execution(plan, _thread_count(numba))
    shifted_rows = run.shifted_rows_loop
    if run.workers != 1 or shifted_rows is None:
        return None
    function, arguments = shifted_rows
    height, width, channels = plan.shape
    row_stride = width * channels
    frame_stride = height * row_stride
    output_dtype = plan.output_dtype  # the image's (shifted_rows_variant)

    def repeat(image: np.ndarray):
        output = np.empty(image.shape, output_dtype)
        sums = output.reshape(1, height, row_stride)
        if function(image.reshape(-1), frame_stride, row_stride, sums, *arguments):
            return output
        return None

    return repeat


def convolve_path(image3d: np.ndarray, plan: ConvolutionPlan, path: str) -> np.ndarray:
    """:func:`convolve` on the cost model's ``path`` (``"direct"``, ``"lowrank"``...) whatever
    it costs: ``gpuconv bench --kernel-sizes`` times every path this way. Cached as
    :func:`convolve` is; a ``ValueError`` when ``path`` cannot compute ``plan`` within the
    contract."""
    import numba

    if plan.kernel.shape == (3, 3):
        raise ValueError("3 x 3 kernels always run the fused 3 x 3 loop")
    return _convolve_stack(image3d, plan, None, _thread_count(numba), force=path)


def _convolve_stack(
    image, plan: ConvolutionPlan, output, threads: int, force: str | None = None
) -> np.ndarray:
    """:func:`convolve` on up to ``threads`` threads (the caller's numba thread count), on
    the cost model's path ``force`` where given (:func:`cached_execution`)."""
    stack = image if image.ndim == 4 else image[None]
    if output is None:
        output = np.empty(stack.shape, dtype=plan.output_dtype)
        result = output if image.ndim == 4 else output[0]
    else:
        result = output
    output_stack = output if output.ndim == 4 else output[None]
    if plan.input_dtype.char == _FLOAT16:
        stack = stack.astype(np.float32)
    if plan.output_dtype.char == _FLOAT16:
        sums = np.empty(stack.shape, dtype=np.float32)
        _run(stack, _float32_twin(plan, "output_dtype"), sums, threads, force)
        output_stack[...] = sums  # the one rounding, to nearest
    else:
        _run(stack, plan, output_stack, threads, force)
    return result


def flat_rows(stack: np.ndarray) -> tuple:
    """``(pixels, frame_stride, row_stride)`` for :func:`kernels.convolve_bands`: the stack
    as one flat array in which each row's ``W * C`` elements are contiguous, with the
    element strides of frames and rows; an empty array where rows are not contiguous (or
    the strides are negative or not whole elements): :func:`_run` then copies the stack."""
    frames, height, width, channels = stack.shape
    if stack.flags.c_contiguous:
        return stack.reshape(-1), height * width * channels, width * channels
    item = stack.itemsize
    frame_bytes, row_bytes, column_bytes, channel_bytes = stack.strides
    contiguous_row = (channels == 1 or channel_bytes == item) and (
        width == 1 or column_bytes == channels * item
    )
    if contiguous_row and min(frame_bytes, row_bytes) >= 0 and not (frame_bytes | row_bytes) % item:
        frame_stride, row_stride = frame_bytes // item, row_bytes // item
        span = (frames - 1) * frame_stride + (height - 1) * row_stride + width * channels
        rows = np.lib.stride_tricks.as_strided(stack, shape=(span,), strides=(item,))
        return rows, frame_stride, row_stride
    return np.empty(0, stack.dtype), 0, 0


def _run(stack: np.ndarray, plan: ConvolutionPlan, output: np.ndarray, workers: int, force) -> None:
    """``stack`` into ``output`` by the cached execution for ``workers`` threads (the
    caller's thread count, restored afterwards if the execution takes fewer)."""
    import numba

    if plan.input_dtype.char == _FLOAT16:
        plan = _float32_twin(plan, "input_dtype")
    run = cached_execution(plan, workers, force)
    frames = stack.shape[0]
    shifted_rows = run.shifted_rows_loop
    if run.workers == 1 and shifted_rows is not None:  # small 3 x 3 filters
        # The shortest way through: no parallel region, no thread settings, no lock.
        pixels, frame_stride, row_stride = flat_rows(stack)
        if pixels.size:
            function, arguments = shifted_rows
            sums = output.reshape(frames, plan.shape[0], -1)
            if function(pixels, frame_stride, row_stride, sums, *arguments):
                return
            shifted_rows = None  # a NaN or inf where a zero tap was skipped: the band loop
    if run.uses_fft:
        # None: non-finite pixels or an error bound the FFT misses; the loop path runs.
        results = []
        for frame in range(frames):
            frame_result = _fft.convolve_fft(stack[frame], plan, workers=run.workers)
            if frame_result is None:
                break
            results.append(frame_result)
        else:
            for frame, frame_result in enumerate(results):
                output[frame] = frame_result
            return
    height, width, channels = plan.shape
    pixels, frame_stride, row_stride = flat_rows(stack)
    if pixels.size == 0:
        # Rows not contiguous (strided columns, flipped rows): one C-order copy,
        # so that the loop has a single, vectorised way to load a line.
        stack = np.ascontiguousarray(stack)
        pixels, frame_stride, row_stride = flat_rows(stack)
    sums = output.reshape(frames, height, width * channels)
    # Thread settings are thread-local and cost microseconds each: changed only when needed
    # (a small call runs on the calling thread, where the chunk size does not matter).
    parallel = run.workers > 1
    if run.workers != workers:
        _set_thread_count(numba, run.workers)
    previous_chunk_size = numba.set_parallel_chunksize(1) if parallel else None  # dynamic bands
    try:
        with _serialised_if_not_threadsafe(numba):
            # The shifted-rows loop (if not tried above) gives False for a NaN or inf where
            # a zero tap was skipped: the band loop then decides line by line. It is
            # compiled only where it runs.
            finished = False
            if shifted_rows is not None:
                function, arguments = shifted_rows
                finished = function(pixels, frame_stride, row_stride, sums, *arguments)
            if not finished:
                function, arguments = run.compiled_loop
                function(pixels, frame_stride, row_stride, sums, *arguments)
    finally:
        if parallel:
            numba.set_parallel_chunksize(previous_chunk_size)
        if run.workers != workers:
            _set_thread_count(numba, workers)
