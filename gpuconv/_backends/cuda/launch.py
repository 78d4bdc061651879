"""The launch arithmetic of the CUDA kernels, in plain Python.

:func:`plan_launch` turns a checked plan and its :class:`~gpuconv._strategy.Strategy`
into everything a launch needs: which kernel template (as a ``name_expression``
for ``cupy.RawModule``), the grid, the block, the dynamic shared-memory bytes,
the weights in the accumulator's type and the scalar arguments. The real CuPy
launch and the CPU emulator both call it, so the emulator checks exactly the
arithmetic a GPU runs. Nothing here imports CuPy.

The tile geometry repeats ``kernels_cuda/gpuconv_common.cuh``
(``tests/test_cuda_compile.py`` checks the two agree).
"""

from __future__ import annotations

import numpy as np

from ..._plan import ConvolutionPlan
from ..._strategy import Strategy
from .launch_base import C_TYPES, DEFAULT_LIMITS, DeviceLimits, Launch, specialised
from .window import window_launch, window_name_expressions

TILE_WIDTH = 32  #: output columns per block (= threads per block row)
BLOCK_HEIGHT = 8  #: thread rows per block
ROWS_PER_THREAD = 4  #: output rows each thread computes (register blocking)
TILE_HEIGHT = BLOCK_HEIGHT * ROWS_PER_THREAD
BLOCK = (TILE_WIDTH, BLOCK_HEIGHT, 1)

#: Kernel sizes with a compile-time specialisation, per template.
DIRECT_SIZES: tuple[tuple[int, int], ...] = ((3, 3), (5, 5), (7, 7), (9, 9))
SEPARABLE_SIZES: tuple[tuple[int, int], ...] = ((3, 3), (5, 5), (7, 7), (9, 9), (15, 15), (21, 21))

#: Positions along an axis are 32-bit in the kernels (fast modulo); an axis plus the
#: kernel must stay below this.
MAX_AXIS = 2**30

#: Source file of each template.
SOURCE_FILES = {
    "gpuconv_direct": "convolve_direct.cu",
    "gpuconv_separable": "convolve_separable.cu",
    "gpuconv_global": "convolve_global.cu",
    "gpuconv_window": "convolve_window.cu",
    "gpuconv_window_dp4a": "convolve_window.cu",
    "gpuconv_box": "convolve_window.cu",
    "gpuconv_box_packed": "convolve_window.cu",
    "gpuconv_box_float": "convolve_window.cu",
}

# CUDA's limits on gridDim.y and gridDim.z; the kernels stride over what is left.
_MAX_GRID_X = 2**31 - 1


def _ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


def tiled_shared_bytes(template: str, kernel_height: int, kernel_width: int, item: int) -> int:
    """Dynamic shared memory of a tiled kernel (see the kernels' header comments)."""
    halo_height = TILE_HEIGHT + kernel_height - 1
    halo_width = TILE_WIDTH + kernel_width - 1
    tile = halo_height * halo_width
    if template == "gpuconv_direct":
        return item * (kernel_height * kernel_width + tile)
    if template == "gpuconv_separable":
        return item * (kernel_height + kernel_width + tile + halo_height * TILE_WIDTH)
    raise ValueError(f"{template} is not a tiled kernel")


def name_expression(template: str, input_dtype, output_dtype, accumulator, size=(0, 0)) -> str:
    """The C++ instantiation of ``template`` for these types and compile-time size."""
    types = [C_TYPES[np.dtype(t)] for t in (input_dtype, output_dtype, accumulator)]
    if template == "gpuconv_global":
        return f"{template}<{', '.join(types)}>"
    return f"{template}<{', '.join(types)}, {size[0]}, {size[1]}>"


