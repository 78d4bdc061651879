"""The contract's array lines on every backend: axes, stacks, out=, float16, torch/DLPack.

Peers: ``scipy.ndimage.correlate(..., axes=...)``, ``cv2.filter2D`` per frame, and the
NumPy reference run on each frame alone.
"""

from __future__ import annotations

import subprocess
import sys
import types

import cv2
import numpy as np
import pytest
import scipy.ndimage as ndi
from support import assert_contract_accuracy, reference

import gpuconv
from gpuconv import kernels

SCIPY_MODE = {"reflect101": "mirror", "reflect": "reflect", "replicate": "nearest", "wrap": "wrap"}


def _random(rng, shape, dtype=np.uint8):
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return rng.normal(scale=20, size=shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)


def _frame_by_frame(stack, kernel, frame_axis=0, **options):
    """The reference on each frame alone (axes (0, 1) of the frame), restacked."""
    frames = [reference(frame, kernel, **options) for frame in np.moveaxis(stack, frame_axis, 0)]
    return np.moveaxis(np.stack(frames), 0, frame_axis)


# --- axes: stacks, channels-first, any layout -----------------------------------------


@pytest.mark.parametrize("kernel", ["sharpen", "small_blur", "sobel_x"])
@pytest.mark.parametrize("border", ["reflect101", "wrap", "constant"])
def test_stack_equals_each_frame_alone(backend, rng, kernel, border):
    stack = _random(rng, (4, 19, 23))
    actual = backend.convolve(stack, kernel, border=border, value=7.0, axes=(1, 2))
    expected = _frame_by_frame(stack, kernel, border=border, value=7.0)
    assert actual.shape == stack.shape and actual.dtype == stack.dtype
    np.testing.assert_array_equal(actual, expected)


def test_stack_matches_filter2d_per_frame(backend, rng):
    stack = _random(rng, (3, 21, 18))
    actual = backend.convolve(stack, "laplacian", axes=(1, 2))
    expected = np.stack([cv2.filter2D(frame, -1, kernels.get("laplacian")) for frame in stack])
    np.testing.assert_array_equal(actual, expected)


def test_colour_stack_and_channels_first(backend, rng):
    stack = _random(rng, (3, 17, 15, 3))
    actual = backend.convolve(stack, "sharpen", axes=(1, 2))
    np.testing.assert_array_equal(actual, _frame_by_frame(stack, "sharpen"))
    channels_first = np.ascontiguousarray(np.moveaxis(stack[0], -1, 0))  # (C, H, W)
    actual = backend.convolve(channels_first, "sharpen", axes=(-2, -1))
    expected = np.moveaxis(reference(stack[0], "sharpen"), -1, 0)
    np.testing.assert_array_equal(actual, expected)


@pytest.mark.parametrize(
    "shape, axes",
    [
        ((3, 14, 11), (1, 2)),
        ((14, 3, 11), (0, 2)),  # an independent axis between the image axes
        ((14, 11), (1, 0)),  # rows and columns swapped: kernel rows run along axis 1
        ((2, 14, 3, 11, 2), (1, 3)),  # frames that cannot merge without a copy
        ((14, 11, 2, 3), (0, 1)),  # two channel axes
        ((2, 3, 14, 11), (-2, -1)),  # two frame axes
    ],
)
@pytest.mark.parametrize("border", list(SCIPY_MODE))
def test_any_axes_match_scipy_correlate(backend, rng, shape, axes, border):
    image = _random(rng, shape, np.float64)
    kernel = rng.normal(size=(3, 4))
    actual = backend.convolve(image, kernel, border=border, axes=axes, anchor=(1, 1))
    # scipy centres at kw // 2 = 2 along the columns; anchor x = 1 is origin -1 there.
    options = dict(mode=SCIPY_MODE[border], origin=(0, -1))
    rows, columns = (axis % image.ndim for axis in axes)
    if rows < columns:
        expected = ndi.correlate(image, kernel, axes=axes, **options)
    else:  # scipy maps kernel axes to sorted image axes; the contract's rows run along axes[0]
        moved = np.moveaxis(image, (rows, columns), (0, 1))
        expected = np.moveaxis(ndi.correlate(moved, kernel, **options), (0, 1), (rows, columns))
    assert_contract_accuracy(actual, expected)


