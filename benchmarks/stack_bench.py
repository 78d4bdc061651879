"""A stack of frames in one call against a Python loop of ``cv2.filter2D`` over the frames.

    python benchmarks/stack_bench.py [--frames 64] [--size 512] [--repeats 7]
        [--kernels sharpen small_blur] [--markdown benchmarks/results/stack-cpu-2core.md]

Same run, same process, same threads: for each kernel, ``--repeats`` rounds, each timing
one call of ``gpuconv.convolve(stack, kernel, axes=(1, 2), backend="numba")`` on an
``(N, H, W)`` uint8 stack, and of ``[cv2.filter2D(frame, -1, kernel) for frame in stack]``
(cv2 with its default threads), alternately; the speed-up is the median of the rounds'
ratios (load from other processes falls on both alike). Both results are checked equal before timing (integer
kernels: bit-identical; float kernels: the contract's one grey level). The cuda backend
is reported as the number of launches the stack takes (the emulator counts them; no GPU
needed), not timed.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import cv2
import numpy as np

import gpuconv
from gpuconv import kernels


def _interleaved_seconds(first, second, repeats: int):
    """Median seconds of each, and the median of the per-round ratios second / first.

    The two alternate, so that load from other processes on a shared machine falls on
    both alike; the ratio of each round is the robust figure.
    """
    first_times, second_times = [], []
    for _ in range(repeats):
        for function, times in ((first, first_times), (second, second_times)):
            start = time.perf_counter()
            function()
            times.append(time.perf_counter() - start)
    ratios = [b / a for a, b in zip(first_times, second_times)]
    return statistics.median(first_times), statistics.median(second_times), ratios


def _cuda_launches(stack: np.ndarray, kernel_name: str) -> str:
    """The launches of the cuda backend for the stack (launch arithmetic, no GPU)."""
    from gpuconv._backends.cuda import launch as cuda_launch
    from gpuconv._plan import make_plan
    from gpuconv._strategy import choose_strategy

    _, plan, _ = make_plan(
        stack,
        kernel_name,
        border="reflect101",
        value=0.0,
        anchor=None,
        flip=False,
        dtype=None,
        axes=(1, 2),
    )
    launch = cuda_launch.plan_launch(plan, choose_strategy(plan))
    count = 1 if launch.frames == plan.frames else plan.frames
    return f"{count} ({launch.template}, grid {launch.grid})"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--kernels", nargs="+", default=["sharpen", "small_blur"])
    parser.add_argument("--markdown", help="also write the table to this file")
    arguments = parser.parse_args(argv)

    import numba

    platform_name = f"; {platform.processor()}" if platform.processor() else ""
    rng = np.random.default_rng(0)
    stack = rng.integers(0, 256, (arguments.frames, arguments.size, arguments.size), np.uint8)
    header = (
        f"Stack of {arguments.frames} frames of {arguments.size} x {arguments.size} uint8, "
        f"median of {arguments.repeats}; {os.cpu_count()} CPUs, numba "
        f"{numba.__version__} with {numba.get_num_threads()} threads, cv2 "
        f"{cv2.__version__} with {cv2.getNumThreads()} threads; load average before the run "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} (a shared machine){platform_name}"
    )
    rows = [
        "| kernel | numba stack (ms) | cv2.filter2D loop (ms) | speed-up, median (quartiles) "
        "of interleaved rounds | cuda launches |",
        "|---|---|---|---|---|",
    ]
    for name in arguments.kernels:
        weights = kernels.get(name)

        def ours(name=name):
            return gpuconv.convolve(stack, name, axes=(1, 2), backend="numba")

        def loop(weights=weights):
            return np.stack([cv2.filter2D(frame, -1, weights) for frame in stack])

        difference = np.abs(ours().astype(np.int16) - loop().astype(np.int16))
        if difference.max() > 1:
            raise SystemExit(f"{name}: numba and cv2 differ by {difference.max()} levels")
        ours_seconds, loop_seconds, ratios = _interleaved_seconds(ours, loop, arguments.repeats)
        quartiles = statistics.quantiles(ratios, n=4)
        rows.append(
            f"| {name} | {ours_seconds * 1e3:.1f} | {loop_seconds * 1e3:.1f} | "
            f"{statistics.median(ratios):.2f}x ({quartiles[0]:.2f} - {quartiles[2]:.2f}) | "
            f"{_cuda_launches(stack, name)} |"
        )
    command = "python benchmarks/stack_bench.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    text = "\n".join([header, "", *rows, "", f"Command: `{command.strip()}`", ""])
    print(text)
    if arguments.markdown:
        with open(arguments.markdown, "w") as stream:
            stream.write("# A stack of frames: numba in one call vs a cv2.filter2D loop\n\n")
            stream.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
