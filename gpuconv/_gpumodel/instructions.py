"""Warp instructions of a launch, from the SASS of the NVRTC-compiled CUBIN.

Each instantiation is compiled once per process with the production options for sm_90
(:func:`cubin`, cached), disassembled with ``nvdisasm`` and parsed. Then representative
*interior* warps run through :mod:`gpuconv._gpumodel.simt`, which follows their real
control flow with the launch's real parameters, and the counts are extrapolated to the
grid (:func:`launch_instructions`):

- ``gpuconv_window``/``gpuconv_box``: a thread walks down one strip of
  ``rows_per_strip`` rows; one warp of a strip in the middle of the image, plus (where the
  grid has more strip slots than strips) one idle warp, times the number of strips
  (fractional for a short last strip) and grid columns;
- ``gpuconv_direct``/``gpuconv_separable``: every warp of one block in the middle of the
  grid, times the blocks.

Border threads and blocks are counted as interior ones: at 8192 x 8192 they are under 1%
of the work (``GPU-model.md`` says where that matters).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from .._backends.cuda import source as _cuda_source
from .._backends.cuda.launch_base import Launch
from . import sass, simt

#: Architecture of the model's compiles (an H100).
ARCHITECTURE = "sm_90"
#: Where the model places the arrays: 512-byte aligned, like CuPy's allocations.
IMAGE_ADDRESS = 0x7F00_0000_0000
OUTPUT_ADDRESS = 0x7F40_0000_0000
WEIGHTS_ADDRESS = 0x7F80_0000_0000
#: First kernel parameter in constant bank 0 (sm_70 and later).
PARAMETER_OFFSET = 0x210
#: Stack pointer the model starts R1 at (local memory, only read back by LDL).
_STACK_TOP = 0xFFFC0

WINDOW_TEMPLATES = (
    "gpuconv_window",
    "gpuconv_window_dp4a",
    "gpuconv_box",
    "gpuconv_box_packed",
    "gpuconv_box_float",
)
TILED_TEMPLATES = ("gpuconv_direct", "gpuconv_separable")


@dataclass(frozen=True)
class Compiled:
    """One instantiation's machine code and what the model reads from it."""

    name_expression: str
    mangled: str
    cubin: bytes
    program: sass.Program
    registers: int
    local_bytes: int
    jump_tables: bytes = b""  # constant bank 2: the switch tables BRX follows


@functools.lru_cache(maxsize=64)
def compiled(file_name: str, name_expression: str, options: tuple[str, ...] = ()) -> Compiled:
    """Compile ``name_expression`` alone for sm_90 (production options + ``options``)."""
    _, lowered, binary = _cuda_source.nvrtc_cubin(
        file_name, [name_expression], ARCHITECTURE, options
    )
    resources = sass.resource_usage(binary)
    return Compiled(
        name_expression=name_expression,
        mangled=lowered[name_expression],
        cubin=binary,
        program=sass.parse(sass.disassemble(binary)),
        registers=resources["registers"],
        local_bytes=resources["local_bytes"],
        jump_tables=sass.constant_bank(binary, lowered[name_expression], 2),
    )


def parameters(launch: Launch) -> list[tuple[int, bytes]]:
    """(size, bytes) of each kernel parameter: the three arrays as the model's addresses."""
    values: list[tuple[int, bytes]] = [
        (8, address.to_bytes(8, "little"))
        for address in (IMAGE_ADDRESS, OUTPUT_ADDRESS, WEIGHTS_ADDRESS)
    ]
    scalars = list(launch.scalars)
    if launch.vector_pitch_aligned is not None:
        scalars.append(np.int32(bool(launch.vector_pitch_aligned)))  # the arrays are aligned
    for scalar in scalars:
        data = np.asarray(scalar).tobytes()
        values.append((len(data), data))
    return values


