"""The NumPy reference backend: the oracle every other backend is checked against.

Vectorised over the image with one loop over kernel taps, float64
accumulation, and bounded memory: the image is processed in bands of rows, so
only a band (plus the kernel's halo) is ever held as float64.
"""

from __future__ import annotations

import numpy as np

from .._borders import source_indices
from .._plan import Border, ConvolutionPlan

# Bytes of float64 temporaries per band (padded band, accumulator, product).
_BAND_BUDGET_BYTES = 48 * 2**20


def probe() -> None:
    return None  # NumPy is a dependency: always available


def describe() -> str:
    return f"numpy {np.__version__}, float64 reference"


def saturate_cast(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Convert float sums to ``dtype`` as OpenCV's ``saturate_cast`` does.

    Integer types: round half to even, clamp to the type's range, NaN to 0.
    Float types: a plain cast.
    """
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return values.astype(dtype)
    info = np.iinfo(dtype)
    rounded = np.rint(values)
    np.clip(rounded, info.min, info.max, out=rounded)
    rounded[np.isnan(rounded)] = 0
    return rounded.astype(dtype)


def _gather(image3d: np.ndarray, rows: np.ndarray, cols: np.ndarray, plan: ConvolutionPlan):
    """The band of source pixels a band of output reads, border rule applied, as float64."""
    block = image3d.take(np.maximum(rows, 0), axis=0).take(np.maximum(cols, 0), axis=1)
    block = block.astype(np.float64)
    if plan.border == Border.CONSTANT:
        block[rows < 0] = plan.border_value
        block[:, cols < 0] = plan.border_value
    return block


def convolve(image, plan: ConvolutionPlan, library: str = "numpy", output=None) -> np.ndarray:
    """Run ``plan`` on an ``(H, W, C)`` image or an ``(N, H, W, C)`` stack, frame by frame.

    ``output``, when given, is written (any strides, the image's shape); else a new array.
    """
    stack = image if image.ndim == 4 else image[None]
    if output is None:
        output = np.empty(stack.shape, dtype=plan.output_dtype)
        result = output if image.ndim == 4 else output[0]
    else:
        result = output
    output_stack = output if output.ndim == 4 else output[None]
    # inf * 0, inf - inf and float64 -> float32 overflow are IEEE results here, not errors.
    with np.errstate(invalid="ignore", over="ignore"):
        for frame in range(stack.shape[0]):
            _convolve_in_bands(stack[frame], plan, output_stack[frame])
    return result


def _convolve_in_bands(image3d: np.ndarray, plan: ConvolutionPlan, output: np.ndarray) -> None:
    height, width, channels = plan.shape
    kernel_height, kernel_width = plan.kernel.shape
    cols = source_indices(
        np.arange(-plan.anchor_x, width - plan.anchor_x + kernel_width - 1), width, plan.border
    )
    # Every tap, zeros included: 0 * NaN and 0 * inf are NaN, and the reference
    # follows IEEE arithmetic for non-finite pixels exactly.
    taps = [(i, j, plan.kernel[i, j]) for i in range(kernel_height) for j in range(kernel_width)]
    bytes_per_row = 3 * 8 * (width + kernel_width) * channels
    band = max(1, _BAND_BUDGET_BYTES // bytes_per_row - kernel_height)
    for top in range(0, height, band):
        bottom = min(height, top + band)
        rows = source_indices(
            np.arange(top - plan.anchor_y, bottom - plan.anchor_y + kernel_height - 1),
            height,
            plan.border,
        )
        source = _gather(image3d, rows, cols, plan)
        total = np.zeros((bottom - top, width, channels), dtype=np.float64)
        product = np.empty_like(total)
        for i, j, weight in taps:
            np.multiply(source[i : i + bottom - top, j : j + width], weight, out=product)
            total += product
        output[top:bottom] = saturate_cast(total, plan.output_dtype)
