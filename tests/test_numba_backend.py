"""Numba-specific tests: each fast path, border tables, scratch memory, threads.

The shared contract suite (test_contract.py) checks what the numba backend
computes; this module checks *how*: that every path the planner can pick
agrees with the reference on images where it applies, that only border
pixels go through the border rule, that no padded copy of the image is made,
and that numba's thread count is honoured.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import replace

import numpy as np
import pytest
from support import assert_contract_accuracy, reference

import gpuconv
from gpuconv._borders import source_indices
from gpuconv._plan import make_plan

numba = pytest.importorskip(
    "numba", reason="the numba backend needs numba: pip install 'gpuconv[numba]'"
)
from gpuconv._backends.numba import backend as _numba  # noqa: E402 (after the skip)
from gpuconv._backends.numba import kernels as _numba_kernels  # noqa: E402


def _plan(image, kernel, **options):
    defaults = {"border": "reflect101", "value": 0.0, "anchor": None, "flip": False, "dtype": None}
    defaults.update(options)
    return make_plan(image, kernel, **defaults)[1]


INTEGER_SEPARABLE = np.outer([1, 4, 6, 4, 1], [1, 2, 0, -2, -1]).astype(float)  # has zero taps
INTEGER_DIRECT = np.array(
    [[0, 1, 2, 1, 0], [1, -2, 0, 3, 1], [2, 0, -8, 0, 2], [1, 1, 0, 1, 1]], float
)


@pytest.mark.parametrize(
    ("dtype", "kernel", "path", "integer"),
    [
        ("uint8", "sharpen", _numba_kernels.PATH_FUSED_PLUS_INT16, True),
        ("uint8", "sobel_x", _numba_kernels.PATH_FUSED_3X3_INT16, True),
        ("int16", "sharpen", _numba_kernels.PATH_FUSED_PLUS, True),  # sums beyond int16
        ("uint16", "sobel_x", _numba_kernels.PATH_FUSED_3X3, True),
        ("float32", "sobel_x", _numba_kernels.PATH_FUSED_SPARSE_FINITE, False),  # six taps
        ("float32", INTEGER_DIRECT[:3, :3] + 1, _numba_kernels.PATH_FUSED_3X3, False),
        # five taps on rows free of NaN and inf, nine elsewhere (0 * NaN is NaN)
        ("float32", "sharpen", _numba_kernels.PATH_FUSED_PLUS_FINITE, False),
        ("uint8", INTEGER_SEPARABLE, _numba_kernels.PATH_SEPARABLE, True),
        ("int16", INTEGER_SEPARABLE, _numba_kernels.PATH_SEPARABLE, True),
        ("uint8", "small_blur", _numba_kernels.PATH_SEPARABLE, False),
        ("float32", "large_blur", _numba_kernels.PATH_SEPARABLE, False),
        ("uint16", INTEGER_DIRECT, _numba_kernels.PATH_DIRECT, True),
        ("uint16", INTEGER_DIRECT * 20, _numba_kernels.PATH_DIRECT, True),  # int32 sums
        ("float32", INTEGER_DIRECT * 0.37, _numba_kernels.PATH_DIRECT, False),
    ],
)
def test_each_path_agrees_with_the_reference(rng, dtype, kernel, path, integer):
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "ui" else None
    if info is not None:
        image = rng.integers(info.min, info.max, (61, 77), endpoint=True).astype(dtype)
    else:
        image = rng.standard_normal((61, 77)).astype(dtype)
    plan = _plan(image, kernel)
    run = _numba.execution_for(plan, workers=2)
    assert run.path == path
    assert run.strategy.integer == integer
    actual = gpuconv.convolve(image, kernel, backend="numba")
    # Integer paths are exact (bit-identical to OpenCV); float paths within the contract.
    assert_contract_accuracy(actual, reference(image, kernel), exact=integer)


@pytest.mark.parametrize(
    ("dtype", "kernel", "accumulator"),
    [
        ("uint8", "sharpen", np.int16),  # |sums| <= 9 * 255 < 2**15: int16 lines (3 x 3)
        ("uint8", INTEGER_DIRECT, np.float32),  # 27 * 255: exact in float32
        ("uint16", INTEGER_DIRECT, np.float32),  # 27 * 65535 < 2**24
        ("uint16", INTEGER_DIRECT * 20, np.int32),  # 540 * 65535 > 2**24
        ("int16", np.full((5, 5), 3000.0), np.int64),  # beyond int32
        ("int16", [[-65536.0]], np.int64),  # -32768 * -65536 = 2**31, one past int32
        ("int16", [[-65535.0]], np.int32),
    ],
)
def test_integer_sums_use_float32_only_where_it_is_exact(dtype, kernel, accumulator):
    run = _numba.execution_for(_plan(np.zeros((9, 9), dtype), kernel), workers=1)
    assert run.strategy.integer
    assert run.accumulator == accumulator


def test_zero_taps_are_skipped_for_integer_images_only():
    kernel = INTEGER_DIRECT  # 6 of its 20 taps are zero
    integer_run = _numba.execution_for(_plan(np.zeros((9, 9), np.uint8), kernel), workers=1)
    float_run = _numba.execution_for(_plan(np.zeros((9, 9), np.float32), kernel), workers=1)
    assert integer_run.taps[2].size == np.count_nonzero(kernel)
    assert float_run.taps[2].size == kernel.size  # 0 * NaN must stay NaN


def test_large_integer_sums_use_int64_and_stay_exact(rng):
    image = rng.integers(60000, 65536, (40, 50)).astype(np.uint16)
    kernel = np.full((5, 5), 3000.0)
    kernel[2, 2] = -77000.0  # not separable, sums beyond int32
    run = _numba.execution_for(_plan(image, kernel, dtype=np.float64), workers=1)
    assert run.accumulator == np.int64
    actual = gpuconv.convolve(image, kernel, dtype=np.float64, backend="numba")
    np.testing.assert_array_equal(actual, reference(image, kernel, dtype=np.float64))


def test_huge_constant_borders_widen_then_leave_the_integer_path():
    plan = _plan(np.zeros((8, 8), np.uint8), "sharpen", border="constant", value=1e12)
    assert _numba.execution_for(plan, workers=1).accumulator == np.int64  # still exact
    plan = _plan(np.zeros((8, 8), np.uint8), "sharpen", border="constant", value=1e30)
    assert _numba.execution_for(plan, workers=1).accumulator == np.float64
    image = np.arange(64, dtype=np.uint8).reshape(8, 8)
    for value in (1e12, -3e15, 1e30):
        options = dict(border="constant", value=value, dtype=np.float64)
        np.testing.assert_array_equal(
            gpuconv.convolve(image, "sharpen", backend="numba", **options),
            gpuconv.convolve(image, "sharpen", backend="numpy", **options),
        )


@pytest.mark.parametrize("border", list(gpuconv.Border))
@pytest.mark.parametrize(("size", "kernel_size", "anchor"), [(1, 3, 1), (5, 12, 3), (9, 4, 0)])
def test_index_tables_are_the_reference_border_mapping(border, size, kernel_size, anchor):
    image = np.zeros((size, size), np.uint8)
    kernel = np.ones((kernel_size, kernel_size))
    plan = _plan(image, kernel, border=border, anchor=(anchor, anchor))
    run = _numba.execution_for(plan, workers=1)
    expected = source_indices(np.arange(-anchor, size - anchor + kernel_size - 1), size, border)
    np.testing.assert_array_equal(run.row_index, expected)
    np.testing.assert_array_equal(run.col_index, expected)
    # The interior maps to itself: those pixels are copied, never looked up.
    np.testing.assert_array_equal(run.col_index[anchor : anchor + size], np.arange(size))


def test_scratch_memory_is_a_few_rows_not_a_padded_copy():
    image = np.zeros((8192, 8192), np.uint8)
    for kernel in ("sharpen", "large_blur", np.ones((9, 9)) / 7):
        plan = _plan(image, kernel)
        run = _numba.execution_for(plan, workers=16)
        assert run.band_height <= 64
        # A padded float64 copy would be 537 MB; 16 workers' bands are a few MB
        # (twice as many for float64 sums, which the unnormalised 9 x 9 gets).
        assert run.scratch_bytes(plan) < 32 * 2**20, run.scratch_bytes(plan)


def _python(code: str, **environment) -> subprocess.CompletedProcess:
    import os

    env = dict(os.environ, **environment)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )


@pytest.mark.slow
def test_peak_memory_of_an_8192_image_is_input_output_and_a_few_rows():
    result = _python(
        """
        import numpy as np, gpuconv
        def status_kib(field):
            with open("/proc/self/status") as status:
                for line in status:
                    if line.startswith(field):
                        return int(line.split()[1])
        image = np.full((8192, 8192), 7, np.uint8)
        # Compile or load first the loop the big call runs (on the thread pool: 2048 x 2048)
        gpuconv.convolve(image[:2048, :2048], "sharpen", backend="numba")
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # reset the peak (VmHWM) to now: compiling may have used more
        before = status_kib("VmRSS:")
        output = gpuconv.convolve(image, "sharpen", backend="numba")
        print(status_kib("VmHWM:") - before, int(output[100, 100]))
        """,
        NUMBA_NUM_THREADS="2",
    )
    if "clear_refs" in result.stderr:
        pytest.skip("this kernel does not let a process reset its peak RSS (/proc/self/clear_refs)")
    assert result.returncode == 0, result.stderr
    growth_kib, pixel = map(int, result.stdout.split())
    assert pixel == 7  # sharpen sums to 1
    # Output (64 MiB) plus scratch rows; an int32 padded copy alone would be 256 MiB.
    assert growth_kib < (64 + 24) * 1024, f"peak grew by {growth_kib / 1024:.0f} MiB"


def test_small_work_runs_on_one_thread_and_large_work_on_all():
    small = _plan(np.zeros((256, 256), np.uint8), "sharpen")
    large = _plan(np.zeros((2048, 2048), np.uint8), "sharpen")
    assert _numba.execution_for(small, workers=4).workers == 1
    assert _numba.execution_for(large, workers=4).workers == 4
    assert _numba.execution_for(large, workers=1).workers == 1


def test_numba_num_threads_is_honoured():
    # An image large enough that the planner wakes every thread it is given (checked with
    # 4 below): under NUMBA_NUM_THREADS=1 the call must still run on one.
    result = _python(
        """
        import json, numpy as np, gpuconv, numba
        from gpuconv._backends.numba import backend as _numba
        from gpuconv._plan import make_plan
        image = np.arange(600 * 400, dtype=np.float32).reshape(600, 400) % 251
        plan = make_plan(
            image, "large_blur", border="reflect", value=0.0, anchor=None, flip=False, dtype=None
        )[1]
        used = []
        planned = _numba.execution_for
        _numba.execution_for = lambda plan, workers: used.append(planned(plan, workers).workers) or planned(plan, workers)
        gpuconv.convolve(image, "large_blur", border="reflect", backend="numba")
        print(json.dumps({"threads": numba.get_num_threads(),
                          "describe": gpuconv.backends()["numba"].reason,
                          "workers_for_4": _numba.workers_for(plan, 4),
                          "used": used}))
        """,
        NUMBA_NUM_THREADS="1",
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["threads"] == 1
    assert "1 threads" in report["describe"]
    assert report["workers_for_4"] == 4  # big enough for every thread there is
    assert report["used"] == [1]  # but the call ran on the one NUMBA_NUM_THREADS allows


def test_results_do_not_depend_on_the_thread_count(rng):
    image = rng.standard_normal((901, 603)).astype(np.float32)  # large enough for every thread
    kernel = rng.standard_normal((6, 5))
    assert _numba.execution_for(_plan(image, kernel), workers=2).workers == 2
    default = gpuconv.convolve(image, kernel, backend="numba")
    previous = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        single = gpuconv.convolve(image, kernel, backend="numba")
    finally:
        numba.set_num_threads(previous)
    np.testing.assert_array_equal(single, default)  # every row is summed the same way


def test_packed_arguments_give_back_every_scalar_and_table():
    scalars = {
        "height": 7,
        "width": 11,
        "channels": 3,
        "anchor_x": 2,
        "kernel_height": 5,
        "kernel_width": 4,
        "path": _numba_kernels.PATH_RUNS,
        "band_height": 6,
        "workers": 2,
        "store_mode": _numba_kernels.STORE_ROUND,
    }
    sizes = iter(range(1, 20))
    tables = {name: np.arange(next(sizes)) - 1 for name in _numba_kernels.INTEGER_TABLES}
    tables.update({name: np.linspace(-1, 1, next(sizes)) for name in _numba_kernels.WEIGHT_TABLES})
    integers, weights = _numba_kernels.pack_arguments(
        scalars, tables, np.float32(9.5), np.float32(-3), np.float32(4), np.dtype(np.float32)
    )
    assert integers.dtype == np.int64 and weights.dtype == np.float32
    assert not integers.flags.writeable and not weights.flags.writeable
    for name, value in scalars.items():
        assert integers[getattr(_numba_kernels, name.upper())] == value
    for index, name in enumerate(_numba_kernels.INTEGER_TABLES):
        got = _numba_kernels._table.py_func(
            integers, integers, _numba_kernels.INTEGER_BOUNDS, index
        )
        np.testing.assert_array_equal(got, tables[name])
    for index, name in enumerate(_numba_kernels.WEIGHT_TABLES):
        got = _numba_kernels._table.py_func(weights, integers, _numba_kernels.WEIGHT_BOUNDS, index)
        np.testing.assert_array_equal(got, tables[name].astype(np.float32))
    constant, lowest, highest = (
        weights[getattr(_numba_kernels, name)] for name in ("CONSTANT", "LOWEST", "HIGHEST")
    )
    assert (constant, lowest, highest) == (9.5, -3, 4)
    for missing in ("workers", "row_weights"):  # a slot left at 0 would be a silent bug
        with pytest.raises(ValueError, match="every scalar and every table"):
            _numba_kernels.pack_arguments(
                {key: value for key, value in scalars.items() if key != missing},
                {key: value for key, value in tables.items() if key != missing},
                np.float32(0),
                np.float32(0),
                np.float32(0),
                np.dtype(np.float32),
            )


def test_module_imports_and_explains_without_numba():
    result = _python(
        """
        import sys
        sys.modules["numba"] = None
        from gpuconv._backends.numba import backend as _numba  # doctest collection imports both
        from gpuconv._backends.numba import kernels as _numba_kernels
        print(_numba.probe())
        try:
            _numba_kernels.compiled("uint8", "float32", "uint8")
        except ImportError as error:
            print(error)
        """
    )
    assert result.returncode == 0, result.stderr
    hint = "numba is not installed: pip install 'gpuconv[numba]'"
    assert result.stdout.splitlines() == [hint, hint]


def test_one_compiled_function_serves_every_memory_layout(rng):
    image = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    views = [image, image[::2, 1::3], image[:, :, 1], np.asfortranarray(image[:, :, 0])]
    read_only = image.copy()
    read_only.flags.writeable = False
    views.append(read_only)
    for view in views:
        np.testing.assert_array_equal(
            gpuconv.convolve(view, "sobel_y", backend="numba"), reference(view, "sobel_y")
        )
    key = (np.dtype(np.uint8), np.dtype(np.int32), np.dtype(np.uint8))
    assert len(_numba_kernels.compiled(*key).signatures) == 1


def _tbb_installed() -> bool:
    try:
        importlib.metadata.version("tbb")
    except importlib.metadata.PackageNotFoundError:
        return False
    return sys.platform == "linux"


@pytest.mark.parametrize("layer", ["workqueue", "omp", "tbb"])
def test_concurrent_calls_from_threads_are_safe_on_every_threading_layer(layer):
    if layer == "tbb" and not _tbb_installed():
        pytest.skip("pip's tbb package is not installed here (gpuconv[numba] on Linux x86-64)")
    # Dask's threaded scheduler calls the backend from several threads at once; numba's
    # workqueue layer would abort the process unless the backend serialises the calls.
    import subprocess
    import sys

    code = (
        "import numpy as np, gpuconv, numba\n"
        "from concurrent.futures import ThreadPoolExecutor\n"
        "image = np.random.default_rng(0).integers(0, 256, (1024, 1024)).astype(np.uint8)\n"
        "expected = gpuconv.convolve(image, 'large_blur', backend='numpy')\n"
        "def job(_):\n"
        "    return bool((gpuconv.convolve(image, 'large_blur', backend='numba') == expected).all())\n"
        "with ThreadPoolExecutor(4) as pool:\n"
        "    results = list(pool.map(job, range(16)))\n"
        "print(all(results), numba.threading_layer())\n"
    )
    environment = {**os.environ, "NUMBA_THREADING_LAYER": layer, "NUMBA_NUM_THREADS": "2"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=300
    )
    if layer == "omp" and "No threading layer could be loaded" in result.stderr:
        pytest.skip("numba's OpenMP layer is not loadable here (no libgomp)")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["True", layer]


@pytest.mark.skipif(not _tbb_installed(), reason="needs pip's tbb package (Linux x86-64)")
def test_numba_runs_on_tbb_when_the_tbb_package_is_installed():
    # Work stealing keeps a descheduled worker from holding a call up on a busy machine:
    # the backend loads pip's TBB, which numba would not find, before numba picks a layer.
    import subprocess

    code = (
        "import numpy as np, gpuconv, numba\n"
        "gpuconv.convolve(np.zeros((2048, 2048), np.uint8), 'sharpen', backend='numba')\n"
        "print(numba.threading_layer())\n"
    )
    environment = {k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER"}
    environment["NUMBA_NUM_THREADS"] = "2"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["tbb"]


def test_a_fresh_process_runs_a_small_first_call_without_loading_numba():
    # Importing numba and loading its loops costs ~0.5 s; sharpening one 512 x 512 RGB image
    # on the reference ~15 ms. auto runs the reference, and numba is never imported.
    code = (
        "import sys, numpy as np, gpuconv\n"
        "image = np.random.default_rng(0).integers(0, 256, (512, 512, 3)).astype(np.uint8)\n"
        "out = gpuconv.convolve(image, 'sharpen')\n"
        "same = (out == gpuconv.convolve(image, 'sharpen', backend='numpy')).all()\n"
        "print('numba' in sys.modules, bool(same))\n"
    )
    environment = {k: v for k, v in os.environ.items() if k != "GPUCONV_BACKEND"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["False", "True"]


def _fresh_rental(monkeypatch, kernel, loading_in_calls: float):
    """A process that has not loaded numba's loops, and the plan of a 400 x 500 uint8 image.

    Loading numba is made to cost ``loading_in_calls`` times one call on the stand-in.
    Returns ``(plan, rent)``: the plan and the stand-in's predicted seconds per call.
    """
    from gpuconv._backends import opencv
    from gpuconv._backends.numba import backend, kernels
    from gpuconv._plan import make_plan

    # As in a process that has not loaded them.
    monkeypatch.setattr(kernels, "_COMPILED", {})
    monkeypatch.setattr(kernels, "_COMPILED_SHIFTED_ROWS", {})
    monkeypatch.setattr(backend, "_rent_seconds", 0.0)
    monkeypatch.setattr(backend, "_expected_calls", [])
    monkeypatch.delenv("GPUCONV_BACKEND", raising=False)
    image = np.zeros((400, 500), np.uint8)
    _, plan, _ = make_plan(
        image, kernel, border="reflect101", value=0.0, anchor=None, flip=False, dtype=None
    )
    if opencv.accepts(plan):
        rent = opencv.seconds(plan)
    else:
        rent = 400 * 500 * plan.kernel.size * backend.REFERENCE_SECONDS_PER_TAP
    monkeypatch.setattr(backend, "LOADING_SECONDS", loading_in_calls * rent)
    return plan, rent


def test_auto_keeps_numba_once_only_the_shifted_rows_loop_is_loaded(monkeypatch):
    """A process whose numba calls all took the shifted-rows loop has loaded numba too:
    later small calls run on it, not on a stand-in (the band loop is compiled lazily)."""
    from gpuconv import _registry
    from gpuconv._backends.numba import kernels

    plan, _ = _fresh_rental(monkeypatch, np.full((5, 5), 0.3), loading_in_calls=2.5)
    assert _registry.resolve("auto", plan, "numpy")[0] == "numpy"  # nothing loaded: rent
    monkeypatch.setattr(kernels, "_COMPILED_SHIFTED_ROWS", {"loaded": None})
    assert [_registry.resolve("auto", plan, "numpy")[0] for _ in range(2)] == ["numba"] * 2


def test_auto_loads_numba_once_the_reference_has_cost_as_much_as_loading(monkeypatch):
    from gpuconv import _registry
    from gpuconv._backends.numba import backend

    plan, rent = _fresh_rental(monkeypatch, np.full((5, 5), 0.3), loading_in_calls=2.5)
    chosen = [_registry.resolve("auto", plan, "numpy")[0] for _ in range(3)]
    assert chosen == ["numpy", "numpy", "numba"]  # 1x, 2x, then 3x the estimate >= 2.5x
    assert backend._rent_seconds == pytest.approx(2 * rent)


def test_auto_rents_opencv_where_it_gives_the_references_bits(monkeypatch):
    """An integer kernel on uint8: OpenCV stands in for the reference, and its (much
    smaller) predicted time is the rent that decides when numba loads."""
    from gpuconv import _registry
    from gpuconv._backends import opencv
    from gpuconv._backends.numba import backend

    plan, rent = _fresh_rental(monkeypatch, "sharpen", loading_in_calls=2.5)
    assert opencv.accepts(plan)
    assert rent < 400 * 500 * 9 * backend.REFERENCE_SECONDS_PER_TAP / 10
    chosen = [_registry.resolve("auto", plan, "numpy")[0] for _ in range(3)]
    assert chosen == ["opencv", "opencv", "numba"]
    assert backend._rent_seconds == pytest.approx(2 * rent)
    assert _registry.resolve("numpy", plan, "numpy")[0] == "numpy"  # asked for: the reference
    demo = _registry.resolve("auto", plan, "numpy", stand_ins=False)[0]
    assert demo == "numba"  # numba counts as loaded from here on in this test's rental


def test_without_numba_installed_the_rental_defers_to_the_probe(monkeypatch):
    """No numba to load: ``worth_loading`` says yes, so that the probe (not a stand-in)
    decides, and ``auto`` runs the reference as the contract's order says."""
    from gpuconv._backends.numba import backend

    plan, _ = _fresh_rental(monkeypatch, "sharpen", loading_in_calls=1e6)
    assert not backend.worth_loading(plan)  # installed here, not loaded: a stand-in runs
    monkeypatch.setattr(backend, "_installed", lambda: False)
    assert backend.worth_loading(plan)


