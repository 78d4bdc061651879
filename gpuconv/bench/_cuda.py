"""Device-resident timing of the cuda backend: ``gpuconv bench --backend cuda``.

Images live on the GPU (CuPy arrays). Every cell is timed with CUDA events on
CuPy's current stream around :data:`BATCH` back-to-back calls (so the start
event does not wait through one call's host work), after warm-up (first calls
compile kernels); the median over ``repeats`` batches, per call. gpuconv gets
two rows: ``gpuconv:cuda`` is the whole ``gpuconv.convolve`` call (validation,
the cached launch, the output allocation), ``gpuconv:cuda kernel`` the kernel
alone (back-to-back launches of the prepared launch). Against:

- ``cupyx.scipy.ndimage.correlate`` (mode ``"mirror"`` = reflect101);
- ``torch.nn.functional.conv2d`` on CUDA tensors (float32 images only: torch has
  no uint8 convolution on the GPU), padding included, where torch is installed;
- a device-to-device copy of the same image: the memory bandwidth a
  memory-bound filter can at best reach.

For each cell it prints the time, the achieved bandwidth (image bytes read plus
output bytes written, divided by the time), the fraction of the copy's
bandwidth and, for every kernel, the achieved rate of multiply-adds counted as
2 FLOP per tap per pixel.

The pure arithmetic (bytes, rates, the table) is importable without a GPU.
"""

from __future__ import annotations

import functools
import json
import math
import statistics
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ._inputs import bench_image, bench_kernels

#: Always timed on top of the requested kernels (the issue's targets name it).
EXTRA_KERNELS = ("random21",)


@dataclass
class CudaMeasurement:
    """One timed cell: an implementation on one image and kernel."""

    implementation: str
    kernel: str
    kernel_shape: tuple[int, int]
    shape: tuple[int, ...]
    dtype: str
    median_ms: float
    gb_per_s: float
    copy_fraction: float | None
    gflop_per_s: float


def bytes_moved(shape, input_dtype, output_dtype=None) -> int:
    """Bytes a filter must at least read (the image) and write (the output)."""
    pixels = math.prod(shape)
    output_dtype = input_dtype if output_dtype is None else output_dtype
    return pixels * (np.dtype(input_dtype).itemsize + np.dtype(output_dtype).itemsize)


def gigabytes_per_second(nbytes: int, milliseconds: float) -> float:
    """Achieved bandwidth in GB/s (10**9 bytes)."""
    return nbytes / (milliseconds * 1e-3) / 1e9


def gigaflops(shape, kernel_shape, milliseconds: float) -> float:
    """Multiply-add rate: 2 FLOP per kernel tap per output pixel, in GFLOP/s."""
    taps = kernel_shape[0] * kernel_shape[1]
    return 2.0 * taps * math.prod(shape) / (milliseconds * 1e-3) / 1e9


def make_measurement(
    implementation,
    kernel_name,
    kernel_shape,
    shape,
    dtype,
    times_ms,
    copy_gb_per_s,
    output_dtype=None,
) -> CudaMeasurement:
    """Summarise the times of one cell (median) into a :class:`CudaMeasurement`."""
    median = statistics.median(times_ms)
    bandwidth = gigabytes_per_second(bytes_moved(shape, dtype, output_dtype), median)
    return CudaMeasurement(
        implementation=implementation,
        kernel=kernel_name,
        kernel_shape=tuple(kernel_shape),
        shape=tuple(shape),
        dtype=str(np.dtype(dtype)),
        median_ms=median,
        gb_per_s=bandwidth,
        copy_fraction=bandwidth / copy_gb_per_s if copy_gb_per_s else None,
        gflop_per_s=gigaflops(shape, kernel_shape, median),
    )