def constant_bank(launch: Launch) -> bytes:
    """Constant bank 0 as the kernel sees it: block and grid sizes, stack, parameters."""
    bank = bytearray(0x1000)
    for position, value in enumerate((*launch.block, *launch.grid)):
        bank[4 * position : 4 * position + 4] = int(value).to_bytes(4, "little")
    bank[0x28:0x2C] = _STACK_TOP.to_bytes(4, "little")
    offset = PARAMETER_OFFSET
    for size, data in parameters(launch):
        offset = -(-offset // size) * size
        bank[offset : offset + size] = data
        offset += size
    return bytes(bank)


def noise_image(dtype, channels: int):
    """A reader of the benchmark's kind of image (``gpuconv.bench.bench_image``): uniform
    random levels 0..255 (floats: level / 255), the same in every channel; the element's
    bit pattern from its index, so that no image is ever made."""
    dtype = np.dtype(dtype)

    def read(elements: np.ndarray) -> np.ndarray:
        z = (elements // channels).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        z ^= z >> np.uint64(31)
        z *= np.uint64(0xBF58476D1CE4E5B9)
        z ^= z >> np.uint64(29)
        levels = (z >> np.uint64(56)).astype(np.int64)
        if dtype.kind == "f":
            values = (levels / 255).astype(dtype)
            return values.view(f"u{dtype.itemsize}").astype(np.int64)
        return levels

    return read


def _array_reader(array: np.ndarray):
    bits = np.ascontiguousarray(array).view(f"u{array.dtype.itemsize}").astype(np.int64)

    def read(elements: np.ndarray) -> np.ndarray:
        return bits[np.clip(elements, 0, len(bits) - 1)]

    return read


def memory(launch: Launch, shape: tuple[int, int, int], input_dtype) -> simt.Memory:
    """The model's image (noise, :func:`noise_image`) and the launch's real weights."""
    height, width, channels = shape
    item = np.dtype(input_dtype).itemsize
    return simt.Memory(
        [
            (
                IMAGE_ADDRESS,
                height * width * channels * item,
                item,
                noise_image(input_dtype, channels),
            ),
            (
                WEIGHTS_ADDRESS,
                launch.weights.nbytes,
                launch.weights.itemsize,
                _array_reader(launch.weights),
            ),
        ],
        launch.shared_bytes,
    )


def _warp(kernel, launch, block_index, warp, store) -> simt.Warp:
    bx, by, bz = launch.block
    threads = np.arange(warp * simt.LANES, (warp + 1) * simt.LANES)
    indices = np.stack([threads % bx, threads // bx % by, threads // (bx * by)], axis=1)
    return simt.Warp(
        kernel.program,
        constant_bank(launch),
        indices,
        block_index,
        threads < bx * by * bz,
        store,
        kernel.jump_tables,
    )


def run_warp(
    kernel: Compiled,
    launch: Launch,
    block_index: tuple[int, int, int],
    warp: int,
    store: simt.Memory | None = None,
) -> simt.WarpRun:
    """Run warp ``warp`` of block ``block_index`` alone (no barrier) to its end."""
    state = _warp(kernel, launch, block_index, warp, store)
    return state.run(kernel.program.entry(kernel.mangled))


def run_block(
    kernel: Compiled, launch: Launch, block_index: tuple[int, int, int], store: simt.Memory
) -> list[simt.WarpRun]:
    """Run every warp of block ``block_index``, barrier by barrier."""
    threads = launch.block[0] * launch.block[1] * launch.block[2]
    warps = [_warp(kernel, launch, block_index, w, store) for w in range(-(-threads // 32))]
    return simt.run_block(warps, kernel.program.entry(kernel.mangled))


@dataclass(frozen=True)
class LaunchCount:
    """Warp instructions of a whole launch, extrapolated from representative warps."""

    warp_instructions: float
    pixels: int
    representative: dict[str, int]  # what each simulated warp (or block) issued
    warps: int = 0  # warps of the launch that do work (a window kernel's idle ones left out)

    @property
    def per_pixel(self) -> float:
        return self.warp_instructions / self.pixels


def launch_instructions(
    kernel: Compiled, launch: Launch, shape: tuple[int, int, int], input_dtype
) -> LaunchCount:
    """:class:`LaunchCount` of ``launch`` (the plan's (H, W, C) ``shape`` and input type)."""
    height, width, _ = shape
    if launch.template in WINDOW_TEMPLATES:
        rows_per_strip = int(launch.scalars[-1])
        strips = math.ceil(height / rows_per_strip)
        slots = launch.grid[1] * launch.block[1]
        warps_per_block = launch.block[1]
        column = launch.grid[0] // 2
        middle_row = launch.grid[1] // 2
        busy = run_warp(
            kernel, launch, (column, middle_row, 0), 0, memory(launch, shape, input_dtype)
        )
        strip = middle_row * launch.block[1]
        strips_done = len(range(strip, strips, slots))
        idle_slots = max(0, slots - strips)
        idle = 0
        if idle_slots:
            last = (column, launch.grid[1] - 1, 0)
            idle = run_warp(kernel, launch, last, warps_per_block - 1).instructions
        per_strip = busy.instructions / strips_done
        total = launch.grid[0] * (per_strip * height / rows_per_strip + idle_slots * idle)
        representative = {"strip warp": busy.instructions, "idle warp": idle}
        warps = launch.grid[0] * min(slots, strips)
    elif launch.template in TILED_TEMPLATES:
        middle = (launch.grid[0] // 2, launch.grid[1] // 2, 0)
        runs = run_block(kernel, launch, middle, memory(launch, shape, input_dtype))
        per_block = sum(run.instructions for run in runs)
        total = per_block * launch.grid[0] * launch.grid[1] * launch.grid[2]
        representative = {"block": per_block}
        warps = len(runs) * launch.grid[0] * launch.grid[1] * launch.grid[2]
    else:
        raise ValueError(f"the model does not cover {launch.template}")
    return LaunchCount(float(total), height * width, representative, warps)


def edge_instructions(
    kernel: Compiled,
    launch: Launch,
    shape: tuple[int, int, int],
    input_dtype,
    count: LaunchCount,
) -> float:
    """Warp instructions a window launch issues beyond ``count`` (its
    :func:`launch_instructions`), which takes every column of blocks for the middle one:
    the first and the last column hold the threads whose window crosses the row's ends (the
    border rule, element by element), and the warp that holds such a thread runs its path
    too. Their strip warps are run like the middle one (whose count ``count`` holds); the
    difference, times the strips, is returned."""
    if launch.template not in WINDOW_TEMPLATES:
        raise ValueError(f"edge warps are a window kernel's: not {launch.template}")
    height = shape[0]
    rows_per_strip = int(launch.scalars[-1])
    column = launch.grid[0] // 2
    middle_row = launch.grid[1] // 2
    middle = count.representative["strip warp"]
    extra = 0.0
    for edge in sorted({0, launch.grid[0] - 1} - {column}):
        run = run_warp(kernel, launch, (edge, middle_row, 0), 0, memory(launch, shape, input_dtype))
        extra += run.instructions - middle
    strips = math.ceil(height / rows_per_strip)
    strips_done = len(range(middle_row * launch.block[1], strips, launch.grid[1] * launch.block[1]))
    return extra / strips_done * height / rows_per_strip
