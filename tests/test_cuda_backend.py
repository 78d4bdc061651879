"""The cuda backend beyond the shared contract suite.

- the launch arithmetic (plain Python, no GPU needed);
- every kernel template (the register-window kernels: direct, separable, box; the
  shared-memory kernels: direct with compile-time and run-time sizes, fused
  separable, global-memory fallback) against the reference, run on the CPU
  through the emulator with bounds checks on: odd sizes, every border, every
  dtype, kernels larger than the image, 1-pixel axes, colour, grids smaller
  than the image (the kernels' striding);
- the backend's module functions (probe, describe, the host-image rule);
- the real GPU path, marked ``gpu`` and skipped with the reason when no GPU answers.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.fft
from support import assert_contract_accuracy, reference

import gpuconv
from gpuconv import _emulator as _cuda_emulator
from gpuconv import _fft
from gpuconv._backends.cuda import backend as _cuda
from gpuconv._backends.cuda import launch as _cuda_launch
from gpuconv._backends.cuda import source as _cuda_source
from gpuconv._backends.cuda import window as _cuda_window
from gpuconv._plan import SUPPORTED_DTYPES, make_plan
from gpuconv._strategy import choose_strategy

DEFAULT_LIMITS = _cuda_launch.DeviceLimits()
BORDERS = ("reflect101", "reflect", "replicate", "constant", "wrap")

needs_emulator = pytest.mark.skipif(
    _cuda_emulator.available() is not None,
    reason=f"the CUDA emulator cannot run here: {_cuda_emulator.available()}",
)


def plan_for(image, kernel, **options):
    settings = dict(border="reflect101", value=0.0, anchor=None, flip=False, dtype=None)
    settings.update(options)
    return make_plan(image, kernel, **settings)


def launch_for(image, kernel, limits=DEFAULT_LIMITS, window=False, **options):
    """The launch for ``image`` and ``kernel``; by default a shared-memory kernel's."""
    _, plan, _ = plan_for(image, kernel, **options)
    return plan, _cuda_launch.plan_launch(plan, choose_strategy(plan), limits, window=window)


def emulated(image, kernel, *, grid=None, limits=DEFAULT_LIMITS, window=False, **options):
    """Run the cuda kernels on the CPU; return ``(output in the image's shape, launch)``."""
    image3d, plan, _ = plan_for(image, kernel, **options)
    launch = _cuda_launch.plan_launch(plan, choose_strategy(plan), limits, window=window)
    if grid is not None:
        launch = dataclasses.replace(launch, grid=grid)
    output = _cuda._run_emulated(image3d, plan, launch)
    return output.reshape(np.shape(image)), launch


def random_image(rng, shape, dtype):
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return rng.normal(scale=50, size=shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)


# --- launch arithmetic (no GPU, no emulator) -------------------------------------------


@pytest.mark.parametrize("shape", [(1, 1), (31, 33), (64, 64), (65, 100), (3, 700, 4)])
@pytest.mark.parametrize("kernel", ["laplacian", "large_blur", np.ones((101, 3))])
def test_grid_covers_the_image(shape, kernel):
    image = np.zeros(shape, np.uint8)
    plan, launch = launch_for(image, kernel)
    height, width, channels = plan.shape
    rows_per_block = (
        _cuda_launch.BLOCK_HEIGHT
        if launch.template == "gpuconv_global"
        else _cuda_launch.TILE_HEIGHT
    )
    assert launch.block == (32, 8, 1)
    assert launch.grid[0] * _cuda_launch.TILE_WIDTH >= width
    assert (launch.grid[0] - 1) * _cuda_launch.TILE_WIDTH < width  # no idle column of blocks
    assert launch.grid[1] * rows_per_block >= height
    assert launch.grid[2] == channels


def test_grid_is_capped_where_cuda_limits_it():
    image = np.lib.stride_tricks.as_strided(np.zeros(1, np.uint8), (3_000_000, 2), (0, 0))
    _, launch = launch_for(image, "sharpen")
    assert launch.grid[1] == 65535  # the kernels stride over the remaining tile rows


@pytest.mark.parametrize("dtype", SUPPORTED_DTYPES)
@pytest.mark.parametrize("size", [1, 3, 5, 9, 21, 31, 45, 61, 101])
def test_shared_memory_stays_within_the_budget(dtype, size, rng):
    limits = _cuda_launch.DeviceLimits()
    kernel = rng.normal(size=(size, size))  # not separable: the largest tile
    _, launch = launch_for(np.zeros((8, 8), dtype), kernel, limits)
    assert launch.shared_bytes <= limits.shared_bytes_per_block
    if launch.template == "gpuconv_global":
        assert launch.shared_bytes == 0
        item = launch.weights.dtype.itemsize
        assert _cuda_launch.tiled_shared_bytes("gpuconv_direct", size, size, item) > (
            limits.shared_bytes_per_block
        )


@pytest.mark.parametrize(
    ("kernel", "dtype", "expected"),
    [
        ("laplacian", np.uint8, "gpuconv_direct<unsigned char, unsigned char, int, 3, 3>"),
        ("sharpen", np.float32, "gpuconv_direct<float, float, float, 3, 3>"),
        ("sobel_x", np.uint8, "gpuconv_separable<unsigned char, unsigned char, int, 3, 3>"),
        ("large_blur", np.uint8, "gpuconv_separable<unsigned char, unsigned char, float, 21, 21>"),
        ("large_blur", np.float64, "gpuconv_separable<double, double, double, 0, 0>"),
        (
            np.arange(12.0).reshape(3, 4),
            np.uint16,
            "gpuconv_direct<unsigned short, unsigned short, int, 0, 0>",
        ),
        (np.ones((11, 11)), np.int16, "gpuconv_separable<short, short, int, 0, 0>"),
        (np.ones((31, 31)) / 7, np.float64, "gpuconv_separable<double, double, double, 0, 0>"),
    ],
)
def test_template_chosen_for_each_strategy(kernel, dtype, expected):
    _, launch = launch_for(np.zeros((40, 40), dtype), kernel)
    assert launch.name_expression == expected
    assert launch.source_file == _cuda_launch.SOURCE_FILES[expected.split("<")[0]]


def test_huge_non_separable_kernel_falls_back_to_global_memory(rng):
    _, launch = launch_for(np.zeros((40, 40), np.float64), rng.normal(size=(101, 101)))
    assert launch.name_expression == "gpuconv_global<double, double, double>"


def test_uncommon_output_type_uses_the_run_time_size_template():
    _, launch = launch_for(np.zeros((9, 9), np.uint8), "laplacian", dtype=np.int16)
    assert launch.name_expression == "gpuconv_direct<unsigned char, short, int, 0, 0>"


def test_weights_and_scalars_have_the_kernels_types():
    plan, launch = launch_for(np.zeros((9, 9), np.uint8), "sobel_x", border="constant", value=4)
    assert launch.weights.dtype == np.int32
    np.testing.assert_array_equal(np.outer(launch.weights[:3], launch.weights[3:]), plan.kernel)
    assert [type(s) for s in launch.scalars] == [np.int32] * 8 + [np.int32, np.int32]
    assert launch.scalars[7] == 0 and launch.scalars[8] == 4  # CONSTANT, the value


def test_every_requested_instantiation_is_in_the_compile_list(rng):
    listed = _cuda_launch.every_name_expression()
    stacks = 0
    kernels = [
        "laplacian",
        "small_blur",
        "large_blur",
        "sobel_y",
        rng.normal(size=(4, 6)),
        np.ones((13, 13)),
        rng.normal(size=(9, 9)),
        rng.normal(size=(80, 80)),
    ]
    for input_dtype in SUPPORTED_DTYPES:
        for output_dtype in SUPPORTED_DTYPES:
            for kernel in kernels:
                for window in (False, True):
                    _, launch = launch_for(
                        np.zeros((5, 5), input_dtype), kernel, dtype=output_dtype, window=window
                    )
                    assert launch.name_expression in listed[launch.source_file]
                # A stack: the window kernels' STACK instantiations where they apply.
                _, launch = launch_for(
                    np.zeros((3, 5, 5), input_dtype),
                    kernel,
                    dtype=output_dtype,
                    window=True,
                    axes=(1, 2),
                )
                assert launch.name_expression in listed[launch.source_file]
                stacks += launch.frames > 1
    assert stacks > 0  # the STACK instantiations were asked for, and listed


