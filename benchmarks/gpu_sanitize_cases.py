"""Every CUDA kernel family once, on small images, for compute-sanitizer.

    compute-sanitizer --tool memcheck python benchmarks/gpu_sanitize_cases.py
    compute-sanitizer --tool racecheck python benchmarks/gpu_sanitize_cases.py --quick

Each case runs through ``gpuconv.convolve(..., backend="cuda")`` on CuPy arrays and is
compared with the NumPy reference; the launch it took is printed, so the log shows which
kernels the sanitizer saw. ``--quick``: one border and one shape per family (racecheck is
slow). Exits 1 if a result is off.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def cases(rng):
    """(label, dtype, kernel) per kernel family the cuda backend can launch."""
    return [
        ("window dp4a 3x3, taps in bytes", np.uint8, "laplacian"),
        ("window direct 3x3", np.uint8, np.array([[0, -1, 0], [-1, 200, -1], [0, -1, 0]])),
        ("window direct 5x5 float", np.float32, rng.normal(size=(5, 5))),
        ("window separable 3x3", np.int16, "sobel_x"),
        ("window separable 5x5", np.float32, "gaussian5"),
        ("box 7, 16-bit sums", np.uint8, "small_blur"),  # grey, and RGB at (9, 13, 3)
        ("box 7, 32-bit sums", np.uint8, np.ones((258, 7)) / 1806),
        ("box 21, 16-bit column sums (RGB: in shared memory)", np.uint8, "large_blur"),
        ("box 21, float sums (slots in shared memory)", np.float32, "large_blur"),
        ("shared-memory separable 21x21", np.float32, np.outer(rng.random(21), rng.random(21))),
        ("separable 7x7, float64 sums for uint16", np.uint16, "small_blur"),
        ("direct run-time size", np.float32, rng.normal(size=(4, 6))),
        ("direct off-centre anchor", np.uint8, "sharpen"),
        ("separable run-time size", np.float64, np.ones((11, 11)) / 121),
        ("global fallback", np.float64, rng.normal(size=(91, 91))),
        ("float64 sums for uint16", np.uint16, rng.normal(size=(15, 10))),
    ]


#: Stacks (N, H, W) filtered with ``axes=(1, 2)``: the window and box kernels' STACK
#: instantiations, one launch over the frames.
STACK_CASES = (
    ("stack window dp4a 3x3", np.uint8, "sharpen"),
    ("stack window direct 3x3 uint16", np.uint16, "sharpen"),
    ("stack box 7, 16-bit sums", np.uint8, "small_blur"),
    ("stack window separable 3x3 float", np.float32, "sobel_y"),
    ("stack window direct 3x3 float16", np.float16, "laplacian"),
    ("stack box 21, float sums", np.float32, "large_blur"),
)
STACK_SHAPE = (3, 37, 45)
#: An RGB image whose rows are 16-byte aligned (288 elements: the 21-wide box's threads of
#: 64 elements load whole pieces, the last one part outside the row), for the cases whose
#: colour kernel uses shared memory; racecheck's quick run too. The 7-wide box's edge lanes
#: read it as the middle threads do (their halo words outside the row from the rows beside
#: it, except at the image's first and last row): memcheck's check of those loads in colour
#: (grey: the (64, 128) image).
COLOUR_SHAPE = (20, 96, 3)
COLOUR_CASES = (
    "box 21, 16-bit column sums (RGB: in shared memory)",
    "box 7, 16-bit sums",
)


def _stack_launch(dtype, kernel, border="wrap"):
    from gpuconv._backends.cuda import launch as _cuda_launch
    from gpuconv._plan import make_plan
    from gpuconv._strategy import choose_strategy

    _, plan, _ = make_plan(
        np.zeros(STACK_SHAPE, dtype),
        kernel,
        border=border,
        value=0.0,
        anchor=None,
        flip=False,
        dtype=None,
        axes=(1, 2),
    )
    return _cuda_launch.plan_launch(plan, choose_strategy(plan))


def _dry_run() -> int:
    """Plan every case (grey and colour): the launches the sanitizers would see."""
    from gpuconv._backends.cuda import launch as _cuda_launch
    from gpuconv._plan import make_plan
    from gpuconv._strategy import choose_strategy

    rng = np.random.default_rng(4)
    for label, dtype, kernel in cases(rng):
        anchor = (0, 0) if "anchor" in label else None
        names = []
        colour = (COLOUR_SHAPE,) if label in COLOUR_CASES else ()
        for shape in ((37, 45), (40, 32, 4), *colour):
            _, plan, _ = make_plan(
                np.zeros(shape, dtype),
                kernel,
                border="wrap",
                value=0.0,
                anchor=anchor,
                flip=False,
                dtype=None,
            )
            limits = _cuda_launch.DeviceLimits(227 * 1024)
            names.append(
                _cuda_launch.plan_launch(plan, choose_strategy(plan), limits).name_expression
            )
        print(f"{label}: " + " | ".join(names))
    for label, dtype, kernel in STACK_CASES:
        launch = _stack_launch(dtype, kernel)
        print(f"{label}: {launch.name_expression} grid {launch.grid}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--dry-run", action="store_true", help="no GPU: print the launch of every case"
    )
    args = parser.parse_args(argv)
    if args.dry_run:
        return _dry_run()

    import cupy

    import gpuconv
    from gpuconv._backends.cuda import launch as _cuda_launch
    from gpuconv._plan import make_plan
    from gpuconv._strategy import choose_strategy

    rng = np.random.default_rng(4)
    borders = (
        ("reflect101",)
        if args.quick
        else ("reflect101", "reflect", "replicate", "constant", "wrap")
    )
    shapes = ((37, 45),) if args.quick else ((37, 45), (9, 13, 3), (64, 128), (40, 32, 4))
    failures = 0
    for label, dtype, kernel in cases(rng):
        anchor = (0, 0) if "anchor" in label else None
        colour = (COLOUR_SHAPE,) if label in COLOUR_CASES else ()
        for border in borders:
            for shape in shapes + colour:
                image = (rng.random(shape) * 200).astype(dtype)
                result = gpuconv.convolve(
                    cupy.asarray(image), kernel, backend="cuda", border=border, anchor=anchor
                )
                expected = gpuconv.convolve(
                    image, kernel, backend="numpy", border=border, anchor=anchor
                )
                difference = np.abs(result.get().astype(np.float64) - expected).max()
                if difference > 1.0:
                    failures += 1
                    print("WRONG", label, border, shape, difference)
        _, plan, _ = make_plan(
            image, kernel, border="wrap", value=0.0, anchor=anchor, flip=False, dtype=None
        )
        launch = _cuda_launch.plan_launch(plan, choose_strategy(plan))
        print(f"ok {label}: {launch.name_expression}")
    for label, dtype, kernel in STACK_CASES:
        for border in borders:
            stack = (rng.random(STACK_SHAPE) * 200).astype(dtype)
            result = gpuconv.convolve(
                cupy.asarray(stack), kernel, backend="cuda", border=border, axes=(1, 2)
            )
            expected = gpuconv.convolve(stack, kernel, backend="numpy", border=border, axes=(1, 2))
            difference = np.abs(result.get().astype(np.float64) - expected).max()
            if difference > 1.0:
                failures += 1
                print("WRONG", label, border, STACK_SHAPE, difference)
        print(f"ok {label}: {_stack_launch(dtype, kernel).name_expression}")
    cupy.cuda.Device().synchronize()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
