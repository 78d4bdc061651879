"""The contract (../shared/CONTRACT.md), checked on every backend.

Each test takes the ``backend`` fixture, so the whole module runs once per
backend in the registry: against the NumPy reference, and against peers
nobody here wrote (``cv2.filter2D``, ``scipy.ndimage``) on scikit-image's
bundled photographs and on random images.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import scipy.ndimage as ndi
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import assert_contract_accuracy, reference, saturate

import gpuconv
from gpuconv import kernels

SCIPY_MODE = {
    "reflect101": "mirror",
    "reflect": "reflect",
    "replicate": "nearest",
    "constant": "constant",
    "wrap": "wrap",
}
OPENCV_BORDER = {
    "reflect101": cv2.BORDER_REFLECT_101,
    "reflect": cv2.BORDER_REFLECT,
    "replicate": cv2.BORDER_REPLICATE,
    "constant": cv2.BORDER_CONSTANT,
}
INTEGER_TYPES = (np.uint8, np.uint16, np.int16)
ALL_TYPES = (np.uint8, np.uint16, np.int16, np.float32, np.float64)


def _as_type(image: np.ndarray, dtype) -> np.ndarray:
    """A photograph (uint8) spread over the range of ``dtype``."""
    dtype = np.dtype(dtype)
    if dtype == np.uint16:
        return image.astype(np.uint16) * 257
    if dtype == np.int16:
        return (image.astype(np.int16) - 128) * 200
    if dtype.kind == "f":
        return image.astype(dtype) / 255
    return image.copy()


def _scipy_origin(kernel_shape, anchor):
    kernel_height, kernel_width = kernel_shape
    anchor_x, anchor_y = anchor
    return (anchor_y - kernel_height // 2, anchor_x - kernel_width // 2)


# --- against OpenCV on real photographs ---------------------------------------------


@pytest.mark.parametrize("name", kernels.TUTORIAL_BANK)
def test_tutorial_bank_matches_filter2d_on_photographs(backend, photograph, name):
    image = backend.fit(photograph)
    kernel = kernels.get(name)
    expected = cv2.filter2D(image, -1, kernel)
    actual = backend.convolve(image, name)
    integer_kernel = bool(np.all(kernel == np.round(kernel)))
    assert_contract_accuracy(actual, expected, exact=integer_kernel)
    assert_contract_accuracy(actual, reference(image, name), exact=integer_kernel)


@pytest.mark.parametrize("dtype", ALL_TYPES)
@pytest.mark.parametrize("name", ["sharpen", "sobel_y", "small_blur", "large_blur"])
def test_every_dtype_matches_filter2d(backend, dtype, name):
    from skimage import data

    image = _as_type(backend.fit(data.camera()), dtype)
    kernel = kernels.get(name)
    actual = backend.convolve(image, name)
    expected = reference(image, name)
    exact = np.dtype(dtype).kind in "ui" and name in ("sharpen", "sobel_y")
    assert_contract_accuracy(actual, expected, exact=exact)
    opencv = cv2.filter2D(image, -1, kernel)
    if exact:
        np.testing.assert_array_equal(actual, opencv)
    elif np.dtype(dtype).kind in "ui":
        assert np.abs(actual.astype(np.int64) - opencv).max() <= 1
    else:  # OpenCV sums float32 images in float32
        np.testing.assert_allclose(actual, opencv, rtol=1e-4, atol=1e-4 * np.abs(opencv).max())


@pytest.mark.parametrize("border", list(OPENCV_BORDER))
def test_borders_match_filter2d_on_colour_photo(backend, border):
    from skimage import data

    image = backend.fit(data.astronaut())[:61, :47]
    kernel = np.arange(35, dtype=np.float64).reshape(5, 7) % 5 - 2  # integer, asymmetric
    actual = backend.convolve(image, kernel, border=border, anchor=(1, 3))
    expected = cv2.filter2D(image, -1, kernel, anchor=(1, 3), borderType=OPENCV_BORDER[border])
    assert_contract_accuracy(actual, expected, exact=True)


# --- against scipy.ndimage on random images -----------------------------------------


@pytest.mark.parametrize("border", list(SCIPY_MODE))
@pytest.mark.parametrize(
    "image_shape, kernel_shape",
    [((23, 31), (3, 3)), ((17, 13), (4, 6)), ((9, 11), (2, 1)), ((5, 4), (9, 7)), ((1, 7), (3, 3))],
)
def test_random_images_match_scipy_correlate(backend, rng, border, image_shape, kernel_shape):
    image = rng.normal(size=image_shape)
    kernel = rng.normal(size=kernel_shape)
    for anchor in {(kernel_shape[1] // 2, kernel_shape[0] // 2), (0, kernel_shape[0] - 1)}:
        actual = backend.convolve(image, kernel, border=border, value=0.75, anchor=anchor)
        expected = ndi.correlate(
            image,
            kernel,
            mode=SCIPY_MODE[border],
            cval=0.75,
            origin=_scipy_origin(kernel_shape, anchor),
        )
        assert_contract_accuracy(actual, expected)


@pytest.mark.parametrize("border", list(SCIPY_MODE))
@pytest.mark.parametrize("kernel_shape", [(3, 3), (4, 5), (6, 2)])
def test_flip_equals_scipy_convolve(backend, rng, border, kernel_shape):
    image = rng.normal(size=(19, 22)).astype(np.float64)
    kernel = rng.normal(size=kernel_shape)
    actual = backend.convolve(image, kernel, border=border, value=-2.0, flip=True)
    expected = ndi.convolve(image, kernel, mode=SCIPY_MODE[border], cval=-2.0)
    assert_contract_accuracy(actual, expected)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    height=st.integers(1, 24),
    width=st.integers(1, 24),
    kernel_height=st.integers(1, 30),
    kernel_width=st.integers(1, 30),
    border=st.sampled_from(list(SCIPY_MODE)),
    dtype=st.sampled_from(ALL_TYPES),
    channels=st.sampled_from([None, 1, 3]),
    data=st.data(),
)
def test_any_shape_matches_reference(
    backend, height, width, kernel_height, kernel_width, border, dtype, channels, data
):
    seed = data.draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    shape = (height, width) if channels is None else (height, width, channels)
    if np.dtype(dtype).kind == "f":
        image = rng.normal(scale=100, size=shape).astype(dtype)
    else:
        info = np.iinfo(dtype)
        image = rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    integer_kernel = data.draw(st.booleans())
    if integer_kernel:
        kernel = rng.integers(-3, 4, size=(kernel_height, kernel_width)).astype(np.float64)
    else:
        kernel = rng.normal(size=(kernel_height, kernel_width))
    anchor = (
        data.draw(st.integers(0, kernel_width - 1)),
        data.draw(st.integers(0, kernel_height - 1)),
    )
    options = dict(border=border, anchor=anchor, value=3.0)
    actual = backend.convolve(image, kernel, **options)
    expected = reference(image, kernel, **options)
    assert_contract_accuracy(actual, expected, exact=integer_kernel and np.dtype(dtype).kind != "f")


# --- types and rounding -----------------------------------------------------------------


def test_rounding_is_half_to_even(backend):
    image = np.array([[1, 2, 3, 4, 5, 6, 7]], dtype=np.uint8)
    np.testing.assert_array_equal(
        backend.convolve(image, [[0.5]]), np.array([[0, 1, 2, 2, 2, 3, 4]], np.uint8)
    )
    signed = np.array([[-5, -3, -1, 1, 3, 5]], dtype=np.int16)
    np.testing.assert_array_equal(
        backend.convolve(signed, [[0.5]]), np.array([[-2, -2, 0, 0, 2, 2]], np.int16)
    )


@pytest.mark.parametrize(
    "dtype, pixel, weight, expected",
    [
        (np.uint8, 200, 2.0, 255),
        (np.uint8, 10, -1.0, 0),
        (np.uint16, 40000, 2.0, 65535),
        (np.int16, -20000, 2.0, -32768),
        (np.int16, 20000, 2.0, 32767),
    ],
)
def test_integer_outputs_saturate(backend, dtype, pixel, weight, expected):
    image = np.full((4, 5), pixel, dtype=dtype)
    out = backend.convolve(image, [[weight]])
    assert out.dtype == dtype
    assert (out == expected).all()


def test_float_output_keeps_negative_responses(backend, rng):
    image = rng.integers(0, 256, size=(21, 18)).astype(np.uint8)
    out = backend.convolve(image, "sobel_x", dtype=np.float32, border="replicate")
    assert out.dtype == np.float32
    expected = cv2.filter2D(image, cv2.CV_32F, kernels.sobel_x, borderType=cv2.BORDER_REPLICATE)
    np.testing.assert_array_equal(out, expected)
    assert out.min() < 0


@pytest.mark.parametrize("out_dtype", ALL_TYPES)
def test_output_dtype_is_honoured(backend, rng, out_dtype):
    image = rng.integers(0, 256, size=(15, 16)).astype(np.uint8)
    kernel = rng.normal(size=(3, 4))
    actual = backend.convolve(image, kernel, dtype=out_dtype)
    assert actual.dtype == out_dtype
    assert_contract_accuracy(actual, reference(image, kernel, dtype=out_dtype))


@pytest.mark.parametrize(
    "kernel", ["sharpen", [[-65536.0]], [[0, 0, 0], [0, -65536, 0], [0, 0, 0]]]
)
def test_int16_minimum_times_minus_65536_saturates_to_the_maximum(backend, kernel):
    # -32768 * -65536 = 2**31, one past int32: the sum needs int64 (or float64).
    info = np.iinfo(np.int16)
    image = np.full((6, 7), info.min, np.int16)
    image[2, 3:] = info.max
    out = backend.convolve(image, kernel)
    weights = np.asarray(kernels.get(kernel) if isinstance(kernel, str) else kernel, float)
    expected = saturate(ndi.correlate(image.astype(np.float64), weights, mode="mirror"), np.int16)
    np.testing.assert_array_equal(out, expected)
    if isinstance(kernel, list):
        assert (out[image == info.min] == info.max).all()


def test_near_rank_one_kernel_keeps_float64_accuracy(backend, rng):
    # Rank 1 to within 3e-13 of one tap: split into two passes, the result would be
    # 3e-13 per unit pixel off, far more than float64's 1e-12 of the output's magnitude.
    kernel = 1e-3 * np.outer(rng.uniform(0.5, 1.5, 5), rng.uniform(0.5, 1.5, 5))
    kernel[1, 3] += 3e-13
    image = rng.uniform(0, 1, size=backend.fit(np.zeros((64, 64))).shape)
    actual = backend.convolve(image, kernel)
    assert_contract_accuracy(actual, ndi.correlate(image, kernel, mode="mirror"))


@pytest.mark.parametrize("value", [0.5, -7.25, 300.0, 1000.5])
def test_fractional_and_out_of_range_constant_values_match_scipy(backend, rng, value):
    # `value` is used as given, not rounded or clipped to the image type (uint8 here).
    image = rng.integers(0, 10, size=(9, 11)).astype(np.uint8)
    padded_sums = ndi.correlate(
        image.astype(np.float64), np.ones((5, 5)), mode="constant", cval=value
    )
    actual = backend.convolve(image, np.ones((5, 5)), border="constant", value=value)
    np.testing.assert_array_equal(actual, saturate(padded_sums, np.uint8))
    kernel = rng.normal(size=(3, 4))
    expected = ndi.correlate(image.astype(np.float64), kernel, mode="constant", cval=value)
    actual = backend.convolve(image, kernel, border="constant", value=value, dtype=np.float64)
    assert_contract_accuracy(actual, expected)
    actual = backend.convolve(image, kernel, border="constant", value=value)
    assert_contract_accuracy(actual, saturate(expected, np.uint8))


def _non_finite_image() -> np.ndarray:
    image = np.linspace(-40, 300, 12 * 13, dtype=np.float32).reshape(12, 13)
    image[2, 2], image[3, 9], image[8, 5] = np.nan, np.inf, -np.inf
    return image


@pytest.mark.parametrize("out_dtype", [np.uint8, np.uint16, np.int16])
def test_nan_and_inf_pixels_to_integer_output_saturate_and_nan_gives_zero(backend, rng, out_dtype):
    image = _non_finite_image()
    # No zero taps: scipy.ndimage leaves zero taps out, IEEE (and gpuconv) does not.
    for kernel in (np.full((3, 3), 1 / 9), rng.normal(size=(3, 5))):
        expected = saturate(
            ndi.correlate(image.astype(np.float64), kernel, mode="mirror"), out_dtype
        )
        assert {0, np.iinfo(out_dtype).max} <= set(expected.ravel().tolist())
        assert_contract_accuracy(backend.convolve(image, kernel, dtype=out_dtype), expected)


def test_nan_and_inf_pixels_to_integer_output_through_auto(rng):
    image = _non_finite_image()
    kernel = rng.normal(size=(3, 3))
    for out_dtype in (np.uint8, np.int16):
        expected = saturate(
            ndi.correlate(image.astype(np.float64), kernel, mode="mirror"), out_dtype
        )
        assert_contract_accuracy(gpuconv.convolve(image, kernel, dtype=out_dtype), expected)
        # zero taps included: 0 * inf is NaN, which becomes 0
        actual = gpuconv.convolve(image, "laplacian", dtype=out_dtype)
        np.testing.assert_array_equal(actual, reference(image, "laplacian", dtype=out_dtype))
        assert actual[2, 2] == 0  # NaN under the centre tap
        assert actual[2, 8] == 0  # inf under a zero (corner) tap: 0 * inf is NaN
        assert actual[3, 8] == np.iinfo(out_dtype).max  # inf under a tap of 1


def test_nan_and_inf_propagate_like_ieee(backend):
    image = np.ones((9, 10), dtype=np.float32)
    image[4, 5] = np.nan
    image[0, 0] = np.inf
    for name in ("laplacian", "small_blur", "sobel_x"):
        actual = backend.convolve(image, name)
        expected = reference(image, name)
        np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
        assert np.isnan(actual[4, 5])
        assert_contract_accuracy(actual, expected)


# --- shapes, channels, memory layout ------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_channels_last_equals_each_channel_alone(backend, rng, channels):
    image = rng.integers(0, 256, size=(13, 17, channels)).astype(np.uint8)
    out = backend.convolve(image, "sharpen", border="wrap")
    assert out.shape == image.shape
    for channel in range(channels):
        np.testing.assert_array_equal(
            out[:, :, channel], backend.convolve(image[:, :, channel], "sharpen", border="wrap")
        )


@pytest.mark.parametrize(
    "image_shape, kernel_shape",
    [((1, 1), (1, 1)), ((1, 1), (3, 3)), ((1, 9), (3, 3)), ((9, 1), (5, 2)), ((2, 3), (8, 8))],
)
@pytest.mark.parametrize("border", list(SCIPY_MODE))
def test_tiny_images_and_huge_kernels(backend, rng, image_shape, kernel_shape, border):
    image = rng.normal(size=image_shape)
    kernel = rng.normal(size=kernel_shape)
    actual = backend.convolve(image, kernel, border=border, value=1.0)
    expected = ndi.correlate(image, kernel, mode=SCIPY_MODE[border], cval=1.0)
    assert_contract_accuracy(actual, expected)


def test_views_strides_and_read_only_inputs(backend, rng):
    base = rng.integers(0, 65536, size=(40, 50, 3)).astype(np.uint16)
    views = {
        "strided": base[::2, ::3],
        "channel": base[:, :, 1],
        "transposed": base[:, :, 0].T,
        "fortran": np.asfortranarray(base[:, :, 2]),
        "negative": base[::-1, ::-2, :],
    }
    read_only = base.copy()
    read_only.flags.writeable = False
    views["read_only"] = read_only
    for label, image in views.items():
        before = image.copy()
        out = backend.convolve(image, "emboss", border="reflect")
        np.testing.assert_array_equal(image, before, err_msg=f"{label} input was modified")
        assert not np.shares_memory(out, base), label
        expected = reference(np.ascontiguousarray(image), "emboss", border="reflect")
        assert_contract_accuracy(out, expected, exact=True)


def test_callers_kernel_stays_writeable_and_unchanged(backend, rng):
    image = rng.integers(0, 256, size=(10, 9)).astype(np.uint8)
    for kernel in (rng.normal(size=(3, 3)), np.ones((3, 3)), np.ones((5, 5)) / 25):
        before = kernel.copy()  # float64, C-contiguous: nothing forces the planner to convert
        for flip in (False, True):
            backend.convolve(image, kernel, flip=flip)
            assert kernel.flags.writeable
            np.testing.assert_array_equal(kernel, before)


def test_input_never_modified_and_output_is_new(backend, rng):
    image = rng.normal(size=(12, 12)).astype(np.float32)
    kernel = rng.normal(size=(3, 3))
    image_before, kernel_before = image.copy(), kernel.copy()
    out = backend.convolve(image, kernel, dtype=np.float32)
    np.testing.assert_array_equal(image, image_before)
    np.testing.assert_array_equal(kernel, kernel_before)
    assert out is not image and not np.shares_memory(out, image)


# --- arguments --------------------------------------------------------------------------


def test_border_aliases_agree(backend, rng):
    image = rng.integers(0, 256, size=(11, 14)).astype(np.uint8)
    kernel = rng.normal(size=(5, 5))
    for canonical, aliases in {
        "reflect101": ["mirror", cv2.BORDER_REFLECT_101, cv2.BORDER_DEFAULT, "BORDER_REFLECT_101"],
        "reflect": [cv2.BORDER_REFLECT, "grid-mirror"],
        "replicate": ["nearest", cv2.BORDER_REPLICATE],
        "constant": [cv2.BORDER_CONSTANT, "grid-constant"],
        "wrap": [cv2.BORDER_WRAP, "grid-wrap"],
    }.items():
        expected = backend.convolve(image, kernel, border=canonical)
        for alias in aliases:
            np.testing.assert_array_equal(backend.convolve(image, kernel, border=alias), expected)


def test_default_is_filter2d(backend, rng):
    image = rng.integers(0, 256, size=(30, 40)).astype(np.uint8)
    np.testing.assert_array_equal(
        backend.convolve(image, "laplacian"), cv2.filter2D(image, -1, kernels.laplacian)
    )


def test_constant_border_uses_value(backend):
    image = np.zeros((5, 5), dtype=np.float64)
    out = backend.convolve(image, np.ones((3, 3)), border="constant", value=2.5)
    assert out[0, 0] == pytest.approx(5 * 2.5)  # 5 of the 9 taps fall outside
    assert out[2, 2] == 0.0
    assert out[0, 2] == pytest.approx(3 * 2.5)


def test_even_kernel_default_anchor_is_opencvs(backend, rng):
    image = rng.integers(0, 256, size=(16, 16)).astype(np.uint8)
    kernel = rng.integers(-2, 3, size=(4, 2)).astype(np.float64)
    np.testing.assert_array_equal(backend.convolve(image, kernel), cv2.filter2D(image, -1, kernel))


def test_numpy_in_numpy_out(backend, rng):
    image = rng.integers(0, 256, size=(8, 8)).astype(np.uint8)
    assert isinstance(backend.convolve(image, "sharpen"), np.ndarray)
    assert isinstance(gpuconv.convolve(image, "sharpen"), np.ndarray)


def test_big_endian_images_are_accepted(backend, rng):
    image = rng.integers(0, 65536, size=(9, 12)).astype(">u2")
    out = backend.convolve(image, "sharpen")
    assert out.dtype == np.uint16 and out.dtype.isnative
    np.testing.assert_array_equal(out, cv2.filter2D(image.astype(np.uint16), -1, kernels.sharpen))


@pytest.mark.parametrize("image_dtype", [np.float32, np.float64, np.uint8])
@pytest.mark.parametrize("out_dtype", [np.uint8, np.int16, np.float32])
def test_valid_input_never_warns_even_an_all_zero_kernel(backend, image_dtype, out_dtype):
    # Valid input must not warn: under `python -W error` a warning is a failed call.
    # (0 * inf in the planner's error estimate once warned for a float image.)
    import warnings

    image = np.ones((8, 8), image_dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = backend.convolve(image, np.zeros((3, 3)), dtype=out_dtype)
    np.testing.assert_array_equal(result, np.zeros((8, 8), out_dtype))
