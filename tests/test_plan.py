"""Argument checking and normalisation (gpuconv._plan): what every backend is handed.

The plan is computed once, before any backend runs, so these tests need no backend: they
check the plan's fields against the contract's rules, and the aliases against the libraries
they come from (scipy.ndimage mode names, OpenCV constants and spellings, numpy.pad modes).
"""

from __future__ import annotations

import dataclasses
import sys
import types

import cv2
import numpy as np
import pytest
import scipy.ndimage as ndi

import gpuconv
from gpuconv import Border
from gpuconv._plan import BORDER_NAMES, SUPPORTED_DTYPES, array_library, make_plan, parse_border

IMAGE = np.arange(63, dtype=np.uint8).reshape(7, 9)


def plan_for(kernel="sharpen", image=IMAGE, **options):
    arguments = dict(border="reflect101", value=0.0, anchor=None, flip=False, dtype=None)
    arguments.update(options)
    return make_plan(image, kernel, **arguments)[1]


# --- the kernel ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: np.arange(12, dtype=np.float64).reshape(3, 4),  # already float64, C order
        lambda: np.asfortranarray(np.arange(12, dtype=np.float64).reshape(3, 4)),
        lambda: np.arange(12, dtype=np.float32).reshape(3, 4),
        lambda: np.arange(12, dtype=np.int64).reshape(3, 4),
        lambda: np.arange(24, dtype=np.float64).reshape(3, 8)[:, ::2],  # a strided view
    ],
    ids=["float64", "fortran", "float32", "int64", "view"],
)
def test_plan_holds_a_private_read_only_float64_copy_of_the_kernel(make):
    kernel = make()
    before = kernel.copy()
    plan = plan_for(kernel)
    assert plan.kernel.dtype == np.float64 and plan.kernel.flags.c_contiguous
    assert not plan.kernel.flags.writeable
    assert not np.shares_memory(plan.kernel, kernel)
    np.testing.assert_array_equal(plan.kernel, before)
    # The caller's array is untouched: still writeable, and changing it changes no plan.
    assert kernel.flags.writeable
    kernel[0, 0] = 99
    assert plan.kernel[0, 0] == before[0, 0]


def test_the_callers_kernel_stays_writeable_after_convolve():
    kernel = np.ones((3, 3))  # float64, C-contiguous: nothing forces a conversion
    gpuconv.convolve(IMAGE, kernel, backend="numpy")
    assert kernel.flags.writeable
    kernel[1, 1] = 2.0  # the caller can go on using it
    gpuconv.convolve(IMAGE, kernel, flip=True, backend="numpy")
    assert kernel.flags.writeable


def test_flip_rotates_the_kernel_and_mirrors_the_anchor():
    kernel = np.arange(20, dtype=np.float64).reshape(4, 5)
    for anchor in [(0, 0), (4, 3), (1, 2), None]:
        plain = plan_for(kernel, anchor=anchor)
        flipped = plan_for(kernel, anchor=anchor, flip=True)
        np.testing.assert_array_equal(flipped.kernel, kernel[::-1, ::-1])
        assert flipped.kernel.flags.c_contiguous and not flipped.kernel.flags.writeable
        assert (flipped.anchor_x, flipped.anchor_y) == (4 - plain.anchor_x, 3 - plain.anchor_y)


@pytest.mark.parametrize(
    "kernel, integer",
    [
        ("sharpen", True),
        ("small_blur", False),
        ([[0.5, 1.0]], False),
        ([[2.0**31 - 1]], True),  # the largest absolute sum integer sums may reach
        ([[2.0**31]], False),
        ([[2.0**30, -(2.0**30)]], False),  # |k| sums to 2**31
        ([[-3.0, 0.0, 1e9]], True),
    ],
)
def test_integer_kernel_means_integer_taps_with_an_absolute_sum_under_2_31(kernel, integer):
    plan = plan_for(kernel)
    assert plan.integer_kernel is integer
    expected = bool(
        np.all(plan.kernel == np.round(plan.kernel)) and np.abs(plan.kernel).sum() < 2**31
    )
    assert plan.integer_kernel is expected


