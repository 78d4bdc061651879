"""The kernel bank: the tutorial's six, the factories, read-only arrays."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import scipy.ndimage as ndi

import gpuconv
from gpuconv import kernels


def test_tutorial_bank_is_the_tutorials():
    assert kernels.TUTORIAL_BANK == (
        "small_blur",
        "large_blur",
        "sharpen",
        "laplacian",
        "sobel_x",
        "sobel_y",
    )
    np.testing.assert_array_equal(kernels.small_blur, np.ones((7, 7)) / 49)
    np.testing.assert_array_equal(kernels.large_blur, np.ones((21, 21)) / 441)
    np.testing.assert_array_equal(kernels.sharpen, [[0, -1, 0], [-1, 5, -1], [0, -1, 0]])
    np.testing.assert_array_equal(kernels.laplacian, [[0, 1, 0], [1, -4, 1], [0, 1, 0]])
    np.testing.assert_array_equal(kernels.sobel_x, [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]])
    np.testing.assert_array_equal(kernels.sobel_y, kernels.sobel_x.T)


def test_usual_others_are_there():
    for name in ("scharr_x", "scharr_y", "prewitt_x", "prewitt_y", "emboss", "outline", "identity"):
        assert name in kernels.names()
    np.testing.assert_array_equal(kernels.scharr_y, kernels.scharr_x.T)


@pytest.mark.parametrize("name", kernels.names())
def test_bank_arrays_are_read_only(name):
    kernel = kernels.get(name)
    assert not kernel.flags.writeable
    with pytest.raises(ValueError):
        kernel[0, 0] = 42.0


def test_box_factory():
    np.testing.assert_allclose(kernels.box(4), np.full((4, 4), 1 / 16))
    for bad in (0, -3, 2.5, "3", True):
        with pytest.raises(ValueError, match="positive integer"):
            kernels.box(bad)


@pytest.mark.parametrize("size, sigma", [(3, 0.8), (5, 1.5), (7, 2.0), (9, 1.1)])
def test_gaussian_matches_opencv(size, sigma):
    line = cv2.getGaussianKernel(size, sigma, ktype=cv2.CV_64F)
    np.testing.assert_allclose(kernels.gaussian(size, sigma), line @ line.T, rtol=1e-12)
    assert kernels.gaussian(size, sigma).sum() == pytest.approx(1.0)


def test_gaussian_default_sigma_is_opencvs_rule():
    # OpenCV's sigma for ksize n when none is given (its fixed tables for n <= 7 aside)
    for size in (3, 11, 15):
        sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
        np.testing.assert_allclose(kernels.gaussian(size), kernels.gaussian(size, sigma))
    with pytest.raises(ValueError, match="finite"):
        kernels.gaussian(5, float("nan"))


def test_unknown_names_suggest_the_closest():
    with pytest.raises(ValueError, match="Did you mean 'laplacian'"):
        kernels.get("laplacien")
    with pytest.raises(AttributeError):
        kernels.no_such_kernel  # noqa: B018


def _opencv_gaussian(size: int) -> np.ndarray:
    # OpenCV's sigma rule for ksize n, given explicitly: with sigma=0 OpenCV would use its
    # fixed tables for n <= 7 instead (the README's documented difference).
    line = cv2.getGaussianKernel(size, 0.3 * ((size - 1) * 0.5 - 1) + 0.8, ktype=cv2.CV_64F)
    return line @ line.T


def _opencv_derivative(dx: int, dy: int, size: int) -> np.ndarray:
    # cv2.getDerivKernels returns the row (x) and column (y) factors; as a 2-D kernel that
    # filter2D applies, the kernel is outer(y, x).
    kx, ky = cv2.getDerivKernels(dx, dy, size, normalize=False, ktype=cv2.CV_64F)
    return ky @ kx.T


CENTRE = np.pad([[1.0]], 1)  # the 3x3 delta
NEIGHBOURS4 = np.array([[0.0, 1, 0], [1, 0, 1], [0, 1, 0]])
NEIGHBOURS8 = np.ones((3, 3)) - CENTRE
PREWITT_X = np.outer([1.0, 1, 1], [-1.0, 0, 1])  # box smoothing across, central difference

#: Every bank kernel defined again without the bank: from OpenCV where OpenCV has it,
#: otherwise from the textbook construction.
INDEPENDENT = {
    "small_blur": np.ones((7, 7)) / 49,
    "large_blur": np.ones((21, 21)) / 441,
    "sharpen": 5 * CENTRE - NEIGHBOURS4,
    "laplacian": NEIGHBOURS4 - 4 * CENTRE,  # also cv2.Laplacian(ksize=1), checked below
    "sobel_x": _opencv_derivative(1, 0, 3),
    "sobel_y": _opencv_derivative(0, 1, 3),
    "identity": CENTRE,
    "box3": np.ones((3, 3)) / 9,
    "box5": np.ones((5, 5)) / 25,
    "gaussian3": _opencv_gaussian(3),
    "gaussian5": _opencv_gaussian(5),
    "laplacian8": NEIGHBOURS8 - 8 * CENTRE,
    "scharr_x": _opencv_derivative(1, 0, cv2.FILTER_SCHARR),
    "scharr_y": _opencv_derivative(0, 1, cv2.FILTER_SCHARR),
    "prewitt_x": PREWITT_X,
    "prewitt_y": PREWITT_X.T,
    # emboss: a diagonal derivative (bottom-right minus top-left) plus the pixel itself
    "emboss": np.add.outer([-1.0, 0, 1], [-1.0, 0, 1]) + CENTRE,
    "outline": 8 * CENTRE - NEIGHBOURS8,
}


def test_every_bank_kernel_has_an_independent_definition():
    assert sorted(INDEPENDENT) == kernels.names()


@pytest.mark.parametrize("name", sorted(INDEPENDENT))
def test_bank_values_match_their_independent_definitions(name):
    np.testing.assert_allclose(kernels.get(name), INDEPENDENT[name], rtol=1e-12, atol=0)
    assert kernels.get(name).shape == INDEPENDENT[name].shape


def test_names_are_accepted_by_convolve_and_compute_the_named_filter(rng):
    # convolve(image, name) against scipy with the independently defined kernel
    image = rng.normal(size=(23, 25))
    for name in kernels.names():
        expected = ndi.correlate(image, INDEPENDENT[name], mode="mirror")
        actual = gpuconv.convolve(image, name, backend="numpy")
        np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-12 * np.abs(expected).max())


@pytest.mark.parametrize(
    "name, opencv",
    [
        ("identity", lambda image: image),
        ("box3", lambda image: cv2.blur(image, (3, 3))),
        ("box5", lambda image: cv2.blur(image, (5, 5))),
        ("gaussian3", lambda image: cv2.GaussianBlur(image, (3, 3), 0.8)),
        ("gaussian5", lambda image: cv2.GaussianBlur(image, (5, 5), 1.1)),
        ("laplacian", lambda image: cv2.Laplacian(image, -1, ksize=1)),
        ("sobel_x", lambda image: cv2.Sobel(image, -1, 1, 0, ksize=3)),
        ("scharr_x", lambda image: cv2.Scharr(image, -1, 1, 0)),
        ("scharr_y", lambda image: cv2.Scharr(image, -1, 0, 1)),
    ],
)
def test_bank_kernels_filter_as_opencvs_own_functions(rng, name, opencv):
    image = rng.normal(size=(31, 29))
    expected = opencv(image)
    actual = gpuconv.convolve(image, name, backend="numpy")
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-12 * np.abs(expected).max())