def test_strided_views_of_stacks_are_read_in_place(backend, rng):
    base = _random(rng, (6, 20, 24, 2))
    view = base[::2, 1:, ::2, 1]  # (3, 19, 12), no axis contiguous but the frames
    before = base.copy()
    view.flags.writeable = False
    actual = backend.convolve(view, "small_blur", axes=(1, 2))
    np.testing.assert_array_equal(actual, _frame_by_frame(np.ascontiguousarray(view), "small_blur"))
    np.testing.assert_array_equal(base, before)


def test_channels_first_result_has_the_inputs_layout(backend, rng):
    image = _random(rng, (3, 16, 12))
    actual = backend.convolve(image, "sharpen", axes=(1, 2))
    assert actual.flags.c_contiguous
    assert not np.shares_memory(actual, image)


def test_stack_axes_change_nothing_for_plain_images(backend, rng):
    image = _random(rng, (15, 13, 3))
    np.testing.assert_array_equal(
        backend.convolve(image, "sharpen", axes=(0, 1)),
        backend.convolve(image, "sharpen", axes=(-3, -2)),
    )


@pytest.mark.parametrize(
    "axes, message",
    [
        ((1, 1), "same axis"),
        ((0, 3), "out of range"),
        ((-4, 0), "out of range"),
        ((0,), "pair"),
        ((0, 1.5), "pair"),
        ("ab", "pair"),
        (None, "pair"),
        ((True, 0), "pair"),
    ],
)
def test_bad_axes_raise_value_error(backend, axes, message):
    with pytest.raises(ValueError, match=message):
        backend.convolve(np.zeros((4, 5, 6), np.uint8), "sharpen", axes=axes)


def test_one_dimensional_image_is_a_value_error_whatever_the_axes(backend):
    with pytest.raises(ValueError, match="2-D"):
        backend.convolve(np.zeros(5, np.uint8), "sharpen", axes=(0, 1))


# --- float16 -----------------------------------------------------------------------------


@pytest.mark.parametrize("kernel", ["small_blur", "sobel_y", "random"])
def test_float16_images_meet_the_contract(backend, rng, kernel):
    if kernel == "random":
        kernel = rng.normal(size=(5, 4))
    image = _random(rng, (2, 18, 21), np.float16)
    actual = backend.convolve(image, kernel, axes=(1, 2), border="reflect")
    assert actual.dtype == np.float16
    expected = reference(image, kernel, axes=(1, 2), border="reflect")
    assert_contract_accuracy(actual, expected)
    # and against scipy in float64, rounded once
    weights = kernels.get(kernel) if isinstance(kernel, str) else kernel
    # scipy's centre n // 2 is OpenCV's default anchor, also for even sizes
    exact = ndi.correlate(image.astype(np.float64), weights, mode="reflect", axes=(1, 2))
    assert_contract_accuracy(actual, exact.astype(np.float16))


@pytest.mark.parametrize(
    "input_dtype, output_dtype",
    [(np.uint8, np.float16), (np.float16, np.uint8), (np.float16, np.float32)],
)
def test_float16_mixed_with_other_types(backend, rng, input_dtype, output_dtype):
    image = _random(rng, (17, 19), input_dtype)
    actual = backend.convolve(image, "sharpen", dtype=output_dtype)
    expected = reference(image, "sharpen", dtype=output_dtype)
    assert_contract_accuracy(actual, expected)


def test_float16_sums_are_rounded_once(backend):
    # 2049 is not a float16; 1 + 2048 summed in float16 would round to 2048 first.
    image = np.array([[1.0, 2048.0, 1.0]], np.float16)
    actual = backend.convolve(image, [[1.0, 1.0, 1.0]], border="constant")
    np.testing.assert_array_equal(actual, np.array([[2049, 2050, 2049]], np.float16))


def test_float16_nan_and_inf_propagate(backend):
    image = np.ones((5, 5), np.float16)
    image[2, 2] = np.nan
    image[0, 0] = np.inf
    actual = backend.convolve(image, "small_blur")
    expected = reference(image, "small_blur")
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    assert np.isnan(actual).any()


# --- out= --------------------------------------------------------------------------------


def test_out_receives_the_result_and_is_returned(backend, rng):
    image = _random(rng, (3, 16, 14))
    out = np.full_like(image, 99)
    returned = backend.convolve(image, "sharpen", axes=(1, 2), out=out)
    assert returned is out
    np.testing.assert_array_equal(out, _frame_by_frame(image, "sharpen"))