@pytest.mark.parametrize("image_dtype", SUPPORTED_DTYPES)
@pytest.mark.parametrize("output_dtype", [None, *SUPPORTED_DTYPES])
def test_accumulation_type_and_exact_integer_path(image_dtype, output_dtype):
    image = np.zeros((4, 4), image_dtype)
    for kernel in ("sharpen", "small_blur"):
        plan = plan_for(kernel, image=image, dtype=output_dtype)
        assert plan.input_dtype == image_dtype
        assert plan.output_dtype == (image_dtype if output_dtype is None else output_dtype)
        float64 = np.dtype(np.float64) in (plan.input_dtype, plan.output_dtype)
        assert plan.accumulate_dtype == (np.float64 if float64 else np.float32)
        integer_image = np.dtype(image_dtype).kind in "ui"
        assert plan.exact_integer is (integer_image and kernel == "sharpen")


def test_plan_shape_and_kernel_size():
    plan = plan_for(np.ones((2, 5)), image=np.zeros((7, 9, 3), np.float32))
    assert plan.shape == (7, 9, 3) and all(type(n) is int for n in plan.shape)
    assert (plan.kernel_height, plan.kernel_width) == (2, 5)
    assert plan_for(image=np.zeros((7, 9), np.float32)).shape == (7, 9, 1)


def test_a_plan_cannot_be_changed_once_checked():
    plan = plan_for()
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.anchor_x = 0


# --- anchors ------------------------------------------------------------------------------


