"""Kernel-only GPU timings of the cuda backend, for the performance model's cases.

Each case is planned once (the same launch ``gpuconv.convolve`` would make) and then
launched back to back between two CUDA events, so host work (planning, argument
packing) stays out of the figure; a device-to-device copy of the same bytes is timed
the same way. Also the whole ``gpuconv.convolve`` call (host clock, synchronised).

    PYTHONPATH=. python benchmarks/gpu_kernel_times.py --size 8192 --json times.json

Needs a CUDA GPU and CuPy. Prints a Markdown table; every figure is *measured*.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np

CASES = [  # (kernel, dtype, channels)
    *((k, "uint8", 1) for k in ("sharpen", "laplacian", "sobel_x", "small_blur", "large_blur")),
    *((k, "float32", 1) for k in ("sharpen", "laplacian", "sobel_x", "small_blur", "large_blur")),
    *((k, "uint8", 3) for k in ("sharpen", "small_blur", "large_blur")),
    ("sharpen", "float32", 3),
    ("sharpen", "uint16", 1),
    ("gaussian5", "float32", 1),
    ("random5", "uint8", 1),
    ("random7", "float32", 1),
    ("random15", "float32", 1),
    ("random21", "float32", 1),
]


def _events_ms(cupy, function, launches: int, rounds: int) -> float:
    """Median over ``rounds`` of the per-launch time of ``launches`` back-to-back calls."""
    from gpuconv.bench._cuda import _time_ms  # the one event-timing loop

    return statistics.median(_time_ms(cupy, function, rounds, warmup=1, batch=launches))


def prepared(image, kernel, legacy=False, newest=True):
    """A zero-argument function that launches what ``convolve(image, kernel)`` would.

    ``legacy``: the shared-memory kernels, as before the register-window kernels;
    ``newest=False``: gpuconv_window, gpuconv_box and the separable kernels where
    gpuconv_window_dp4a, gpuconv_box_packed and gpuconv_box_float would run (the kernels
    they replaced).
    """
    import cupy

    from gpuconv._backends.cuda import backend as _cuda
    from gpuconv._backends.cuda import launch as _cuda_launch
    from gpuconv._backends.cuda import source as _cuda_source
    from gpuconv._plan import make_plan
    from gpuconv._strategy import choose_strategy

    image3d, plan, _ = make_plan(
        image, kernel, border="reflect101", value=0.0, anchor=None, flip=False, dtype=None
    )
    device_id = cupy.cuda.runtime.getDevice()
    launch = _cuda_launch.plan_launch(
        plan,
        choose_strategy(plan),
        _cuda._device_limits(device_id),
        window=not legacy,
        dp4a=newest,
        packed_box=newest,
        float_box=newest,
    )
    device_image = cupy.ascontiguousarray(image.reshape(plan.shape))
    output = cupy.empty(plan.shape, dtype=plan.output_dtype)
    weights = cupy.asarray(launch.weights)
    function = _cuda_source.cupy_function(launch.source_file, launch.name_expression)
    if launch.shared_bytes > 48 * 1024:
        function.max_dynamic_shared_size_bytes = launch.shared_bytes
    arguments = launch.arguments(device_image, output, weights)

    def launch_once():
        function(launch.grid, launch.block, arguments, shared_mem=launch.shared_bytes)

    return launch_once, launch.name_expression


def _dry_run(args) -> int:
    """Everything but the GPU: each case's image, plan and launches (window and legacy)."""
    from gpuconv import bench
    from gpuconv._backends.cuda import launch as _cuda_launch
    from gpuconv._plan import make_plan
    from gpuconv._strategy import choose_strategy

    planned = []
    for kernel_name, dtype, channels in CASES:
        kernel = bench.bench_kernels([kernel_name])[kernel_name]
        shape = (args.size, args.size) + ((channels,) if channels > 1 else ())
        image = np.lib.stride_tricks.as_strided(np.zeros(1, dtype), shape, (0,) * len(shape))
        _, plan, _ = make_plan(
            image, kernel, border="reflect101", value=0.0, anchor=None, flip=False, dtype=None
        )
        limits = _cuda_launch.DeviceLimits(227 * 1024)
        strategy = choose_strategy(plan)
        launches = [_cuda_launch.plan_launch(plan, strategy, limits)]
        replaced = _cuda_launch.plan_launch(
            plan, strategy, limits, dp4a=False, packed_box=False, float_box=False
        )
        if replaced.name_expression != launches[0].name_expression:
            launches.append(replaced)
        if args.legacy:
            launches.append(_cuda_launch.plan_launch(plan, strategy, limits, window=False))
        names = [launch.name_expression for launch in launches]
        planned.append(
            {"kernel": kernel_name, "dtype": dtype, "channels": channels, "paths": names}
        )
        print(f"{kernel_name} {dtype} C={channels}: " + " | ".join(names))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"device": None, "dry_run": True, "cases": planned}, handle, indent=1)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--launches", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", default=None)
    parser.add_argument("--legacy", action="store_true", help="also time the shared-memory kernels")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="no GPU: plan every case's launch (and the replaced and legacy ones) and print them",
    )
    parser.add_argument(
        "--target-threads",
        default="",
        help="comma list: also time the window kernels with these thread targets (rows per strip)",
    )
    args = parser.parse_args(argv)
    if args.dry_run:
        return _dry_run(args)

    import cupy

    import gpuconv
    from gpuconv import bench

    rows = []
    for kernel_name, dtype, channels in CASES:
        kernel = bench.bench_kernels([kernel_name])[kernel_name]
        host = bench.bench_image(args.size, dtype)
        if channels > 1:
            host = np.ascontiguousarray(np.repeat(host[:, :, None], channels, axis=2))
        image = cupy.asarray(host)
        launch_once, describe = prepared(image, kernel)
        kernel_ms = _events_ms(cupy, launch_once, args.launches, args.rounds)
        extra = {}
        before_once, before_name = prepared(image, kernel, newest=False)
        if before_name != describe:  # the kernel the newest one replaced, side by side
            extra["replaced"] = (
                before_name,
                _events_ms(cupy, before_once, args.launches, args.rounds),
            )
        if args.legacy:
            legacy_once, legacy_name = prepared(image, kernel, legacy=True)
            extra["legacy"] = (
                legacy_name,
                _events_ms(cupy, legacy_once, args.launches, args.rounds),
            )
        from gpuconv._backends.cuda import window as _cuda_window

        default_target = _cuda_window._TARGET_THREADS
        for target_threads in [int(t) for t in args.target_threads.split(",") if t]:
            _cuda_window._TARGET_THREADS = dict.fromkeys(default_target, target_threads)
            try:
                variant_once, _ = prepared(image, kernel)
                extra[f"threads={target_threads}"] = (
                    describe,
                    _events_ms(cupy, variant_once, args.launches, args.rounds),
                )
            finally:
                _cuda_window._TARGET_THREADS = default_target
        target = cupy.empty_like(image)
        copy_ms = _events_ms(
            cupy, lambda t=target, i=image: cupy.copyto(t, i), args.launches, args.rounds
        )
        calls = []
        for _ in range(args.rounds):
            cupy.cuda.get_current_stream().synchronize()
            began = time.perf_counter()
            gpuconv.convolve(image, kernel, backend="cuda")
            cupy.cuda.get_current_stream().synchronize()
            calls.append((time.perf_counter() - began) * 1e3)
        row = {
            "kernel": kernel_name,
            "dtype": dtype,
            "channels": channels,
            "size": args.size,
            "path": describe,
            "kernel_ms": kernel_ms,
            "copy_ms": copy_ms,
            "fraction_of_copy": copy_ms / kernel_ms,
            "call_ms": statistics.median(calls),
            "variants": {
                name: {"path": path, "kernel_ms": ms} for name, (path, ms) in extra.items()
            },
        }
        rows.append(row)
        print(
            f"{kernel_name} {dtype} C={channels}: {kernel_ms:.3f} ms, copy {copy_ms:.3f} ms",
            file=sys.stderr,
        )
    name = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.runtime.getDevice())["name"]
    device = name.decode() if isinstance(name, bytes) else name
    print(
        f"\nMeasured on {device}, {args.size} x {args.size}, CUDA events around "
        f"{args.launches} back-to-back launches, median of {args.rounds} rounds\n"
    )
    print("| kernel | dtype | C | path | kernel ms | copy ms | of copy | whole call ms |")
    print("|---|---|---:|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['kernel']} | {r['dtype']} | {r['channels']} | `{r['path']}` | "
            f"{r['kernel_ms']:.3f} | {r['copy_ms']:.3f} | {r['fraction_of_copy']:.0%} | "
            f"{r['call_ms']:.3f} |"
        )
    for r in rows:
        for name, variant in r["variants"].items():
            print(
                f"variant {name}: {r['kernel']} {r['dtype']} C={r['channels']}: "
                f"{variant['kernel_ms']:.3f} ms ({r['copy_ms'] / variant['kernel_ms']:.0%} of copy) "
                f"`{variant['path']}`"
            )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"device": device, "cases": rows}, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
