"""Repeated calls: a small 3 x 3 filter called again with the same arguments on an image of
the same shape runs the numba loop at once (gpuconv._convolve._REPEATS), and gives exactly
what the whole call gives, NaN and inf included, whatever changed in between."""

from __future__ import annotations

import numpy as np
import pytest
from support import assert_contract_accuracy, reference

import gpuconv
from gpuconv import _convolve
from gpuconv._backends import numpy as numpy_backend
from gpuconv._backends.numba import backend as numba_backend

pytest.importorskip("numba", reason="the repeated-call runner is the numba backend's")


@pytest.fixture(autouse=True)
def empty_cache():
    _convolve.clear_repeat_cache()
    yield
    _convolve.clear_repeat_cache()


def _runner_calls(monkeypatch) -> list:
    """Record every call of a repeat runner made from now on."""
    calls = []
    real = numba_backend.repeat_runner

    def recording(plan):
        runner = real(plan)
        if runner is None:
            return None

        def recorded(image):
            calls.append(image.shape)
            return runner(image)

        return recorded

    monkeypatch.setattr(numba_backend, "repeat_runner", recording)
    return calls


@pytest.mark.parametrize("dtype", ["uint8", "float32", "float64"])
@pytest.mark.parametrize("kernel", ["sharpen", "sobel_x", "gaussian3"])
@pytest.mark.parametrize("border", ["reflect101", "constant", "wrap"])
@pytest.mark.parametrize("shape", [(31, 40), (17, 9, 3)])
def test_a_repeat_gives_what_the_whole_call_gives(rng, monkeypatch, dtype, kernel, border, shape):
    calls = _runner_calls(monkeypatch)
    options = dict(border=border, value=3.0, backend="numba")
    images = [(rng.random(shape) * 255).astype(dtype) for _ in range(3)]
    originals = [image.copy() for image in images]
    results = [gpuconv.convolve(image, kernel, **options) for image in images]
    # The first call ran whole, the other two repeated it; gaussian3 on uint8 (float sums
    # to an integer output) is no shifted-rows case and runs whole every time.
    repeats = not (dtype == "uint8" and kernel == "gaussian3")
    assert calls == ([shape, shape] if repeats else [])
    for image, original, result in zip(images, originals, results):
        np.testing.assert_array_equal(image, original)  # the input is never modified
        expected = reference(image, kernel, border=border, value=3.0)
        assert_contract_accuracy(result, expected, exact=dtype == "uint8")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_repeat_on_an_image_with_nan_or_inf_runs_the_whole_call(rng, monkeypatch, bad):
    """Sharpen's corners are zero taps the loop skips: NaN or inf under one must still make
    the output NaN (0 * NaN), as the whole call does through the band loop."""
    calls = _runner_calls(monkeypatch)
    image = rng.standard_normal((20, 24)).astype(np.float32)
    gpuconv.convolve(image, "sharpen", backend="numba")
    image[0, 0] = bad  # read by output (1, 1) through a zero corner only
    result = gpuconv.convolve(image, "sharpen", backend="numba")
    assert calls == [(20, 24)]  # tried, and it handed the call back
    expected = reference(image, "sharpen")
    assert np.isnan(result[1, 1])
    np.testing.assert_array_equal(np.isnan(result), np.isnan(expected))
    np.testing.assert_array_equal(np.isinf(result), np.isinf(expected))


def test_a_kernel_array_changed_in_place_is_not_a_repeat(rng):
    image = rng.random((16, 16)).astype(np.float32)
    kernel = np.array([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
    first = gpuconv.convolve(image, kernel, backend="numba")
    kernel[1, 1] = 2.0
    second = gpuconv.convolve(image, kernel, backend="numba")
    assert_contract_accuracy(first, reference(image, np.where(kernel == 2.0, -4.0, kernel)))
    assert_contract_accuracy(second, reference(image, kernel))


@pytest.mark.parametrize(
    "view",
    [
        lambda image: image[:, ::-1],  # not C-contiguous
        lambda image: image[1:-1, 1:-1],  # a crop
        lambda image: np.asfortranarray(image),
        lambda image: image.astype(">f4"),  # big-endian: the whole call converts it
    ],
)
def test_an_image_of_another_layout_takes_the_whole_call(rng, monkeypatch, view):
    calls = _runner_calls(monkeypatch)
    image = rng.random((30, 30)).astype(np.float32)
    for _ in range(2):
        result = gpuconv.convolve(view(image), "laplacian", backend="numba")
        assert_contract_accuracy(result, reference(view(image), "laplacian"))
    assert calls == []


def test_a_backend_chosen_anew_is_not_a_repeat(rng, monkeypatch):
    """GPUCONV_BACKEND and gpuconv.use_backend() are read at every call, also after a
    repeat of the same call was remembered for backend="auto"."""
    image = rng.random((40, 40)).astype(np.float32)
    monkeypatch.setenv("GPUCONV_BACKEND", "numba")
    for _ in range(2):
        gpuconv.convolve(image, "sharpen")
    reference_runs = []
    real = numpy_backend.convolve

    def recording(*args, **kwargs):
        reference_runs.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(numpy_backend, "convolve", recording)
    monkeypatch.setenv("GPUCONV_BACKEND", "numpy")
    gpuconv.convolve(image, "sharpen")
    assert reference_runs == [1]
    monkeypatch.delenv("GPUCONV_BACKEND")
    with gpuconv.use_backend("numpy"):
        gpuconv.convolve(image, "sharpen")
    assert reference_runs == [1, 1]


def test_the_repeat_cache_is_bounded(rng, monkeypatch):
    monkeypatch.setattr(_convolve._REPEATS, "size", 4)
    for side in range(3, 13):
        image = rng.random((side, side)).astype(np.float32)
        gpuconv.convolve(image, "sharpen", backend="numba")
    assert len(_convolve._REPEATS) == 4
