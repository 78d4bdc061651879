"""The CUDA-on-CPU emulator (gpuconv/_emulator/), on small kernels of its own.

The kernels live in tests/emulator_kernels/*.cu and are plain CUDA: the same text would
run under cupy.RawModule. Each module is compiled once per test module into a private
cache directory, so the cache test sees a cold cache.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from gpuconv import _emulator as emulator

KERNELS = Path(__file__).parent / "emulator_kernels"

pytestmark = pytest.mark.skipif(
    emulator.available() is not None,
    reason=f"the CUDA emulator cannot run here: {emulator.available()}",
)


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory):
    """Build into a fresh cache directory, so that what is cached is what this module built."""
    with pytest.MonkeyPatch.context() as patch:
        directory = tmp_path_factory.mktemp("emulator-cache")
        patch.setenv("GPUCONV_CACHE_DIR", str(directory))
        yield directory / "emulator"


def source(name: str) -> str:
    return (KERNELS / name).read_text()


@pytest.fixture(scope="module")
def reduce_module():
    return emulator.EmulatedModule(
        source("reduce_sum.cu"),
        name_expressions=["block_sum<float>", "block_sum<double>", "count_positive"],
    )


@pytest.fixture(scope="module")
def stencil_module():
    return emulator.EmulatedModule(
        source("stencil_1d.cu"),
        name_expressions=["stencil_static<1>", "stencil_static<3>", "stencil_dynamic"],
        options=["--std=c++17", "-DMAX_RADIUS=4", "--use_fast_math"],
    )


@pytest.fixture(scope="module")
def grid_module():
    return emulator.EmulatedModule(
        source("grids.cu"),
        name_expressions=["coordinates", "scale<float>", "scale<long long>", "transpose_tile"],
    )


@pytest.fixture(scope="module")
def fault_module():
    return emulator.EmulatedModule(
        source("faults.cu"),
        name_expressions=[
            "early_return_barrier",
            "split_barriers",
            "read_past_end",
            "trap_if_negative",
            "missing_barrier",
            "divide",
            "deep_stack",
            "wild_read",
            "wait_for_flag",
        ],
        source_name=KERNELS / "faults.cu",
    )


# ---------------------------------------------------------------- barriers and shared memory


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [32, 256, 1024])
def test_block_reduction_over_several_barriers(reduce_module, rng, dtype, threads):
    count = 3 * threads - 5  # a partial last block
    values = rng.integers(-1000, 1000, count).astype(dtype)  # integers: exact in any order
    blocks = -(-count // threads)
    sums = np.full(blocks, np.nan, dtype)
    kernel = reduce_module.get_function(
        "block_sum<float>" if dtype == np.float32 else "block_sum<double>"
    )
    kernel((blocks,), (threads,), (values, sums, np.int32(count)))
    padded = np.zeros(blocks * threads, dtype)
    padded[:count] = values
    np.testing.assert_array_equal(sums, padded.reshape(blocks, threads).sum(axis=1))


def test_syncthreads_count_counts_the_block(reduce_module, rng):
    values = rng.standard_normal(300).astype(np.float32)
    counts = np.full(3, -1, np.int32)
    reduce_module.get_function("count_positive")((3,), (128,), (values, counts, np.int32(300)))
    padded = np.zeros(384, np.float32)
    padded[:300] = values
    np.testing.assert_array_equal(counts, (padded.reshape(3, 128) > 0).sum(axis=1))


def expected_stencil(values, weights, radius):
    padded = np.pad(values.astype(np.float64), radius)
    return sum(weights[k] * padded[k : k + values.size] for k in range(2 * radius + 1))


@pytest.mark.parametrize("radius", [1, 3])
def test_tiled_stencil_with_halo_and_constant_weights(stencil_module, rng, radius):
    weights = rng.standard_normal(2 * radius + 1).astype(np.float32)
    constant = stencil_module.get_global("weights")
    assert constant.dtype == np.uint8 and constant.size == (2 * 4 + 1) * 4
    constant[: weights.nbytes] = weights.view(np.uint8)
    values = rng.standard_normal(200).astype(np.float32)  # 4 tiles of 64, the last partial
    output = np.zeros_like(values)
    stencil_module.get_function(f"stencil_static<{radius}>")(
        (4,), (64,), (values, output, np.int32(200))
    )
    np.testing.assert_allclose(
        output, expected_stencil(values, weights, radius), rtol=1e-5, atol=1e-5
    )


def test_dynamic_shared_memory(stencil_module, rng):
    radius, threads = 4, 48
    weights = rng.standard_normal(2 * radius + 1).astype(np.float32)
    stencil_module.get_global("weights")[:] = weights.view(np.uint8)
    values = rng.standard_normal(250).astype(np.float32)
    output = np.zeros_like(values)
    blocks = -(-values.size // threads)
    shared = (threads + 2 * radius) * 4
    stencil_module.get_function("stencil_dynamic")(
        (blocks,),
        (threads,),
        (values, output, np.int32(values.size), np.int32(radius)),
        shared_mem=shared,
    )
    np.testing.assert_allclose(
        output, expected_stencil(values, weights, radius), rtol=1e-5, atol=1e-5
    )


# ---------------------------------------------------------------- grids, templates, scalars


@pytest.mark.parametrize(
    "grid, block",
    [((5,), (7,)), ((3, 4), (8, 2)), ((2, 3, 2), (4, 2, 3)), ((1, 1, 3), (1, 1, 64))],
)
def test_every_thread_of_2d_and_3d_grids_runs_once(grid_module, grid, block):
    grid3 = tuple(grid) + (1,) * (3 - len(grid))
    block3 = tuple(block) + (1,) * (3 - len(block))
    extent = [g * b for g, b in zip(grid3, block3)]
    out = np.full((extent[2], extent[1], extent[0], 4), 2**32 - 1, np.uint32)
    grid_module.get_function("coordinates")(grid, block, (out,))
    z, y, x = np.meshgrid(*(np.arange(n) for n in extent[::-1]), indexing="ij")
    np.testing.assert_array_equal(out[..., 0], x)
    np.testing.assert_array_equal(out[..., 1], y)
    np.testing.assert_array_equal(out[..., 2], z)
    linear_block = (z // block3[2] * grid3[1] + y // block3[1]) * grid3[0] + x // block3[0]
    np.testing.assert_array_equal(out[..., 3], linear_block)


def test_template_instantiations_take_their_own_scalar_types(grid_module):
    floats = np.arange(10, dtype=np.float32)
    grid_module.get_function("scale<float>")((1,), (16,), (floats, np.float32(2.5), np.int64(10)))
    np.testing.assert_array_equal(floats, np.arange(10, dtype=np.float32) * 2.5)
    integers = np.arange(10, dtype=np.int64) + 2**40
    grid_module.get_function("scale<long long>")((1,), (16,), (integers, np.int64(3), np.int64(7)))
    expected = (np.arange(10, dtype=np.int64) + 2**40) * np.array([3] * 7 + [1] * 3)
    np.testing.assert_array_equal(integers, expected)


def test_two_dimensional_shared_tile(grid_module, rng):
    matrix = rng.standard_normal((37, 21)).astype(np.float32)
    out = np.zeros((21, 37), np.float32)
    grid_module.get_function("transpose_tile")(
        (2, 3), (16, 16), (matrix, out, np.int32(37), np.int32(21))
    )
    np.testing.assert_array_equal(out, matrix.T)


def test_strided_views_pass_their_data_pointer(grid_module):
    base = np.arange(20, dtype=np.float32)
    view = base[4:14]  # the kernel sees the view's first element
    grid_module.get_function("scale<float>")((1,), (32,), (view, np.float32(-1), np.int64(10)))
    np.testing.assert_array_equal(base[4:14], -np.arange(4, 14, dtype=np.float32))
    np.testing.assert_array_equal(base[14:], np.arange(14, 20, dtype=np.float32))


@pytest.fixture(scope="module")
def intrinsics_module():
    return emulator.EmulatedModule(
        source("intrinsics.cu"),
        name_expressions=[
            "float_conversions",
            "mixed_min_max",
            "byte_intrinsics",
            "lookup_table",
            "math_overloads",
        ],
    )


def test_float_to_int_conversions_round_half_even_and_saturate(intrinsics_module):
    values = np.array(
        [0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 0.49999997, 3.7, -3.7, 1e10, -1e10, np.nan, np.inf, 0.25],
        np.float32,
    )
    count = values.size
    rounded = np.zeros(count, np.int32)
    unsigned_rounded = np.zeros(count, np.uint32)
    saturated = np.zeros(count, np.float32)
    rinted = np.zeros(count, np.float32)
    intrinsics_module.get_function("float_conversions")(
        (1,), (32,), (values, rounded, unsigned_rounded, saturated, rinted, np.int32(count))
    )
    nearest = np.nan_to_num(np.rint(values.astype(np.float64)), nan=0, posinf=1e300, neginf=-1e300)
    np.testing.assert_array_equal(rounded, np.clip(nearest, -(2**31), 2**31 - 1).astype(np.int64))
    np.testing.assert_array_equal(unsigned_rounded, np.clip(nearest, 0, 2**32 - 1).astype(np.int64))
    np.testing.assert_array_equal(saturated, np.nan_to_num(np.clip(values, 0, 1), nan=0))
    np.testing.assert_array_equal(rinted, np.rint(values))


def test_min_max_follow_cuda_overloads(intrinsics_module):
    a = np.array([-1, 5, 7, 2**24 + 3], np.int32)
    b = np.array([3, 2, 7, 2], np.uint32)
    x = np.array([1.0, np.nan, -0.0, 2.0], np.float32)
    y = np.array([2.0, 3.0, 1.0, np.nan], np.float32)
    int_results = np.zeros((4, 4), np.uint32)
    float_results = np.zeros((4, 4), np.float32)
    intrinsics_module.get_function("mixed_min_max")(
        (1,), (4,), (a, b, x, y, int_results, float_results, np.int32(4))
    )
    as_unsigned = a.view(np.uint32)
    np.testing.assert_array_equal(int_results[:, 0], np.minimum(as_unsigned, b))  # -1 is 2^32 - 1
    np.testing.assert_array_equal(int_results[:, 1], np.maximum(as_unsigned, b))
    np.testing.assert_array_equal(
        int_results[:, 2], np.minimum(a, b.astype(np.int32)).view(np.uint32)
    )
    np.testing.assert_array_equal(int_results[:, 3], (as_unsigned & 0xFFFFFF) * (b & 0xFFFFFF))
    np.testing.assert_array_equal(float_results[:, 0], np.fmin(x, y))
    np.testing.assert_array_equal(float_results[:, 1], np.fmax(x, y))
    np.testing.assert_array_equal(float_results[:, 2], x * y + np.float32(1))
    np.testing.assert_array_equal(float_results[:, 3], np.fmax(x, y))


def test_byte_permute_and_dot_products_of_four_bytes(intrinsics_module, rng):
    count = 64
    a = rng.integers(0, 2**32, count, dtype=np.uint32)
    b = rng.integers(0, 2**32, count, dtype=np.uint32)
    a[:2] = [0x80FF7F01, 0xFFFFFFFF]  # the extremes of both byte kinds
    b[:2] = [0xFF807F02, 0x80808080]
    selectors = rng.integers(0, 2**16, count, dtype=np.uint32)  # the top bit of each nibble too
    out = np.zeros((count, 3), np.uint32)
    intrinsics_module.get_function("byte_intrinsics")(
        (1,), (count,), (a, b, selectors, out, np.int32(count))
    )
    source = (b.astype(np.uint64) << np.uint64(32)) | a.astype(np.uint64)
    permuted = np.zeros(count, np.uint64)
    for n in range(4):
        which = (selectors.astype(np.uint64) >> np.uint64(4 * n)) & np.uint64(7)
        byte = (source >> (np.uint64(8) * which)) & np.uint64(0xFF)
        permuted |= byte << np.uint64(8 * n)
    np.testing.assert_array_equal(out[:, 0], permuted)
    a_bytes, b_bytes = (x.view(np.uint8).reshape(count, 4).astype(np.int64) for x in (a, b))
    signed = (a_bytes.astype(np.int8) * b_bytes.astype(np.int8).astype(np.int64)).sum(1) - 7
    unsigned = (a_bytes * b_bytes).sum(1) + 7
    np.testing.assert_array_equal(out[:, 1], (signed % 2**32).astype(np.uint32))
    np.testing.assert_array_equal(out[:, 2], unsigned.astype(np.uint32))


def test_math_functions_take_their_float_double_and_integer_overloads(intrinsics_module):
    x = np.array([-2.75, 2.0, np.nan, 1.0], np.float32)
    f = np.zeros(4, np.float32)
    d = np.zeros(1, np.float64)
    integers = np.zeros(3, np.int64)
    intrinsics_module.get_function("math_overloads")((1,), (1,), (x, f, d, integers))
    np.testing.assert_array_equal(f, [2.75, np.float32(np.sqrt(np.float32(2))), 1.0, -3.0])
    np.testing.assert_array_equal(d, [8.25])  # abs(double), not abs(int)
    np.testing.assert_array_equal(integers, [5000000000, 3, 1])


def test_get_global_of_a_namespaced_device_array(intrinsics_module):
    table = intrinsics_module.get_global("tables::lookup")
    assert table.size == 16
    table[:] = np.array([1, 2, 3, 4], np.int32).view(np.uint8)
    out = np.zeros(4, np.int32)
    intrinsics_module.get_function("lookup_table")((1,), (4,), (out,))
    np.testing.assert_array_equal(out, [10, 20, 30, 40])


@pytest.fixture(scope="module")
def atomics_module():
    return emulator.EmulatedModule(
        source("atomics.cu"), name_expressions=["histogram", "votes", "pack_float4"]
    )


@pytest.mark.parametrize("threads", ["1", "3"])
def test_atomics_from_every_block(atomics_module, rng, monkeypatch, threads):
    monkeypatch.setenv("GPUCONV_EMULATOR_THREADS", threads)
    values = rng.integers(0, 256, 5000).astype(np.uint8)
    bins = np.zeros(256, np.uint32)
    total = np.zeros(1, np.float32)
    largest = np.zeros(1, np.int32)
    atomics_module.get_function("histogram")(
        (7,), (96,), (values, bins, total, largest, np.int32(values.size))
    )
    np.testing.assert_array_equal(bins, np.bincount(values, minlength=256))
    assert total[0] == values.sum()  # integers below 2^24: exact in float32 in any order
    assert largest[0] == values.max()


def test_block_votes(atomics_module):
    values = np.ones((3, 32), np.int32)
    values[1, 5] = 0
    values[2, 31] = -4
    results = np.full((3, 2), 7, np.int32)
    atomics_module.get_function("votes")((3,), (32,), (values, results))
    np.testing.assert_array_equal(results, [[1, 0], [0, 0], [0, 1]])


def test_vector_types(atomics_module):
    values = np.arange(32, dtype=np.float32)
    out = np.zeros(32, np.float32)  # eight float4
    atomics_module.get_function("pack_float4")((1,), (8,), (values, out))
    np.testing.assert_array_equal(out, values.reshape(8, 4)[:, ::-1].ravel())


# ---------------------------------------------------------------- argument checking


@pytest.mark.parametrize(
    "arguments, message",
    [
        ((np.zeros(4, np.float32), 2.0, np.int64(4)), r"Python float.*np\.int32|Python float"),
        ((np.zeros(4, np.float32), np.float64(2), np.int64(4)), "parameter 1 is a 4-byte"),
        ((np.zeros(4, np.float32), np.float32(2), np.int32(4)), "parameter 2 is a 8-byte"),
        (
            (np.zeros(4, np.float32), np.float32(2), np.float64(4)),
            "parameter 2 is a 8-byte integer",
        ),
        (
            (np.zeros(4, np.float32), np.zeros(1, np.float32), np.int64(4)),
            "parameter 1 .*not a pointer",
        ),
        ((np.float32(1), np.float32(2), np.int64(4)), "parameter 0 is a 8-byte pointer"),
        (
            (np.zeros(4, np.float64), np.float32(2), np.int64(4)),
            "parameter 0 points to 4-byte floating-points, but got an array of float64",
        ),
        (
            (np.zeros(4, np.int32), np.float32(2), np.int64(4)),
            "parameter 0 points to 4-byte floating-points, but got an array of int32",
        ),
        ((np.zeros(4, np.float32), np.float32(2)), "takes 3 arguments, 2 given"),
        (([1.0], np.float32(2), np.int64(4)), "expected a numpy array"),
    ],
)
def test_wrong_argument_types_and_sizes_are_type_errors(grid_module, arguments, message):
    with pytest.raises(TypeError, match=message):
        grid_module.get_function("scale<float>")((1,), (4,), arguments)


def test_python_int_is_refused_even_when_the_size_would_fit(grid_module):
    with pytest.raises(TypeError, match="argument 2 .* Python int"):
        grid_module.get_function("scale<float>")(
            (1,), (4,), (np.zeros(4, np.float32), np.float32(1), 4)
        )


@pytest.mark.parametrize(
    "grid, block, shared, message",
    [
        ((1,), (1025,), 0, "at most 1024"),
        ((1,), (32, 32, 2), 0, "at most 1024"),
        ((0,), (32,), 0, "must be positive"),
        ((1,), (32,), 229 * 1024, "dynamic shared memory"),
        ((1, 70000), (32,), 0, "exceeds"),
    ],
)
def test_impossible_launches_are_reported(grid_module, grid, block, shared, message):
    out = np.zeros(10**6, np.uint32)
    with pytest.raises(emulator.EmulatorError, match=message):
        grid_module.get_function("coordinates")(grid, block, (out,), shared_mem=shared)


def test_unknown_kernel_and_global_names(grid_module, stencil_module):
    with pytest.raises(KeyError, match="not one of this module's name_expressions"):
        grid_module.get_function("scale<double>")
    with pytest.raises(emulator.EmulatorError, match="no __device__ or __constant__ variable"):
        stencil_module.get_global("no_such_symbol")


# ---------------------------------------------------------------- faults a GPU would hide


def test_barrier_not_reached_by_all_threads(fault_module):
    data = np.arange(100, dtype=np.float32)
    with pytest.raises(
        emulator.EmulatorError,
        match=r"__syncthreads\(\) at .*faults\.cu:\d+ reached by 36 of the block's 64",
    ):
        fault_module.get_function("early_return_barrier")((2,), (64,), (data, np.int32(100)))


def test_full_blocks_pass_the_same_barrier(fault_module):
    data = np.arange(128, dtype=np.float32)
    fault_module.get_function("early_return_barrier")((2,), (64,), (data, np.int32(128)))
    np.testing.assert_array_equal(
        data.reshape(2, 64), np.arange(128, dtype=np.float32).reshape(2, 64)[:, ::-1]
    )


def test_threads_at_different_barriers(fault_module):
    with pytest.raises(
        emulator.EmulatorError,
        match=r"different __syncthreads\(\) barriers: .*faults\.cu:\d+ .*faults\.cu:\d+",
    ):
        fault_module.get_function("split_barriers")((1,), (8,), (np.zeros(8, np.int32),))


def test_out_of_bounds_read_names_file_line_and_thread(fault_module):
    values = np.ones(40, np.float32)
    output = np.zeros(40, np.float32)  # may sit right after `values`: still an error
    line = next(
        number
        for number, text in enumerate(source("faults.cu").splitlines(), start=1)
        if "LOAD(input, i + 1)" in text
    )
    with pytest.raises(emulator.EmulatorError) as caught:
        fault_module.get_function("read_past_end")((2,), (32,), (values, output, np.int32(40)))
    message = str(caught.value)
    assert f"faults.cu:{line}" in message
    assert "out-of-bounds global access" in message and "index 40" in message
    assert "argument 0 (160 bytes)" in message
    assert "block (1, 0, 0), thread (7, 0, 0)" in message


def test_trap(fault_module):
    values = np.array([0, 1, -1, 2], np.int32)
    with pytest.raises(
        emulator.EmulatorError, match=r"__trap\(\) at .*faults\.cu:\d+ .*thread \(2, 0, 0\)"
    ):
        fault_module.get_function("trap_if_negative")((1,), (4,), (values,))


def _fault_handler_addresses() -> list[int]:
    """The C-level handlers of SIGSEGV, SIGBUS and SIGFPE (the first field of sigaction)."""
    import ctypes
    import signal

    libc = ctypes.CDLL(None)
    addresses = []
    for number in (signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE):
        action = ctypes.create_string_buffer(512)  # larger than struct sigaction
        assert libc.sigaction(int(number), None, action) == 0
        addresses.append(int.from_bytes(action.raw[:8], "little"))
    return addresses


@pytest.mark.parametrize("threads", ["1", "3"])
def test_integer_division_by_zero_is_an_error_not_a_crash(fault_module, monkeypatch, threads):
    monkeypatch.setenv("GPUCONV_EMULATOR_THREADS", threads)
    handlers = _fault_handler_addresses()
    with pytest.raises(emulator.EmulatorError, match="integer division by zero"):
        fault_module.get_function("divide")(
            (4,), (16,), (np.ones(64, np.int32), np.zeros(64, np.int32), np.int32(0))
        )
    assert _fault_handler_addresses() == handlers  # the previous handlers are back
    out = np.zeros(64, np.int32)
    fault_module.get_function("divide")(
        (4,), (16,), (np.arange(64, dtype=np.int32) * 3, out, np.int32(3))
    )
    np.testing.assert_array_equal(out, np.arange(64))


def test_fiber_stack_overflow_is_an_error_not_a_crash(fault_module):
    with pytest.raises(emulator.EmulatorError, match="stack overflow"):
        fault_module.get_function("deep_stack")(
            (1,), (4,), (np.zeros(4, np.float32), np.int32(200000))
        )
    out = np.zeros(4, np.int32)  # the fibers' stacks are reused afterwards
    fault_module.get_function("divide")((1,), (4,), (np.full(4, 8, np.int32), out, np.int32(2)))
    np.testing.assert_array_equal(out, 4)


def test_invalid_memory_access_is_an_error_not_a_crash(fault_module):
    with pytest.raises(emulator.EmulatorError, match=r"invalid memory access at address 0x10"):
        fault_module.get_function("wild_read")((1,), (2,), (np.zeros(2, np.float32),))


@pytest.mark.parametrize("threads", ["1", "2"])
def test_a_spinning_thread_times_out_instead_of_hanging(fault_module, monkeypatch, threads):
    monkeypatch.setenv("GPUCONV_EMULATOR_TIMEOUT", "0.5")
    monkeypatch.setenv("GPUCONV_EMULATOR_THREADS", threads)
    with pytest.raises(emulator.EmulatorError, match=r"ran longer than 0.5 s.*thread \(0, 0, 0\)"):
        fault_module.get_function("wait_for_flag")((4,), (8,), (np.zeros(1, np.int32),))
    # In reverse order the flag is set first: the same kernel finishes.
    monkeypatch.setenv("GPUCONV_EMULATOR_SCHEDULE", "reverse")
    fault_module.get_function("wait_for_flag")((4,), (8,), (np.zeros(1, np.int32),))


def test_unknown_timeout_is_refused(grid_module, monkeypatch):
    monkeypatch.setenv("GPUCONV_EMULATOR_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="GPUCONV_EMULATOR_TIMEOUT='soon'"):
        grid_module.get_function("coordinates")((1,), (1,), (np.zeros(4, np.uint32),))


def test_a_failed_launch_leaves_the_module_usable(fault_module):
    with pytest.raises(emulator.EmulatorError):
        fault_module.get_function("split_barriers")((3,), (8,), (np.zeros(8, np.int32),))
    data = np.arange(64, dtype=np.float32)
    fault_module.get_function("early_return_barrier")((1,), (64,), (data, np.int32(64)))
    np.testing.assert_array_equal(data, np.arange(64, dtype=np.float32)[::-1])


@pytest.mark.parametrize("schedule", ["forward", "reverse", "shuffle", "shuffle:7"])
def test_every_schedule_exposes_a_missing_barrier(fault_module, rng, monkeypatch, schedule):
    monkeypatch.setenv("GPUCONV_EMULATOR_SCHEDULE", schedule)
    values = rng.standard_normal(128).astype(np.float32)  # fresh: stale shared data differs
    output = np.zeros_like(values)
    fault_module.get_function("missing_barrier")((2,), (64,), (values, output))
    wrong = output != values.reshape(2, 64)[:, ::-1].ravel()
    assert 0 < wrong.sum() < values.size
    # With the barrier, every schedule gives the right answer.
    data = values.copy()
    fault_module.get_function("early_return_barrier")((2,), (64,), (data, np.int32(128)))
    np.testing.assert_array_equal(data, values.reshape(2, 64)[:, ::-1].ravel())


def test_unknown_schedule_is_refused(grid_module, monkeypatch):
    monkeypatch.setenv("GPUCONV_EMULATOR_SCHEDULE", "backwards")
    with pytest.raises(ValueError, match="GPUCONV_EMULATOR_SCHEDULE='backwards'"):
        grid_module.get_function("coordinates")((1,), (1,), (np.zeros(4, np.uint32),))


def test_blocks_on_several_os_threads(grid_module, fault_module, monkeypatch):
    monkeypatch.setenv("GPUCONV_EMULATOR_THREADS", "3")
    out = np.zeros((16, 24, 40, 4), np.uint32)
    grid_module.get_function("coordinates")((5, 6, 4), (8, 4, 4), (out,))
    z, y, x = np.meshgrid(np.arange(16), np.arange(24), np.arange(40), indexing="ij")
    np.testing.assert_array_equal(out[..., :3], np.stack([x, y, z], axis=-1))
    # Every block but the last passes its barrier; the error still names the last one.
    data = np.arange(1000, dtype=np.float32)
    with pytest.raises(emulator.EmulatorError, match=r"block \(15, 0, 0\)"):
        fault_module.get_function("early_return_barrier")((16,), (64,), (data, np.int32(1000)))


def test_concurrent_launches_from_python_threads(reduce_module, rng):
    # ctypes releases the GIL, so these launches really overlap (as under dask's threads);
    # each OS thread has its own worker state and __shared__ arrays.
    from concurrent.futures import ThreadPoolExecutor

    kernel = reduce_module.get_function("block_sum<double>")
    inputs = [rng.integers(-100, 100, 4096).astype(np.float64) for _ in range(8)]

    def block_sums(values):
        sums = np.zeros(16, np.float64)
        kernel((16,), (256,), (values, sums, np.int32(values.size)))
        return sums

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(block_sums, inputs))
    for values, sums in zip(inputs, results):
        np.testing.assert_array_equal(sums, values.reshape(16, 256).sum(axis=1))


def test_ucontext_fibers_where_there_is_no_register_switch():
    code = source("reduce_sum.cu") + source("faults.cu")
    module = emulator.EmulatedModule(
        code,
        name_expressions=["block_sum<double>", "early_return_barrier"],
        options=["-DGPUCONV_EMULATOR_UCONTEXT"],
    )
    values = np.arange(500, dtype=np.float64)
    sums = np.zeros(2, np.float64)
    module.get_function("block_sum<double>")((2,), (256,), (values, sums, np.int32(500)))
    np.testing.assert_array_equal(sums, [values[:256].sum(), values[256:].sum()])
    with pytest.raises(emulator.EmulatorError, match="reached by 36 of the block's 64"):
        module.get_function("early_return_barrier")(
            (2,), (64,), (np.zeros(100, np.float32), np.int32(100))
        )


def test_release_builds_skip_the_bounds_checks():
    module = emulator.EmulatedModule(
        source("faults.cu"), name_expressions=["read_past_end"], debug=False
    )
    backing = np.arange(41, dtype=np.float32)
    values = backing[:40]  # element 40 is real memory, outside the array the kernel is given
    output = np.zeros(40, np.float32)
    module.get_function("read_past_end")((2,), (32,), (values, output, np.int32(40)))
    np.testing.assert_array_equal(output, backing[1:])


# ---------------------------------------------------------------- building and caching


def test_build_is_cached(private_cache):
    code = source("reduce_sum.cu") + "\n// cache test\n"
    before = emulator.compile_count
    first = emulator.EmulatedModule(code, name_expressions=["block_sum<float>"])
    assert emulator.compile_count == before + 1
    libraries = sorted(private_cache.glob("*.so"))
    modified = {path: path.stat().st_mtime_ns for path in libraries}
    second = emulator.EmulatedModule(code, name_expressions=["block_sum<float>"])
    assert emulator.compile_count == before + 1
    assert {path: path.stat().st_mtime_ns for path in private_cache.glob("*.so")} == modified
    values = np.ones(64, np.float32)
    for module in (first, second):
        sums = np.zeros(1, np.float32)
        module.get_function("block_sum<float>")((1,), (64,), (values, sums, np.int32(64)))
        assert sums[0] == 64
    emulator.EmulatedModule(code, name_expressions=["block_sum<float>"], debug=False)
    assert emulator.compile_count == before + 2  # another build configuration, another build


def test_included_header_change_triggers_a_rebuild(tmp_path):
    (tmp_path / "constant.cuh").write_text("#define ANSWER 41\n")
    code = '#include "constant.cuh"\n__global__ void answer(int* out) { out[0] = ANSWER; }\n'
    before = emulator.compile_count
    results = []
    for value in (41, 41, 42):
        (tmp_path / "constant.cuh").write_text(f"#define ANSWER {value}\n")
        module = emulator.EmulatedModule(code, name_expressions=["answer"], include_dirs=[tmp_path])
        out = np.zeros(1, np.int32)
        module.get_function("answer")((1,), (1,), (out,))
        results.append(int(out[0]))
    assert results == [41, 41, 42]
    assert emulator.compile_count == before + 2


def test_compile_errors_carry_the_compiler_message():
    with pytest.raises(emulator.EmulatorError, match="(?s)could not compile.*not_declared"):
        emulator.EmulatedModule(
            "__global__ void broken(int* out) { out[0] = not_declared; }",
            name_expressions=["broken"],
        )


def test_unknown_options_are_refused():
    with pytest.raises(ValueError, match="does not understand the compiler option '--frobnicate'"):
        emulator.EmulatedModule(
            "__global__ void k() {}", name_expressions=["k"], options=["--frobnicate"]
        )


def test_options_must_be_a_sequence():
    with pytest.raises(TypeError, match="sequences of strings, not one string"):
        emulator.EmulatedModule(
            "__global__ void k() {}", name_expressions=["k"], options="--std=c++17"
        )


def test_available_names_a_missing_compiler(monkeypatch):
    monkeypatch.setenv("CXX", "no-such-compiler-gpuconv")
    assert "no-such-compiler-gpuconv" in emulator.available()
    monkeypatch.setenv("CXX", os.environ.get("CXX_FOR_TESTS", "g++"))
    assert emulator.available() is None


_BUILD_SCRIPT = """
import sys
import numpy as np
from gpuconv import _emulator as emulator
module = emulator.EmulatedModule(sys.stdin.read(), name_expressions=["block_sum<float>"])
sums = np.zeros(1, np.float32)
module.get_function("block_sum<float>")((1,), (32,), (np.ones(32, np.float32), sums, np.int32(32)))
print(int(sums[0]))
"""


def test_concurrent_builds_by_several_processes_share_one_cache(tmp_path):
    import subprocess
    import sys

    environment = {**os.environ, "GPUCONV_CACHE_DIR": str(tmp_path)}
    code = source("reduce_sum.cu") + "\n// concurrent build test\n"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _BUILD_SCRIPT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=environment,
        )
        for _ in range(3)
    ]
    results = [process.communicate(code, timeout=300) for process in processes]
    assert [(process.returncode, out.strip()) for process, (out, _) in zip(processes, results)] == [
        (0, "32")
    ] * 3, [error for _, error in results]
    assert len(list((tmp_path / "emulator").glob("*.json"))) == 1
    assert not list((tmp_path / "emulator").glob("*.tmp")) and not list(
        (tmp_path / "emulator").glob("*.build.*")
    )


def test_a_damaged_manifest_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUCONV_CACHE_DIR", str(tmp_path))
    code = "__global__ void seven(int* out) { out[0] = 7; }\n"
    emulator.EmulatedModule(code, name_expressions=["seven"])
    (manifest,) = (tmp_path / "emulator").glob("*.json")
    manifest.write_text("{")
    before = emulator.compile_count
    module = emulator.EmulatedModule(code, name_expressions=["seven"])
    assert emulator.compile_count == before + 1
    out = np.zeros(1, np.int32)
    module.get_function("seven")((1,), (1,), (out,))
    assert out[0] == 7


def test_a_damaged_library_is_rebuilt_by_the_next_process(tmp_path):
    # A process never reloads a path it has loaded, so each step runs in its own process.
    import subprocess
    import sys

    environment = {**os.environ, "GPUCONV_CACHE_DIR": str(tmp_path)}
    code = source("reduce_sum.cu") + "\n// damaged library test\n"

    def run() -> str:
        result = subprocess.run(
            [sys.executable, "-c", _BUILD_SCRIPT],
            input=code,
            capture_output=True,
            text=True,
            env=environment,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    assert run() == "32"
    (library,) = (tmp_path / "emulator").glob("*.so")
    library.write_bytes(b"not a shared library")
    assert run() == "32"
    assert library.read_bytes()[:4] == b"\x7fELF"


def test_an_unusable_cache_directory_falls_back_to_a_temporary_one(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("GPUCONV_CACHE_DIR", str(blocker))  # cannot hold a directory
    module = emulator.EmulatedModule(
        "__global__ void eight(int* out) { out[0] = 8; }\n", name_expressions=["eight"]
    )
    out = np.zeros(1, np.int32)
    module.get_function("eight")((1,), (1,), (out,))
    assert out[0] == 8


# ---------------------------------------------------------------- memory counters

COUNTED = r"""
extern "C" __global__ void counted(const float* source, float* target, int stride) {
    float* shared = static_cast<float*>(gpuconv_emu::dynamic_shared_memory());
    const int t = threadIdx.x;
    gpuconv_emu::trace_access(source + t * stride, 4, 0, __FILE__, __LINE__);
    const float value = source[t * stride];
    gpuconv_emu::trace_access(shared + t * stride, 4, 1, __FILE__, __LINE__);
    shared[t * stride] = value;
    __syncthreads();
    gpuconv_emu::trace_access(target + blockIdx.x * 32 + t, 4, 1, __FILE__, __LINE__);
    target[blockIdx.x * 32 + t] = shared[t * stride];
}
"""


@pytest.mark.parametrize(
    "stride, sectors, wavefronts", [(1, 4, 1), (2, 8, 2), (8, 32, 8), (32, 32, 32)]
)
def test_counters_group_warp_requests_into_sectors_and_bank_wavefronts(stride, sectors, wavefronts):
    module = emulator.EmulatedModule(COUNTED, name_expressions=["counted"])
    kernel = module.get_function("counted")
    buffer = np.zeros(32 * 32 + 64, np.float32)
    source = buffer[(-buffer.ctypes.data // 4) % 32 :][: 32 * 32]  # 128-byte aligned
    spare = np.zeros(4 * 32 + 64, np.float32)
    target = spare[(-spare.ctypes.data // 4) % 32 :][: 4 * 32]
    counters = kernel(
        (4,),
        (32,),
        (source, target, np.int32(stride)),
        shared_mem=32 * 32 * 4,
        counters=True,
        blocks=[(1, 0, 0), (3, 0, 0)],
    )
    assert counters.global_load.requests == 2 and counters.global_load.accesses == 64
    assert counters.global_load.sectors_per_request == sectors
    assert counters.shared_store.wavefronts_per_request == wavefronts
    assert counters.global_store.sectors_per_request == 4
    assert counters.blocks == ((1, 0, 0), (3, 0, 0))
    stored = counters.stored_sectors[(3, 0, 0)]
    assert list(stored - stored[0]) == [0, 1, 2, 3]
    assert target[:32].sum() == 0  # only the listed blocks ran
    assert kernel((4,), (32,), (source, target, np.int32(stride)), shared_mem=4096) is None


@pytest.mark.parametrize("setting", ["", "  "])
def test_an_empty_schedule_means_the_default(fault_module, monkeypatch, setting):
    # `GPUCONV_EMULATOR_SCHEDULE= pytest ...` must not fail: it is the forward order.
    values = np.arange(64, dtype=np.float32)
    expected = np.zeros_like(values)
    monkeypatch.setenv("GPUCONV_EMULATOR_SCHEDULE", "forward")
    # Twice: the kernel reads stale shared memory, which the first run leaves in a known state.
    for _ in range(2):
        fault_module.get_function("missing_barrier")((1,), (64,), (values, expected))
    monkeypatch.setenv("GPUCONV_EMULATOR_SCHEDULE", setting)
    output = np.zeros_like(values)
    fault_module.get_function("missing_barrier")((1,), (64,), (values, output))
    np.testing.assert_array_equal(output, expected)


def _memory_mappings() -> int:
    with open("/proc/self/maps") as maps:
        return sum(1 for _ in maps)


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="counts Linux memory mappings")
def test_modules_share_one_pool_of_fiber_stacks():
    # Each fiber stack and its guard page are two mappings; Linux allows 65530. With a
    # pool per module, every module that ran a 1024-thread block kept ~2048 more and the
    # full suite's later modules failed to load ("failed to map segment").
    code = 'extern "C" __global__ void touch(int* out) { out[threadIdx.x] = threadIdx.x; }\n'
    growth = []
    for copy in range(4):
        before = _memory_mappings()
        module = emulator.EmulatedModule(f"{code}// copy {copy}\n", name_expressions=["touch"])
        out = np.zeros(1024, np.int32)
        module.get_function("touch")((1,), (1024,), (out,))
        np.testing.assert_array_equal(out, np.arange(1024))
        growth.append(_memory_mappings() - before)
    # The first launches of the process may fill the pool; later modules reuse its stacks
    # and add only their own library's few mappings.
    assert max(growth[2:]) < 100, growth