@pytest.mark.parametrize("kernel_shape", [(1, 1), (3, 3), (4, 2), (2, 5)])
def test_default_anchor_is_opencvs_centre(kernel_shape):
    plan = plan_for(np.ones(kernel_shape))
    assert (plan.anchor_x, plan.anchor_y) == (kernel_shape[1] // 2, kernel_shape[0] // 2)


@pytest.mark.parametrize("kernel_shape", [(1, 1), (3, 3), (4, 2), (2, 5)])
def test_every_anchor_inside_the_kernel_is_accepted_and_every_one_outside_refused(kernel_shape):
    height, width = kernel_shape
    for anchor_x in range(-2, width + 2):
        for anchor_y in range(-2, height + 2):
            inside = 0 <= anchor_x < width and 0 <= anchor_y < height
            if inside:
                plan = plan_for(np.ones(kernel_shape), anchor=(anchor_x, anchor_y))
                assert (plan.anchor_x, plan.anchor_y) == (anchor_x, anchor_y)
            else:
                with pytest.raises(ValueError, match=r"anchor \(x, y\) = .* is outside"):
                    plan_for(np.ones(kernel_shape), anchor=(anchor_x, anchor_y))


def test_numpy_integer_anchors_become_python_ints():
    plan = plan_for(anchor=(np.int64(2), np.uint8(0)))
    assert (plan.anchor_x, plan.anchor_y) == (2, 0)
    assert type(plan.anchor_x) is int and type(plan.anchor_y) is int


@pytest.mark.parametrize("anchor", [(True, 0), (0, np.bool_(True)), (1.0, 1), ("1", 1)])
def test_anchor_coordinates_must_be_integers(anchor):
    with pytest.raises(TypeError, match="anchor coordinates must be integers"):
        plan_for(anchor=anchor)


# --- the image ----------------------------------------------------------------------------


class GpuArrayNotCupy:
    """An array on a GPU from some other library (numba.cuda, PyTorch...)."""

    __cuda_array_interface__ = {"shape": (4, 4), "typestr": "|u1", "data": (0, False)}

    def __array__(self, dtype=None, copy=None):
        return np.zeros((4, 4), np.uint8)


def test_a_gpu_array_that_is_not_cupy_gets_a_type_error_saying_what_to_do():
    with pytest.raises(TypeError, match=r"lives on a GPU; pass it as a CuPy array"):
        gpuconv.convolve(GpuArrayNotCupy(), "sharpen", backend="numpy")


@pytest.mark.parametrize("module", ["cupy", "cupy._core.core", "dask", "dask.array.core"])
def test_array_library_is_read_from_the_class_without_importing_it(monkeypatch, module):
    library = module.split(".")[0]
    stand_in = type("StandIn", (), {"__module__": module})()
    monkeypatch.delitem(sys.modules, library, raising=False)
    assert array_library(stand_in) == "numpy"  # not imported: cannot be one of its arrays
    monkeypatch.setitem(sys.modules, library, types.ModuleType(library))
    assert array_library(stand_in) == library
    assert array_library(np.zeros(3)) == "numpy"
    assert array_library([[1, 2]]) == "numpy"
    lookalike = type("StandIn", (), {"__module__": library + "_extras"})()
    assert array_library(lookalike) == "numpy"


def test_big_endian_image_becomes_a_native_copy_and_native_stays_a_view():
    big = np.arange(12, dtype=">u2").reshape(3, 4)
    image3d, plan, _ = make_plan(
        big, "sharpen", border="reflect101", value=0.0, anchor=None, flip=False, dtype=None
    )
    assert image3d.dtype.isnative and plan.input_dtype == np.uint16
    np.testing.assert_array_equal(image3d[:, :, 0], big)
    native = np.arange(12, dtype=np.uint16).reshape(3, 4)
    image3d, _, _ = make_plan(
        native, "sharpen", border="reflect101", value=0.0, anchor=None, flip=False, dtype=None
    )
    assert np.shares_memory(image3d, native)


# --- borders and the constant ---------------------------------------------------------------

SCIPY_MODES = {
    "mirror": Border.REFLECT101,
    "reflect": Border.REFLECT,
    "grid-mirror": Border.REFLECT,
    "nearest": Border.REPLICATE,
    "constant": Border.CONSTANT,
    "grid-constant": Border.CONSTANT,
    "wrap": Border.WRAP,
    "grid-wrap": Border.WRAP,
}
OPENCV_NAMES = [
    "BORDER_CONSTANT",
    "BORDER_REPLICATE",
    "BORDER_REFLECT",
    "BORDER_WRAP",
    "BORDER_REFLECT_101",
    "BORDER_REFLECT101",
    "BORDER_DEFAULT",
]


def _correlate_valid(padded: np.ndarray, kernel: np.ndarray, pad: tuple[int, int]) -> np.ndarray:
    """Correlation read off an explicitly padded image: the oracle for numpy.pad names."""
    out = np.zeros((padded.shape[0] - 2 * pad[0], padded.shape[1] - 2 * pad[1]))
    for i in range(kernel.shape[0]):
        for j in range(kernel.shape[1]):
            out += kernel[i, j] * padded[i : i + out.shape[0], j : j + out.shape[1]]
    return out


@pytest.fixture
def border_case(rng):
    image = rng.normal(size=(6, 7))
    kernel = rng.normal(size=(5, 5))
    return image, kernel


@pytest.mark.parametrize("mode", list(SCIPY_MODES))
def test_scipy_mode_names_compute_what_scipy_computes(border_case, mode):
    image, kernel = border_case
    actual = gpuconv.convolve(image, kernel, border=mode, value=0.25, backend="numpy")
    expected = ndi.correlate(image, kernel, mode=mode, cval=0.25)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-12 * np.abs(expected).max())
    assert parse_border(mode) is SCIPY_MODES[mode]


@pytest.mark.parametrize("name", OPENCV_NAMES)
@pytest.mark.parametrize("spelling", [str, str.lower, int])
def test_opencv_names_and_constants_compute_what_filter2d_computes(border_case, name, spelling):
    image, kernel = border_case
    constant = getattr(cv2, name.replace("REFLECT101", "REFLECT_101"))
    border = constant if spelling is int else spelling(name)
    actual = gpuconv.convolve(image, kernel, border=border, backend="numpy")
    if constant == cv2.BORDER_WRAP:  # filter2D refuses it; copyMakeBorder pads with it
        pad = (kernel.shape[0] // 2, kernel.shape[1] // 2)
        padded = cv2.copyMakeBorder(image, pad[0], pad[0], pad[1], pad[1], constant)
        expected = _correlate_valid(padded, kernel, pad)
    else:
        expected = cv2.filter2D(image, -1, kernel, borderType=constant)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-12 * np.abs(expected).max())
    assert parse_border(border) == constant


