"""Which CPU FFT library transforms fastest here: the floor under the FFT path (issue 11).

    python benchmarks/fft_libraries.py [--size 2048] [--kernel 31] [--repeats 15]
        [--threads 2] [--output benchmarks/results/fft-libraries-2core.md]

One whole-image FFT correlation, the least any overlap-save FFT path can do: the image
zero-padded to a fast square size, a real forward transform, the product with a cached
kernel spectrum and the real inverse, in float32 on ``--threads`` threads, for every
library that imports here (``scipy.fft``, ``ducc0``, ``pyfftw``, ``mkl_fft``; the rest are
listed as missing), beside ``cv2.filter2D`` and ``gpuconv.convolve`` (numba backend) on the
same image and a random kernel, interleaved, medians of ``--repeats``. ``gpuconv`` at 3x
``cv2.filter2D`` needs the whole call in a third of OpenCV's time: a transform pair slower
than that rules the target out with that library, whatever the tiling around it.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time

import numpy as np


def _libraries(threads: int):
    """name -> (forward, inverse) for each library that imports; name -> None otherwise."""
    found = {}
    try:
        import scipy.fft

        found["scipy.fft"] = (
            lambda a: scipy.fft.rfft2(a, workers=threads),
            lambda f, s: scipy.fft.irfft2(f, s=s, workers=threads, overwrite_x=True),
        )
    except ImportError:
        found["scipy.fft"] = None
    try:
        import ducc0

        found["ducc0"] = (
            lambda a: ducc0.fft.r2c(a, axes=(0, 1), nthreads=threads),
            lambda f, s: ducc0.fft.c2r(
                f,
                axes=(0, 1),
                lastsize=s[1],
                forward=False,
                inorm=2,
                nthreads=threads,
                allow_overwriting_input=True,
            ),
        )
    except ImportError:
        found["ducc0"] = None
    try:
        import pyfftw
        import pyfftw.interfaces.numpy_fft as fftw

        pyfftw.interfaces.cache.enable()
        found["pyfftw"] = (
            lambda a: fftw.rfft2(a, threads=threads, planner_effort="FFTW_MEASURE"),
            lambda f, s: fftw.irfft2(f, s=s, threads=threads, planner_effort="FFTW_MEASURE"),
        )
    except ImportError:
        found["pyfftw"] = None
    try:
        import mkl_fft

        found["mkl_fft"] = (lambda a: mkl_fft.rfft2(a), lambda f, s: mkl_fft.irfft2(f, s=s))
    except ImportError:
        found["mkl_fft"] = None
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--kernel", type=int, default=31)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    os.environ.setdefault("MKL_NUM_THREADS", str(args.threads))

    rng = np.random.default_rng(0)
    image = rng.random((args.size, args.size), dtype=np.float32)
    kernel = rng.normal(size=(args.kernel, args.kernel)).astype(np.float32)
    # Fast square sizes for the padded image: 2-3-5(-7)-smooth lengths just above it.
    needed = args.size + args.kernel - 1
    sizes = [n for n in range(needed, needed + needed // 8) if _smooth(n)][:4]

    calls = {}
    libraries = _libraries(args.threads)
    for name, pair in libraries.items():
        if pair is None:
            continue
        forward, inverse = pair
        for side in sizes:
            padded = np.zeros((side, side), np.float32)
            padded[: args.size, : args.size] = image
            kernel_padded = np.zeros((side, side), np.float32)
            kernel_padded[: args.kernel, : args.kernel] = kernel
            spectrum = np.conj(forward(kernel_padded)).astype(np.complex64)

            def call(forward=forward, inverse=inverse, padded=padded, spectrum=spectrum, s=side):
                product = forward(padded)
                product *= spectrum
                return inverse(product, (s, s))

            calls[f"{name} {side} x {side}"] = call
    try:
        import cv2

        cv2.setNumThreads(args.threads)
        calls["cv2.filter2D (whole call)"] = lambda: cv2.filter2D(image, -1, kernel)
    except ImportError:
        pass
    try:
        import gpuconv

        calls["gpuconv numba (whole call)"] = lambda: gpuconv.convolve(
            image, kernel, backend="numba"
        )
    except Exception:  # numba missing: the transforms alone still answer
        pass

    # The loop of gpuconv.bench._sweep.interleaved_medians, written out: this script also
    # runs where gpuconv does not import (an environment holding only mkl_fft and OpenCV).
    times = {name: [] for name in calls}
    for call in calls.values():
        call()
    names = list(calls)
    for repeat in range(args.repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(samples) * 1e3 for name, samples in times.items()}

    lines = [
        "# CPU FFT libraries: one whole-image FFT correlation against cv2.filter2D",
        "",
        "Command: `python benchmarks/fft_libraries.py "
        + " ".join(argv if argv is not None else sys.argv[1:])
        + "`",
        "",
        f"Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC. Machine: "
        f"{platform.machine()}, {os.cpu_count()} logical CPUs, Python "
        f"{platform.python_version()}; load average at start "
        + " ".join(f"{x:.2f}" for x in os.getloadavg())
        + f"; {args.threads} threads. Image {args.size} x {args.size} float32, random "
        f"{args.kernel} x {args.kernel} kernel; median of {args.repeats} interleaved rounds.",
        "",
        "| what | ms | cv2.filter2D / this |",
        "|---|---:|---:|",
    ]
    reference = medians.get("cv2.filter2D (whole call)")
    for name, ms in medians.items():
        ratio = f"{reference / ms:.2f}" if reference else ""
        lines.append(f"| {name} | {ms:.1f} | {ratio} |")
    missing = [name for name, pair in libraries.items() if pair is None]
    if missing:
        lines += ["", "Not importable here: " + ", ".join(missing) + "."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output:
        with open(args.output, "w") as handle:
            handle.write(text)
    return 0


def _smooth(n: int) -> bool:
    for prime in (2, 3, 5, 7):
        while n % prime == 0:
            n //= prime
    return n == 1


if __name__ == "__main__":
    raise SystemExit(main())