def format_cuda_table(rows: list[CudaMeasurement]) -> str:
    """A Markdown table, one row per measurement."""
    lines = [
        "| image | kernel | implementation | ms | GB/s | of copy | GFLOP/s |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        fraction = "-" if row.copy_fraction is None else f"{row.copy_fraction:.0%}"
        image = "x".join(map(str, row.shape)) + f" {row.dtype}"
        lines.append(
            f"| {image} | {row.kernel} {row.kernel_shape[0]}x{row.kernel_shape[1]} | "
            f"{row.implementation} | {row.median_ms:.3f} | {row.gb_per_s:.1f} | {fraction} | "
            f"{row.gflop_per_s:.0f} |"
        )
    return "\n".join(lines)


def speedups(rows: list[CudaMeasurement], baseline: str, subject: str = "gpuconv:cuda"):
    """``{(shape, dtype, kernel): baseline time / subject time}`` where both were timed."""
    times = {(r.implementation, r.shape, r.dtype, r.kernel): r.median_ms for r in rows}
    result = {}
    for (name, shape, dtype, kernel), milliseconds in times.items():
        if name == subject and (baseline, shape, dtype, kernel) in times:
            result[(shape, dtype, kernel)] = times[(baseline, shape, dtype, kernel)] / milliseconds
    return result


def geometric_mean(values) -> float:
    values = list(values)
    return math.exp(sum(map(math.log, values)) / len(values)) if values else float("nan")


# ---------------------------------------------------------------------------- on the GPU


def _gpu_reason() -> str | None:
    from .._backends.cuda import backend as _cuda

    if _cuda.is_emulated():
        return f"{_cuda.EMULATOR_VARIABLE} is set: the cuda backend is the CPU emulator"
    return _cuda.probe()


#: Calls between the two events of one timed batch.
BATCH = 10


def _time_ms(cupy, function, repeats: int, warmup: int, batch: int = BATCH) -> list[float]:
    """Per-call milliseconds of ``repeats`` batches of ``batch`` back-to-back calls."""
    for _ in range(max(warmup, 1)):  # at least one: the first call compiles
        function()
    cupy.cuda.get_current_stream().synchronize()
    start, end = cupy.cuda.Event(), cupy.cuda.Event()
    times = []
    for _ in range(repeats):
        start.record()
        for _ in range(batch):
            function()
        end.record()
        end.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, end) / batch)
    return times


def _kernel_only(cupy, image, kernel):
    """A callable that runs the prepared (cached) launches of ``convolve(image, kernel)``.

    A low-rank plan runs its term launches, their sum and the store (the device work of the
    whole call, without its host checks); a plan the FFT takes its transforms (cuFFT);
    any other plan its one launch.
    """
    from .. import _fft
    from .._backends.cuda import backend as _cuda
    from .._plan import make_plan

    image3d, plan, _ = make_plan(
        image, kernel, border="reflect101", value=0.0, anchor=None, flip=False, dtype=None
    )
    device_id = cupy.cuda.runtime.getDevice()
    device_image = cupy.ascontiguousarray(image3d)
    lowrank = _cuda.prepared_lowrank(plan, device_id)
    if lowrank is not None:  # what convolve runs for the plan: the same helper
        terms = lowrank[0]
        names = ", ".join(term.launch.name_expression for term in terms)
        call = functools.partial(_cuda.run_lowrank, device_image, plan, lowrank, cupy)
        return call, f"low-rank, {len(terms)} terms: {names}"
    if _cuda.takes_fft(plan):
        tile_y, tile_x = _fft.gpu_tile_shape(plan)
        call = functools.partial(_cuda.run_fft, device_image, plan, cupy, cupy.fft)
        return call, f"FFT, tiles {tile_y} x {tile_x} (cuFFT)"
    prepared = _cuda.prepared_launch(plan, device_id)
    output = cupy.empty(plan.shape, dtype=plan.output_dtype)
    return functools.partial(prepared, device_image, output), prepared.launch.name_expression