def test_axes_beyond_32_bit_positions_are_refused():
    image = np.lib.stride_tricks.as_strided(np.zeros(1, np.uint8), (2, 2**30), (0, 0))
    with pytest.raises(ValueError, match="below 1073741824 pixels"):
        launch_for(image, "sharpen")


def test_emulator_mode_is_described_as_not_a_gpu(monkeypatch):
    monkeypatch.setenv(_cuda.EMULATOR_VARIABLE, "1")
    assert _cuda.is_emulated()
    assert "not a GPU" in _cuda.describe()
    assert _cuda.probe() == (None if _cuda_emulator.available() is None else _cuda.probe())
    assert _cuda.accepts_library("numpy") and not _cuda.accepts_library("cupy")
    _, plan, _ = plan_for(np.zeros((8, 8), np.uint8), "sharpen")
    assert not _cuda.pays_off_for_host_image(plan)


def test_without_the_emulator_the_probe_needs_a_gpu(monkeypatch):
    monkeypatch.delenv(_cuda.EMULATOR_VARIABLE, raising=False)
    reason = _cuda.probe()
    if reason is not None:
        assert reason.startswith(("cupy is not installed", "no CUDA GPU visible", "cupy does not"))
    assert _cuda.accepts_library("cupy") and not _cuda.accepts_library("dask")


def test_host_images_go_to_a_gpu_only_when_large(monkeypatch):
    monkeypatch.delenv(_cuda.EMULATOR_VARIABLE, raising=False)
    small = plan_for(np.zeros((512, 512), np.uint8), "sharpen")[1]
    large = plan_for(
        np.lib.stride_tricks.as_strided(np.zeros(1, np.uint8), (4096, 4096), (0, 0)), "sharpen"
    )[1]
    heavy = plan_for(np.zeros((1024, 1024), np.uint8), np.ones((17, 17)))[1]
    assert not _cuda.pays_off_for_host_image(small)
    assert _cuda.pays_off_for_host_image(large)
    assert _cuda.pays_off_for_host_image(heavy)


# --- every kernel path through the emulator --------------------------------------------


@needs_emulator
@pytest.mark.parametrize("border", BORDERS)
@pytest.mark.parametrize(
    ("kernel_name", "template"),
    [
        ("laplacian", "gpuconv_direct<unsigned char, unsigned char, int, 3, 3>"),
        ("box4x6", "gpuconv_separable<unsigned char, unsigned char, int, 0, 0>"),
        ("random4x6", "gpuconv_direct<unsigned char, unsigned char, float, 0, 0>"),
        # unnormalised: float32 sums could round too many pixels apart (the planner's rule)
        ("random4x6x10", "gpuconv_direct<unsigned char, unsigned char, double, 0, 0>"),
        ("sobel_x", "gpuconv_separable<unsigned char, unsigned char, int, 3, 3>"),
        ("small_blur", "gpuconv_separable<unsigned char, unsigned char, float, 7, 7>"),
    ],
)
def test_each_template_and_border_matches_the_reference(kernel_name, template, border, rng):
    kernel = {
        "box4x6": np.ones((4, 6)),
        "random4x6": rng.normal(size=(4, 6)) / 24,
        "random4x6x10": rng.normal(size=(4, 6)) * 10,
    }.get(kernel_name, kernel_name)
    image = random_image(rng, (37, 45), np.uint8)  # odd sizes: partial tiles both ways
    options = dict(border=border, value=17.0, anchor=(1, 2))
    actual, launch = emulated(image, kernel, **options)
    assert launch.name_expression == template
    exact = not isinstance(kernel, np.ndarray) or np.array_equal(kernel, np.round(kernel))
    exact = exact and kernel_name != "small_blur"
    assert_contract_accuracy(actual, reference(image, kernel, **options), exact=exact)


# float16 is left out here: each instantiation is one more emulator library in the test
# process (each maps its own fiber stacks, and the suite runs near vm.max_map_count);
# tests/test_arrays.py checks float16 on the cuda backend.
_DTYPES_BUT_FLOAT16 = [dtype for dtype in SUPPORTED_DTYPES if dtype != np.float16]


@needs_emulator
@pytest.mark.parametrize("input_dtype", _DTYPES_BUT_FLOAT16)
@pytest.mark.parametrize("output_dtype", [None, np.float32])
@pytest.mark.parametrize("kernel_name", ["sharpen", "random5x5"])
@pytest.mark.parametrize("window", [False, True], ids=["shared", "window"])
def test_every_dtype_matches_the_reference(window, input_dtype, output_dtype, kernel_name, rng):
    kernel = rng.normal(size=(5, 5)) if kernel_name == "random5x5" else kernel_name
    image = random_image(rng, (23, 19), input_dtype)
    options = dict(border="reflect", dtype=output_dtype)
    actual, _ = emulated(image, kernel, window=window, **options)
    expected = reference(image, kernel, **options)
    exact = kernel_name == "sharpen" and np.dtype(input_dtype).kind in "ui"
    assert_contract_accuracy(actual, expected, exact=exact)


@needs_emulator
@pytest.mark.parametrize("input_dtype", [np.uint16, np.float64])
def test_uncommon_output_types_match_the_reference(input_dtype, rng):
    image = random_image(rng, (23, 19), input_dtype)
    for kernel in ("laplacian", gpuconv.kernels.gaussian(5, 1.2)):
        actual, launch = emulated(image, kernel, dtype=np.int16)
        assert launch.name_expression.endswith("0, 0>")  # the run-time-size template
        assert_contract_accuracy(actual, reference(image, kernel, dtype=np.int16))


@needs_emulator
@pytest.mark.parametrize("border", BORDERS)
@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (7, 1), (2, 3)])
@pytest.mark.parametrize("window", [False, True], ids=["shared", "window"])
def test_kernels_larger_than_the_image_and_one_pixel_axes(window, shape, border, rng):
    image = random_image(rng, shape, np.float32)
    for kernel in (
        rng.normal(size=(9, 8)),
        np.ones((11, 5)),
        rng.normal(size=(7, 7)),
        np.ones((5, 5)),
    ):
        # window kernels need the default column anchor
        anchor = (kernel.shape[1] // 2, kernel.shape[0] - 1) if window else (0, kernel.shape[0] - 1)
        options = dict(border=border, value=-2.5, anchor=anchor)
        actual, _ = emulated(image, kernel, window=window, **options)
        assert_contract_accuracy(actual, reference(image, kernel, **options))


@needs_emulator
@pytest.mark.parametrize("border", BORDERS)
def test_global_memory_fallback_matches_the_reference(border, rng):
    image = random_image(rng, (9, 13, 2), np.float64)
    kernel = rng.normal(size=(81, 83))  # > 48 KiB of float64 tile: the fallback
    options = dict(border=border, value=1.5, anchor=(80, 3))
    actual, launch = emulated(image, kernel, **options)
    assert launch.template == "gpuconv_global"
    assert_contract_accuracy(actual, reference(image, kernel, **options))


@needs_emulator
@pytest.mark.parametrize("kernel", ["sharpen", "large_blur", "random3x4", "huge"])
@pytest.mark.parametrize("window", [False, True], ids=["shared", "window"])
def test_colour_images_and_grids_smaller_than_the_image(window, kernel, rng):
    shape = (12, 20, 3) if kernel == "huge" else (70, 40, 3)  # the fallback is slow here
    kernel = {
        "random3x4": rng.normal(size=(3, 4)),
        "huge": rng.normal(size=(91, 91)),
    }.get(kernel, kernel)
    image = random_image(rng, shape, np.uint16)
    expected = reference(image, kernel, border="wrap")
    # A single block row and channel: the kernels must stride over the other tile
    # rows and channels themselves (as on a GPU for images beyond gridDim's limits).
    full, launch = emulated(image, kernel, border="wrap", window=window)
    strided, _ = emulated(image, kernel, border="wrap", grid=(launch.grid[0], 1, 1), window=window)
    for actual in (full, strided):
        assert_contract_accuracy(
            actual, expected, exact=isinstance(kernel, str) and kernel == "sharpen"
        )


@needs_emulator
@pytest.mark.parametrize("window", [False, True], ids=["shared", "window"])
def test_nan_and_inf_propagate_through_every_template(window, rng):
    image = rng.normal(size=(20, 30)).astype(np.float32)
    image[5, 7], image[12, 20] = np.nan, np.inf
    kernels = [
        np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]], float),
        np.ones((5, 5)),
        rng.normal(size=(4, 3)),
        np.ones((3, 17)),
        rng.normal(size=(130, 2)),
        rng.normal(size=(3, 3)),
        rng.normal(size=(5, 1)) * rng.normal(size=(1, 5)),
    ]
    for kernel in kernels:
        actual, _ = emulated(image, kernel, window=window)
        assert_contract_accuracy(actual, reference(image, kernel))


