"""Where an FFT beats the cuda backend's loops on a GPU (issue 11; measured, needs a GPU).

    PYTHONPATH=. python benchmarks/gpu_fft_crossover.py --sizes 2048,8192
    PYTHONPATH=. python benchmarks/gpu_fft_crossover.py --dry-run   # no GPU: plans only

For each image size and each dense kernel (``randomN``: full rank, so neither the
separable nor the low-rank path applies) on a float32 image, times with CUDA events
(median of ``--repeats`` rounds of ``--batch`` back-to-back calls, after a warm-up):

- ``loops``: ``gpuconv.convolve(..., backend="cuda")`` (the path the cost model picks today);
- ``overlap-save``: :func:`gpuconv._fft.convolve_fft` with ``xp=cupy`` (tiles as on the CPU);
- ``whole-image FFT``: one padded ``rfft2``/``irfft2`` of the whole image with CuPy, the
  reflect101 border by ``cupy.pad``: the floor an FFT path could reach.

and the largest difference of each FFT result from the loops' result, against the
contract's float32 tolerance (``1e-5 * max|output|``). Prints one line per cell and, with
``--json``, writes them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

KERNELS = ("random9", "random15", "random21", "random31", "random45", "random63")


def _whole_image_fft(cupy, fft, image, kernel):
    """Correlation with reflect101 borders by one padded FFT of the whole image."""
    kh, kw = kernel.shape
    ay, ax = kh // 2, kw // 2
    padded = cupy.pad(image, ((ay, kh - 1 - ay), (ax, kw - 1 - ax)), mode="reflect")
    shape = tuple(fft.next_fast_len(n, real=True) for n in padded.shape)
    flipped = cupy.zeros(shape, dtype=image.dtype)
    flipped[:kh, :kw] = cupy.asarray(kernel[::-1, ::-1], dtype=image.dtype)
    product = fft.rfft2(padded, s=shape) * fft.rfft2(flipped)
    full = fft.irfft2(product, s=shape)
    return full[kh - 1 : kh - 1 + image.shape[0], kw - 1 : kw - 1 + image.shape[1]]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2048,8192")
    parser.add_argument("--kernels", default=",".join(KERNELS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=3)
    parser.add_argument("--json")
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    from gpuconv import bench
    from gpuconv._plan import make_plan

    sizes = [int(s) for s in args.sizes.split(",")]
    kernels = bench.bench_kernels(args.kernels.split(","))
    if args.dry_run:
        for size in sizes:
            host = bench.bench_image(size, "float32")
            for name, kernel in kernels.items():
                make_plan(
                    host,
                    kernel,
                    border="reflect101",
                    value=0.0,
                    anchor=None,
                    flip=False,
                    dtype=None,
                )
                print(f"{size} {name}: planned")
        return 0
    import cupy
    import cupyx.scipy.fft as fft

    import gpuconv
    from gpuconv import _fft
    from gpuconv.bench._cuda import _time_ms

    rows = []
    for size in sizes:
        host = bench.bench_image(size, "float32")
        image = cupy.asarray(host)
        for name, kernel in kernels.items():
            _, plan, _ = make_plan(
                host, kernel, border="reflect101", value=0.0, anchor=None, flip=False, dtype=None
            )
            image3d = image.reshape(plan.shape)
            calls = {
                "loops": lambda i=image, k=kernel: gpuconv.convolve(i, k, backend="cuda"),
                "overlap-save": lambda i=image3d, p=plan: _fft.convolve_fft(i, p, xp=cupy, fft=fft),
                "whole-image FFT": lambda i=image, k=kernel: _whole_image_fft(cupy, fft, i, k),
            }
            reference = cupy.asarray(calls["loops"](), dtype=cupy.float64)
            tolerance = 1e-5 * float(cupy.abs(reference).max())
            for method, call in calls.items():
                result = call()
                difference = (
                    None
                    if result is None
                    else float(
                        cupy.abs(
                            cupy.asarray(result, cupy.float64).reshape(reference.shape) - reference
                        ).max()
                    )
                )
                milliseconds = statistics.median(
                    _time_ms(cupy, call, args.repeats, warmup=1, batch=args.batch)
                )
                row = {
                    "size": size,
                    "kernel": name,
                    "method": method,
                    "ms": milliseconds,
                    "max_difference": difference,
                    "tolerance": tolerance,
                }
                rows.append(row)
                print(
                    f"{size} {name} {method}: {milliseconds:.3f} ms, max difference "
                    f"{difference if difference is None else f'{difference:.3g}'} "
                    f"(tolerance {tolerance:.3g})",
                    flush=True,
                )
            cupy.get_default_memory_pool().free_all_blocks()
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(
                {"device": cupy.cuda.runtime.getDeviceProperties(0)["name"].decode(), "rows": rows},
                handle,
                indent=1,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
