"""The plan cache: a repeated call is planned once, and the cache never changes an answer."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import gpuconv
from gpuconv._plan import clear_plan_cache, make_plan

OPTIONS = dict(border="reflect101", value=0.0, anchor=None, flip=False, dtype=None)


def plan_of(image, kernel, **options):
    settings = dict(OPTIONS)
    settings.update(options)
    return make_plan(image, kernel, **settings)[1]


@pytest.fixture(autouse=True)
def empty_cache():
    clear_plan_cache()
    yield
    clear_plan_cache()


def test_a_repeated_call_reuses_its_plan():
    image = np.zeros((20, 30), np.uint8)
    first = plan_of(image, "sharpen")
    assert plan_of(image.copy(), "sharpen") is first  # same shape and dtype, another array
    assert plan_of(image, np.asarray(gpuconv.kernels.get("sharpen"))) is not first  # by value
    assert plan_of(image, np.array(gpuconv.kernels.get("sharpen"))) is plan_of(
        image, np.array(gpuconv.kernels.get("sharpen"))
    )


@pytest.mark.parametrize(
    "change",
    [
        dict(border="wrap"),
        dict(value=3.0),
        dict(anchor=(0, 0)),
        dict(flip=True),
        dict(dtype=np.float32),
    ],
)
def test_every_argument_is_part_of_the_key(change):
    image = np.zeros((20, 30), np.uint8)
    kernel = np.arange(9.0).reshape(3, 3)
    base = plan_of(image, kernel)
    changed = plan_of(image, kernel, **change)
    assert changed is not base
    assert plan_of(np.zeros((20, 31), np.uint8), kernel).shape == (20, 31, 1)
    assert plan_of(np.zeros((20, 30), np.uint16), kernel).input_dtype == np.uint16
    assert plan_of(np.zeros((20, 30, 3), np.uint8), kernel).shape == (20, 30, 3)


@pytest.mark.parametrize(
    "first, second",
    [
        (dict(value=1), dict(value=1.0)),
        (dict(value=True), dict(value=1)),
        (dict(anchor=(1, 1)), dict(anchor=[1, 1])),
        (dict(anchor=(1, 1)), dict(anchor=(np.int64(1), 1))),
        (dict(dtype="float32"), dict(dtype=np.float32)),
    ],
)
def test_arguments_equal_in_value_but_not_in_type_are_keyed_apart(first, second):
    """Validation may treat them differently (a bool value is refused), so one must never
    be answered with the other's plan."""
    image = np.zeros((20, 30), np.uint8)
    kernel = np.arange(9.0).reshape(3, 3)
    plan_a, plan_b = (_plan_or_error(image, kernel, **change) for change in (first, second))
    assert plan_a is not plan_b


def _plan_or_error(image, kernel, **options):
    try:
        return plan_of(image, kernel, **options)
    except (TypeError, ValueError) as error:
        return type(error)


def test_a_kernel_changed_in_place_is_planned_anew(rng):
    image = rng.integers(0, 256, (16, 16)).astype(np.uint8)
    kernel = np.ones((3, 3)) / 9
    before = gpuconv.convolve(image, kernel, backend="numpy")
    kernel[1, 1] = 0.5  # same object, other values
    after = gpuconv.convolve(image, kernel, backend="numpy")
    np.testing.assert_array_equal(after, gpuconv.convolve(image, kernel.copy(), backend="numpy"))
    assert not np.array_equal(before, after)
    assert kernel.flags.writeable  # the caller's kernel is never made read-only


@pytest.mark.parametrize(
    ("good", "bad", "error"),
    [
        (dict(value=1), dict(value=True), TypeError),  # 1 == True, but True is no number here
        (dict(flip=False), dict(flip=0), TypeError),  # 0 == False, but flip must be a bool
        (dict(anchor=(1, 1)), dict(anchor=(True, True)), TypeError),
        (dict(border=4), dict(border=4.0), ValueError),  # 4.0 == 4, but no border code
    ],
)
def test_a_cached_plan_never_lets_an_invalid_argument_through(good, bad, error):
    image = np.zeros((8, 8), np.uint8)
    plan_of(image, "sharpen", **good)  # cached
    with pytest.raises(error):
        plan_of(image, "sharpen", **bad)


def test_the_image_is_checked_on_every_call():
    plan_of(np.zeros((8, 8), np.uint8), "sharpen")
    with pytest.raises(ValueError, match="empty"):
        plan_of(np.zeros((0, 8), np.uint8), "sharpen")
    with pytest.raises(TypeError, match="unsupported image dtype"):
        plan_of(np.zeros((8, 8), np.int64), "sharpen")