def test_out_sets_the_output_dtype(backend, rng):
    image = _random(rng, (16, 14))
    out = np.zeros(image.shape, np.float32)
    backend.convolve(image, "sobel_x", out=out)
    assert (out < 0).any()  # raw sums, negative responses kept
    np.testing.assert_array_equal(out, reference(image, "sobel_x", dtype=np.float32))
    with pytest.raises(ValueError, match="disagrees"):
        backend.convolve(image, "sobel_x", out=out, dtype=np.float64)
    backend.convolve(image, "sobel_x", out=out, dtype=np.float32)  # the same: fine


@pytest.mark.parametrize("layout", ["plain", "stack", "channels-first"])
def test_in_place_equals_a_fresh_result(backend, rng, layout):
    shape, axes = {
        "plain": ((18, 15, 3), (0, 1)),
        "stack": ((3, 18, 15), (1, 2)),
        "channels-first": ((3, 18, 15), (-2, -1)),
    }[layout]
    image = _random(rng, shape)
    expected = backend.convolve(image, "small_blur", axes=axes)
    returned = backend.convolve(image, "small_blur", axes=axes, out=image)
    assert returned is image
    np.testing.assert_array_equal(image, expected)


def test_overlapping_out_equals_a_fresh_result(backend, rng):
    buffer = _random(rng, (21, 17))
    image, out = buffer[:-1], buffer[1:]  # out is the image shifted down one row
    expected = backend.convolve(image.copy(), "sharpen")
    backend.convolve(image, "sharpen", out=out)
    np.testing.assert_array_equal(buffer[1:], expected)


def test_strided_out_is_written(backend, rng):
    image = _random(rng, (2, 14, 12))
    target = np.zeros((2, 14, 24), np.uint8)
    out = target[:, :, ::2]
    backend.convolve(image, "sharpen", axes=(1, 2), out=out)
    np.testing.assert_array_equal(out, _frame_by_frame(image, "sharpen"))
    assert not target[:, :, 1::2].any()  # nothing written between


def test_out_never_touches_an_input_it_does_not_overlap(backend, rng):
    image = _random(rng, (16, 14))
    before = image.copy()
    backend.convolve(image, "small_blur", out=np.empty_like(image))
    np.testing.assert_array_equal(image, before)


@pytest.mark.parametrize(
    "out, message",
    [
        (np.zeros((16, 13), np.uint8), "shape"),
        (np.zeros((14, 16), np.uint8), "shape"),
        (np.zeros((16, 14), np.int64), "dtype"),
        (np.zeros((16, 14), np.complex64), "dtype"),
        ([[0] * 14] * 16, "numpy array"),
    ],
)
def test_bad_out_is_a_value_error(backend, out, message):
    with pytest.raises(ValueError, match=message):
        backend.convolve(np.zeros((16, 14), np.uint8), "sharpen", out=out)


def test_read_only_out_is_a_value_error(backend):
    out = np.zeros((16, 14), np.uint8)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        backend.convolve(np.zeros((16, 14), np.uint8), "sharpen", out=out)


def test_out_of_another_library_is_a_value_error(backend):
    torch = pytest.importorskip("torch", reason="torch is an optional test dependency")
    with pytest.raises(ValueError, match="numpy array like the image"):
        backend.convolve(np.zeros((16, 14), np.float32), "sharpen", out=torch.zeros(16, 14))


# --- array-likes, torch and DLPack --------------------------------------------------------


def test_array_likes_give_numpy(backend, rng):
    image = _random(rng, (2, 9, 8), np.float64)
    actual = backend.convolve(image.tolist(), "sharpen", axes=(1, 2))
    assert isinstance(actual, np.ndarray)
    assert_contract_accuracy(actual, _frame_by_frame(image, "sharpen"))
    with pytest.raises(TypeError, match="int64"):  # nested ints are int64: not an image type
        backend.convolve([[1, 2], [3, 4]], "sharpen")


def test_pil_images_give_numpy(backend, rng):
    image_module = pytest.importorskip("PIL.Image", reason="Pillow is not installed here")
    array = _random(rng, (12, 10, 3))
    actual = backend.convolve(image_module.fromarray(array), "sharpen")
    assert isinstance(actual, np.ndarray)
    np.testing.assert_array_equal(actual, reference(array, "sharpen"))


class DLPackOnly:
    """An array known only through the DLPack protocol (no __array__)."""

    def __init__(self, array):
        self._array = array

    def __dlpack__(self, **kwargs):
        return self._array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._array.__dlpack_device__()