@pytest.mark.parametrize(
    "announced, loading_in_calls, expected",
    [
        (10, 9.5, [True]),  # all ten calls on the stand-in would pass the cost: load now
        (10, 10.5, [False] * 10 + [True]),  # they would not: the 11th call passes the cost
        (1, 2.5, [False, False, True]),  # one call announced: the plain ski rental
    ],
)
def test_announced_calls_load_numba_at_the_first_when_they_pay_for_it(
    monkeypatch, announced, loading_in_calls, expected
):
    from gpuconv._backends.numba import backend

    plan, _ = _fresh_rental(monkeypatch, np.full((5, 5), 0.3), loading_in_calls)
    answers = []
    with backend.expecting(announced):
        for _ in range(len(expected)):
            answers.append(backend.worth_loading(plan))
            if answers[-1]:
                break
    assert answers == expected
    assert backend._expected_calls == []  # the announcement ends with its block


@pytest.mark.parametrize(
    "kernel", ["sharpen", "laplacian", "sobel_x", [[1, 2, 1], [0, 0, 0], [-3, 4, 9]]]
)
@pytest.mark.parametrize("output_dtype", [None, np.uint16, np.int16, np.float32])
@pytest.mark.parametrize("border", ["reflect101", "constant", "wrap"])
def test_int16_fused_paths_are_bit_exact(rng, kernel, output_dtype, border):
    image = rng.integers(0, 256, (3, 37, 41), dtype=np.uint8)
    options = dict(border=border, value=200.0, dtype=output_dtype, axes=(1, 2))
    _, plan, _ = make_plan(image, kernel, anchor=None, flip=False, **options)
    run = _numba.execution_for(plan, 2)
    if output_dtype in (None, np.uint16, np.int16):  # integer outputs take the int16 lines
        assert run.path in (
            _numba_kernels.PATH_FUSED_3X3_INT16,
            _numba_kernels.PATH_FUSED_PLUS_INT16,
        )
    else:
        assert run.accumulator != np.int16
    actual = gpuconv.convolve(image, kernel, backend="numba", **options)
    expected = gpuconv.convolve(image, kernel, backend="numpy", **options)
    np.testing.assert_array_equal(actual, expected)


