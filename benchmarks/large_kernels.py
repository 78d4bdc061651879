"""Issue 11's acceptance figures: three large kernels against cv2.filter2D, and peak memory.

    PYTHONPATH=. python benchmarks/large_kernels.py [--repeats 7] [--json PATH]

1. numba backend (``backend="numba"``, the path its cost model chooses) against
   ``cv2.filter2D`` at 2048 x 2048, interleaved in one run, median of ``--repeats``:
   random 31 x 31 on float32, a 25 x 25 difference of Gaussians on float32, a disk of
   radius 15 (31 x 31) on uint8;
2. the peak resident memory of one ``convolve`` call on an 8192 x 8192 float32 image with
   a random 63 x 63 kernel, measured in a fresh process (``ru_maxrss`` before and after
   the call; numba compiled beforehand on a small image, so JIT memory is not counted),
   against the image's and the output's bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

_MEMORY_CHILD = r"""
import resource, sys, numpy as np, gpuconv
from gpuconv.bench._inputs import bench_kernels
side = int(sys.argv[1])
kernel = bench_kernels(["random63"])["random63"]
gpuconv.convolve(np.ones((300, 300), np.float32), kernel, backend="numba")  # compile, cache
image = np.random.default_rng(0).random((side, side), dtype=np.float32)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
output = gpuconv.convolve(image, kernel, backend="numba")
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(before, after, image.nbytes, output.nbytes)
"""


def speed(repeats: int) -> list[dict]:
    import cv2

    import gpuconv
    from gpuconv._backends.numba import backend as numba_backend
    from gpuconv._plan import make_plan
    from gpuconv.bench._inputs import bench_image, bench_kernels

    cases = [("random31", "float32"), ("dog25", "float32"), ("disk15", "uint8")]
    rows = []
    for name, dtype in cases:
        image = bench_image(2048, dtype)
        kernel = bench_kernels([name])[name]
        _, plan, _ = make_plan(
            image, kernel, border="reflect101", value=0.0, anchor=None, flip=False, dtype=None
        )
        import numba

        path = numba_backend.cached_execution(plan, numba.get_num_threads()).path_name
        calls = {
            "cv2.filter2D": lambda image=image, kernel=kernel: cv2.filter2D(image, -1, kernel),
            "gpuconv:numba": lambda image=image, kernel=kernel: gpuconv.convolve(
                image, kernel, backend="numba"
            ),
        }
        for call in calls.values():
            call()
        times: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(repeats):
            for label, call in calls.items():
                start = time.perf_counter()
                call()
                times[label].append(time.perf_counter() - start)
        medians = {label: statistics.median(samples) * 1e3 for label, samples in times.items()}
        rows.append(
            {
                "kernel": name,
                "image": f"2048x2048 {dtype}",
                "path": path,
                "ms": medians,
                "x_vs_cv2": medians["cv2.filter2D"] / medians["gpuconv:numba"],
            }
        )
        print(
            f"{name:9s} {dtype:8s} path={path:9s} gpuconv {medians['gpuconv:numba']:7.1f} ms  "
            f"cv2 {medians['cv2.filter2D']:7.1f} ms  x{rows[-1]['x_vs_cv2']:.2f}",
            flush=True,
        )
    return rows


def memory(side: int = 8192) -> dict:
    completed = subprocess.run(
        [sys.executable, "-c", _MEMORY_CHILD, str(side)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ},
    )
    before, after, image_bytes, output_bytes = map(int, completed.stdout.split()[-4:])
    extra = after - before  # the call's growth of the peak: output plus scratch
    record = {
        "side": side,
        "image_mib": image_bytes / 2**20,
        "output_mib": output_bytes / 2**20,
        "peak_growth_mib": extra / 2**20,
        "scratch_mib": (extra - output_bytes) / 2**20,
        "image_plus_call_over_image_plus_output": (image_bytes + extra)
        / (image_bytes + output_bytes),
    }
    print(
        f"{side}x{side} float32, random 63x63: image {record['image_mib']:.0f} MiB, output "
        f"{record['output_mib']:.0f} MiB, peak RSS grew {record['peak_growth_mib']:.0f} MiB "
        f"during the call (scratch {record['scratch_mib']:.0f} MiB beyond the output); "
        f"(image + growth) / (image + output) = "
        f"{record['image_plus_call_over_image_plus_output']:.2f}",
        flush=True,
    )
    return record


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--no-memory", action="store_true")
    args = parser.parse_args(argv)
    record = {
        "command": " ".join(sys.argv),
        "load_average": os.getloadavg(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "speed": speed(args.repeats),
        "memory": None if args.no_memory else memory(),
        "numpy": np.__version__,
    }
    print(f"load average {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(record, handle, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