@needs_emulator
def test_rounding_and_saturation_on_the_store():
    image = np.array([[1, 2, 3, 4, 5, 6, 7]], dtype=np.uint8)
    actual, _ = emulated(image, np.array([[0.5]]))
    np.testing.assert_array_equal(actual, [[0, 1, 2, 2, 2, 3, 4]])
    actual, _ = emulated(image * 30, np.array([[-1.0, 3.0]]), dtype=np.int16)
    np.testing.assert_array_equal(
        actual, reference(image * 30, np.array([[-1.0, 3.0]]), dtype=np.int16)
    )
    nan_image = np.array([[np.nan, 1e10, -1e10]], np.float32)
    actual, _ = emulated(nan_image, np.array([[1.0]]), dtype=np.uint8)
    np.testing.assert_array_equal(actual, [[0, 255, 0]])


@needs_emulator
def test_views_and_read_only_inputs_are_left_untouched(rng):
    base = random_image(rng, (40, 60, 3), np.uint8)
    view = base[::2, 5:50:3, 1]  # non-contiguous
    view.flags.writeable = False
    before = base.copy()
    actual, _ = emulated(view, "sharpen")
    assert_contract_accuracy(actual, reference(view, "sharpen"), exact=True)
    np.testing.assert_array_equal(base, before)


# --- the real GPU ----------------------------------------------------------------------


def _gpu_reason() -> str | None:
    import os

    if os.environ.get(_cuda.EMULATOR_VARIABLE, "") not in ("", "0"):
        return f"{_cuda.EMULATOR_VARIABLE} is set: the cuda backend is the emulator"
    return _cuda.probe()


@pytest.mark.gpu
@pytest.mark.skipif(_gpu_reason() is not None, reason=f"needs a real CUDA GPU: {_gpu_reason()}")
@pytest.mark.parametrize("kernel", ["sharpen", "large_blur", "random9", "huge"])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_real_gpu_cupy_in_cupy_out(kernel, dtype, rng):
    import cupy

    kernel = {"random9": rng.normal(size=(9, 9)), "huge": rng.normal(size=(71, 71))}.get(
        kernel, kernel
    )
    image = random_image(rng, (1000, 777, 3), dtype)
    device_image = cupy.asarray(image)
    result = gpuconv.convolve(device_image, kernel, backend="cuda", border="reflect")
    assert isinstance(result, cupy.ndarray)
    expected = reference(image, kernel, border="reflect")
    assert_contract_accuracy(
        result.get(), expected, exact=isinstance(kernel, str) and dtype == np.uint8
    )
    np.testing.assert_array_equal(device_image.get(), image)  # input untouched
    host = gpuconv.convolve(image, kernel, backend="cuda", border="reflect")
    assert isinstance(host, np.ndarray)
    np.testing.assert_array_equal(host, result.get())


@pytest.mark.gpu
@pytest.mark.skipif(_gpu_reason() is not None, reason=f"needs a real CUDA GPU: {_gpu_reason()}")
@pytest.mark.parametrize(
    ("border", "anchor"),
    [("constant", (2, 30)), ("reflect101", None), ("wrap", (35, 0)), ("replicate", None)],
)
def test_real_gpu_fft_path_meets_the_contract_on_every_border(border, anchor, monkeypatch, rng):
    """cuFFT through the CuPy code the stand-in cannot check: gathers, border columns, the
    strided output copy, on colour and with a NaN pixel (declined: the loops run)."""
    import cupy

    from gpuconv import _costmodel

    monkeypatch.setattr(_costmodel, "GPU_FFT_BAND_SECONDS", 0.0)  # small image: force it
    monkeypatch.setattr(_costmodel, "GPU_FFT_CALL_SECONDS", 0.0)
    _cuda.clear_launch_cache()  # the decision is cached per plan: none from before
    image = random_image(rng, (230, 190, 2), np.float32)
    kernel = rng.normal(size=(41, 36))
    _, plan, _ = plan_for(image, kernel, border=border, value=0.5, anchor=anchor)
    assert _cuda.takes_fft(plan)
    options = dict(border=border, value=0.5, anchor=anchor)
    result = gpuconv.convolve(cupy.asarray(image), kernel, backend="cuda", **options)
    assert_contract_accuracy(result.get(), reference(image, kernel, **options))
    image[100, 90, 1] = np.nan
    result = gpuconv.convolve(cupy.asarray(image), kernel, backend="cuda", **options).get()
    assert np.isnan(result[100, 90, 1]) and np.isfinite(result[:, :, 0]).all()
    assert_contract_accuracy(result, reference(image, kernel, **options))


# --- the GPU benchmark's pure parts ----------------------------------------------------


def test_benchmark_arithmetic():
    from gpuconv.bench import _cuda as _bench_cuda

    assert _bench_cuda.bytes_moved((8192, 8192), np.uint8) == 2 * 8192**2
    assert _bench_cuda.bytes_moved((10, 10), np.uint8, np.float32) == 500
    assert _bench_cuda.gigabytes_per_second(2 * 10**9, 1000.0) == pytest.approx(2.0)
    assert _bench_cuda.gigaflops((1000, 1000), (21, 21), 1.0) == pytest.approx(882.0)
    copy = _bench_cuda.make_measurement(
        "device copy", "copy", (1, 1), (100, 100), "float32", [2.0, 1.0, 3.0], None
    )
    assert copy.median_ms == 2.0 and copy.copy_fraction is None
    row = _bench_cuda.make_measurement(
        "gpuconv:cuda", "sharpen", (3, 3), (100, 100), "float32", [4.0], copy.gb_per_s
    )
    assert row.copy_fraction == pytest.approx(0.5)
    peer = dataclasses.replace(row, implementation="torch.conv2d", median_ms=12.0)
    assert _bench_cuda.speedups([copy, row, peer], "torch.conv2d") == {
        ((100, 100), "float32", "sharpen"): pytest.approx(3.0)
    }
    assert _bench_cuda.geometric_mean([2.0, 8.0]) == pytest.approx(4.0)
    table = _bench_cuda.format_cuda_table([copy, row])
    assert "| 100x100 float32 | sharpen 3x3 | gpuconv:cuda | 4.000 |" in table
    assert "50%" in table


def test_benchmark_times_batches_of_back_to_back_calls():
    """The events enclose ``batch`` calls; the time per call is the batch's over ``batch``."""
    import types

    from gpuconv.bench import _cuda as _bench_cuda

    clock = {"now": 0.0, "calls": 0}

    class Event:
        def record(self):
            self.at = clock["now"]

        def synchronize(self):
            pass

    def call():
        clock["calls"] += 1
        clock["now"] += 2.0  # each call takes 2 ms of device time

    stream = types.SimpleNamespace(synchronize=lambda: None)
    cupy = types.SimpleNamespace(
        cuda=types.SimpleNamespace(
            Event=Event,
            get_elapsed_time=lambda start, end: end.at - start.at,
            get_current_stream=lambda: stream,
        )
    )
    times = _bench_cuda._time_ms(cupy, call, repeats=3, warmup=2, batch=5)
    assert times == [2.0, 2.0, 2.0]
    assert clock["calls"] == 2 + 3 * 5


def test_benchmark_without_a_gpu_says_so(capsys):
    from gpuconv.bench import _cuda as _bench_cuda

    reason = _bench_cuda._gpu_reason()
    if reason is None:
        pytest.skip("a GPU is usable here: the benchmark would run for minutes")
    args = type(
        "Args",
        (),
        dict(sizes=[64], dtypes=["uint8"], kernels=["sharpen"], repeats=1, warmup=0, json=None),
    )()
    assert _bench_cuda.run_cuda_benchmark(args) == 1
    assert "no GPU: " in capsys.readouterr().err