@pytest.mark.parametrize("kernel", ["sharpen", "laplacian", "sobel_x", "sobel_y"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("border", ["reflect101", "constant", "wrap"])
def test_sparse_float_path_keeps_nan_and_inf_where_ieee_puts_them(rng, kernel, bad, border):
    """Zero taps are skipped only on rows whose three lines are finite: a NaN or inf pixel
    still reaches, through 0 * x, every output its 3 x 3 window covers (as the
    reference's nine multiply-adds do), and no other."""
    image = rng.standard_normal((4, 29, 31)).astype(np.float32)
    image[1, 10, 7] = bad
    image[2, 0, 30] = bad  # a corner: the border rule repeats it
    options = dict(border=border, value=0.5, axes=(1, 2))
    _, plan, _ = make_plan(image, kernel, anchor=None, flip=False, dtype=None, **options)
    zero_corners = not np.asarray(plan.kernel)[::2, ::2].any()
    assert _numba.execution_for(plan, 2).path == (
        _numba_kernels.PATH_FUSED_PLUS_FINITE
        if zero_corners
        else _numba_kernels.PATH_FUSED_SPARSE_FINITE
    )
    actual = gpuconv.convolve(image, kernel, backend="numba", **options)
    expected = gpuconv.convolve(image, kernel, backend="numpy", **options)
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    np.testing.assert_array_equal(np.isinf(actual), np.isinf(expected))
    # an output whose zero-weight tap sits on the bad pixel (10, 7): 0 * NaN, 0 * inf
    zero_tap_output = {"sobel_x": (9, 7), "sobel_y": (10, 6)}.get(kernel, (9, 6))
    assert np.isnan(actual[(1, *zero_tap_output)])
    finite = np.isfinite(expected)
    assert_contract_accuracy(actual[finite], expected[finite])


def test_sparse_float_path_with_a_non_finite_constant_border(rng):
    image = rng.standard_normal((12, 14)).astype(np.float32)
    actual = gpuconv.convolve(image, "sharpen", border="constant", value=np.inf, backend="numba")
    expected = gpuconv.convolve(image, "sharpen", border="constant", value=np.inf, backend="numpy")
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    np.testing.assert_array_equal(np.isinf(actual), np.isinf(expected))
    assert np.isnan(actual[0, 0])  # a zero corner over the inf border: 0 * inf
    finite = np.isfinite(expected)
    assert_contract_accuracy(actual[finite], expected[finite])


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
@pytest.mark.parametrize(
    "view",
    [
        lambda a: a[:, 3:40, 2:35],  # a crop: rows contiguous, row stride wider than a row
        lambda a: a[::2, 5:, :],  # frames skipped
        lambda a: a[:, ::-1, :],  # rows upside down: negative row stride
        lambda a: a[:, :, ::2],  # columns strided: rows not contiguous
    ],
    ids=["crop", "every-other-frame", "flipped-rows", "strided-columns"],
)
@pytest.mark.parametrize("channels", [1, 3])
def test_line_loads_from_flat_rows_and_through_strides_agree(rng, dtype, view, channels):
    """Lines come from one flat array where each row is contiguous (backend.flat_rows),
    else through the strides; both give the reference's result."""
    shape = (5, 44, 40) + ((channels,) if channels > 1 else ())
    base = rng.integers(0, 256, shape).astype(dtype)
    image = view(base)
    stack = image if channels > 1 else image[..., None]
    pixels, frame_stride, row_stride = _numba.flat_rows(stack)
    rows_contiguous = stack.strides[2] == channels * stack.itemsize and stack.strides[1] > 0
    assert (pixels.size > 0) == rows_contiguous
    if pixels.size:
        frame, row = stack.shape[0] - 1, stack.shape[1] - 1
        start = frame * frame_stride + row * row_stride
        np.testing.assert_array_equal(
            pixels[start : start + stack.shape[2] * channels], stack[frame, row].ravel()
        )
    for kernel in ("sharpen", "small_blur", INTEGER_DIRECT):
        actual = gpuconv.convolve(image, kernel, backend="numba", axes=(1, 2))
        expected = gpuconv.convolve(image, kernel, backend="numpy", axes=(1, 2))
        assert_contract_accuracy(actual, expected, exact=dtype == "uint8")


def test_a_call_leaves_the_callers_thread_count_as_it_found_it(rng):
    """Small calls run on one thread (the count is lowered for the call, without numba's
    lock) and restore the caller's count; a count the caller set is respected."""
    import numba

    before = numba.get_num_threads()
    small = rng.integers(0, 256, (16, 16)).astype(np.uint8)
    run = _numba.execution_for(_plan(small, "sharpen"), workers=before)
    assert run.workers == 1
    np.testing.assert_array_equal(
        gpuconv.convolve(small, "sharpen", backend="numba"), reference(small, "sharpen")
    )
    assert numba.get_num_threads() == before
    assert _numba._thread_count(numba) == before
    numba.set_num_threads(1)
    try:
        assert _numba._thread_count(numba) == 1
        large = rng.integers(0, 256, (700, 700)).astype(np.uint8)
        assert_contract_accuracy(
            gpuconv.convolve(large, "small_blur", backend="numba"), reference(large, "small_blur")
        )
        assert numba.get_num_threads() == 1
    finally:
        numba.set_num_threads(before)


def _shifted_rows_output(image3d, plan, workers=1):
    """``(returned, output)`` of the shifted-rows 3 x 3 loop (serial for one worker, else
    parallel) run directly on ``image3d``."""
    run = _numba.execution_for(plan, workers)
    if workers > 1:  # force the parallel variant, whatever the image's size
        band_height = _numba.band_height_for(plan, run.accumulator, workers)
        run = replace(run, workers=workers, band_height=band_height)
    function, arguments = run.shifted_rows_loop
    stack = image3d[None] if image3d.ndim == 3 else image3d
    pixels, frame_stride, row_stride = _numba.flat_rows(stack)
    frames, height, width, channels = stack.shape
    output = np.full((frames, height, width * channels), -7.0, stack.dtype)
    returned = function(pixels, frame_stride, row_stride, output, *arguments)
    return returned, output.reshape(stack.shape)


@pytest.mark.parametrize(
    ("dtype", "kernel", "output_dtype", "takes_it"),
    [
        ("float32", "sharpen", None, True),  # five taps, checked
        ("float64", "sobel_y", None, True),  # six taps, checked
        ("float32", "gaussian3", None, True),  # nine taps
        ("float32", "sharpen", np.float64, False),  # sums and output of another type
        ("uint8", "sharpen", None, True),  # int16 sums, saturated to uint8
        ("uint8", "sobel_x", np.uint16, False),  # another output type: the band loop
        ("uint8", "gaussian3", None, False),  # float sums to an integer output: the band loop
        ("float32", "small_blur", None, False),  # not 3 x 3
    ],
)
@pytest.mark.parametrize("side", [40, 2048])
def test_the_shifted_rows_loop_takes_3x3_filters_of_one_dtype(
    dtype, kernel, output_dtype, takes_it, side
):
    """Serial for small work, on the thread pool for large."""
    plan = _plan(np.zeros((side, side), dtype), kernel, dtype=output_dtype)
    run = _numba.execution_for(plan, 2)
    assert run.workers == (1 if side == 40 else 2)
    # The variant only: compiling each would cost the suite seconds (the other tests run them).
    expected = (np.dtype(dtype), side > 40) if takes_it else None
    assert run.shifted_rows_variant == expected


# Sparse 3 x 3 kernels off the bank: four taps (the loop pads to six with zero-weight
# bottom taps) and six with none in the bottom row (the loop then sums all nine).
DIAGONAL = np.array([[0.0, 0.0, 1.5], [0.0, 0.0, 0.0], [-2.0, 0.0, 0.0]])
TOP_HEAVY = np.array([[1.0, 2.0, 1.0], [3.0, 5.0, 4.0], [0.0, 0.0, 0.0]])
# Six taps, the last (checked) in the bottom row's first column.
LOWER_LEFT = np.array([[1.0, -1.0, 2.0], [0.5, 1.0, 0.0], [-3.0, 0.0, 0.0]])
SPARSE_KERNELS = {"diagonal": DIAGONAL, "top-heavy": TOP_HEAVY, "lower-left": LOWER_LEFT}


@pytest.mark.parametrize(
    "kernel", ["sharpen", "sobel_y", "gaussian3", "diagonal", "top-heavy", "lower-left"]
)
@pytest.mark.parametrize("border", ["reflect101", "reflect", "replicate", "wrap", "constant"])
@pytest.mark.parametrize("anchor", [None, (0, 0), (2, 1)])
# (41, 9): several bands of rows on two workers, each with its own edge columns.
@pytest.mark.parametrize("shape", [(1, 1), (2, 5), (9, 4, 3), (17, 23), (41, 9)])
@pytest.mark.parametrize("workers", [1, 2])
def test_the_shifted_rows_loop_agrees_with_the_reference(
    rng, kernel, border, anchor, shape, workers
):
    """Run directly (not through the dispatcher), on images down to 1 x 1, where every
    output pixel is an edge pixel, and RGB, where a shifted row moves by three values;
    the parallel variant in bands of a few rows."""
    kernel = SPARSE_KERNELS.get(kernel, kernel)
    image = rng.standard_normal(shape).astype(np.float32)
    options = dict(border=border, value=0.75, anchor=anchor)
    image3d, plan, _ = make_plan(image, kernel, flip=False, dtype=None, **options)
    returned, output = _shifted_rows_output(image3d, plan, workers)
    assert returned  # a finite image: nothing to hand back
    expected = reference(image, kernel, **options)
    # Rounding error is bounded by the sum's scale, sum |taps| * max |pixel|, not by the
    # result's: on 2 rows, reflect101 and wrap make sobel_y's top and bottom rows the same,
    # and the reference's own result is rounding noise around 0.
    scale = np.abs(plan.kernel).sum() * max(np.abs(image).max(), 0.75)
    np.testing.assert_allclose(output.reshape(expected.shape), expected, rtol=0, atol=1e-6 * scale)


@pytest.mark.parametrize("kernel", ["sharpen", "sobel_x", "outline"])
@pytest.mark.parametrize("border", ["reflect101", "replicate", "wrap", "constant"])
@pytest.mark.parametrize("anchor", [None, (0, 2)])
@pytest.mark.parametrize("shape", [(1, 1), (2, 7), (13, 4, 3), (17, 23), (37, 11)])
@pytest.mark.parametrize("workers", [1, 2])
def test_the_shifted_rows_loop_is_bit_exact_on_uint8(rng, kernel, border, anchor, shape, workers):
    """int16 sums of uint8 pixels, saturated: OpenCV's bits and the reference's, with
    values at both ends of the range (and a constant border of 255) to saturate."""
    image = rng.integers(0, 256, shape).astype(np.uint8)
    image.flat[::5] = 255
    image.flat[1::7] = 0
    options = dict(border=border, value=255.0, anchor=anchor)
    image3d, plan, _ = make_plan(image, kernel, flip=False, dtype=None, **options)
    returned, output = _shifted_rows_output(image3d, plan, workers)
    assert returned
    expected = reference(image, kernel, **options)
    np.testing.assert_array_equal(output.reshape(expected.shape), expected)


@pytest.mark.parametrize(
    "kernel",
    [
        "sharpen",
        "laplacian",
        "sobel_x",
        "sobel_y",
        "gaussian3",
        "diagonal",
        "top-heavy",
        "lower-left",
    ],
)
@pytest.mark.parametrize("where", [(0, 0), (5, 6), (10, 12), (10, 0), (9, 11)], ids=str)
@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("workers", [1, 2])
def test_the_shifted_rows_loop_hands_non_finite_images_back(rng, kernel, where, bad, workers):
    """A kernel with zero taps skips them optimistically: a NaN or inf anywhere it reads
    (first and last rows and columns included) makes it return False, and the call then
    gives the reference's NaN and inf through the band loop. Nine taps skip nothing:
    the loop keeps the image and propagates NaN and inf itself."""
    kernel = SPARSE_KERNELS.get(kernel, kernel)
    image = rng.standard_normal((11, 13)).astype(np.float32)
    image[where] = bad
    image3d, plan, _ = make_plan(
        image, kernel, border="reflect101", value=0.0, anchor=None, flip=False, dtype=None
    )
    returned, output = _shifted_rows_output(image3d, plan, workers)
    expected = reference(image, kernel)
    if kernel is TOP_HEAVY or (isinstance(kernel, str) and kernel == "gaussian3"):  # nine taps
        assert returned
        np.testing.assert_array_equal(np.isnan(output[0, ..., 0]), np.isnan(expected))
    else:
        assert not returned
    actual = gpuconv.convolve(image, kernel, backend="numba")
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    np.testing.assert_array_equal(np.isinf(actual), np.isinf(expected))
    finite = np.isfinite(expected)
    assert_contract_accuracy(actual[finite], expected[finite])


def test_a_large_non_finite_image_falls_back_to_the_band_loop_on_the_thread_pool(rng):
    image = rng.standard_normal((1500, 1400)).astype(np.float32)
    image[700, 3] = np.nan
    image[1499, 1399] = -np.inf
    plan = _plan(image, "laplacian")
    assert _numba.execution_for(plan, 2).workers == 2
    actual = gpuconv.convolve(image, "laplacian", backend="numba")
    expected = reference(image, "laplacian")
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    np.testing.assert_array_equal(np.isinf(actual), np.isinf(expected))
    assert np.isnan(actual[699, 2])  # the NaN under a zero corner: 0 * NaN
    finite = np.isfinite(expected)
    assert_contract_accuracy(actual[finite], expected[finite])


@pytest.mark.parametrize("dtype", ["float32", "uint8"])
def test_the_band_loop_is_compiled_only_where_it_runs(rng, monkeypatch, dtype):
    """A 3 x 3 call the shifted-rows loop finishes never asks for the band loop (compiling
    it costs seconds with a cold cache); a NaN under a skipped zero tap does, and gets
    the reference's answer from it."""
    from gpuconv._backends.numba import kernels

    asked = []
    real_compiled = kernels.compiled

    def spy(*types):
        asked.append(types)
        return real_compiled(*types)

    monkeypatch.setattr(kernels, "compiled", spy)
    # A fresh execution per call, as in a process that has not run this plan.
    monkeypatch.setattr(_numba, "cached_execution", _numba.execution_for)
    image = (rng.random((64, 48)) * 255).astype(dtype)
    actual = gpuconv.convolve(image, "sharpen", backend="numba")
    assert asked == []
    assert_contract_accuracy(actual, reference(image, "sharpen"), exact=dtype == "uint8")
    if dtype == "float32":
        image[30, 20] = np.nan
        actual = gpuconv.convolve(image, "sharpen", backend="numba")
        assert len(asked) == 1
        np.testing.assert_array_equal(np.isnan(actual), np.isnan(reference(image, "sharpen")))
