"""Launch arithmetic of the register-window kernels (``kernels_cuda/convolve_window.cu``).

:func:`window_launch` returns the :class:`~gpuconv._backends.cuda.launch_base.Launch` of
``gpuconv_window`` (small kernels, direct or separable), ``gpuconv_window_dp4a`` (its
3 x 3 uint8 case with taps that fit a signed byte: one dp4a per kernel row and pixel),
``gpuconv_box`` (constant kernels on integer images, running sums), ``gpuconv_box_packed``
(its uint8 case with column sums below 2**16: two to a word; also RGB and 21 wide) or
``gpuconv_box_float`` (square float32 grey boxes of 7, 9 and 21: direct sums, van Herk /
Gil-Werman blocks down the strip) when one of them can run the plan, else None (the
shared-memory kernels then run it). Nothing here imports CuPy.

The window kernels need: the default column anchor (``kw // 2``), 1, 3 or 4 channels,
and a compile-time kernel size; each thread owns ``V`` consecutive row elements, where
``V * itemsize`` is one vector load (16 bytes) or less when the kernel is tall (the
``KH x V`` accumulators live in registers; ``gpuconv_box_float`` keeps its ``K x V``
suffix sums in shared memory, and ``gpuconv_box_packed`` the column sums of windows too
wide for registers, with 64 elements a thread: the window launches with ``shared_bytes``).
"""

from __future__ import annotations

import numpy as np

from ..._plan import Border, ConvolutionPlan
from ..._strategy import Strategy
from .launch_base import C_TYPES, DEFAULT_LIMITS, DeviceLimits, Launch, specialised