@needs_emulator
def test_large_kernels_stay_tiled_with_an_opted_in_shared_memory_budget(rng):
    # An H100 lets a block opt in to 227 KiB: a 91 x 91 float64 tile then fits.
    image = random_image(rng, (20, 33), np.float64)
    kernel = rng.normal(size=(91, 91))
    limits = _cuda_launch.DeviceLimits(shared_bytes_per_block=227 * 1024)
    actual, launch = emulated(image, kernel, limits=limits, border="reflect")
    assert launch.template == "gpuconv_direct"
    assert 48 * 1024 < launch.shared_bytes <= limits.shared_bytes_per_block
    assert_contract_accuracy(actual, reference(image, kernel, border="reflect"))


@needs_emulator
@pytest.mark.parametrize("schedule", ["reverse", "shuffle:7"])
def test_results_do_not_depend_on_the_order_threads_run_between_barriers(
    schedule, monkeypatch, rng
):
    # A missing __syncthreads would let a thread read shared memory before (or after)
    # another wrote it; reordering the threads of each block exposes that (checked:
    # deleting the barrier after the tile load fails this test).
    monkeypatch.setenv("GPUCONV_EMULATOR_SCHEDULE", schedule)
    image = random_image(rng, (45, 37, 2), np.uint8)
    kernels = {
        "laplacian": True,  # name -> integer kernel (exact result)
        "large_blur": False,
        "box4x6": True,
        "random5x3": False,
    }
    for name, exact in kernels.items():
        kernel = {"box4x6": np.ones((4, 6)), "random5x3": rng.normal(size=(5, 3))}.get(name, name)
        expected = reference(image, kernel, border="reflect")
        full, launch = emulated(image, kernel, border="reflect")
        one_row, _ = emulated(image, kernel, border="reflect", grid=(launch.grid[0], 1, 1))
        for result in (full, one_row):
            assert_contract_accuracy(result, expected, exact=exact)


# --- the CuPy launch code, with a stand-in for CuPy ------------------------------------


class _FakeKernel:
    """An emulated kernel dressed as cupy.RawKernel (the opt-in attribute included)."""

    def __init__(self, function):
        self.function = function
        self.max_dynamic_shared_size_bytes = 48 * 1024
        self.launched_with = None

    def __call__(self, grid, block, args, shared_mem=0):
        assert shared_mem <= self.max_dynamic_shared_size_bytes  # a GPU refuses the launch
        self.launched_with = (grid, block, shared_mem)
        self.function(grid, block, args, shared_mem=shared_mem)


def _fake_cupy(optin_bytes: int):
    """The few CuPy calls the cuda backend makes, on NumPy arrays."""
    import contextlib
    import types

    runtime = types.SimpleNamespace(
        getDevice=lambda: 0,
        cudaDevAttrMaxSharedMemoryPerBlockOptin=97,
        deviceGetAttribute=lambda attribute, device: optin_bytes,
    )
    stream = types.SimpleNamespace(synchronize=lambda: None)
    cuda = types.SimpleNamespace(
        runtime=runtime,
        Device=lambda device_id: contextlib.nullcontext(),
        get_current_stream=lambda: stream,
    )

    class FakeCupy(types.SimpleNamespace):
        def __getattr__(self, name):  # the array functions the FFT path uses: NumPy's
            return getattr(np, name)

    import scipy.fft

    return FakeCupy(
        __name__="cupy",
        cuda=cuda,
        asarray=np.asarray,
        ascontiguousarray=np.ascontiguousarray,
        empty=np.empty,
        asnumpy=np.asarray,
        fft=scipy.fft,  # cupy.fft's rfft2/irfft2 (float32 in, complex64 out, as cuFFT)
    )


@needs_emulator
@pytest.mark.parametrize("optin_bytes", [48 * 1024, 227 * 1024])
def test_cupy_launch_code_with_a_stand_in_for_cupy(optin_bytes, monkeypatch, rng):
    import sys

    from gpuconv._backends.cuda import source as _cuda_source

    monkeypatch.delenv(_cuda.EMULATOR_VARIABLE, raising=False)
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(optin_bytes))
    _cuda._device_limits.cache_clear()
    _cuda._device_weights.cache_clear()
    _cuda.clear_launch_cache()
    kernels = {}

    def fake_function(file_name, expression):
        kernel = _FakeKernel(_cuda_source.emulated_function(file_name, expression))
        return kernels.setdefault(expression, kernel)

    monkeypatch.setattr(_cuda_source, "cupy_function", fake_function)
    try:
        image = random_image(rng, (21, 26, 2), np.float64)[:, ::2]  # a view
        kernel = rng.normal(size=(61, 61))  # 61 x 61 float64: beyond 48 KiB of tile
        image3d, plan, _ = plan_for(image, kernel, border="wrap")
        result = _cuda.convolve(image3d, plan, "cupy")
        assert_contract_accuracy(result, reference(image, kernel, border="wrap"))
        (used,) = kernels.values()
        _, _, shared = used.launched_with
        if optin_bytes > 48 * 1024:
            assert used.max_dynamic_shared_size_bytes == shared > 48 * 1024  # opted in
        else:
            assert shared == 0  # the global-memory fallback
        again = _cuda.convolve(image3d, plan, "cupy")
        np.testing.assert_array_equal(again, result)
        # The second call reused the prepared launch: nothing planned or uploaded again.
        assert _cuda._device_weights.cache_info().misses == 1
        assert _cuda._device_weights.cache_info().hits == 0
        assert len(kernels) == 1
    finally:
        _cuda._device_limits.cache_clear()
        _cuda._device_weights.cache_clear()
        _cuda.clear_launch_cache()


@pytest.fixture
def stand_in_cupy(monkeypatch):
    """CuPy replaced by the stand-in (NumPy arrays, emulated kernels): ``(fake, launched)``,
    ``launched`` the name expressions compiled."""
    import sys

    from gpuconv._backends.cuda import source as _cuda_source

    monkeypatch.delenv(_cuda.EMULATOR_VARIABLE, raising=False)
    fake = _fake_cupy(48 * 1024)
    monkeypatch.setitem(sys.modules, "cupy", fake)
    _cuda._device_limits.cache_clear()
    _cuda._device_weights.cache_clear()
    _cuda.clear_launch_cache()
    launched = []

    def fake_function(file_name, expression):
        launched.append(expression)
        return _FakeKernel(_cuda_source.emulated_function(file_name, expression))

    monkeypatch.setattr(_cuda_source, "cupy_function", fake_function)
    yield fake, launched
    _cuda._device_limits.cache_clear()
    _cuda._device_weights.cache_clear()
    _cuda.clear_launch_cache()


@needs_emulator
def test_benchmark_kernel_only_row_runs_the_low_rank_terms_of_a_low_rank_plan(stand_in_cupy, rng):
    """The bench's "gpuconv:cuda kernel" row times what the whole call runs on the device:
    for a low-rank plan its term launches and their sum, not the direct kernel (found on
    an H200, where the row read 6.4 ms beside a 4.4 ms whole call)."""
    from gpuconv.bench import _cuda as _bench_cuda
    from gpuconv.bench._inputs import bench_kernels

    fake, launched = stand_in_cupy
    image = random_image(rng, (40, 50), np.float32)
    kernel = bench_kernels(["dog25"])["dog25"]  # a difference of Gaussians: rank 2
    call, name = _bench_cuda._kernel_only(fake, image, kernel)
    assert name.startswith("low-rank, 2 terms: gpuconv_")
    assert len(launched) == 2 and all("gpuconv_direct" not in e for e in launched)
    result = call()
    assert result.shape == (40, 50, 1) and result.dtype == np.float32
    assert_contract_accuracy(result[..., 0], reference(image, kernel))
    # a full-rank kernel of the same size still times its one launch
    call, name = _bench_cuda._kernel_only(fake, image, rng.normal(size=(25, 25)))
    assert not name.startswith("low-rank") and call() is None


