"""Host time of a cached cuda-backend call before its kernel launch (no GPU needed).

    python benchmarks/host_overhead.py [--repeats 2000]
    python benchmarks/host_overhead.py --numba     # a whole cached 1 x 1 call on numba
                                                   # (uint8, float32; backend="numba",
                                                   # then "auto")

CuPy is replaced by a stand-in whose arrays are NumPy arrays and whose kernel launch only
records the clock, so the figure is the Python work ``gpuconv.convolve`` does before the
launch on a repeated call (validation, the plan, the prepared-launch lookup, the output
allocation, argument packing), measured on this machine's CPU. The GPU adds CuPy's own
launch cost (a few microseconds) on top. Prints the median and 90th percentile per stage.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
import types

import numpy as np


class _ClockKernel:
    """A stand-in for cupy.RawKernel: records when it was called."""

    max_dynamic_shared_size_bytes = 48 * 1024
    called_at = 0.0

    def __call__(self, grid, block, args, shared_mem=0):
        _ClockKernel.called_at = time.perf_counter()


def _stand_in_cupy():
    runtime = types.SimpleNamespace(
        getDevice=lambda: 0,
        getDeviceCount=lambda: 1,
        getDeviceProperties=lambda device_id: {"name": "CuPy stand-in"},
        cudaDevAttrMaxSharedMemoryPerBlockOptin=97,
        deviceGetAttribute=lambda attribute, device: 227 * 1024,
    )
    stream = types.SimpleNamespace(synchronize=lambda: None)

    class Device(contextlib.nullcontext):
        compute_capability = "90"
        id = 0

        def __init__(self, device_id=0):
            super().__init__()

    cuda = types.SimpleNamespace(runtime=runtime, Device=Device, get_current_stream=lambda: stream)
    return types.SimpleNamespace(
        cuda=cuda,
        asarray=np.asarray,
        ascontiguousarray=np.ascontiguousarray,
        empty=np.empty,
        asnumpy=np.asarray,
        __version__="stand-in",
    )


def measure(repeats: int, shape=(2048, 2048), kernel="sharpen") -> dict[str, list[float]]:
    """Microseconds per stage for ``repeats`` repeated calls (the first, uncached, dropped)."""
    sys.modules["cupy"] = _stand_in_cupy()
    from gpuconv._backends.cuda import backend as _cuda
    from gpuconv._backends.cuda import source as _cuda_source
    from gpuconv._convolve import convolve
    from gpuconv._plan import make_plan

    _cuda_source.cupy_function = lambda file_name, expression: _ClockKernel()
    image = np.zeros(shape, np.uint8)
    image3d, plan, _ = make_plan(
        image, kernel, border="reflect101", value=0.0, anchor=None, flip=False, dtype=None
    )
    stages = {"whole call to the launch": [], "backend only (plan given)": []}
    for repeat in range(repeats + 1):
        began = time.perf_counter()
        convolve(image, kernel, backend="cuda")
        whole = _ClockKernel.called_at - began
        began = time.perf_counter()
        _cuda.convolve(image3d, plan, "cupy")
        backend = _ClockKernel.called_at - began
        if repeat:
            stages["whole call to the launch"].append(whole * 1e6)
            stages["backend only (plan given)"].append(backend * 1e6)
    return stages


def numba_small_call(repeats: int, backend: str = "numba", dtype: str = "uint8") -> list[float]:
    """Microseconds of a repeated ``convolve`` of a 1 x 1 image on the numba backend
    (``backend="auto"``: the default call, which chooses numba once it is loaded). uint8
    runs the band loop (int16 lines); float32 the serial shifted-rows loop."""
    import gpuconv

    image = np.zeros((1, 1), dtype)
    gpuconv.convolve(image, "sharpen", backend="numba")  # compile, plan, cache
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        gpuconv.convolve(image, "sharpen", backend=backend)
        times.append((time.perf_counter() - began) * 1e6)
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2000)
    parser.add_argument(
        "--numba", action="store_true", help="instead: a whole 1 x 1 call on the numba backend"
    )
    args = parser.parse_args(argv)
    if args.numba:
        for dtype, backend in [(d, b) for d in ("uint8", "float32") for b in ("numba", "auto")]:
            values = sorted(numba_small_call(args.repeats, backend, dtype))
            p90 = values[int(0.9 * (len(values) - 1))]
            print(
                f"numba, 1 x 1 {dtype}, sharpen, cached call, backend={backend!r}: "
                f"median {statistics.median(values):.1f} us, p90 {p90:.1f} us "
                f"({args.repeats} calls)"
            )
        return 0
    import os

    os.environ.pop("GPUCONV_CUDA_EMULATOR", None)
    stages = measure(args.repeats)
    print(f"Host time before the kernel launch, cached call, {args.repeats} calls, CuPy stand-in:")
    for name, values in stages.items():
        values = sorted(values)
        p90 = values[int(0.9 * (len(values) - 1))]
        print(f"  {name}: median {statistics.median(values):.1f} us, p90 {p90:.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
