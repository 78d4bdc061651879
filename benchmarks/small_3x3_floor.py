"""How fast a float32 3 x 3 filter of a small image can be on this machine (issue 14).

    NUMBA_NUM_THREADS=2 python benchmarks/small_3x3_floor.py [--sizes 256,512] [--repeats 400]

Issue 14 asks the numba backend for >= 0.7x ``cv2.filter2D`` at 256 x 256 and >= 1.0x at
512 x 512 on float32 3 x 3 kernels. This script times, on the threads the call takes (one
for small images), medians of ``--repeats`` calls (sharpen, interleaved with
``cv2.filter2D`` on 2 threads, the order turning every round:
``gpuconv.bench._sweep.interleaved_medians``):

- ``gpuconv``: ``gpuconv.convolve(image, "sharpen", backend="numba")``, the whole call;
- ``gpuconv 1 x 1``: the same on a 1 x 1 image: the fixed cost of a cached call;
- ``compiled loop``: the backend's band loop alone (what the call ran before the
  shifted-rows loop; it still runs where a NaN or inf meets a skipped zero tap);
- ``shifted rows``: the shifted-rows loop alone, what the call runs (2026-11-26: rows read
  in place, zero taps skipped with NaN and inf checked in the pass): serial on small images,
  ``kernels.shifted_rows_3x3_parallel`` where the call takes several threads (``--sizes
  1024,2048``: then both loops run on the call's threads, bands handed out one at a time);
- prototypes, not in the package, reading rows straight from the image (no line copies) and
  writing the interior only (the border rows and columns left out: a lower bound):
  ``finiteness pass`` (one pass flagging rows that hold NaN or inf: a zero tap may be skipped
  only on finite rows), ``five taps`` (sharpen's non-zero taps on finite rows) and ``nine
  taps`` (every tap, no flags needed: ``0 * NaN`` stays NaN).

What the figures said before the shifted-rows loop: the targets need both a loop near the
prototypes' speed and a fixed cost of a few microseconds (see the README's issue 14
section); the shifted-rows loop is that loop.
"""

from __future__ import annotations

import argparse

import numpy as np

_OPTIONS = dict(nogil=True, fastmath={"contract"}, error_model="numpy", cache=True)


def _prototypes():
    import numba

    @numba.njit(**_OPTIONS)
    def finite_rows(image, flags):
        height, width = image.shape
        for y in range(height):
            row = image[y]
            bad = 0
            for k in range(width):
                value = row[k]
                bad |= np.int32(not (value - value == 0))
            flags[y] = bad == 0

    @numba.njit(**_OPTIONS)
    def five_taps(image, output, weights, flags):
        height, width = image.shape
        w1, w3, w4, w5, w7 = weights[1], weights[3], weights[4], weights[5], weights[7]
        for y in range(1, height - 1):
            if not (flags[y - 1] and flags[y] and flags[y + 1]):
                continue  # the prototype leaves such rows to the nine-tap loop
            top, bottom = image[y - 1, 1 : width - 1], image[y + 1, 1 : width - 1]
            left, centre, right = image[y, : width - 2], image[y, 1 : width - 1], image[y, 2:]
            row = output[y, 1 : width - 1]
            for k in range(width - 2):
                row[k] = (
                    (w1 * top[k] + w3 * left[k]) + w4 * centre[k] + (w5 * right[k] + w7 * bottom[k])
                )

    @numba.njit(**_OPTIONS)
    def nine_taps(image, output, weights):
        height, width = image.shape
        w0, w1, w2, w3, w4, w5, w6, w7, w8 = (
            weights[0],
            weights[1],
            weights[2],
            weights[3],
            weights[4],
            weights[5],
            weights[6],
            weights[7],
            weights[8],
        )
        for y in range(1, height - 1):
            a0, b0, c0 = image[y - 1, : width - 2], image[y - 1, 1 : width - 1], image[y - 1, 2:]
            a1, b1, c1 = image[y, : width - 2], image[y, 1 : width - 1], image[y, 2:]
            a2, b2, c2 = image[y + 1, : width - 2], image[y + 1, 1 : width - 1], image[y + 1, 2:]
            row = output[y, 1 : width - 1]
            for k in range(width - 2):
                row[k] = (
                    (w0 * a0[k] + w1 * b0[k] + w2 * c0[k])
                    + (w3 * a1[k] + w4 * b1[k] + w5 * c1[k])
                    + (w6 * a2[k] + w7 * b2[k] + w8 * c2[k])
                )

    return finite_rows, five_taps, nine_taps


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="256,512")
    parser.add_argument("--repeats", type=int, default=400)
    args = parser.parse_args(argv)

    prototypes = _prototypes()
    print(f"sharpen, float32, medians of {args.repeats} calls, microseconds")
    for side in (int(s) for s in args.sizes.split(",")):
        cells = "  ".join(f"{name} {us:.1f}" for name, us in _time(side, args.repeats, prototypes))
        print(f"{side} x {side}: {cells}")
    return 0


