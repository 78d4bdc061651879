"""Bad input: the documented error type, a message that helps, the input untouched.

Validation happens once, before any backend runs, so these run against every
backend through the ``backend`` fixture as well.
"""

from __future__ import annotations

import numpy as np
import pytest

import gpuconv

GOOD_IMAGE = np.arange(20, dtype=np.uint8).reshape(4, 5)


@pytest.mark.parametrize(
    "image, message",
    [
        (np.zeros(5, np.uint8), "2-D"),
        (np.zeros((0, 5), np.uint8), "empty"),
        (np.zeros((5, 0, 3), np.float32), "empty"),
        (np.uint8(3), "2-D"),
    ],
)
def test_bad_image_shapes_raise_value_error(backend, image, message):
    with pytest.raises(ValueError, match=message):
        backend.convolve(image, "sharpen")


@pytest.mark.parametrize(
    "dtype", [np.bool_, np.int8, np.int32, np.int64, np.uint32, np.complex64, object]
)
def test_unsupported_image_dtypes_raise_type_error(backend, dtype):
    image = np.zeros((4, 4), dtype=dtype)
    with pytest.raises(TypeError, match="uint8, uint16, int16, float16, float32, float64"):
        backend.convolve(image, "sharpen")


def test_string_image_raises_type_error(backend):
    with pytest.raises(TypeError, match="supported"):
        backend.convolve(np.array([["a", "b"], ["c", "d"]]), "sharpen")


@pytest.mark.parametrize(
    "kernel, error, message",
    [
        ([[np.nan, 1.0]], ValueError, "NaN or inf"),
        ([[1.0, np.inf]], ValueError, "NaN or inf"),
        ([1.0, 2.0, 1.0], ValueError, "2-D"),
        (np.ones((1, 1, 1)), ValueError, "2-D"),
        (np.zeros((0, 3)), ValueError, "at least 1 x 1"),
        ([[1, 2], [3]], ValueError, "rectangular"),
        (np.ones((2, 2), np.complex128), TypeError, "real numbers"),
        ("no_such_kernel", ValueError, "unknown kernel"),
        ("sobelx", ValueError, "Did you mean 'sobel_x'"),
    ],
)
def test_bad_kernels(backend, kernel, error, message):
    with pytest.raises(error, match=message):
        backend.convolve(GOOD_IMAGE, kernel)


@pytest.mark.parametrize("border", ["reflect_102", "mirrored", 5, 16, -1, None, 2.0])
def test_bad_border_lists_valid_names(backend, border):
    with pytest.raises(ValueError, match="reflect101.*reflect.*replicate.*constant.*wrap"):
        backend.convolve(GOOD_IMAGE, "sharpen", border=border)


@pytest.mark.parametrize(
    "anchor", [(3, 0), (0, 3), (-1, -1), (-1, 0), (0, -1), (-1, 2), (2, -1), (1, 1, 1), (1,)]
)
def test_anchor_outside_kernel_raises_value_error(backend, anchor):
    with pytest.raises(ValueError, match="anchor"):
        backend.convolve(GOOD_IMAGE, "sharpen", anchor=anchor)


def test_non_integer_anchor_raises_type_error(backend):
    with pytest.raises(TypeError, match="anchor"):
        backend.convolve(GOOD_IMAGE, "sharpen", anchor=(1.5, 1))


@pytest.mark.parametrize("dtype", [np.int64, np.complex128, "not-a-dtype", bool])
def test_bad_output_dtype(backend, dtype):
    with pytest.raises(TypeError, match="supported"):
        backend.convolve(GOOD_IMAGE, "sharpen", dtype=dtype)


@pytest.mark.parametrize("value", ["zero", 1j, None, [1.0], True, np.bool_(False)])
def test_bad_border_value(backend, value):
    with pytest.raises(TypeError, match="value"):
        backend.convolve(GOOD_IMAGE, "sharpen", border="constant", value=value)


def test_non_finite_value_on_integer_image(backend):
    with pytest.raises(ValueError, match="finite"):
        backend.convolve(GOOD_IMAGE, "sharpen", border="constant", value=float("nan"))


def test_bad_flip(backend):
    with pytest.raises(TypeError, match="flip"):
        backend.convolve(GOOD_IMAGE, "sharpen", flip="yes")


@pytest.mark.parametrize("name", ["gpu", "CUDA", "", None, "opencv"])
def test_unknown_backend_lists_valid_ones(name):
    with pytest.raises(ValueError, match="'auto', 'cuda', 'numba', 'numpy'"):
        gpuconv.convolve(GOOD_IMAGE, "sharpen", backend=name)


def test_errors_leave_input_untouched(backend):
    image = GOOD_IMAGE.copy()
    kernel = np.array([[1.0, np.nan]])
    with pytest.raises(ValueError):
        backend.convolve(image, kernel)
    np.testing.assert_array_equal(image, GOOD_IMAGE)
    assert np.isnan(kernel[0, 1])