@needs_emulator
def test_a_large_dense_kernel_runs_through_the_fft_on_the_gpu(stand_in_cupy, monkeypatch, rng):
    """The cupy branch: where the cost model prefers transforms, cupy.fft computes every
    frame (no kernel is compiled); a frame with a NaN is declined and runs the loops, the
    NaN staying local to the taps that touch it."""
    from gpuconv import _costmodel
    from gpuconv.bench import _cuda as _bench_cuda

    fake, launched = stand_in_cupy
    # At 2 x 120 x 100 the FFT's fixed costs would keep the loops: made free here.
    monkeypatch.setattr(_costmodel, "GPU_FFT_BAND_SECONDS", 0.0)
    monkeypatch.setattr(_costmodel, "GPU_FFT_CALL_SECONDS", 0.0)
    stack = random_image(rng, (2, 120, 100), np.float32)
    kernel = rng.normal(size=(31, 26))  # even width, anchor off-centre below
    for border, anchor in [("reflect101", None), ("constant", (3, 20)), ("wrap", (25, 0))]:
        image3d, plan, _ = plan_for(
            stack, kernel, border=border, value=0.5, anchor=anchor, axes=(1, 2)
        )
        assert plan.frames == 2 and _cuda.takes_fft(plan)
        result = _cuda.convolve(image3d, plan, "cupy")
        assert launched == []
        for frame in range(2):
            assert_contract_accuracy(
                result[frame, ..., 0],
                reference(stack[frame], kernel, border=border, value=0.5, anchor=anchor),
            )
    with_nan = stack.copy()
    with_nan[1, 60, 50] = np.nan
    image3d, plan, _ = plan_for(with_nan, kernel, axes=(1, 2))
    result = _cuda.convolve(image3d, plan, "cupy")
    assert len(launched) == 1  # frame 1 only: the loops' kernel
    assert np.isnan(result[1, 60, 50, 0]) and np.isfinite(result[1, :20]).all()
    for frame in range(2):
        assert_contract_accuracy(result[frame, ..., 0], reference(with_nan[frame], kernel))
    # The bench's kernel-only row runs the same transforms.
    call, name = _bench_cuda._kernel_only(fake, stack[0], kernel)
    assert name.startswith("FFT, tiles ")
    assert_contract_accuracy(call()[..., 0], reference(stack[0], kernel))


def test_the_gpu_takes_the_fft_only_for_large_dense_float_kernels_on_large_images(rng):
    """The crossover measured on an H200 (gpu_fft_crossover.py): at 2048 x 2048 float32 the
    loops won up to 31 x 31 (0.68 against 0.93 ms), the FFT from 45 x 45 (0.87 against
    1.41 ms); never exact integer sums, rank 1 or float16 (whose direct kernels load and
    store half)."""
    _cuda.clear_launch_cache()  # the decision is cached per plan: none from another test
    image = np.zeros((2048, 2048), np.float32)

    def takes(kernel, image=image):
        return _cuda.takes_fft(plan_for(image, kernel)[1])

    assert not takes(rng.normal(size=(31, 31)))
    assert takes(rng.normal(size=(45, 45)))
    assert takes(rng.normal(size=(21, 21)), np.zeros((8192, 8192), np.float32))
    assert not takes(rng.normal(size=(63, 63)), np.zeros((256, 256), np.float32))
    assert not takes(np.ones((41, 41)) / 41**2)  # rank 1: the separable kernel
    assert not takes(rng.integers(-3, 4, size=(45, 45)), np.zeros((2048, 2048), np.uint8))
    assert takes(rng.normal(size=(45, 45)), np.zeros((2048, 2048), np.uint8))  # float sums
    assert not takes(rng.normal(size=(63, 63)), image.astype(np.float16))


def test_an_integer_plan_is_costed_in_the_precision_its_transforms_will_run_in():
    """8192 x 8192 uint8 with a 21 x 21 float kernel (measured on an H200: direct kernel
    8.2 ms, float64 sums; the FFT 4.9 ms where float32 passed its bound, 10.8 where it ran
    in float64). Whether float32 passes is known from the kernel's spectrum: the bench's
    random21 (small gain) takes the FFT, a kernel of 100x its gain keeps the loops."""
    from gpuconv.bench._inputs import bench_kernels

    _cuda.clear_launch_cache()
    image = np.zeros((8192, 8192), np.uint8)
    small_gain = bench_kernels(["random21"])["random21"]
    for kernel, expected in [(small_gain, True), (small_gain * 100, False)]:
        plan = plan_for(image, kernel)[1]
        assert choose_strategy(plan).accumulator == np.float64  # loops in float64
        first = _fft.first_transform_dtype(plan, _fft.gpu_tile_shape(plan), np, scipy.fft)
        assert (first == np.float32) is expected
        assert _cuda.takes_fft(plan) is expected
    _cuda.clear_launch_cache()


def test_prepared_launches_are_keyed_on_what_the_launch_depends_on(monkeypatch):
    _cuda.clear_launch_cache()
    monkeypatch.setattr(_cuda, "_device_limits", lambda device: DEFAULT_LIMITS)
    monkeypatch.setattr(_cuda, "_device_weights", lambda *args: ("weights", args))
    monkeypatch.setattr(_cuda._cuda_source, "cupy_function", lambda *args: _FakeKernel(None))
    try:
        image = np.zeros((16, 32), np.uint8)
        base = plan_for(image, "sharpen")[1]
        first = _cuda.prepared_launch(base, 0)
        assert _cuda.prepared_launch(plan_for(image.copy(), "sharpen")[1], 0) is first
        different = [
            plan_for(image, "laplacian")[1],
            plan_for(image, "sharpen", border="wrap")[1],
            plan_for(image, "sharpen", border="constant", value=3.0)[1],
            plan_for(image, "sharpen", anchor=(1, 0))[1],
            plan_for(image, "sharpen", dtype=np.float32)[1],
            plan_for(np.zeros((16, 33), np.uint8), "sharpen")[1],
            plan_for(image.astype(np.uint16), "sharpen")[1],
        ]
        prepared = [_cuda.prepared_launch(plan, 0) for plan in different]
        assert all(p is not first for p in prepared)
        assert len({id(p) for p in prepared}) == len(prepared)
        assert _cuda.prepared_launch(base, 1) is not first  # another device
    finally:
        _cuda.clear_launch_cache()


# --- the register-window kernels (kernels_cuda/convolve_window.cu) ----------------------

WINDOW_CASES = [
    # (kernel, input dtype, template on grey images, on colour images)
    ("laplacian", np.uint8, "gpuconv_window_dp4a", "gpuconv_window_dp4a"),  # taps in bytes
    ("sharpen200", np.uint8, "gpuconv_window", "gpuconv_window"),  # direct 3x3, exact
    (
        "sobel_x",
        np.int16,
        "gpuconv_window",
        "gpuconv_window",
    ),  # separable 3x3 (colour: direct), exact
    ("random5x5", np.float32, "gpuconv_window", "gpuconv_direct"),  # direct 5x5
    ("gaussian5", np.uint8, "gpuconv_window", "gpuconv_separable"),  # separable 5x5, rounded
    ("random5x5/5", np.uint8, "gpuconv_window", "gpuconv_direct"),  # direct 5x5, rounded
    # 16-bit sums, 7 wide: grey and RGB (4 channels: the shared-memory separable kernel)
    (
        "small_blur",
        np.uint8,
        "gpuconv_box_packed",
        {3: "gpuconv_box_packed", 4: "gpuconv_separable"},
    ),
    ("box9x3", np.uint8, "gpuconv_box_packed", {3: "gpuconv_box_packed", 4: "gpuconv_separable"}),
    ("small_blur", np.float32, "gpuconv_box_float", "gpuconv_separable"),  # float sums: direct
    # (gpuconv_box on uint8 where the column sums pass 16 bits: the packed box tests compare
    # the two kernels, and select it for a 258-row box; a 258-row case here cost 3 minutes)
    ("ones5", np.uint16, "gpuconv_box", "gpuconv_separable"),  # integer box: exact sums
]


def _window_kernel(name, rng):
    return {
        "random5x5": rng.normal(size=(5, 5)),
        "random5x5/5": rng.normal(size=(5, 5)) / 5,
        "gaussian5": gpuconv.kernels.gaussian(5, 1.1),
        "box9x3": np.full((3, 9), 1 / 27),
        "ones5": np.ones((5, 5)),
        "sharpen200": np.array([[0, -1, 0], [-1, 200, -1], [0, -1, 0]]),  # 200: not a byte
    }.get(name, name)


