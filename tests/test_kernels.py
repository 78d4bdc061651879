"""The kernel bank: the tutorial's six, the factories, read-only arrays."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

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


def test_names_are_accepted_by_convolve():
    image = np.arange(25, dtype=np.float64).reshape(5, 5)
    for name in kernels.names():
        np.testing.assert_array_equal(
            gpuconv.convolve(image, name, backend="numpy"),
            gpuconv.convolve(image, kernels.get(name), backend="numpy"),
        )