def test_the_cache_is_bounded_and_thread_safe(monkeypatch, rng):
    from gpuconv import _plan

    monkeypatch.setattr(_plan._PLANS, "size", 8)
    image = rng.integers(0, 256, (12, 12)).astype(np.uint8)
    kernels = [rng.integers(-3, 4, (3, 3)).astype(float) for _ in range(20)]
    expected = [gpuconv.convolve(image, k.copy(), backend="numpy") for k in kernels]
    failures = []

    def worker(offset):
        for round_ in range(30):
            index = (offset + round_) % len(kernels)
            result = gpuconv.convolve(image, kernels[index], backend="numpy")
            if not np.array_equal(result, expected[index]):
                failures.append(index)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
    assert len(_plan._PLANS) <= 8


@pytest.mark.parametrize("dtype", [np.float16, None])
def test_a_float16_image_reuses_its_numba_execution_too(rng, monkeypatch, dtype):
    """float16 runs as float32 through a twin plan; the twin is cached with the plan, so
    a repeated call plans nothing again (it was planned at every call: 120 us against
    float32's 22 us for 64 x 64, now 45 us)."""
    pytest.importorskip("numba", reason="the numba backend needs numba")
    from gpuconv._backends.numba import backend as numba_backend

    image = rng.standard_normal((16, 24)).astype(np.float16)
    options = dict(backend="numba", dtype=dtype)
    gpuconv.convolve(image, "sharpen", **options)  # planned (once) here
    planned = []
    real = numba_backend.execution_for
    monkeypatch.setattr(numba_backend, "execution_for", lambda *a: planned.append(a) or real(*a))
    for _ in range(3):
        np.testing.assert_array_equal(
            gpuconv.convolve(image, "sharpen", **options),
            gpuconv.convolve(image, "sharpen", backend="numpy", dtype=dtype),
        )
    assert planned == []


def test_the_numba_backend_reuses_its_execution_for_a_cached_plan(rng):
    pytest.importorskip("numba", reason="the numba backend needs numba")
    from gpuconv._backends.numba import backend as numba_backend

    image = rng.integers(0, 256, (16, 24)).astype(np.uint8)
    first = numba_backend.cached_execution(plan_of(image, "small_blur"), 2)
    assert numba_backend.cached_execution(plan_of(image, "small_blur"), 2) is first
    assert numba_backend.cached_execution(plan_of(image, "small_blur"), 1) is not first
    assert numba_backend.cached_execution(plan_of(image, "sharpen"), 2) is not first
    # and the cached execution still computes the right thing
    for _ in range(2):
        np.testing.assert_array_equal(
            gpuconv.convolve(image, "small_blur", backend="numba", border="wrap"),
            gpuconv.convolve(image, "small_blur", backend="numpy", border="wrap"),
        )


def test_the_least_recently_used_plan_is_dropped_first(monkeypatch, rng):
    from gpuconv import _plan

    monkeypatch.setattr(_plan._PLANS, "size", 4)
    image = np.zeros((6, 6), np.uint8)
    kernels = [np.full((3, 3), float(n)) for n in range(6)]
    first = [plan_of(image, k) for k in kernels[:4]]  # the cache is full: 4 plans
    assert len(_plan._PLANS) == 4
    assert plan_of(image, kernels[0]) is first[0]  # used again: now the most recent
    plan_of(image, kernels[4])  # drops the least recently used, kernels[1]'s
    assert len(_plan._PLANS) == 4
    assert plan_of(image, kernels[0]) is first[0]
    assert plan_of(image, kernels[1]) is not first[1]


def test_kernels_up_to_the_keyed_size_are_cached_and_larger_ones_planned_anew():
    from gpuconv import _plan

    image = np.zeros((4, 4), np.float32)
    largest = np.ones((1, _plan._KEYED_KERNEL_TAPS))
    assert plan_of(image, largest) is plan_of(image, largest.copy())
    too_large = np.ones((1, _plan._KEYED_KERNEL_TAPS + 1))
    assert plan_of(image, too_large) is not plan_of(image, too_large)
    one_tap = np.array([[2.0]])
    assert plan_of(image, one_tap) is plan_of(image, one_tap.copy())


def test_an_unhashable_argument_gets_the_validation_error_not_a_cache_error():
    image = np.zeros((4, 4), np.uint8)
    for _ in range(2):  # also once something is cached
        with pytest.raises(ValueError, match="unknown border"):
            gpuconv.convolve(image, "sharpen", border={})
        gpuconv.convolve(image, "sharpen")


def test_clear_plan_cache_forgets_every_plan():
    from gpuconv import _plan

    image = np.zeros((4, 4), np.uint8)
    before = plan_of(image, "sharpen")
    clear_plan_cache()
    assert len(_plan._PLANS) == 0
    assert plan_of(image, "sharpen") is not before


def test_the_planner_takes_array_likes_itself():
    # Dask's and the out-of-core adapters call make_plan directly, not through convolve.
    image3d, plan, library = make_plan([[1.0, 2.0], [3.0, 4.0]], "sharpen", **OPTIONS)
    assert library == "numpy" and isinstance(image3d, np.ndarray)
    assert plan.shape == (2, 2, 1) and plan.input_dtype == np.float64