def plan_launch(
    plan: ConvolutionPlan,
    strategy: Strategy,
    limits: DeviceLimits = DEFAULT_LIMITS,
    *,
    window: bool = True,
    dp4a: bool = True,
    packed_box: bool = True,
    float_box: bool = True,
) -> Launch:
    """Choose the kernel and compute its launch for ``plan`` run as ``strategy`` says.

    With ``window`` (the default), the register-window kernels of
    :mod:`gpuconv._backends.cuda.window` run what they can (small kernels with the
    default column anchor, 1, 3 or 4 channels; with ``dp4a``, the default, 3 x 3 uint8
    kernels whose taps fit a signed byte run ``gpuconv_window_dp4a``; with ``packed_box``,
    the default, uint8 box kernels whose column sums fit 16 bits run ``gpuconv_box_packed``;
    with ``float_box``, the default, float32 grey boxes of 7, 9 and 21 run
    ``gpuconv_box_float``).
    Otherwise the shared-memory kernels:
    the separable kernel runs rank-1 kernels, the direct kernel the rest; either
    falls back to the global-memory kernel when its tile and halo would not fit
    ``limits.shared_bytes_per_block``.

    Examples
    --------
    >>> import numpy as np
    >>> from gpuconv._plan import make_plan
    >>> from gpuconv._strategy import choose_strategy
    >>> image = np.zeros((100, 70), np.uint8)
    >>> _, plan, _ = make_plan(image, "laplacian", border="reflect101", value=0.0,
    ...                        anchor=None, flip=False, dtype=None)
    >>> launch = plan_launch(plan, choose_strategy(plan))
    >>> launch.name_expression, launch.grid, launch.block
    ('gpuconv_window_dp4a<unsigned char, unsigned char, int, 3, 3, 1, 8, false>', (1, 2, 1), (32, 4, 1))
    >>> plan_launch(plan, choose_strategy(plan), dp4a=False).name_expression
    'gpuconv_window<unsigned char, unsigned char, int, 3, 3, 1, 8, false>'
    >>> launch = plan_launch(plan, choose_strategy(plan), window=False)
    >>> launch.name_expression, launch.grid, launch.block
    ('gpuconv_direct<unsigned char, unsigned char, int, 3, 3>', (3, 4, 1), (32, 8, 1))
    """
    plan = device_plan(plan)
    height, width, channels = plan.shape
    kernel_height, kernel_width = plan.kernel.shape
    if (
        height + kernel_height + TILE_HEIGHT >= MAX_AXIS
        or width + kernel_width + TILE_WIDTH >= MAX_AXIS
    ):
        raise ValueError(
            f"image {height}x{width} with a {kernel_height}x{kernel_width} kernel: the cuda "
            f"backend takes axes (plus the kernel) below {MAX_AXIS} pixels"
        )
    if window:
        launch = window_launch(
            plan, strategy, limits, dp4a=dp4a, packed_box=packed_box, float_box=float_box
        )
        if launch is not None:
            return launch
    accumulator = np.dtype(strategy.accumulator)
    item = accumulator.itemsize
    if strategy.separable:
        template, sizes = "gpuconv_separable", SEPARABLE_SIZES
        weights = np.concatenate([strategy.column, strategy.row])
    else:
        template, sizes = "gpuconv_direct", DIRECT_SIZES
        weights = plan.kernel.ravel()
    shared_bytes = tiled_shared_bytes(template, kernel_height, kernel_width, item)
    if shared_bytes > limits.shared_bytes_per_block:
        # Tile + halo too large (huge kernels): per-thread loads from global memory.
        template, shared_bytes = "gpuconv_global", 0
        weights = plan.kernel.ravel()
        grid = (
            _ceil_div(width, TILE_WIDTH),
            min(_ceil_div(height, BLOCK_HEIGHT), limits.max_grid_y),
            min(channels, limits.max_grid_z),
        )
        expression = name_expression(template, plan.input_dtype, plan.output_dtype, accumulator)
    else:
        grid = (
            _ceil_div(width, TILE_WIDTH),
            min(_ceil_div(height, TILE_HEIGHT), limits.max_grid_y),
            min(channels, limits.max_grid_z),
        )
        fixed = plan.kernel.shape in sizes and specialised(
            plan.input_dtype, plan.output_dtype, accumulator
        )
        size = (kernel_height, kernel_width) if fixed else (0, 0)
        expression = name_expression(
            template, plan.input_dtype, plan.output_dtype, accumulator, size
        )
    if grid[0] > _MAX_GRID_X:
        raise ValueError(f"image width {width} exceeds what one CUDA launch covers")
    if accumulator.kind in "iu":
        # Exact integer sums: factors and taps are integers (the planner made sure).
        weights = np.rint(weights)
        border_value = accumulator.type(round(plan.border_value))
    else:
        with np.errstate(over="ignore"):  # a huge constant becomes inf, as in float32 sums
            border_value = accumulator.type(plan.border_value)
            weights = np.asarray(weights, dtype=accumulator)
    scalars = (
        np.int32(height),
        np.int32(width),
        np.int32(channels),
        np.int32(kernel_height),
        np.int32(kernel_width),
        np.int32(plan.anchor_y),
        np.int32(plan.anchor_x),
        np.int32(int(plan.border)),
        border_value,
        np.int32(1 if strategy.skip_zero_taps else 0),
    )
    return Launch(
        template=template,
        name_expression=expression,
        source_file=SOURCE_FILES[template],
        grid=grid,
        block=BLOCK,
        shared_bytes=shared_bytes,
        weights=np.ascontiguousarray(weights, dtype=accumulator),
        scalars=scalars,
    )


def device_plan(plan: ConvolutionPlan) -> ConvolutionPlan:
    """The plan the kernels run: the plan itself (float16 is loaded and stored as
    ``gpuconv_half``, summed in float32)."""
    return plan


def every_name_expression() -> dict[str, list[str]]:
    """Every instantiation :func:`plan_launch` can request, grouped by source file.

    Used by the compile checks: each must compile through NVRTC.
    """
    from ..._plan import SUPPORTED_DTYPES

    expressions: dict[str, list[str]] = {name: [] for name in SOURCE_FILES.values()}
    device_dtypes = list(SUPPORTED_DTYPES)
    for input_dtype in device_dtypes:
        for output_dtype in device_dtypes:
            accumulators = [
                np.float64 if np.dtype(np.float64) in (input_dtype, output_dtype) else np.float32
            ]
            if input_dtype.kind in "ui":
                accumulators += [np.int32, np.int64]
            if output_dtype.kind in "ui" and accumulators[0] != np.float64:
                # float64 sums where float32 could round a grey level apart
                # (gpuconv._strategy.choose_strategy): 16-bit or float images, big kernels
                accumulators.append(np.float64)
            for accumulator in accumulators:
                for template, sizes in (
                    ("gpuconv_direct", DIRECT_SIZES),
                    ("gpuconv_separable", SEPARABLE_SIZES),
                ):
                    fixed = sizes if specialised(input_dtype, output_dtype, accumulator) else ()
                    for size in (*fixed, (0, 0)):
                        expressions[SOURCE_FILES[template]].append(
                            name_expression(template, input_dtype, output_dtype, accumulator, size)
                        )
                expressions[SOURCE_FILES["gpuconv_global"]].append(
                    name_expression("gpuconv_global", input_dtype, output_dtype, accumulator)
                )
                expressions[SOURCE_FILES["gpuconv_window"]] += window_name_expressions(
                    input_dtype, output_dtype, accumulator
                )
    return expressions