def test_any_dlpack_object_is_read_without_a_copy(backend, rng):
    image = _random(rng, (3, 12, 10))
    actual = backend.convolve(DLPackOnly(image), "sharpen", axes=(1, 2))
    np.testing.assert_array_equal(np.asarray(actual), _frame_by_frame(image, "sharpen"))


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip(
        "torch", reason="torch is an optional test dependency (pip install torch==2.13.0)"
    )


@pytest.mark.parametrize("dtype", ["uint8", "int16", "float16", "float32", "float64"])
def test_torch_cpu_tensor_in_torch_tensor_out(backend, rng, torch, dtype):
    array = _random(rng, (3, 14, 12), dtype)
    tensor = torch.from_numpy(array.copy())
    actual = backend.convolve(tensor, "small_blur", axes=(1, 2))
    assert isinstance(actual, torch.Tensor)
    assert actual.device == tensor.device and actual.shape == tensor.shape
    assert actual.dtype == tensor.dtype
    assert_contract_accuracy(actual.numpy(), _frame_by_frame(array, "small_blur"))
    np.testing.assert_array_equal(tensor.numpy(), array)  # the input untouched


def test_torch_tensors_are_shared_not_copied(backend, rng, torch):
    tensor = torch.from_numpy(_random(rng, (3, 14, 12)))
    out = torch.zeros_like(tensor)
    returned = backend.convolve(tensor, "sharpen", axes=(1, 2), out=out)
    assert returned is out
    np.testing.assert_array_equal(out.numpy(), _frame_by_frame(tensor.numpy(), "sharpen"))
    expected = out.clone()
    backend.convolve(out, "sharpen", axes=(1, 2), out=out)  # in place: through a temporary
    np.testing.assert_array_equal(out.numpy(), _frame_by_frame(expected.numpy(), "sharpen"))
    # the result's memory is the tensor's: writing the tensor shows in a NumPy view of it
    result = backend.convolve(tensor, "sharpen", axes=(1, 2))
    view = np.from_dlpack(result)
    result[0, 0, 0] = 123
    assert view[0, 0, 0] == 123


def test_torch_views_and_grad_tensors(backend, rng, torch):
    base = torch.from_numpy(_random(rng, (14, 12, 3), np.float32))
    channels_first = base.permute(2, 0, 1)  # a strided view (C, H, W)
    actual = backend.convolve(channels_first, "sharpen", axes=(1, 2))
    expected = np.moveaxis(reference(base.numpy(), "sharpen"), -1, 0)
    assert_contract_accuracy(actual.numpy(), expected)
    wants_grad = base.clone().requires_grad_(True)
    actual = backend.convolve(wants_grad, "sharpen")
    assert not actual.requires_grad
    assert_contract_accuracy(actual.numpy(), reference(base.numpy(), "sharpen"))


def test_torch_out_must_be_a_tensor(backend, torch):
    with pytest.raises(ValueError, match="out must be"):
        backend.convolve(torch.zeros(8, 8), "sharpen", out=np.zeros((8, 8), np.float32))


def test_unsupported_torch_dtype_is_a_type_error(backend, torch):
    with pytest.raises(TypeError, match="float16"):
        backend.convolve(torch.zeros(8, 8, dtype=torch.int64), "sharpen")


def test_import_gpuconv_imports_no_torch():
    code = "import sys, gpuconv; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


# --- Dask ----------------------------------------------------------------------------------


def test_dask_chunks_split_the_frames_freely(backend, rng):
    da = pytest.importorskip("dask.array", reason="dask is an optional dependency")
    stack = _random(rng, (5, 20, 18))
    lazy = da.from_array(stack, chunks=(2, 7, 18))
    actual = gpuconv.convolve(lazy, "small_blur", axes=(1, 2), backend=backend.name)
    assert actual.chunks[0] == (2, 2, 1)  # the frames keep their chunks
    np.testing.assert_array_equal(actual.compute(), _frame_by_frame(stack, "small_blur"))
    channels_first = da.from_array(stack, chunks=(1, 20, 9))
    actual = gpuconv.convolve(channels_first, "sharpen", axes=(-2, -1), backend=backend.name)
    np.testing.assert_array_equal(actual.compute(), _frame_by_frame(stack, "sharpen"))