#: Thread block of the window kernels: 32 row chunks by 4 strips.
WINDOW_BLOCK = (32, 4, 1)
#: Channel counts with a specialisation (a tap steps C elements along a row).
WINDOW_CHANNELS = (1, 3, 4)
#: Square kernel sizes of the direct (non-separable) window kernel; in colour 3 x 3 only.
#: At 7 x 7 float32 it needs more than 128 registers (spills under the 4-blocks-per-SM cap)
#: and measured no faster than the shared-memory kernel (0.60 against 0.63 ms, H100).
WINDOW_DIRECT_SIZES = (3, 5)
WINDOW_COLOUR_DIRECT_SIZES = (3,)
#: Square kernel sizes of the separable window kernel. Larger separable kernels run the
#: shared-memory kernel: 7 x 7 float32 measured the same (0.48 ms) and spills, 21 x 21
#: twice as slow (KH x V accumulators).
WINDOW_SEPARABLE_SIZES = (3, 5)
#: Widths of the box kernel (its height is a run-time value), grey images only. At 21,
#: and in colour, the shared-memory separable kernel measured faster on an H100 (0.81
#: against 0.89 ms at 8192 x 8192 uint8; 1.49 against 1.82 ms for 7 x 7 RGB).
BOX_WIDTHS = (3, 5, 7, 9)
#: Channel counts of the separable window kernel: in colour, 7 x 7 measured slower than
#: the shared-memory kernel (2.50 against 1.47 ms, 8192 x 8192 x 3 uint8, H100).
WINDOW_SEPARABLE_CHANNELS = (1,)
BOX_CHANNELS = (1,)
#: Channel counts of gpuconv_box_packed (uint8, column sums below 2**16): grey and RGB.
#: PREDICTED (H100 model, no GPU yet) at 8192 x 8192: 7 x 7 grey from 16 % to 95 % of copy
#: (gpuconv_box: 1.128 to 0.553 warp instructions per pixel), RGB from 10 % to 81 % (the
#: shared-memory separable kernel before). ``packed_box=False`` gives the kernels before.
PACKED_BOX_CHANNELS = (1, 3)
#: Widths of gpuconv_box_packed: BOX_WIDTHS and 21 (large_blur), PREDICTED 6 % to 66 % of
#: copy for uint8 grey (H100 model, 8192 x 8192; 65 % with its edge warps).
PACKED_BOX_WIDTHS = (*BOX_WIDTHS, 21)
#: V of gpuconv_box_packed where a 16-element thread's window does not fit its registers
#: (the 21-wide box on RGB: 60 halo elements): 64 elements, four 16-byte loads, so that the
#: halo is less of the work; the column sums of its 128-byte window live in dynamic shared
#: memory (32 KiB a block) and the window is read in pieces of 16 elements.
PACKED_BOX_SHARED_ELEMENTS = 64
#: Window words beyond which gpuconv_box_packed keeps its column sums in shared memory
#: (``GPUCONV_BOX_PACKED_REGISTER_WORDS`` in ``kernels_cuda/convolve_window.cu``).
_PACKED_BOX_REGISTER_WORDS = 16
#: ``gpuconv_window_dp4a``: 3 x 3 uint8 to uint8 with int sums, taps in a signed byte, V = 8.
#: PREDICTED (gpuconv/_gpumodel, no GPU yet) at 8192 x 8192 on an H100: grey sharpen from
#: 0.663 to 0.242 warp instructions per pixel (53 % to 100 % of copy), RGB from 2.08 to 0.76
#: (25 % to 97 %); benchmarks/results/GPU-model.md. ``window_launch(..., dp4a=False)``
#: gives gpuconv_window for these plans (the code every GPU measurement so far ran).
DP4A_CHANNELS = (1, 3, 4)
DP4A_ELEMENTS_PER_THREAD = 8
#: Square box sizes of ``gpuconv_box_float`` (float32 grey images, float32 sums): every sum
#: direct, shared along the row, van Herk / Gil-Werman blocks down the strip. PREDICTED
#: (H100 model, no GPU yet) at 8192 x 8192: 7 x 7 from 43 % to 99 % of copy, 21 x 21 from
#: 25 % to 98 % (the shared-memory separable kernel before; ``float_box=False`` gives it).
#: Other float box sizes run the separable kernels (3 x 3 and 5 x 5 the separable window
#: kernel); each size here costs CI two NVRTC instantiations.
FLOAT_BOX_SIZES = (7, 9, 21)
#: V of ``gpuconv_box_float``: one 16-byte load of float32 (its K x V suffix sums are in
#: shared memory, so V does not cost registers there).
FLOAT_BOX_ELEMENTS_PER_THREAD = 4
#: Accumulator registers a thread may hold for its ring (KH x V), in 4-byte words: uint8
#: 3 x 3 ran as fast with V = 8 as with 16, without the register pressure (H100).
_RING_WORDS = 32
#: Registers (ints) a box window may take: V + (KW - 1) * C, twice (entering, leaving row).
_BOX_WINDOW_WORDS = 80
#: Threads a launch should have, by input item size: latency, not instructions, limited
#: the kernels measured on an H100, so many threads in flight paid; 8- and 16-bit images
#: ran best with fewer, longer strips (32 rows), 32-bit ones with 16-row strips.
_TARGET_THREADS = {1: 2**18, 2: 2**18, 4: 2**20, 8: 2**20}
_MAX_GRID_X = 2**31 - 1
_INT32_LIMIT = 2**31 - 1


def _ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


