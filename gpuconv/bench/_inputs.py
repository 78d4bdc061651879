"""What the benchmarks run on: seeded images and kernels by name.

Shared by the host timing (:mod:`gpuconv.bench`) and the GPU timing
(:mod:`gpuconv.bench._cuda`), which both take them from here.
"""

from __future__ import annotations

import numpy as np

from .. import kernels


def bench_kernels(names) -> dict[str, np.ndarray]:
    """Kernels by name: bank names, plus ``randomN`` (N x N, normal, seeded), ``boxN``
    (normalised N x N box), ``dogN`` (N x N difference of Gaussians, rank 2) and ``diskN``
    (a binary disk of radius N, 2N + 1 wide: an integer kernel)."""
    chosen = {}
    for name in names:
        prefix = name.rstrip("0123456789")
        digits = name[len(prefix) :]
        size = int(digits) if digits and int(digits) > 0 else 0
        if prefix == "random" and size:
            chosen[name] = np.random.default_rng(size).standard_normal((size, size)) / size
        elif prefix == "box" and size and name not in kernels.names():
            chosen[name] = kernels.box(size)
        elif prefix == "dog" and size:
            chosen[name] = difference_of_gaussians(size)
        elif prefix == "disk" and size:
            chosen[name] = disk(size)
        else:
            chosen[name] = kernels.get(name)
    return chosen


def difference_of_gaussians(size: int) -> np.ndarray:
    """``size x size``: a Gaussian of sigma ``size / 8`` minus one of ``size / 4`` (rank 2)."""
    offsets = np.arange(size) - (size - 1) / 2
    squared = offsets[:, None] ** 2 + offsets[None, :] ** 2

    def gaussian(sigma):
        return np.exp(-squared / (2 * sigma * sigma)) / (2 * np.pi * sigma * sigma)

    return gaussian(size / 8) - gaussian(size / 4)


def disk(radius: int) -> np.ndarray:
    """A binary disk of ``radius``: ones where ``y**2 + x**2 <= radius**2``."""
    offsets = np.arange(-radius, radius + 1)
    return (offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius * radius).astype(np.float64)


def bench_image(size: int, dtype: str) -> np.ndarray:
    """A seeded random ``size x size`` image (uint8 levels; floats scaled to [0, 1])."""
    levels = np.random.default_rng(size).integers(0, 256, (size, size), dtype=np.uint8)
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return (levels / 255).astype(dtype)
    return levels.astype(dtype)