def test_dask_refuses_out(backend, rng):
    da = pytest.importorskip("dask.array", reason="dask is an optional dependency")
    lazy = da.zeros((8, 8), dtype=np.uint8, chunks=4)
    with pytest.raises(ValueError, match="out="):
        gpuconv.convolve(lazy, "sharpen", out=np.zeros((8, 8), np.uint8), backend=backend.name)


# --- CUDA tensors, through stand-ins for torch and CuPy (no GPU here) ------------------------

#: The stream pointer the stand-in torch reports as current.
_TORCH_STREAM = 0xC0FFEE


class _StandInCudaTensor:
    """What gpuconv sees of a torch CUDA tensor: its type's module is torch, its DLPack
    device kDLCUDA (2). Its pixels are a NumPy array, the stand-in CuPy's device memory."""

    __module__ = "torch"

    def __init__(self, pixels, index=0):
        self.pixels = pixels
        self.is_cuda = True
        self.requires_grad = False
        self.device = types.SimpleNamespace(type="cuda", index=index)

    def __dlpack_device__(self):
        return (2, self.device.index)


def _stand_ins(events):
    """A torch and a CuPy that record, in ``events``, the streams entered and each exchange."""
    active = []

    class ExternalStream:
        def __init__(self, pointer, device_index):
            self.where = (pointer, device_index)

        def __enter__(self):
            active.append(self.where)
            events.append(("enter", self.where))

        def __exit__(self, *exc):
            active.pop()
            events.append(("exit", self.where))

    def cupy_from_dlpack(tensor):
        events.append(("cupy.from_dlpack", active[-1] if active else None))
        return tensor.pixels  # zero-copy: the "CuPy array" is the tensor's memory

    def torch_from_dlpack(array):
        events.append(("torch.from_dlpack", active[-1] if active else None))
        return _StandInCudaTensor(array)

    cupy = types.SimpleNamespace(
        from_dlpack=cupy_from_dlpack,
        cuda=types.SimpleNamespace(ExternalStream=ExternalStream),
    )
    torch = types.ModuleType("torch")
    torch.from_dlpack = torch_from_dlpack
    torch.cuda = types.SimpleNamespace(
        current_stream=lambda device: types.SimpleNamespace(cuda_stream=_TORCH_STREAM)
    )
    return torch, cupy, active


def test_cuda_tensor_in_cuda_tensor_out_on_torchs_stream(monkeypatch, rng):
    from gpuconv._backends.cuda import backend as cuda_backend

    if gpuconv.backends()["cuda"].available is False:
        pytest.skip(f"cuda backend unavailable: {gpuconv.backends()['cuda']}")
    # The stand-ins hold host memory, so the emulator filters it, also where a real GPU is
    # (where the backend would hand the stand-in "cupy" to the device path).
    monkeypatch.setenv(cuda_backend.EMULATOR_VARIABLE, "1")
    events = []
    torch, cupy, active = _stand_ins(events)
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    filtering = cuda_backend.convolve

    def recording(*args, **kwargs):
        events.append(("filter", active[-1] if active else None))
        return filtering(*args, **kwargs)

    monkeypatch.setattr(cuda_backend, "convolve", recording)
    stack = _random(rng, (3, 14, 12))
    tensor = _StandInCudaTensor(stack.copy(), index=0)
    result = gpuconv.convolve(tensor, "sharpen", axes=(1, 2), backend="cuda")
    assert isinstance(result, _StandInCudaTensor) and result.device.type == "cuda"
    np.testing.assert_array_equal(result.pixels, _frame_by_frame(stack, "sharpen"))
    np.testing.assert_array_equal(tensor.pixels, stack)  # the input untouched
    # In through cupy.from_dlpack and out through torch.from_dlpack, the filter between,
    # each on torch's current stream of the tensor's device.
    stream = (_TORCH_STREAM, 0)
    exchanges = [event for event in events if event[0] not in ("enter", "exit")]
    assert exchanges == [
        ("cupy.from_dlpack", stream),
        ("filter", stream),
        ("torch.from_dlpack", stream),
    ]
    assert not active  # every stream context left

    # out=: written in place, in the out tensor's own memory.
    events.clear()
    out = _StandInCudaTensor(np.zeros_like(stack))
    memory = out.pixels
    assert gpuconv.convolve(tensor, "sharpen", axes=(1, 2), out=out, backend="cuda") is out
    assert out.pixels is memory
    np.testing.assert_array_equal(memory, _frame_by_frame(stack, "sharpen"))
    assert ("filter", stream) in events


