"""Tuning sweep of the register-window kernels on a GPU (kernel-only times, measured).

    PYTHONPATH=. python benchmarks/gpu_window_variants.py --size 8192

For each case and each variant (compile-time macros of convolve_window.cu and the launch
arithmetic's register budgets, which set V; gpuconv_window_dp4a or gpuconv_box_packed first,
where one runs, then the kernel it replaced, for the same case), compiles the kernel, checks
it against the
shared-memory kernel's result and times back-to-back launches between CUDA events beside
a device copy. Prints one line per measurement.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys

import numpy as np

CASES = [
    ("small_blur", "uint8", 3),  # gpuconv_box_packed in colour
    ("sharpen", "uint8", 1),
    ("sobel_x", "uint8", 1),
    ("small_blur", "uint8", 1),  # the box kernel (GPUCONV_BOX_MIN_BLOCKS)
    ("sharpen", "uint8", 3),
    ("sharpen", "float32", 1),
    ("large_blur", "float32", 1),  # gpuconv_box_float, then the window variants: none
    ("large_blur", "uint8", 3),  # gpuconv_box_packed, column sums in shared memory
]
# Two H200 sweeps (benchmarks/results/gpu-retune-h200-2026-11-26/call1, call2) set today's
# launch bounds (convolve_window.cu): a cap pays only without spills; V = 4 (ring_words 16)
# lost everywhere. This sweep measures the interior loop, added after them and PREDICTED to
# cut 8-bit 3x3 kernels' instructions by 20% (on by default for 8-bit images only; the
# 32-bit kernel spilled with it under its cap of 4 blocks, so float32 is swept here too,
# where min_blocks 1 leaves it room).
# gpuconv_window_dp4a (3 x 3 uint8, taps in bytes) and gpuconv_box_packed (uint8 box, 16-bit
# sums), both PREDICTED to be DRAM-bound and not yet measured: their caps on registers,
# swept before the variants of the kernels they replaced.
NEWEST_MIN_BLOCKS = {
    "gpuconv_window_dp4a": ("GPUCONV_DP4A_MIN_BLOCKS", [1, 8, 10, 12]),
    "gpuconv_box_packed": ("GPUCONV_BOX_PACKED_MIN_BLOCKS", [1, 6, 8, 10]),
    "gpuconv_box_float": ("GPUCONV_BOX_FLOAT_MIN_BLOCKS", [1, 4, 6]),
}
#: gpuconv_box_packed where its column sums are in shared memory (21 wide RGB: 6 blocks an
#: SM by its 32 KiB; PREDICTED 61 % of copy at 6, about 43 % uncapped; under 8 it spills).
SHARED_COLUMNS_MIN_BLOCKS = ("GPUCONV_BOX_PACKED_SHARED_MIN_BLOCKS", [1, 4, 6])
VARIANTS = {
    "interior": [0, 1],
    "group": [0, 1, 4],
    "min_blocks": [1, 4, 5, 6],
    "ring_words": [32],
    "target_threads": [2**18],
    "scalar_halo": [1],
}


def _events_ms(cupy, function, launches=20, rounds=5) -> float:
    """Median over ``rounds`` of the per-launch time of ``launches`` back-to-back calls."""
    from gpuconv.bench._cuda import _time_ms  # the one event-timing loop

    return statistics.median(_time_ms(cupy, function, rounds, warmup=1, batch=launches))


def _measure(cupy, plan, image3d, reference, copy_ms, launch, options, label):
    """Compile ``launch`` with ``options``, check it against the legacy kernel's result
    (``reference``), time it beside the copy and print one line."""
    from gpuconv._backends.cuda import source as _cuda_source

    module = cupy.RawModule(
        code=_cuda_source.source(launch.source_file),
        options=(*_cuda_source.COMPILE_OPTIONS, *options),
        name_expressions=[launch.name_expression],
    )
    kernel_function = module.get_function(launch.name_expression)
    output = cupy.empty(plan.shape, plan.output_dtype)
    call_arguments = launch.arguments(image3d, output, cupy.asarray(launch.weights))

    def run(f=kernel_function, a=call_arguments, g=launch.grid, b=launch.block):
        f(g, b, a)

    milliseconds = _events_ms(cupy, run)
    difference = float(cupy.abs(output.astype(cupy.float64) - reference.astype(cupy.float64)).max())
    print(
        f"  {label}: {milliseconds:.3f} ms ({copy_ms / milliseconds:.0%} of copy)"
        f" regs={kernel_function.num_regs} local={kernel_function.local_size_bytes}"
        f" diff={difference:.3g} {launch.name_expression} grid={launch.grid}"
        f" rows={int(launch.scalars[-1])}",
        flush=True,
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=8192)
    args = parser.parse_args(argv)
    import cupy

    from gpuconv import bench
    from gpuconv._backends.cuda import launch as _cuda_launch
    from gpuconv._backends.cuda import source as _cuda_source
    from gpuconv._backends.cuda import window as _cuda_window
    from gpuconv._plan import make_plan
    from gpuconv._strategy import choose_strategy

    for kernel_name, dtype, channels in CASES:
        kernel = bench.bench_kernels([kernel_name])[kernel_name]
        host = bench.bench_image(args.size, dtype)
        if channels > 1:
            host = np.ascontiguousarray(np.repeat(host[:, :, None], channels, axis=2))
        image = cupy.asarray(host)
        _, plan, _ = make_plan(
            host, kernel, border="reflect101", value=0.0, anchor=None, flip=False, dtype=None
        )
        strategy = choose_strategy(plan)
        image3d = image.reshape(plan.shape)
        copy_target = cupy.empty_like(image)
        copy_ms = _events_ms(cupy, lambda t=copy_target, i=image: cupy.copyto(t, i))
        legacy = _cuda_launch.plan_launch(
            plan, strategy, _cuda_launch.DeviceLimits(227 * 1024), window=False
        )
        reference = cupy.empty(plan.shape, plan.output_dtype)
        function = _cuda_source.cupy_function(legacy.source_file, legacy.name_expression)
        if legacy.shared_bytes > 48 * 1024:
            function.max_dynamic_shared_size_bytes = legacy.shared_bytes
        arguments = legacy.arguments(image3d, reference, cupy.asarray(legacy.weights))
        legacy_ms = _events_ms(
            cupy,
            lambda f=function, a=arguments, legacy_launch=legacy: f(
                legacy_launch.grid, legacy_launch.block, a, shared_mem=legacy_launch.shared_bytes
            ),
        )
        print(
            f"{kernel_name} {dtype} C={channels}: copy {copy_ms:.3f} ms; legacy "
            f"{legacy_ms:.3f} ms ({copy_ms / legacy_ms:.0%}) {legacy.name_expression}",
            flush=True,
        )

        context = (cupy, plan, image3d, reference, copy_ms)  # what every variant shares
        newest = _cuda_window.window_launch(plan, strategy)
        if newest is not None and newest.template in NEWEST_MIN_BLOCKS:
            macro, caps = NEWEST_MIN_BLOCKS[newest.template]
            if newest.template == "gpuconv_box_packed" and newest.shared_bytes:
                macro, caps = SHARED_COLUMNS_MIN_BLOCKS
            for min_blocks in caps:
                label = f"{newest.template} min_blocks={min_blocks}"
                _measure(*context, newest, (f"-D{macro}={min_blocks}",), label)
        for interior, group, min_blocks, ring_words, target, scalar_halo in itertools.product(
            *VARIANTS.values()
        ):
            _cuda_window._RING_WORDS = ring_words
            _cuda_window._BOX_WINDOW_WORDS = ring_words + 16
            _cuda_window._TARGET_THREADS = dict.fromkeys((1, 2, 4, 8), target)
            launch = _cuda_window.window_launch(
                plan, strategy, dp4a=False, packed_box=False, float_box=False
            )
            if launch is None:
                print("  no window launch")
                break
            options = (
                f"-DGPUCONV_WINDOW_GROUP_ROWS={group}",
                f"-DGPUCONV_WINDOW_MIN_BLOCKS={min_blocks}",
                f"-DGPUCONV_BOX_MIN_BLOCKS={min_blocks}",
                f"-DGPUCONV_WINDOW_SCALAR_HALO={scalar_halo}",
                f"-DGPUCONV_WINDOW_INTERIOR={interior}",
            )
            _measure(
                *context,
                launch,
                options,
                f"interior={interior} group={group} min_blocks={min_blocks} "
                f"ring_words={ring_words} scalar_halo={scalar_halo} threads={target}",
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