def _time(side: int, repeats: int, prototypes) -> list[tuple[str, float]]:
    """``(name, median microseconds)`` of every call on a ``side`` x ``side`` image."""
    import cv2
    import numba

    import gpuconv
    from gpuconv import kernels
    from gpuconv._backends.numba import backend as numba_backend
    from gpuconv._plan import make_plan
    from gpuconv.bench._sweep import interleaved_medians

    finite_rows, five_taps, nine_taps = prototypes
    kernel = kernels.get("sharpen").astype(np.float32)
    weights = kernel.ravel().copy()
    tiny = np.ones((1, 1), np.float32)
    threads = numba.get_num_threads()
    image = np.random.default_rng(0).random((side, side)).astype(np.float32)
    output = np.empty_like(image)
    flags = np.ones(side, np.bool_)
    image3d, plan, _ = make_plan(
        image, kernel, border="reflect101", value=0.0, anchor=None, flip=False, dtype=None
    )
    run = numba_backend.cached_execution(plan, threads)
    function, arguments = run.compiled_loop
    pixels, frame_stride, row_stride = numba_backend.flat_rows(image3d[None])
    loop_output = np.empty((1, side, side), np.float32)

    def on_the_call_threads(loop, loop_arguments):
        # As the call runs a loop: on run.workers threads (the band loop sizes its scratch
        # for that many), bands handed out one at a time where there are several.
        numba.set_num_threads(run.workers)
        chunk_size = numba.set_parallel_chunksize(1) if run.workers > 1 else None
        try:
            loop(pixels, frame_stride, row_stride, loop_output, *loop_arguments)
        finally:
            if chunk_size is not None:
                numba.set_parallel_chunksize(chunk_size)
            numba.set_num_threads(threads)

    def compiled_loop():
        on_the_call_threads(function, arguments)

    shifted_function, shifted_arguments = run.shifted_rows_loop or (None, None)

    def shifted_rows_loop():
        on_the_call_threads(shifted_function, shifted_arguments)

    calls = {
        "cv2.filter2D": lambda: cv2.filter2D(image, -1, kernel, dst=output),
        "gpuconv": lambda: gpuconv.convolve(image, kernel, backend="numba"),
        "gpuconv 1 x 1": lambda: gpuconv.convolve(tiny, kernel, backend="numba"),
        "compiled loop": compiled_loop,
        **({"shifted rows": shifted_rows_loop} if shifted_function is not None else {}),
        "finiteness pass": lambda: finite_rows(image, flags),
        "five taps": lambda: five_taps(image, output, weights, flags),
        "nine taps": lambda: nine_taps(image, output, weights),
    }
    medians = interleaved_medians(calls, repeats=repeats, warmup=20)
    return [(name, milliseconds * 1e3) for name, milliseconds in medians.items()]


if __name__ == "__main__":
    raise SystemExit(main())
