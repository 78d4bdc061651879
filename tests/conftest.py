"""Shared fixtures: the whole suite runs once per backend in the registry.

The ``backend`` fixture is built from ``gpuconv._registry.BACKEND_MODULES``;
a backend that cannot run here is skipped with the registry's own sentence
saying why. Emulated backends (the CUDA emulator) are slow, so tests crop the
real photographs they use through ``backend.fit(image)``.

``GPUCONV_TEST_BACKENDS`` (a comma-separated list, e.g. ``numpy``) limits the fixture to
those backends: the mutation run (``make mutation``) checks the planner and the reference
through the NumPy backend alone, in seconds per mutant.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import numpy as np
import pytest

import gpuconv
from gpuconv import _registry

# One emulator worker thread: every emulated kernel library keeps a pool of fiber stacks
# (two memory mappings each) per worker, and the whole suite in one process came within
# vm.max_map_count (65530) with two (test_cuda_emulator's 1024-thread blocks then failed).
os.environ.setdefault("GPUCONV_EMULATOR_THREADS", "1")


@dataclass(frozen=True)
class BackendUnderTest:
    name: str
    #: Largest image side the suite feeds this backend (None: no limit).
    max_side: int | None

    def convolve(self, image, kernel, **options):
        return gpuconv.convolve(image, kernel, backend=self.name, **options)

    def fit(self, image: np.ndarray) -> np.ndarray:
        """Crop a (large) test image to what this backend runs in reasonable time."""
        if self.max_side is None:
            return image
        return image[: self.max_side, : self.max_side]

    @property
    def emulated(self) -> bool:
        return self.max_side is not None


def _max_side(name: str) -> int | None:
    return 80 if _registry.status(name).emulated else None


def _backends_under_test() -> list[str]:
    chosen = os.environ.get("GPUCONV_TEST_BACKENDS", "").strip()
    if not chosen:
        return list(_registry.BACKEND_MODULES)
    names = [name.strip() for name in chosen.split(",") if name.strip()]
    unknown = sorted(set(names) - set(_registry.BACKEND_MODULES))
    if unknown:
        raise pytest.UsageError(f"GPUCONV_TEST_BACKENDS names unknown backends: {unknown}")
    return names


@pytest.fixture(params=_backends_under_test(), scope="session")
def backend(request) -> BackendUnderTest:
    name = request.param
    state = _registry.status(name)
    if not state.available:
        pytest.skip(f"backend {name!r} is not available here: {state.reason}")
    return BackendUnderTest(name, _max_side(name))


@functools.cache
def _photographs() -> dict[str, np.ndarray]:
    # scikit-image's bundled samples (shipped in its wheel, no download).
    from skimage import data

    photos = {
        "camera": data.camera(),  # 512x512 uint8 grey
        "astronaut": data.astronaut(),  # 512x512x3 uint8 colour
        "coffee": data.coffee(),  # 400x600x3 uint8 colour
        "moon": data.moon(),  # 512x512 uint8 grey
    }
    for photo in photos.values():
        photo.flags.writeable = False
    return photos


@pytest.fixture(params=["camera", "astronaut", "coffee", "moon"])
def photograph(request) -> np.ndarray:
    return _photographs()[request.param]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(int(os.environ.get("GPUCONV_TEST_SEED", "20261124")))
