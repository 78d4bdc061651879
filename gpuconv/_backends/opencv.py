"""OpenCV as ``backend="auto"``'s stand-in for the reference, where it gives the same bits.

Why: before numba is loaded, ``backend="auto"`` runs whatever finishes first, and numba
costs a fresh process 0.45-0.55 s to import and load (2 cores). The NumPy reference
filters a 1024 x 16384 uint8 band with sharpen in 210 ms; OpenCV (already a dependency,
for the image codecs) in 10 ms, numba in 2-3 ms once loaded. So a one-shot
``gpuconv apply`` of a 16384 x 16384 file finishes sooner on OpenCV than numba takes to
load, and a batch of small PNGs never needs numba at all.

Taken only where OpenCV's answer is the reference's, bit for bit (the contract's
"integer kernel on an integer image: bit-identical to cv2.filter2D", and its box
corollary below); :func:`accepts` says which plans:

- a uint8 image to a uint8 output, 1 to 4 channels, at least as large as the kernel;
- border reflect101, reflect, replicate, or constant with value 0;
- an **integer kernel** of at most 49 taps: ``cv2.filter2D`` sums in float32, exact
  for integer sums below 2**24 (255 times the sum of the weights' magnitudes is
  checked), and below 50 taps OpenCV never switches to its DFT path;
- or a **box**: every weight the float64 ``1 / n`` with ``n = kh * kw`` odd and at
  most 81. ``cv2.blur`` sums the integers exactly and divides by ``n`` in fixed
  point; the exact quotient ``S / n`` lies at least ``1 / (2n)`` from a half when
  ``n`` is odd, so the reference's float64 ``rint`` is ``S / n`` correctly rounded.
  OpenCV's division is not trusted on its word: the first box of each ``n`` in a
  process checks it on every possible sum ``S`` (``0 .. 255 n``, one call of about
  a millisecond, :func:`_blur_divides_exactly`), and a failure leaves that ``n`` to
  the reference.

This is not a backend a user names: :func:`gpuconv.backends` lists cuda, numba and
numpy, and ``backend="numpy"`` always runs the reference. ``tests/test_opencv_route.py``
checks it against the reference on every kernel shape, border and anchor it takes.
"""

from __future__ import annotations

import functools

import numpy as np

from .._cache import BoundedCache
from .._plan import Border, ConvolutionPlan

NAME = "opencv"

_MAX_INTEGER_TAPS = 49  # OpenCV's 8-bit filter2D goes to the DFT at 50 taps (or 130)
_MAX_BOX_TAPS = 81  # the self-check grows with n: 20656 x 81 pixels at most
_FLOAT32_EXACT = 2.0**24

#: Seconds per pixel and channel on 2 cores, measured on 1024 x 16384 uint8 bands:
#: filter2D 0.6 ns for 9 taps (a fixed part plus one per tap), blur 0.6 ns at any size.
SECONDS_PER_PIXEL = 0.3e-9
SECONDS_PER_TAP = 0.04e-9
BOX_SECONDS_PER_PIXEL = 0.6e-9

_BORDERS = (Border.REFLECT101, Border.REFLECT, Border.REPLICATE, Border.CONSTANT)


@functools.cache
def _cv2():
    """OpenCV, or None where it does not import (then the reference runs)."""
    try:
        import cv2
    except ImportError:
        return None
    return cv2


def _is_box(plan: ConvolutionPlan) -> bool:
    taps = plan.kernel.size
    return (
        taps % 2 == 1
        and taps <= _MAX_BOX_TAPS
        and bool(np.all(plan.kernel == np.float64(1.0) / taps))
        and _blur_divides_exactly(taps)
    )