@needs_emulator
@pytest.mark.parametrize("border", BORDERS)
@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize(("kernel_name", "dtype", "grey", "colour"), WINDOW_CASES)
def test_window_kernels_match_the_reference(
    kernel_name, dtype, grey, colour, channels, border, rng
):
    kernel = _window_kernel(kernel_name, rng)
    anchor = (4, 0) if kernel_name == "box9x3" else None
    # 37 x 45: odd widths, so rows are not 16-byte aligned (the element-by-element path);
    # 20 x 64 (x channels): aligned rows, so the vector loads and stores run; 50 x 64: also
    # strips of 16 rows that lie inside the image, which 8-bit images run in the interior
    # loop (no border rule; a strip of 16 rows reads 18, six passes of its 3-row loop).
    for shape in ((37, 45), (20, 64), (50, 64)):
        image = random_image(rng, (*shape, channels) if channels > 1 else shape, dtype)
        options = dict(border=border, value=9.0, anchor=anchor)
        actual, launch = emulated(image, kernel, window=True, **options)
        expected = grey if channels == 1 else colour
        expected = expected[channels] if isinstance(expected, dict) else expected
        assert launch.template == expected, launch.name_expression
        exact = np.dtype(dtype).kind in "ui" and kernel_name in (
            "laplacian",
            "sharpen200",
            "sobel_x",
            "ones5",
        )
        assert_contract_accuracy(actual, reference(image, kernel, **options), exact=exact)


@needs_emulator
@pytest.mark.parametrize("anchor_y", [0, 1, 4, 6])
def test_window_kernels_take_any_row_anchor(anchor_y, rng):
    image = random_image(rng, (29, 48), np.float32)
    for kernel in (rng.normal(size=(5, 5)), gpuconv.kernels.gaussian(5, 1.0)):
        options = dict(border="reflect", anchor=(2, anchor_y % 5))
        actual, launch = emulated(image, kernel, window=True, **options)
        assert launch.template == "gpuconv_window"
        assert_contract_accuracy(actual, reference(image, kernel, **options))
    integer = random_image(rng, (29, 48), np.uint8)
    options = dict(border="replicate", anchor=(3, anchor_y))
    actual, launch = emulated(integer, np.ones((7, 7)) / 49, window=True, **options)
    assert launch.template == "gpuconv_box_packed"
    assert_contract_accuracy(actual, reference(integer, np.ones((7, 7)) / 49, **options))


def test_window_kernels_need_the_default_column_anchor():
    image = np.zeros((16, 64), np.uint8)
    _, centred = launch_for(image, "sharpen", window=True)
    _, shifted = launch_for(image, "sharpen", window=True, anchor=(0, 1))
    assert centred.template == "gpuconv_window_dp4a"
    assert shifted.template == "gpuconv_direct"


# --- gpuconv_window_dp4a: 3 x 3 uint8 whose taps fit a signed byte ------------------------

EXTREME_TAPS = np.array([[-128, 127, 3], [1, -1, 0], [5, 7, -9]])


@pytest.mark.parametrize(
    "image, kernel, options, dp4a",
    [
        (np.zeros((16, 64), np.uint8), "sharpen", {}, True),
        (np.zeros((16, 64), np.uint8), "sobel_x", {}, True),  # separable: all 9 taps here
        (np.zeros((16, 64, 3), np.uint8), "laplacian", {}, True),
        (np.zeros((16, 64, 4), np.uint8), EXTREME_TAPS, {}, True),
        (np.zeros((16, 64), np.uint8), "sharpen", dict(border="constant", value=255.0), True),
        (np.zeros((16, 64), np.uint8), "sharpen", dict(border="constant", value=256.0), False),
        (np.zeros((16, 64), np.uint8), "sharpen", dict(border="constant", value=-1.0), False),
        (np.zeros((16, 64), np.uint8), "sharpen", dict(border="constant", value=2.5), False),
        (np.zeros((16, 64), np.uint8), EXTREME_TAPS + (EXTREME_TAPS == 127), {}, False),  # 128
        (np.zeros((16, 64), np.uint8), EXTREME_TAPS - (EXTREME_TAPS == -128), {}, False),  # -129
        (np.zeros((16, 64), np.uint8), np.full((3, 3), 0.5), {}, False),  # not integers
        (np.zeros((16, 64), np.uint8), "sharpen", dict(dtype=np.int16), False),  # output type
        (np.zeros((16, 64), np.uint16), "sharpen", {}, False),
        (np.zeros((16, 64), np.uint8), np.ones((5, 5)) - 2, {}, False),  # 5 x 5
        (np.zeros((16, 64, 2), np.uint8), "sharpen", {}, False),  # 2 channels: no window kernel
    ],
)
def test_dp4a_kernel_runs_uint8_3x3_whose_taps_and_border_value_fit_bytes(
    image, kernel, options, dp4a
):
    _, launch = launch_for(image, kernel, window=True, **options)
    assert (launch.template == "gpuconv_window_dp4a") == dp4a, launch.name_expression
    if dp4a:
        assert launch.weights.dtype == np.int32 and launch.weights.size == 9


def test_dp4a_kernel_can_be_switched_off_for_measuring_the_kernel_it_replaced():
    _, plan, _ = plan_for(np.zeros((16, 64), np.uint8), "sobel_x")
    launch = _cuda_launch.plan_launch(plan, choose_strategy(plan), dp4a=False)
    assert launch.name_expression.startswith("gpuconv_window<")
    assert launch.name_expression.endswith("true>")  # the separable window kernel again


