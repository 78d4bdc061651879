"""Many Python threads calling ``convolve`` at once get their own right answers.

Users call gpuconv from thread pools (Dask's threaded scheduler, web servers,
``concurrent.futures``). Each thread's result must equal the same call made
alone, whatever the others do: the plan cache, numba's execution cache and
thread settings, and the CUDA launch cache are shared between threads. A
deadlock fails the test after a timeout instead of hanging the suite.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

import gpuconv

THREADS = 8
CALLS_PER_THREAD = 6
DEADLINE_SECONDS = 300

# Different plans (kernel shape, dtype, border, strategy) and repeats of the same plan.
_CASES = [
    ("sharpen", "uint8", "reflect"),
    ("small_blur", "uint8", "constant"),
    ("sobel_x", "float32", "replicate"),
    ("random", "float32", "wrap"),
    ("sharpen", "int16", "reflect"),
    ("laplacian", "uint16", "reflect"),
]


def _inputs(side: int):
    rng = np.random.default_rng(7)
    images = {
        dtype: (rng.random((side, side)) * (200 if dtype != "float32" else 1)).astype(dtype)
        for dtype in ("uint8", "float32", "int16", "uint16")
    }
    kernels = {"random": rng.standard_normal((5, 7)).astype(np.float32)}
    return images, kernels


def test_concurrent_calls_from_python_threads_match_calls_made_alone(backend):
    # Large enough that numba splits each call across its threads; the emulator is slow.
    side = 64 if backend.emulated else 1024
    images, kernels = _inputs(side)

    def call(case):
        name, dtype, border = case
        return backend.convolve(images[dtype], kernels.get(name, name), border=border)

    alone = [call(case) for case in _CASES]
    results: dict[tuple[int, int], np.ndarray] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def worker(thread: int) -> None:
        try:
            start.wait()  # every thread calls at once
            for k in range(CALLS_PER_THREAD):
                index = (thread + k) % len(_CASES)
                results[thread, k] = call(_CASES[index])
        except BaseException as error:  # noqa: BLE001 (reported below)
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE_SECONDS)
    assert not any(thread.is_alive() for thread in threads), "a call never returned (deadlock?)"
    assert not errors, errors
    assert len(results) == THREADS * CALLS_PER_THREAD
    for (thread, k), result in results.items():
        expected = alone[(thread + k) % len(_CASES)]
        assert result.dtype == expected.dtype
        np.testing.assert_array_equal(result, expected)


def test_numba_thread_count_is_restored_for_every_calling_thread():
    numba = pytest.importorskip("numba", reason="numba's thread count is numba's")
    if not gpuconv.backends()["numba"].available:
        pytest.skip("backend 'numba' is not available here")
    image = np.zeros((4, 4), np.uint8)  # small: the call runs on one thread
    seen: list[int] = []

    def worker() -> None:
        before = numba.get_num_threads()
        gpuconv.convolve(image, "sharpen", backend="numba")
        seen.append(numba.get_num_threads() - before)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert seen == [0, 0, 0, 0]