def test_default_border_alias_is_opencvs_default_reflect101(border_case):
    image, kernel = border_case
    expected = cv2.filter2D(image, -1, kernel)  # BORDER_DEFAULT
    for alias in ("default", "DEFAULT", "BORDER_DEFAULT", "border-default", cv2.BORDER_DEFAULT):
        actual = gpuconv.convolve(image, kernel, border=alias, backend="numpy")
        np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-12 * np.abs(expected).max())
        assert parse_border(alias) is Border.REFLECT101


@pytest.mark.parametrize("mode", ["edge", "symmetric", "wrap", "constant"])
def test_numpy_pad_mode_names_compute_correlation_over_numpy_pad(border_case, mode):
    image, kernel = border_case
    pad = (kernel.shape[0] // 2, kernel.shape[1] // 2)
    padded = np.pad(image, [(pad[0], pad[0]), (pad[1], pad[1])], mode=mode)
    actual = gpuconv.convolve(image, kernel, border=mode, backend="numpy")
    expected = _correlate_valid(padded, kernel, pad)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-12 * np.abs(expected).max())


def test_canonical_names_and_border_values_are_opencvs_constants():
    assert list(BORDER_NAMES) == ["reflect101", "reflect", "replicate", "constant", "wrap"]
    for name, border in BORDER_NAMES.items():
        assert parse_border(name) is border and border.name.lower() == name
    for border in Border:
        opencv = getattr(cv2, "BORDER_" + border.name.replace("REFLECT101", "REFLECT_101"))
        assert border.value == opencv
        assert parse_border(opencv) is border and parse_border(np.int32(opencv)) is border
        assert parse_border(border) is border


@pytest.mark.parametrize("value", [0.5, -7.25, 300.0, np.float32(2.5), np.int16(-3), 7])
def test_border_value_is_kept_as_a_float_exactly_as_given(value):
    plan = plan_for(border="constant", value=value)
    assert type(plan.border_value) is float and plan.border_value == float(value)


def test_non_finite_border_value_is_fine_for_a_float_image():
    for value in (float("nan"), float("inf"), -float("inf")):
        plan = plan_for(image=np.zeros((3, 3), np.float32), border="constant", value=value)
        np.testing.assert_equal(plan.border_value, value)


class CupyLikeKernel:
    """A kernel on the GPU: like CuPy, refuses an implicit copy to the host."""

    __module__ = "cupy"

    def __init__(self, array):
        self._array = np.asarray(array)

    def __array__(self, dtype=None, copy=None):
        raise TypeError("Implicit conversion to a NumPy array is not allowed")

    def get(self):
        return self._array.copy()


def test_a_cupy_kernel_is_copied_to_the_host_explicitly(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", types.ModuleType("cupy"))
    kernel = np.arange(6, dtype=np.float32).reshape(2, 3) - 2
    plan = plan_for(CupyLikeKernel(kernel))
    np.testing.assert_array_equal(plan.kernel, kernel)
    np.testing.assert_array_equal(
        gpuconv.convolve(IMAGE, CupyLikeKernel(kernel), backend="numpy"),
        gpuconv.convolve(IMAGE, kernel, backend="numpy"),
    )


def test_nested_lists_and_other_array_likes_go_through_numpy_asarray():
    # The contract: array-likes that are not arrays go through numpy.asarray and give NumPy.
    # (A nested list once failed after the backend ran: convolve read the list's .ndim.)
    rows = IMAGE.tolist()  # Python ints: numpy.asarray makes them int64, not supported
    with pytest.raises(TypeError, match="unsupported image dtype int64"):
        gpuconv.convolve(rows, "sharpen", backend="numpy")
    floats = (IMAGE / 7).tolist()
    out = gpuconv.convolve(floats, "sharpen", backend="numpy")
    assert isinstance(out, np.ndarray) and out.dtype == np.float64
    np.testing.assert_array_equal(out, gpuconv.convolve(IMAGE / 7, "sharpen", backend="numpy"))
    colour = np.dstack([IMAGE, IMAGE[::-1, ::-1]]) / 7
    out = gpuconv.convolve(colour.tolist(), "sharpen", backend="numpy")
    np.testing.assert_array_equal(out, gpuconv.convolve(colour, "sharpen", backend="numpy"))
