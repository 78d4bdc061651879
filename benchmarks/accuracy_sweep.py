"""How often does a backend miss the contract's accuracy rule on random problems?

Runs N random geometries (image up to 24 x 24, kernel up to 30 x 30, every
border, integer image types, float kernels) through a backend and the NumPy
reference and counts the cases where the integer output is more than one grey
level off or fewer than 99% of pixels are identical (the contract's rule for
float kernels with integer output). The suite's hypothesis test samples the
same space, 25 cases a run; this sweep tells how rare a miss is.

    python benchmarks/accuracy_sweep.py --backend numba --cases 3000 --seed 1
    GPUCONV_CUDA_EMULATOR=1 python benchmarks/accuracy_sweep.py --backend cuda
"""

from __future__ import annotations

import argparse

import numpy as np

import gpuconv

BORDERS = ("reflect101", "reflect", "replicate", "constant", "wrap")
TYPES = (np.uint8, np.uint16, np.int16)


def misses_contract(actual: np.ndarray, expected: np.ndarray) -> bool:
    difference = np.abs(actual.astype(np.int64) - expected.astype(np.int64))
    return difference.max() > 1 or (difference == 0).mean() <= 0.99


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="numba")
    parser.add_argument("--cases", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    misses = 0
    for _ in range(args.cases):
        height, width = rng.integers(1, 25, 2)
        kernel = rng.normal(size=tuple(rng.integers(1, 31, 2)))
        dtype = TYPES[rng.integers(len(TYPES))]
        info = np.iinfo(dtype)
        image = rng.integers(info.min, info.max, (height, width), endpoint=True).astype(dtype)
        options = dict(border=BORDERS[rng.integers(len(BORDERS))], value=3.0)
        actual = gpuconv.convolve(image, kernel, backend=args.backend, **options)
        expected = gpuconv.convolve(image, kernel, backend="numpy", **options)
        if misses_contract(actual, expected):
            misses += 1
            print(f"miss: {height}x{width} {dtype.__name__}, kernel {kernel.shape}, {options}")
    print(f"{args.backend}: {misses} of {args.cases} random cases miss the contract")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
