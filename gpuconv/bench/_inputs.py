"""What the benchmarks run on: seeded images and kernels by name.

Shared by the host timing (:mod:`gpuconv.bench`) and the GPU timing
(:mod:`gpuconv.bench._cuda`), which both take them from here.
"""

from __future__ import annotations

import numpy as np

from .. import kernels


def bench_kernels(names) -> dict[str, np.ndarray]:
    """Kernels by name: bank names, plus ``randomN`` (N x N, normal, seeded)."""
    chosen = {}
    for name in names:
        if name.startswith("random") and name[6:].isdigit() and int(name[6:]) > 0:
            size = int(name[6:])
            chosen[name] = np.random.default_rng(size).standard_normal((size, size)) / size
        else:
            chosen[name] = kernels.get(name)
    return chosen


def bench_image(size: int, dtype: str) -> np.ndarray:
    """A seeded random ``size x size`` image (uint8 levels; floats scaled to [0, 1])."""
    levels = np.random.default_rng(size).integers(0, 256, (size, size), dtype=np.uint8)
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return (levels / 255).astype(dtype)
    return levels.astype(dtype)