def _peers(cupy, dtype):
    """name -> callable(device image, kernel) for the GPU peers that run here."""
    from cupyx.scipy import ndimage

    peers = {
        "cupyx.scipy.ndimage.correlate": lambda image, kernel: ndimage.correlate(
            image,
            cupy.asarray(kernel, dtype=np.float64 if dtype == np.float64 else np.float32),
            mode="mirror",
        )
    }
    if np.dtype(dtype) == np.float32:
        try:
            import torch
            from torch.nn import functional

            if torch.cuda.is_available():

                def torch_conv2d(image, kernel):
                    planes = torch.as_tensor(image, device="cuda")[None, None]
                    weights = torch.as_tensor(np.asarray(kernel, np.float32), device="cuda")
                    kh, kw = kernel.shape
                    ax, ay = kw // 2, kh // 2
                    padded = functional.pad(
                        planes, (ax, kw - 1 - ax, ay, kh - 1 - ay), mode="reflect"
                    )
                    return functional.conv2d(padded, weights[None, None])

                peers["torch.conv2d"] = torch_conv2d
        except ImportError:
            pass
    return peers


def run_cuda_benchmark(args) -> int:
    """Time the cuda backend and its GPU peers; print the table; return an exit code.

    ``args`` carries ``sizes``, ``dtypes``, ``kernels``, ``repeats``, ``warmup``
    and ``json`` (see :func:`gpuconv.bench.add_arguments`). With ``json`` set,
    the measurements go to ``<json>.cuda.json`` beside it. Returns 1, after
    saying why on stderr, when no GPU is usable here.
    """
    reason = _gpu_reason()
    if reason is not None:
        print(f"gpuconv bench --backend cuda: no GPU: {reason}", file=sys.stderr)
        return 1
    import cupy

    import gpuconv

    from .._backends.cuda import backend as _cuda

    names = list(dict.fromkeys([*args.kernels, *EXTRA_KERNELS]))
    chosen = bench_kernels(names)
    rows: list[CudaMeasurement] = []
    for size in args.sizes:
        for dtype in args.dtypes:
            image = cupy.asarray(bench_image(size, dtype))
            copy_target = cupy.empty_like(image)
            copy_times = _time_ms(
                cupy, functools.partial(cupy.copyto, copy_target, image), args.repeats, args.warmup
            )
            copy_row = make_measurement(
                "device copy", "copy", (1, 1), image.shape, dtype, copy_times, None
            )
            rows.append(copy_row)
            print(f"{size}x{size} {dtype}: copy {copy_row.gb_per_s:.0f} GB/s", file=sys.stderr)
            peers = _peers(cupy, dtype)
            for kernel_name, kernel in chosen.items():
                kernel_call, _ = _kernel_only(cupy, image, kernel)
                calls = {
                    "gpuconv:cuda": functools.partial(
                        gpuconv.convolve, image, kernel, backend="cuda"
                    ),
                    "gpuconv:cuda kernel": kernel_call,
                }
                calls.update(
                    {name: functools.partial(peer, image, kernel) for name, peer in peers.items()}
                )
                for name, call in calls.items():
                    times = _time_ms(cupy, call, args.repeats, args.warmup)
                    rows.append(
                        make_measurement(
                            name,
                            kernel_name,
                            kernel.shape,
                            image.shape,
                            dtype,
                            times,
                            copy_row.gb_per_s,
                        )
                    )
    text = format_cuda_table(rows)
    for peer in ("cupyx.scipy.ndimage.correlate", "torch.conv2d"):
        ratios = speedups(rows, peer)
        if ratios:
            text += (
                f"\n\ngpuconv:cuda vs {peer}: geometric mean speed-up "
                f"{geometric_mean(ratios.values()):.2f}x over {len(ratios)} cells, "
                f"slowest {min(ratios.values()):.2f}x"
            )
    device = _cuda.describe()
    print(
        f"\nCUDA events around {BATCH} back-to-back calls, median of {args.repeats} batches "
        f"after {max(args.warmup, 1)} warm-up call(s), device-resident CuPy arrays; {device}\n"
    )
    print(text)
    if getattr(args, "json", None):
        path = Path(args.json).with_suffix(".cuda.json")
        record = {
            "device": device,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "measurements": [asdict(row) for row in rows],
        }
        path.write_text(json.dumps(record, indent=1))
        print(f"CUDA measurements written to {path}")
    return 0
