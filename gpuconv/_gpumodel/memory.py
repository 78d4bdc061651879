"""Memory traffic of a launch, from the CPU emulator's counters on a few blocks.

The kernels declare each global and shared access (``GPUCONV_TRACE_LOAD``/``_STORE`` in
``kernels_cuda/``); the emulator groups them into warp requests when asked
(``EmulatedFunction(..., counters=True, blocks=...)``). The model runs the launch that
gpuconv really makes, at its real size, but only on sampled blocks:

- the block in the middle of the grid (the interior), with the blocks around it and the
  one of the previous ``z`` plane, so that the sectors it shares with blocks launched just
  before it (still in L2) are known;
- the corners and the middles of the grid's edges (the border), whose average stands for
  every block on the grid's perimeter.

Requests, sectors and wavefronts are extrapolated: interior block x interior blocks +
border average x perimeter blocks. DRAM bytes: the sectors the middle block reads or
writes that no sampled block launched less than ``L2_BYTES`` of traffic before it touched
(a neighbour's halo is an L2 hit; the same tile of another channel plane 65,536 blocks
later is not), times the blocks; the ideal is reading the input once and writing the
output once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._backends.cuda import source as _cuda_source
from .._backends.cuda.launch_base import Launch
from .._emulator import AccessCounters, LaunchCounters
from . import machine

SECTOR = 32


@dataclass(frozen=True)
class MemoryCount:
    global_load: AccessCounters
    global_store: AccessCounters
    shared_load: AccessCounters
    shared_store: AccessCounters
    dram_bytes: float
    ideal_dram_bytes: int

    @property
    def sectors_per_request(self) -> float:
        """Global loads: 32-byte sectors per warp request."""
        return self.global_load.sectors_per_request


def aligned_empty(shape, dtype, alignment: int = 512) -> np.ndarray:
    """A zeroed array starting on ``alignment`` bytes, as CuPy allocates (pages stay lazy)."""
    dtype = np.dtype(dtype)
    size = int(np.prod(shape)) * dtype.itemsize
    buffer = np.zeros(size + alignment, dtype=np.uint8)
    start = (-buffer.ctypes.data) % alignment
    return buffer[start : start + size].view(dtype).reshape(shape)


def _scaled(counters: AccessCounters, factor: float) -> AccessCounters:
    return AccessCounters(
        *(round(getattr(counters, f) * factor) for f in AccessCounters.__dataclass_fields__)
    )


def _added(a: AccessCounters, b: AccessCounters) -> AccessCounters:
    return AccessCounters(
        *(getattr(a, f) + getattr(b, f) for f in AccessCounters.__dataclass_fields__)
    )


def _border_blocks(grid) -> list[tuple[int, int, int]]:
    gx, gy, _ = grid
    xs, ys = sorted({0, gx // 2, gx - 1}), sorted({0, gy // 2, gy - 1})
    return [(x, y, 0) for x in xs for y in ys if x in (0, gx - 1) or y in (0, gy - 1)]


def _run(launch: Launch, shape, input_dtype, output_dtype, blocks) -> LaunchCounters:
    image = aligned_empty(shape, input_dtype)
    output = aligned_empty(shape, output_dtype)
    kernel = _cuda_source.emulated_function(launch.source_file, launch.name_expression)
    return kernel(
        launch.grid,
        launch.block,
        launch.arguments(image, output, launch.weights),
        shared_mem=launch.shared_bytes,
        counters=True,
        blocks=blocks,
    )


def launch_memory(launch: Launch, shape, input_dtype, output_dtype) -> MemoryCount:
    """:class:`MemoryCount` of ``launch`` on an image of (H, W, C) ``shape``."""
    return _launch_memory(launch, tuple(shape), np.dtype(input_dtype), np.dtype(output_dtype))


def _launch_memory(launch: Launch, shape, input_dtype, output_dtype) -> MemoryCount:
    gx, gy, gz = launch.grid
    middle = (gx // 2, gy // 2, 0)
    interior = _run(launch, shape, input_dtype, output_dtype, [middle])
    patch = [
        (x, y, z)
        for z in ({0, 1} if gz > 1 else {0})
        for x in range(max(0, middle[0] - 1), min(gx, middle[0] + 2))
        for y in range(max(0, middle[1] - 1), min(gy, middle[1] + 2))
    ]
    centre = (middle[0], middle[1], 1 if gz > 1 else 0)
    around = _run(launch, shape, input_dtype, output_dtype, patch)
    border_list = _border_blocks(launch.grid)
    border = _run(launch, shape, input_dtype, output_dtype, border_list) if border_list else None

    blocks = gx * gy * gz
    perimeter = gz * (2 * gx + 2 * gy - 4) if gx > 1 and gy > 1 else blocks
    inside = blocks - perimeter
    kinds = ("global_load", "global_store", "shared_load", "shared_store")
    totals = {}
    for kind in kinds:
        total = _scaled(getattr(interior, kind), inside)
        if border is not None:
            total = _added(total, _scaled(getattr(border, kind), perimeter / len(border_list)))
        totals[kind] = total

    def linear(block):
        return block[0] + gx * (block[1] + gy * block[2])

    loads, stores = around.loaded_sectors[centre], around.stored_sectors[centre]
    block_bytes = SECTOR * (len(loads) + len(stores))
    reach = machine.L2_BYTES / max(block_bytes, 1)
    earlier = [block for block in patch if 0 < linear(centre) - linear(block) <= reach]
    seen_loads = np.concatenate(
        [around.loaded_sectors[b] for b in earlier] + [np.empty(0, np.uint64)]
    )
    seen_stores = np.concatenate(
        [around.stored_sectors[b] for b in earlier] + [np.empty(0, np.uint64)]
    )
    new = np.setdiff1d(loads, seen_loads).size + np.setdiff1d(stores, seen_stores).size
    height, width, channels = shape
    ideal = height * width * channels * (input_dtype.itemsize + output_dtype.itemsize)
    return MemoryCount(
        **totals,
        dram_bytes=float(new * SECTOR * blocks),
        ideal_dram_bytes=int(ideal),
    )