def elements_per_thread(input_dtype, kernel_height: int, accumulator, channels: int = 1) -> int:
    """V: a 16-byte vector of the input, halved while KH x V accumulators are too many."""
    vector = 16 // np.dtype(input_dtype).itemsize
    words = max(1, np.dtype(accumulator).itemsize // 4)
    while vector > 1 and kernel_height * vector * words > _RING_WORDS:
        vector //= 2
    return vector


def box_elements_per_thread(input_dtype, kernel_width: int, channels: int) -> int | None:
    """V of the box kernel: its column sums (V + (KW - 1) C ints) must fit; None if not."""
    vector = 16 // np.dtype(input_dtype).itemsize
    while vector > 1 and 2 * (vector + (kernel_width - 1) * channels) > _BOX_WINDOW_WORDS:
        vector //= 2
    if 2 * (vector + (kernel_width - 1) * channels) > _BOX_WINDOW_WORDS:
        return None
    return vector


def packed_box_elements_per_thread(input_dtype, kernel_width: int, channels: int) -> int | None:
    """V of gpuconv_box_packed: the box kernel's, or :data:`PACKED_BOX_SHARED_ELEMENTS` on
    8-bit images where that leaves none (its column sums then in shared memory)."""
    vector = box_elements_per_thread(input_dtype, kernel_width, channels)
    if vector is None and np.dtype(input_dtype).itemsize == 1:
        return PACKED_BOX_SHARED_ELEMENTS
    return vector


def packed_box_shared_bytes(kernel_width: int, channels: int, vector: int) -> int:
    """Dynamic shared memory of a gpuconv_box_packed launch: its window's column sums (two
    16-bit sums a word, two words per window word) for each of a block's threads where the
    window is wider than :data:`_PACKED_BOX_REGISTER_WORDS` words, else none (registers)."""
    halo_words = _ceil_div(kernel_width // 2 * channels, 4)  # each side
    window_words = vector // 4 + 2 * halo_words
    if window_words <= _PACKED_BOX_REGISTER_WORDS:
        return 0
    return WINDOW_BLOCK[0] * WINDOW_BLOCK[1] * 2 * window_words * 4


def window_name_expressions(input_dtype, output_dtype, accumulator) -> list[str]:
    """Every window and box instantiation :func:`window_launch` can request for these types:
    each for one image and, when the output dtype is the input's, for a whole stack
    (``STACK = true``)."""
    if not specialised(input_dtype, output_dtype, accumulator):
        return []
    types = ", ".join(C_TYPES[np.dtype(t)] for t in (input_dtype, output_dtype, accumulator))
    same_dtype = np.dtype(input_dtype) == np.dtype(output_dtype)
    expressions = []
    if _uint8_to_uint8(input_dtype, output_dtype) and np.dtype(accumulator) == np.int32:
        for channels in DP4A_CHANNELS:
            vector = DP4A_ELEMENTS_PER_THREAD
            expressions.append(f"gpuconv_window_dp4a<{types}, 3, 3, {channels}, {vector}, false>")
            expressions.append(stack_twin(expressions[-1]))
    if _float_box_types(input_dtype, output_dtype, accumulator):
        for size in FLOAT_BOX_SIZES:
            vector = FLOAT_BOX_ELEMENTS_PER_THREAD
            expressions.append(f"gpuconv_box_float<{types}, {size}, 1, {vector}>")
            expressions.append(stack_twin(expressions[-1]))
    for channels in WINDOW_CHANNELS:
        separable_sizes = WINDOW_SEPARABLE_SIZES if channels in WINDOW_SEPARABLE_CHANNELS else ()
        direct_sizes = WINDOW_DIRECT_SIZES if channels == 1 else WINDOW_COLOUR_DIRECT_SIZES
        for separable, sizes in ((False, direct_sizes), (True, separable_sizes)):
            for size in sizes:
                vector = elements_per_thread(input_dtype, size, accumulator, channels)
                expressions.append(
                    f"gpuconv_window<{types}, {size}, {size}, {channels}, {vector}, "
                    f"{'true' if separable else 'false'}>"
                )
                if same_dtype:
                    expressions.append(stack_twin(expressions[-1]))
        if np.dtype(input_dtype).kind in "ui" and (
            np.dtype(accumulator).kind == "f" or np.dtype(accumulator) == np.dtype(np.int32)
        ):
            templates = ["gpuconv_box"] if channels in BOX_CHANNELS else []
            if _uint8_to_uint8(input_dtype, output_dtype) and channels in PACKED_BOX_CHANNELS:
                templates.append("gpuconv_box_packed")
            for width in PACKED_BOX_WIDTHS if templates else ():
                for template in templates:
                    if template == "gpuconv_box_packed":
                        vector = packed_box_elements_per_thread(input_dtype, width, channels)
                    elif width in BOX_WIDTHS:
                        vector = box_elements_per_thread(input_dtype, width, channels)
                    else:
                        continue
                    if vector is None or vector % 4:
                        continue
                    expressions.append(f"{template}<{types}, {width}, {channels}, {vector}>")
                    if same_dtype:
                        expressions.append(stack_twin(expressions[-1]))
    return expressions


#: Template arguments of the single-image window and box instantiations; the STACK twin
#: appends one more, ``true`` (``kernels_cuda/convolve_window.cu``).
_SINGLE_IMAGE_ARGUMENTS = {
    "gpuconv_window": 8,
    "gpuconv_window_dp4a": 8,
    "gpuconv_box": 6,
    "gpuconv_box_packed": 6,
    "gpuconv_box_float": 6,
}


def stack_twin(expression: str) -> str:
    """The STACK instantiation of a single-image window or box name expression."""
    assert not is_stack_expression(expression), expression
    return expression[:-1] + ", true>"


def is_stack_expression(expression: str) -> bool:
    """Whether a window or box name expression is a STACK instantiation (its last argument)."""
    template, arguments = expression.split("<", 1)
    single = _SINGLE_IMAGE_ARGUMENTS.get(template)
    return single is not None and len(arguments.split(",")) == single + 1


def rows_per_strip(
    height: int,
    chunks_per_row: int,
    kernel_height: int,
    box: bool,
    itemsize: int = 4,
    box_start: int = 2,
) -> int:
    """Output rows a thread walks down: enough threads for the GPU, few re-read halo rows."""
    rows = _ceil_div(height * chunks_per_row, _TARGET_THREADS[itemsize])
    # A strip re-reads kh - 1 halo rows (the box kernel: kh rows to start its running sum,
    # so its strips are box_start x kh rows at least); strips of 8 rows measured slower
    # than 16 for 3 x 3 (H100). gpuconv_box_packed takes box_start = 1: for 21 x 21 at
    # 8192 x 8192 uint8 the model predicted 67 % of copy with strips of 21 rows, against 50 %
    # with 42 (too few threads to fill the SMs; PREDICTED, H100 model, 2026-11-26).
    least = box_start * kernel_height if box else max(16, 4 * (kernel_height - 1))
    return int(max(least, min(rows, 256)))


def _is_box(plan: ConvolutionPlan) -> bool:
    kernel = plan.kernel
    return bool(kernel.flat[0] != 0 and np.all(kernel == kernel.flat[0]))


def _box_sums_fit_int32(plan: ConvolutionPlan) -> bool:
    info = np.iinfo(plan.input_dtype)
    largest = max(abs(int(info.min)), int(info.max), abs(plan.border_value))
    return largest * plan.kernel.size <= _INT32_LIMIT


def _uint8_to_uint8(input_dtype, output_dtype) -> bool:
    """The types of gpuconv_window_dp4a and gpuconv_box_packed: uint8 pixels into uint8."""
    return np.dtype(input_dtype) == np.dtype(output_dtype) == np.dtype(np.uint8)


def _float_box_types(input_dtype, output_dtype, accumulator) -> bool:
    """The types of gpuconv_box_float: float32 pixels into float32, float32 sums."""
    float32 = np.dtype(np.float32)
    return np.dtype(input_dtype) == np.dtype(output_dtype) == np.dtype(accumulator) == float32


def _float_box_fits(plan: ConvolutionPlan, accumulator: np.dtype) -> bool:
    """Whether ``gpuconv_box_float`` runs ``plan``: a square box of a size it has, on a
    float32 grey image into float32 with float32 sums."""
    height, width = plan.kernel.shape
    return bool(
        _float_box_types(plan.input_dtype, plan.output_dtype, accumulator)
        and plan.shape[2] == 1
        and height == width
        and width in FLOAT_BOX_SIZES
        and _is_box(plan)
    )


def _dp4a_fits(plan: ConvolutionPlan, accumulator: np.dtype) -> bool:
    """Whether ``gpuconv_window_dp4a`` runs ``plan``: 3 x 3 uint8 into uint8 with int sums,
    every tap an integer in a signed byte, and a constant border value that is a pixel."""
    kernel = plan.kernel
    value = plan.border_value
    return bool(
        _uint8_to_uint8(plan.input_dtype, plan.output_dtype)
        and accumulator == np.dtype(np.int32)
        and kernel.shape == (3, 3)
        and plan.shape[2] in DP4A_CHANNELS
        and np.all(kernel == np.rint(kernel))
        and np.all((kernel >= -128) & (kernel <= 127))
        and (plan.border != Border.CONSTANT or (value == round(value) and 0 <= value <= 255))
    )


def _packed_box_fits(plan: ConvolutionPlan, accumulator: np.dtype) -> bool:
    """Whether ``gpuconv_box_packed`` runs a box plan: uint8 into uint8, every column sum
    below 2**16 (two to a 32-bit word), a width it has, its V a whole number of words, a
    constant border value that is a pixel."""
    value = plan.border_value
    height, width = plan.kernel.shape
    vector = packed_box_elements_per_thread(plan.input_dtype, width, plan.shape[2])
    return bool(
        _uint8_to_uint8(plan.input_dtype, plan.output_dtype)
        and accumulator in (np.dtype(np.int32), np.dtype(np.float32))
        and plan.shape[2] in PACKED_BOX_CHANNELS
        and width in PACKED_BOX_WIDTHS
        and vector is not None
        and vector % 4 == 0
        and height * 255 < 2**16
        and (plan.border != Border.CONSTANT or (value == round(value) and 0 <= value <= 255))
    )


def window_launch(
    plan: ConvolutionPlan,
    strategy: Strategy,
    limits: DeviceLimits = DEFAULT_LIMITS,
    *,
    dp4a: bool = True,
    packed_box: bool = True,
    float_box: bool = True,
) -> Launch | None:
    """The window or box kernel's launch for ``plan``, or None where neither applies
    (``dp4a=False``: gpuconv_window where gpuconv_window_dp4a would run;
    ``packed_box=False`` / ``float_box=False``: the kernel that ran before where
    gpuconv_box_packed / gpuconv_box_float would)."""
    height, width, channels = plan.shape
    kernel_height, kernel_width = plan.kernel.shape
    accumulator = np.dtype(strategy.accumulator)
    if channels not in WINDOW_CHANNELS or plan.anchor_x != kernel_width // 2:
        return None
    if (width + kernel_width) * channels + 16 >= _INT32_LIMIT:
        return None  # element positions along a row are 32-bit in the kernels
    if not specialised(plan.input_dtype, plan.output_dtype, accumulator):
        return None
    types = ", ".join(C_TYPES[t] for t in (plan.input_dtype, plan.output_dtype, accumulator))
    # A stack runs in one launch (gridDim.z = N) through the STACK instantiation, whose
    # frame offsets are 64-bit; single images keep the instantiation without them. Only
    # stacks whose output dtype is the input's have one (the compile checks in CI pay for
    # each); others run one launch per frame.
    frames = (
        plan.frames
        if plan.frames <= limits.max_grid_z and plan.input_dtype == plan.output_dtype
        else 1
    )
    integer_value = plan.border_value == round(plan.border_value)
    packed = packed_box and _packed_box_fits(plan, accumulator)
    box = (
        plan.input_dtype.kind in "ui"
        and (packed or (channels in BOX_CHANNELS and kernel_width in BOX_WIDTHS))
        and _is_box(plan)
        and integer_value
        and _box_sums_fit_int32(plan)
        and (accumulator.kind == "f" or accumulator == np.dtype(np.int32))
    )
    if box:
        elements = packed_box_elements_per_thread if packed else box_elements_per_thread
        vector = elements(plan.input_dtype, kernel_width, channels)
        box = vector is not None
    if box:
        template = "gpuconv_box_packed" if packed else "gpuconv_box"
        expression = f"{template}<{types}, {kernel_width}, {channels}, {vector}>"
        weights = np.array([plan.kernel.flat[0]])
    elif float_box and _float_box_fits(plan, accumulator):
        template = "gpuconv_box_float"
        vector = FLOAT_BOX_ELEMENTS_PER_THREAD
        expression = f"{template}<{types}, {kernel_width}, 1, {vector}>"
        weights = np.array([plan.kernel.flat[0]])
    else:
        square = kernel_height == kernel_width
        if (
            strategy.separable
            and square
            and kernel_width in WINDOW_SEPARABLE_SIZES
            and channels in WINDOW_SEPARABLE_CHANNELS
        ):
            separable = True
            weights = np.concatenate([strategy.column, strategy.row])
        elif square and kernel_width in (
            WINDOW_DIRECT_SIZES if channels == 1 else WINDOW_COLOUR_DIRECT_SIZES
        ):
            # Also separable kernels the separable window kernel does not take (colour
            # 3 x 3, e.g. Sobel on RGB): all taps in registers beat the shared-memory
            # separable kernel (predicted 55 % of copy against 13 %, uint8 RGB, H100 model;
            # sharpen on RGB measured 0.661 against 1.158 ms the same way).
            separable = False
            weights = plan.kernel.ravel()
        else:
            return None
        vector = elements_per_thread(plan.input_dtype, kernel_height, accumulator, channels)
        template = "gpuconv_window"
        if dp4a and _dp4a_fits(plan, accumulator):
            # every tap in one dp4a per kernel row: the 9 taps, also of a separable kernel
            template, separable = "gpuconv_window_dp4a", False
            weights = plan.kernel.ravel()
            vector = DP4A_ELEMENTS_PER_THREAD
        expression = (
            f"{template}<{types}, {kernel_height}, {kernel_width}, {channels}, {vector}, "
            f"{'true' if separable else 'false'}>"
        )
    if frames > 1:
        expression = stack_twin(expression)
    row_elements = width * channels
    chunks = _ceil_div(row_elements, vector)
    rows = rows_per_strip(
        height, chunks, kernel_height, box, plan.input_dtype.itemsize, 1 if packed else 2
    )
    strips = _ceil_div(height, rows)
    grid = (
        _ceil_div(chunks, WINDOW_BLOCK[0]),
        min(_ceil_div(strips, WINDOW_BLOCK[1]), limits.max_grid_y),
        frames,
    )
    if grid[0] > _MAX_GRID_X:
        return None
    if accumulator.kind in "iu":
        weights = np.rint(weights)
    with np.errstate(over="ignore"):  # a huge constant becomes inf, as in float32 sums
        weights = np.ascontiguousarray(weights, dtype=accumulator)
        value = accumulator.type(plan.border_value) if accumulator.kind == "f" else None
    # Vector loads and stores need every row to start on 16 bytes (the pointers are
    # checked at launch time, see Launch.arguments).
    pitch_aligned = all(
        row_elements * np.dtype(t).itemsize % 16 == 0 for t in (plan.input_dtype, plan.output_dtype)
    )
    border = np.int32(int(plan.border))
    if box:
        scalars = (
            np.int32(height),
            np.int32(width),
            np.int32(kernel_height),
            np.int32(plan.anchor_y),
            border,
            np.int32(round(plan.border_value) if plan.border == Border.CONSTANT else 0),
            np.int32(rows),
        )
    else:
        if value is None:
            value = accumulator.type(round(plan.border_value))
        scalars = (
            np.int32(height),
            np.int32(width),
            np.int32(plan.anchor_y),
            border,
            value,
            np.int32(rows),
        )
    threads = WINDOW_BLOCK[0] * WINDOW_BLOCK[1]
    return Launch(
        template=template,
        name_expression=expression,
        source_file="convolve_window.cu",
        grid=grid,
        block=WINDOW_BLOCK,
        # gpuconv_box_float keeps K x V suffix sums per thread in shared memory, and
        # gpuconv_box_packed the column sums of its widest windows
        shared_bytes=(
            threads * kernel_width * vector * accumulator.itemsize
            if template == "gpuconv_box_float"
            else packed_box_shared_bytes(kernel_width, channels, vector)
            if template == "gpuconv_box_packed"
            else 0
        ),
        weights=weights,
        scalars=scalars,
        vector_pitch_aligned=pitch_aligned,
        frames=frames,
    )