@needs_emulator
@pytest.mark.parametrize("border", BORDERS)
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_dp4a_kernel_is_exact_for_the_extreme_taps_every_border_and_anchor(border, channels, rng):
    """Every path of gpuconv_window_dp4a: aligned rows (vector loads, the interior loop at
    50 x 64), odd widths (the border rule element by element), rows narrower than a thread's
    8 elements, 1-pixel images; every row anchor; the constant at both ends of a byte."""
    shapes = ((50, 64), (37, 45), (20, 64), (9, 5), (1, 1), (2, 3))
    for index, shape in enumerate(shapes):
        image = random_image(rng, (*shape, channels) if channels > 1 else shape, np.uint8)
        image.flat[: image.size // 7] = 255  # sums beyond 255 and below 0 to clamp
        for kernel in (EXTREME_TAPS, "sobel_y"):
            options = dict(border=border, value=(0.0, 255.0)[index % 2], anchor=(1, index % 3))
            actual, launch = emulated(image, kernel, window=True, **options)
            assert launch.template == "gpuconv_window_dp4a", launch.name_expression
            np.testing.assert_array_equal(actual, reference(image, kernel, **options))


# --- gpuconv_box_packed: uint8 box kernels whose sums fit 16 bits ---------------------------


@pytest.mark.parametrize(
    "image, kernel, options, packed",
    [
        (np.zeros((16, 64), np.uint8), "small_blur", {}, True),
        (np.zeros((16, 64), np.uint8), np.ones((3, 3)), {}, True),  # int sums
        (np.zeros((16, 64), np.uint8), np.ones((257, 9)) / 2313, {}, True),  # 257 x 255 < 2**16
        (np.zeros((16, 64), np.uint8), np.ones((258, 9)) / 2322, {}, False),  # 258 x 255: not
        (np.zeros((16, 64), np.uint8), "large_blur", {}, True),  # 21 wide
        (np.zeros((16, 64, 3), np.uint8), "large_blur", {}, True),  # 21 wide RGB: V = 64
        (np.zeros((16, 64, 3), np.uint8), np.ones((21, 21)), {}, True),  # int sums too
        (np.zeros((16, 64, 4), np.uint8), "large_blur", {}, False),
        (np.zeros((16, 64), np.uint8), "small_blur", dict(border="constant", value=255.0), True),
        (np.zeros((16, 64), np.uint8), "small_blur", dict(border="constant", value=256.0), False),
        (np.zeros((16, 64), np.uint8), "small_blur", dict(dtype=np.float32), False),
        (np.zeros((16, 64), np.uint16), "small_blur", {}, False),
        (np.zeros((16, 64, 3), np.uint8), "small_blur", {}, True),  # RGB too
        (np.zeros((16, 64, 4), np.uint8), "small_blur", {}, False),  # not 4 channels
    ],
)
def test_packed_box_kernel_runs_uint8_boxes_whose_sums_fit_16_bits(image, kernel, options, packed):
    plan, launch = launch_for(image, kernel, window=True, **options)
    assert (launch.template == "gpuconv_box_packed") == packed, launch.name_expression
    if not packed and launch.template.startswith("gpuconv_box"):
        assert launch.template == "gpuconv_box"
    if packed:
        # 16 elements a thread, column sums in registers; or, where they do not fit
        # (21 wide RGB), 64 elements and their 128-byte window's sums in shared memory
        vector = int(launch.name_expression.split(", ")[-1].rstrip(">"))
        wide = plan.shape[2] == 3 and plan.kernel.shape[1] == 21
        assert vector == (64 if wide else 16), launch.name_expression
        assert launch.shared_bytes == (128 * 64 * 4 if wide else 0)


@needs_emulator
@pytest.mark.parametrize("border", BORDERS)
@pytest.mark.parametrize(
    "kernel_shape, channels",
    [((3, 3), 1), ((7, 7), 1), ((257, 3), 1), ((5, 21), 1), ((1, 5), 1)]
    + [((3, 3), 3), ((7, 7), 3), ((257, 3), 3), ((1, 5), 3)]
    + [((21, 21), 3), ((5, 21), 3)],  # 21 wide RGB: V = 64, column sums in shared memory
)
def test_packed_box_kernel_is_exact_at_the_16_bit_limit_every_border_and_anchor(
    kernel_shape, channels, border, rng
):
    """gpuconv_box_packed within the contract of the reference (exactly for integer scales),
    and in grey up to 9 wide bit for bit against gpuconv_box, which ran it before:
    half-white images (every column sum at its largest: 257 x 255 = 65535), noise, float and
    int scales; 21 wide (three halo words); aligned rows (vector loads), odd widths (the
    border rule), images narrower than a thread's 16 elements; every row anchor; the
    constant at 255."""
    height, width = kernel_shape
    for index, shape in enumerate(((70, 64), (37, 45), (9, 5), (1, 1))):
        image = random_image(rng, (*shape, channels) if channels > 1 else shape, np.uint8)
        if index % 2 == 0:
            image[: shape[0] // 2] = 255
        for scale in (1.0 / (height * width), 1.0):
            kernel = np.full(kernel_shape, scale)
            options = dict(border=border, value=255.0, anchor=(width // 2, (index * 5) % height))
            actual, launch = emulated(image, kernel, window=True, **options)
            assert launch.template == "gpuconv_box_packed", launch.name_expression
            image3d, plan, _ = plan_for(image, kernel, **options)
            if channels == 1 and width in _cuda_window.BOX_WIDTHS:
                # gpuconv_box ran it before: the same float products
                replaced = _cuda_launch.plan_launch(plan, choose_strategy(plan), packed_box=False)
                assert replaced.template == "gpuconv_box"
                before = _cuda._run_emulated(image3d, plan, replaced).reshape(image.shape)
                np.testing.assert_array_equal(actual, before)
            if scale == 1.0 or index % 2:
                # (a float scale on the half-white images makes exact ties of x.5 in many
                # pixels, which float32 products round one way and float64 sums the other)
                expected = reference(image, kernel, **options)
                assert_contract_accuracy(actual, expected, exact=scale == 1.0)


@needs_emulator
@pytest.mark.parametrize("border", BORDERS)
def test_packed_box_kernel_with_column_sums_in_shared_memory_reads_every_piece(border, rng):
    """The 21-wide box on RGB: gpuconv_box_packed with 64 elements a thread, the column sums
    of its 128-element window in shared memory, read in pieces of 16. Rows of 80 and 112
    pixels (aligned: the middle threads load every piece, the last thread's are partly
    outside the row), 45 (not aligned: the border rule for every piece), 13 (one thread);
    a grid of one block row, so that threads walk several strips, inside the image and
    across its ends; kernel heights 1 to 257, every kind of row anchor; float and int
    scales; a stack of frames in one launch."""
    cases = (
        ((110, 80), np.full((21, 21), 1 / 441), 10),
        ((45, 112), np.full((5, 21), 1 / 105), 0),
        ((30, 45), np.full((21, 21), 1 / 441), 20),
        ((70, 112), np.ones((257, 21)), 100),  # int sums; columns of 257 x 255 = 65535
        ((40, 112), np.ones((21, 21)), 7),  # int sums below 255 (an image of 0 and 1)
        ((9, 13), np.full((1, 21), 1 / 21), 0),
    )
    for shape, kernel, anchor_y in cases:
        image = random_image(rng, (*shape, 3), np.uint8)
        image[: shape[0] // 2] = 255
        if kernel.flat[0] == 1 and kernel.shape[0] == 21:
            image = (rng.random((*shape, 3)) < 0.2).astype(np.uint8)
        options = dict(border=border, value=255.0, anchor=(10, anchor_y))
        _, plan, _ = plan_for(image, kernel, **options)
        launch = _cuda_launch.plan_launch(plan, choose_strategy(plan), window=True)
        grid = (launch.grid[0], 1, 1)
        actual, launch = emulated(image, kernel, window=True, grid=grid, **options)
        assert launch.name_expression.endswith(", 21, 3, 64>"), launch.name_expression
        assert launch.shared_bytes == 128 * 64 * 4
        expected = reference(image, kernel, **options)
        assert_contract_accuracy(actual, expected, exact=kernel.flat[0] == 1)
    stack = random_image(rng, (2, 40, 80, 3), np.uint8)
    actual, launch = emulated(stack, "large_blur", window=True, axes=(1, 2), border=border)
    assert launch.name_expression.endswith(", 21, 3, 64, true>") and launch.grid[2] == 2
    for frame in range(2):
        expected = reference(stack[frame], "large_blur", border=border)
        assert_contract_accuracy(actual[frame], expected)


def test_window_launch_arithmetic_covers_every_element_and_row():
    for shape, dtype in (((100, 70), np.uint8), ((33, 65, 3), np.float32), ((5, 9, 4), np.uint16)):
        image = np.zeros(shape, dtype)
        plan, launch = launch_for(image, "laplacian", window=True)
        height, width, channels = plan.shape
        vector = int(launch.name_expression.split(", ")[-2])
        rows = int(launch.scalars[-1])
        assert launch.block == (32, 4, 1) and launch.shared_bytes == 0
        chunks = launch.grid[0] * launch.block[0]
        assert chunks * vector >= width * channels > (chunks - launch.block[0]) * vector
        assert launch.grid[1] * launch.block[1] * rows >= height
        assert 16 % (vector * np.dtype(dtype).itemsize) == 0  # one vector load


def test_vector_loads_only_where_rows_and_pointers_are_aligned():
    aligned = np.zeros((8, 64), np.uint8)
    _, launch = launch_for(aligned, "laplacian", window=True)
    output = np.zeros_like(aligned)
    weights = launch.weights
    assert launch.arguments(aligned, output, weights)[-1] == 1
    offset = np.zeros(8 * 64 + 1, np.uint8)[1:].reshape(8, 64)  # misaligned by one byte
    assert launch.arguments(offset, output, weights)[-1] == 0
    _, odd = launch_for(np.zeros((8, 65), np.uint8), "laplacian", window=True)
    assert odd.vector_pitch_aligned is False
    assert odd.arguments(np.zeros((8, 65), np.uint8), np.zeros((8, 65), np.uint8), weights)[-1] == 0


@needs_emulator
def test_window_kernels_on_a_misaligned_view(rng):
    # The backend copies views to contiguous arrays, so a misaligned pointer only comes
    # from the launch itself here: run the kernel on arrays that start one byte in.
    image = random_image(rng, (24, 64), np.uint8)
    storage = np.zeros(image.size + 1, np.uint8)
    shifted = storage[1:].reshape(image.shape)
    shifted[...] = image
    image3d, plan, _ = plan_for(shifted, "sharpen")
    launch = _cuda_launch.plan_launch(plan, choose_strategy(plan), DEFAULT_LIMITS)
    assert launch.arguments(image3d, np.empty(plan.shape, np.uint8), launch.weights)[-1] == 0
    output = np.empty(plan.shape, np.uint8)
    kernel = _cuda_source.emulated_function(launch.source_file, launch.name_expression)
    kernel(launch.grid, launch.block, launch.arguments(image3d, output, launch.weights))
    np.testing.assert_array_equal(output[:, :, 0], reference(image, "sharpen"))


def test_box_kernel_only_where_its_integer_sums_are_exact():
    image = np.zeros((16, 64), np.uint8)
    _, launch = launch_for(image, np.ones((7, 7)) / 49, window=True)
    assert launch.template == "gpuconv_box_packed"
    _, wide_sums = launch_for(image, np.ones((258, 7)) / 1806, window=True)  # 258 x 255 > 2**16
    assert wide_sums.template == "gpuconv_box"
    _, fractional = launch_for(
        image, np.ones((7, 7)) / 49, window=True, border="constant", value=0.5
    )
    assert not fractional.template.startswith("gpuconv_box")  # 0.5 is no integer
    _, wide = launch_for(image, np.ones((3, 11)) / 33, window=True)
    assert not wide.template.startswith("gpuconv_box")  # no compile-time width 11
    _, float_image = launch_for(image.astype(np.float32), np.ones((7, 7)) / 49, window=True)
    assert float_image.template == "gpuconv_box_float"  # float sums: no running sums


@needs_emulator
@pytest.mark.parametrize(
    "dtype, kernel_name, one_launch",
    [
        (np.uint8, "sharpen", True),
        (np.uint8, "small_blur", True),  # the box kernel
        (np.float32, "small_blur", True),  # gpuconv_box_float: its slots in shared memory
        (np.float16, "sharpen", True),
        (np.float16, "small_blur", False),  # separable shared-memory kernel: per frame
        (np.float16, "random", False),
    ],
)
def test_cupy_launch_code_runs_stacks(dtype, kernel_name, one_launch, monkeypatch, rng):
    """The real-GPU code path (CuPy stand-in) on an (N, H, W, C) stack: one launch where the
    window kernels cover the stack, else one per frame; ``output=`` written in place."""
    import sys

    from gpuconv._backends.cuda import source as _cuda_source

    monkeypatch.delenv(_cuda.EMULATOR_VARIABLE, raising=False)
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(48 * 1024))
    _cuda._device_limits.cache_clear()
    _cuda._device_weights.cache_clear()
    _cuda.clear_launch_cache()
    launches = []

    def fake_function(file_name, expression):
        kernel = _FakeKernel(_cuda_source.emulated_function(file_name, expression))

        def launch(grid, block, args, shared_mem=0):
            launches.append(grid)
            kernel(grid, block, args, shared_mem=shared_mem)

        launch.max_dynamic_shared_size_bytes = kernel.max_dynamic_shared_size_bytes
        return launch

    monkeypatch.setattr(_cuda_source, "cupy_function", fake_function)
    try:
        kernel = rng.normal(size=(5, 4)) if kernel_name == "random" else kernel_name
        stack = random_image(rng, (3, 19, 24), dtype)
        options = dict(border="reflect101", value=0.0, anchor=None, flip=False, dtype=None)
        stack4d, plan, _ = make_plan(stack, kernel, axes=(1, 2), **options)
        assert stack4d.shape == (3, 19, 24, 1)
        result = _cuda.convolve(stack4d, plan, "cupy")
        expected = reference(stack, kernel, axes=(1, 2))
        assert_contract_accuracy(result[..., 0], expected)
        assert len(launches) == (1 if one_launch else 3)
        output = np.zeros(stack4d.shape, plan.output_dtype)
        assert _cuda.convolve(stack4d, plan, "cupy", output=output) is output
        np.testing.assert_array_equal(output, result)
    finally:
        _cuda._device_limits.cache_clear()
        _cuda._device_weights.cache_clear()
        _cuda.clear_launch_cache()


# --- gpuconv_box_float: float32 grey boxes, every sum direct --------------------------------


@pytest.mark.parametrize(
    "image, kernel, options, runs",
    [
        (np.zeros((16, 64), np.float32), "small_blur", {}, True),
        (np.zeros((16, 64), np.float32), "large_blur", {}, True),
        (np.zeros((16, 64), np.float32), np.full((9, 9), 0.5), {}, True),
        (np.zeros((16, 64), np.float32), np.ones((5, 5)) / 25, {}, False),  # the window kernel
        (np.zeros((16, 64), np.float32), np.ones((11, 11)) / 121, {}, False),  # no such size
        (np.zeros((16, 64), np.float32), np.ones((7, 9)) / 63, {}, False),  # not square
        (np.zeros((16, 64), np.float32), gpuconv.kernels.gaussian(7, 1.5), {}, False),
        (np.zeros((16, 64), np.float32), "small_blur", dict(anchor=(1, 3)), False),
        (np.zeros((16, 64), np.float32), "small_blur", dict(anchor=(3, 0)), True),
        (np.zeros((16, 64), np.float32), "small_blur", dict(dtype=np.uint8), False),
        (np.zeros((16, 64), np.float64), "small_blur", {}, False),
        (np.zeros((16, 64), np.float16), "small_blur", {}, False),
        (np.zeros((16, 64, 3), np.float32), "small_blur", {}, False),  # grey only
        (np.zeros((3, 16, 64), np.float32), "small_blur", dict(axes=(1, 2)), True),  # a stack
    ],
)
def test_float_box_kernel_runs_float32_grey_boxes_of_its_sizes(image, kernel, options, runs):
    _, launch = launch_for(image, kernel, window=True, **options)
    assert (launch.template == "gpuconv_box_float") == runs, launch.name_expression
    if runs:
        size = int(launch.name_expression.split(",")[3])
        assert launch.shared_bytes == 128 * size * 4 * 4  # K x V float sums a thread
        _, plan, _ = plan_for(image, kernel, **options)
        before = _cuda_launch.plan_launch(plan, choose_strategy(plan), float_box=False)
        assert before.template == "gpuconv_separable"


@needs_emulator
@pytest.mark.parametrize("border", BORDERS)
@pytest.mark.parametrize("size", _cuda_window.FLOAT_BOX_SIZES)
def test_float_box_kernel_keeps_every_sum_direct(size, border, rng):
    """gpuconv_box_float within the contract of the float64 reference, with strips inside
    the image (the interior loop) and across its edges, several blocks of K rows a strip
    and a grid that strides over strips (one row of blocks); aligned rows, odd widths and
    images narrower than the kernel; every row anchor class. An inf or NaN stays where the
    reference has it: no sum spreads it (running sums would, inf - inf = NaN), and a large
    value leaves no rounding error in the sums after it."""
    kernel = np.full((size, size), 1.0 / size**2)
    small_grid = _cuda_launch.DeviceLimits(max_grid_y=1, max_grid_z=1)
    for index, shape in enumerate(((300, 72), (97, 45), (40, 7), (1, 1))):
        image = random_image(rng, shape, np.float32)
        if shape[0] > 50:
            image[shape[0] // 3, shape[1] // 2] = np.inf
            image[shape[0] // 2, 3] = np.nan
            image[2 * shape[0] // 3 :, :8] = 3e7  # large values, then small ones beside them
        anchor = (size // 2, (index * 5) % size)
        options = dict(border=border, value=-2.5, anchor=anchor)
        actual, launch = emulated(image, kernel, limits=small_grid, window=True, **options)
        assert launch.template == "gpuconv_box_float", launch.name_expression
        expected = reference(image, kernel, **options)
        finite = np.isfinite(expected)
        np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
        np.testing.assert_array_equal(np.isposinf(actual), np.isposinf(expected))
        assert_contract_accuracy(np.where(finite, actual, 0), np.where(finite, expected, 0))
        # beside the large values, the small sums are right to float32 rounding of their own
        # magnitude, not of 3e7's (where a running sum would have kept its error)
        small = finite & (np.abs(expected) < 10)
        assert np.abs(actual[small] - expected[small]).max(initial=0) < 1e-5


@needs_emulator
def test_float_box_kernel_runs_a_stack_in_one_launch(rng):
    stack = random_image(rng, (3, 90, 40), np.float32)
    actual, launch = emulated(stack, "large_blur", window=True, axes=(1, 2), border="wrap")
    assert launch.name_expression.endswith(", true>") and launch.grid[2] == 3
    for frame in range(3):
        expected = reference(stack[frame], "large_blur", border="wrap")
        assert_contract_accuracy(actual[frame], expected)