def test_cuda_tensor_without_cupy_is_a_backend_unavailable_error(monkeypatch, rng):
    torch, _, _ = _stand_ins([])
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy raises ImportError
    image = _random(rng, (8, 8))
    tensor = _StandInCudaTensor(image.copy())
    with pytest.raises(gpuconv.BackendUnavailableError, match="cupy"):
        gpuconv.convolve(tensor, "sharpen")
    np.testing.assert_array_equal(tensor.pixels, image)


def test_other_dlpack_devices_are_a_type_error(rng):
    class OnAnotherDevice(DLPackOnly):
        def __dlpack_device__(self):
            return (8, 0)  # kDLMetal

    with pytest.raises(TypeError, match="DLPack device type 8"):
        gpuconv.convolve(OnAnotherDevice(_random(rng, (8, 8))), "sharpen")


# --- cuda: one launch for a whole stack ------------------------------------------------------


@pytest.mark.parametrize("kernel", ["sharpen", "small_blur"])
def test_cuda_covers_a_stack_in_one_launch(monkeypatch, rng, kernel):
    from gpuconv._backends.cuda import backend as cuda_backend
    from gpuconv._backends.cuda import launch as cuda_launch
    from gpuconv._backends.cuda import source as cuda_source
    from gpuconv._plan import make_plan
    from gpuconv._strategy import choose_strategy

    stack = _random(rng, (5, 24, 40))
    _, plan, _ = make_plan(
        stack,
        kernel,
        border="reflect101",
        value=0.0,
        anchor=None,
        flip=False,
        dtype=None,
        axes=(1, 2),
    )
    launch = cuda_launch.plan_launch(plan, choose_strategy(plan))
    # The window and box kernels' STACK instantiations: gridDim.z spans the frames.
    assert plan.frames == 5 and launch.frames == 5 and launch.grid[2] == 5
    assert launch.name_expression.endswith(", true>")
    if not cuda_backend.is_emulated():
        pytest.skip("the launch count is checked through the emulator (GPUCONV_CUDA_EMULATOR=1)")
    if gpuconv.backends()["cuda"].available is False:
        pytest.skip(f"cuda backend unavailable: {gpuconv.backends()['cuda']}")
    launches = []
    original = cuda_source.emulated_function

    def counting(file_name, name_expression):
        function = original(file_name, name_expression)

        def launch_and_count(grid, block, arguments, **options):
            launches.append(grid)
            return function(grid, block, arguments, **options)

        return launch_and_count

    monkeypatch.setattr(cuda_source, "emulated_function", counting)
    actual = gpuconv.convolve(stack, kernel, axes=(1, 2), backend="cuda")
    assert launches == [launch.grid]
    np.testing.assert_array_equal(actual, _frame_by_frame(stack, kernel))


def test_cuda_stack_launch_falls_back_to_one_launch_per_frame_where_it_must(rng):
    """Frames beyond gridDim.z's limit, or an output dtype other than the input's (no STACK
    instantiation is compiled for it): one launch per frame, the single-image kernel."""
    from gpuconv._backends.cuda import launch as cuda_launch
    from gpuconv._backends.cuda.launch_base import DeviceLimits
    from gpuconv._backends.cuda.window import is_stack_expression, window_launch
    from gpuconv._plan import make_plan
    from gpuconv._strategy import choose_strategy

    stack = _random(rng, (5, 24, 40))
    options = dict(border="reflect101", value=0.0, anchor=None, flip=False, axes=(1, 2))
    _, plan, _ = make_plan(stack, "sharpen", dtype=None, **options)
    strategy = choose_strategy(plan)
    assert window_launch(plan, strategy).frames == 5
    few = window_launch(plan, strategy, DeviceLimits(max_grid_z=4))
    assert few.frames == 1 and few.grid[2] == 1 and not is_stack_expression(few.name_expression)
    _, widening, _ = make_plan(stack, "sharpen", dtype=np.float32, **options)
    launch = cuda_launch.plan_launch(widening, choose_strategy(widening))
    assert launch.frames == 1 and not is_stack_expression(launch.name_expression)
    # Every STACK expression the launch code can ask for is in the compiled list.
    compiled = set(cuda_launch.every_name_expression()["convolve_window.cu"])
    assert window_launch(plan, strategy).name_expression in compiled
    assert few.name_expression in compiled
