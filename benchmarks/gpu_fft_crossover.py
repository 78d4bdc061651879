"""Where an FFT beats the cuda backend's loops on a GPU (issue 11; measured, needs a GPU).

    PYTHONPATH=. python benchmarks/gpu_fft_crossover.py --sizes 2048,8192
    PYTHONPATH=. python benchmarks/gpu_fft_crossover.py --dry-run   # no GPU: plans only

For each image size, dtype and dense kernel (``randomN``: full rank, so neither the
separable nor the low-rank path applies), times with CUDA events (median of ``--repeats``
rounds of ``--batch`` back-to-back calls, after a warm-up):

- ``loops``: the cuda backend's direct kernel (its prepared launch);
- ``gpuconv FFT``: the backend's FFT path (:func:`gpuconv._backends.cuda.backend.run_fft`:
  overlap-save over :func:`gpuconv._fft.gpu_tile_shape`'s tiles, cuFFT);
- ``convolve``: the whole ``gpuconv.convolve`` call, on the path the cost model picks
  (named in the line: ``fft`` or ``loops``);
- ``whole-image FFT``: one padded ``rfft2``/``irfft2`` of the whole image with CuPy, the
  reflect101 border by ``cupy.pad``: the floor an FFT path could reach (float32 only);

and the largest difference of each result from the loops' result, against the contract's
tolerance (float32 output: ``1e-5 * max|output|``; uint8: one grey level). Prints one line
per cell and, with ``--json``, writes them.
"""

from __future__ import annotations

import argparse
import itertools
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


def _plan(host, kernel):
    """The plan every row times: the defaults of ``gpuconv.convolve`` (reflect101)."""
    from gpuconv._plan import make_plan

    options = dict(border="reflect101", value=0.0, anchor=None, flip=False, dtype=None)
    return make_plan(host, kernel, **options)[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2048,8192")
    parser.add_argument("--kernels", default=",".join(KERNELS))
    parser.add_argument("--dtypes", default="float32,uint8")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=3)
    parser.add_argument("--json")
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    from gpuconv import bench

    sizes = [int(s) for s in args.sizes.split(",")]
    dtypes = args.dtypes.split(",")
    kernels = bench.bench_kernels(args.kernels.split(","))
    if args.dry_run:
        for size, dtype in itertools.product(sizes, dtypes):
            host = bench.bench_image(size, dtype)
            for name, kernel in kernels.items():
                _plan(host, kernel)
                print(f"{size} {dtype} {name}: planned")
        return 0
    import cupy
    import cupyx.scipy.fft as fft

    import gpuconv
    from gpuconv._backends.cuda import backend as _cuda
    from gpuconv.bench._cuda import _time_ms

    rows = []
    device = cupy.cuda.runtime.getDevice()
    for size, dtype in itertools.product(sizes, dtypes):
        host = bench.bench_image(size, dtype)
        image = cupy.asarray(host)
        for name, kernel in kernels.items():
            plan = _plan(host, kernel)
            image3d = image.reshape(plan.shape)
            prepared = _cuda.prepared_launch(plan, device)
            loops_output = cupy.empty(plan.shape, plan.output_dtype)
            chosen = "fft" if _cuda.takes_fft(plan) else "loops"
            calls = {
                "loops": lambda p=prepared, i=image3d, o=loops_output: p(i, o) or o,
                "gpuconv FFT": lambda i=image3d, p=plan: _cuda.run_fft(i, p, cupy, cupy.fft),
                f"convolve ({chosen})": lambda i=image, k=kernel: gpuconv.convolve(
                    i, k, backend="cuda"
                ),
            }
            if dtype == "float32":
                calls["whole-image FFT"] = lambda i=image, k=kernel: _whole_image_fft(
                    cupy, fft, i, k
                )
            reference = cupy.asarray(calls["loops"](), dtype=cupy.float64)
            tolerance = 1.0 if dtype == "uint8" else 1e-5 * float(cupy.abs(reference).max())
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
                    "dtype": dtype,
                    "kernel": name,
                    "method": method,
                    "ms": milliseconds,
                    "max_difference": difference,
                    "tolerance": tolerance,
                }
                rows.append(row)
                print(
                    f"{size} {dtype} {name} {method}: {milliseconds:.3f} ms, max difference "
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