@functools.cache
def _blur_divides_exactly(taps: int) -> bool:
    """Whether ``cv2.blur`` rounds ``S / taps`` as the reference does, for every sum ``S``.

    Row ``S`` of a ``(255 taps + 1, taps)`` image holds ``taps`` pixels that add up
    to ``S``; a ``taps x 1`` box centred on the middle column sums the whole row.
    """
    cv2 = _cv2()
    if cv2 is None:
        return False
    sums = np.arange(255 * taps + 1)
    quotient, remainder = np.divmod(sums, taps)
    rows = quotient[:, None] + (np.arange(taps)[None, :] < remainder[:, None])
    blurred = cv2.blur(rows.astype(np.uint8), (taps, 1), borderType=cv2.BORDER_CONSTANT)
    expected = np.rint(sums * (1.0 / taps))  # odd taps: no ties, float64 error far below
    return bool(np.array_equal(blurred[:, taps // 2], expected))


def _is_exact_integer(plan: ConvolutionPlan) -> bool:
    return (
        plan.integer_kernel
        and plan.kernel.size <= _MAX_INTEGER_TAPS
        and 255.0 * float(np.abs(plan.kernel).sum()) < _FLOAT32_EXACT
    )


def _decide(plan: ConvolutionPlan):
    """``"box"``, a float32 kernel for ``cv2.filter2D``, or None where OpenCV is not exact."""
    height, width, channels = plan.shape
    if not (
        plan.input_dtype == np.uint8
        and plan.output_dtype == np.uint8
        and 1 <= channels <= 4
        and height >= plan.kernel_height
        and width >= plan.kernel_width
        and plan.border in _BORDERS
        and (plan.border != Border.CONSTANT or plan.border_value == 0.0)
        and _cv2() is not None
    ):
        return None
    if _is_exact_integer(plan):
        return plan.kernel.astype(np.float32)  # integers below 2**24: exact
    return "box" if _is_box(plan) else None


_ROUTES = BoundedCache(64)


def _route(plan: ConvolutionPlan):
    """:func:`_decide`, once per plan object (plans are cached; a repeated call is then
    a dictionary look-up instead of 5-10 us of checks on the kernel)."""
    return _ROUTES.get(id(plan), lambda: _decide(plan), plan)


def accepts(plan: ConvolutionPlan) -> bool:
    """Whether OpenCV gives exactly the reference's answer for ``plan`` (see the module)."""
    return _route(plan) is not None


def seconds(plan: ConvolutionPlan) -> float:
    """Predicted seconds for ``plan`` on 2 cores (the rent in numba's ski rental)."""
    height, width, channels = plan.shape
    pixels = plan.frames * height * width * channels
    if isinstance(_route(plan), str):
        return pixels * BOX_SECONDS_PER_PIXEL
    return pixels * (SECONDS_PER_PIXEL + SECONDS_PER_TAP * plan.kernel.size)


def seconds_if_exact(plan: ConvolutionPlan) -> float | None:
    """:func:`seconds` where OpenCV gives the reference's bits for ``plan``, else None:
    the rent numba's ski rental is charged (None: the reference's estimate)."""
    return seconds(plan) if accepts(plan) else None


def convolve(image, plan: ConvolutionPlan, library: str = "numpy", output=None) -> np.ndarray:
    """Run ``plan`` (which :func:`accepts`) on an ``(H, W, C)`` image or ``(N, H, W, C)`` stack."""
    cv2 = _cv2()
    route = _route(plan)
    stack = image if image.ndim == 4 else image[None]
    if output is None and len(stack) == 1:  # one image: OpenCV's own array, no copy
        return _filter_frame(cv2, stack[0], plan, route).reshape(image.shape)
    if output is None:
        output = np.empty(stack.shape, np.uint8)
        result = output if image.ndim == 4 else output[0]
    else:
        result = output  # any strides, the image's shape
    output_stack = output if output.ndim == 4 else output[None]
    for frame, source in enumerate(stack):
        target = output_stack[frame]
        # OpenCV writes into a C-contiguous frame itself (no copy, no new memory).
        destination = target if target.flags.c_contiguous else None
        filtered = _filter_frame(cv2, source, plan, route, destination)
        if destination is None or not np.may_share_memory(filtered, target):
            target[...] = filtered.reshape(target.shape)
    return result


def _filter_frame(
    cv2, source: np.ndarray, plan: ConvolutionPlan, route, destination=None
) -> np.ndarray:
    """One ``(H, W, C)`` frame through OpenCV: ``(H, W)`` or ``(H, W, C)`` uint8.

    ``destination``: a C-contiguous ``(H, W, C)`` uint8 array for OpenCV to write into.
    """
    anchor = (plan.anchor_x, plan.anchor_y)
    border = int(plan.border)
    # OpenCV reads (H, W) or (H, W, C) with contiguous rows.
    source = np.ascontiguousarray(source[..., 0] if source.shape[-1] == 1 else source)
    dst = None if destination is None else destination.reshape(source.shape)
    if isinstance(route, str):  # the box
        size = (plan.kernel_width, plan.kernel_height)
        return cv2.blur(source, size, dst=dst, anchor=anchor, borderType=border)
    return cv2.filter2D(source, -1, route, dst=dst, anchor=anchor, borderType=border)
