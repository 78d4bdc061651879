"""Argument checking and normalisation: the one place where input is validated.

:func:`make_plan` turns the arguments of :func:`gpuconv.convolve` into a
:class:`ConvolutionPlan`, a small frozen record that every backend executes
without checking anything again. The image itself travels beside the plan as
a 3-D channels-last view ``(H, W, C)``; a 2-D image is given ``C == 1``.
"""

from __future__ import annotations

import enum
import numbers
import sys
from dataclasses import dataclass

import numpy as np

from . import kernels as _bank
from ._cache import BoundedCache
from ._layout import Layout, layout_for

#: Image (and output) dtypes every backend supports.
SUPPORTED_DTYPES: tuple[np.dtype, ...] = tuple(
    np.dtype(name) for name in ("uint8", "uint16", "int16", "float16", "float32", "float64")
)


class Border(enum.IntEnum):
    """Border modes; the values are OpenCV's ``cv2.BORDER_*`` constants."""

    CONSTANT = 0
    REPLICATE = 1
    REFLECT = 2
    WRAP = 3
    REFLECT101 = 4


#: Canonical names, in the order the docs list them.
BORDER_NAMES: dict[str, Border] = {
    "reflect101": Border.REFLECT101,
    "reflect": Border.REFLECT,
    "replicate": Border.REPLICATE,
    "constant": Border.CONSTANT,
    "wrap": Border.WRAP,
}

# Aliases: scipy.ndimage mode names and OpenCV spellings. Keys are compared
# after lower-casing and dropping "_", "-" and a leading "border".
_BORDER_ALIASES: dict[str, Border] = {
    **BORDER_NAMES,
    "mirror": Border.REFLECT101,  # scipy
    "gridmirror": Border.REFLECT,  # scipy
    "nearest": Border.REPLICATE,  # scipy
    "edge": Border.REPLICATE,  # numpy.pad
    "gridconstant": Border.CONSTANT,  # scipy
    "gridwrap": Border.WRAP,  # scipy
    "default": Border.REFLECT101,  # cv2.BORDER_DEFAULT
    "symmetric": Border.REFLECT,  # numpy.pad
}


@dataclass(frozen=True)
class ConvolutionPlan:
    """Everything a backend needs, already checked.

    Attributes
    ----------
    kernel : numpy.ndarray
        float64, C-contiguous, read-only, shape ``(kh, kw)``. For ``flip=True``
        it is already rotated by 180 degrees, so every backend correlates.
    anchor_y, anchor_x : int
        Kernel row and column that sit on the output pixel (after ``flip``).
    border : Border
    border_value : float
        The constant for ``Border.CONSTANT``.
    input_dtype, output_dtype : numpy.dtype
    shape : tuple of int
        ``(H, W, C)`` of one frame of the image (and of the output).
    integer_kernel : bool
        True when every tap is an integer small enough that integer sums
        are exact; with an integer image the result may be computed exactly.
    frames : int
        ``N``, the number of frames: the image is a stack ``(N, H, W, C)``
        (see :mod:`gpuconv._layout`), every frame filtered alone.
    """

    kernel: np.ndarray
    anchor_y: int
    anchor_x: int
    border: Border
    border_value: float
    input_dtype: np.dtype
    output_dtype: np.dtype
    shape: tuple[int, int, int]
    integer_kernel: bool
    frames: int = 1

    @property
    def kernel_height(self) -> int:
        return self.kernel.shape[0]

    @property
    def kernel_width(self) -> int:
        return self.kernel.shape[1]

    @property
    def accumulate_dtype(self) -> np.dtype:
        """float64 when input or output is float64, else float32 (the contract's floor)."""
        if np.dtype(np.float64) in (self.input_dtype, self.output_dtype):
            return np.dtype(np.float64)
        return np.dtype(np.float32)

    @property
    def exact_integer(self) -> bool:
        """True when integer accumulation gives the exact answer (int image, int kernel)."""
        return self.integer_kernel and self.input_dtype.kind in "ui"


def array_library(array) -> str:
    """Return ``"numpy"``, ``"cupy"`` or ``"dask"`` without importing either of the last two."""
    module = type(array).__module__.split(".")[0]
    if module == "cupy" and "cupy" in sys.modules:
        return "cupy"
    if module == "dask" and "dask" in sys.modules:
        return "dask"
    return "numpy"


def parse_border(border) -> Border:
    """Map a border name, scipy mode name or OpenCV constant to a :class:`Border`."""
    if isinstance(border, Border):
        return border
    if isinstance(border, (int, np.integer)) and not isinstance(border, (bool, np.bool_)):
        try:
            return Border(int(border))
        except ValueError:
            pass
    elif isinstance(border, str):
        key = border.lower().replace("_", "").replace("-", "")
        key = key.removeprefix("border")
        if key in _BORDER_ALIASES:
            return _BORDER_ALIASES[key]
    raise ValueError(
        f"unknown border {border!r}; valid borders are {', '.join(map(repr, BORDER_NAMES))} "
        "(also scipy's 'mirror', 'nearest', 'grid-wrap', 'grid-constant' and the OpenCV "
        "constants cv2.BORDER_CONSTANT/REPLICATE/REFLECT/WRAP/REFLECT_101 = 0/1/2/3/4)"
    )


def parse_dtype(dtype, what: str) -> np.dtype:
    try:
        parsed = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{what} {dtype!r} is not a dtype; supported: {_dtype_list()}") from None
    if parsed not in SUPPORTED_DTYPES:
        raise TypeError(f"unsupported {what} {parsed}; supported: {_dtype_list()}")
    return parsed


def _dtype_list() -> str:
    return ", ".join(str(d) for d in SUPPORTED_DTYPES)


def as_kernel_array(kernel) -> np.ndarray:
    """Check a kernel (array-like or bank name) and return it as float64 (kh, kw)."""
    if isinstance(kernel, str):
        kernel = _bank.get(kernel)
    if array_library(kernel) == "cupy":
        kernel = kernel.get()  # a kernel is small: copying it to the host is free
    try:
        array = np.asarray(kernel)
    except Exception as error:  # ragged lists and the like
        raise ValueError(f"kernel is not a rectangular array: {error}") from None
    if array.dtype.kind not in "biuf":
        raise TypeError(
            f"kernel must hold real numbers, got dtype {array.dtype} "
            "(names of bank kernels are accepted as str)"
        )
    if array.ndim != 2:
        raise ValueError(f"kernel must be 2-D (kh, kw), got {array.ndim}-D shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"kernel must be at least 1 x 1, got shape {array.shape}")
    array = np.array(array, dtype=np.float64, order="C")  # always a private copy
    if not np.isfinite(array).all():
        raise ValueError("kernel holds NaN or inf; every tap must be finite")
    return array


def _parse_anchor(anchor, kernel_height: int, kernel_width: int) -> tuple[int, int]:
    if anchor is None:
        return kernel_width // 2, kernel_height // 2
    try:
        anchor_x, anchor_y = anchor
    except (TypeError, ValueError):
        raise ValueError(f"anchor must be a pair (x, y) or None, got {anchor!r}") from None
    for coordinate in (anchor_x, anchor_y):
        if isinstance(coordinate, (bool, np.bool_)) or not isinstance(
            coordinate, (int, np.integer)
        ):
            raise TypeError(f"anchor coordinates must be integers, got {anchor!r}")
    if not (0 <= anchor_x < kernel_width and 0 <= anchor_y < kernel_height):
        raise ValueError(
            f"anchor (x, y) = {tuple(anchor)} is outside the {kernel_height}x{kernel_width} "
            f"kernel: x must be in [0, {kernel_width - 1}] and y in [0, {kernel_height - 1}]; "
            "use anchor=None for the centre (OpenCV's (-1, -1))"
        )
    return int(anchor_x), int(anchor_y)


def as_image_array(image):
    """Check the image; return ``(array, library)`` with array of 2 or more dimensions, untouched."""
    if type(image) is np.ndarray:  # the usual call: no library to find, no conversion
        library = "numpy"
        if not image.dtype.isnative:
            image = image.astype(image.dtype.newbyteorder("="))
    else:
        library = array_library(image)
    if library == "numpy" and type(image) is not np.ndarray:
        if hasattr(image, "__cuda_array_interface__"):
            raise TypeError(
                f"{type(image).__name__} lives on a GPU; pass it as a CuPy array "
                "(cupy.asarray(image), zero-copy)"
            )
        image = np.asarray(image)
        if not image.dtype.isnative:  # e.g. big-endian FITS data: a native copy
            image = image.astype(image.dtype.newbyteorder("="))
    dtype = image.dtype
    if dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"unsupported image dtype {dtype}; supported: {_dtype_list()}")
    if image.ndim < 2:
        raise ValueError(f"image must be at least 2-D (two image axes), got shape {image.shape}")
    if image.size == 0:
        raise ValueError(f"image is empty: shape {image.shape}")
    return image, library


def make_plan(image, kernel, *, border, value, anchor, flip, dtype, axes=(0, 1)):
    """Validate and normalise; return ``(image3d, plan, library)``.

    ``image3d`` is a view of the caller's array with shape ``(H, W, C)`` when the
    image holds one frame, else the ``(N, H, W, C)`` stack (see :func:`make_stack_plan`).
    """
    stack, plan, library, _ = make_stack_plan(
        image,
        kernel,
        border=border,
        value=value,
        anchor=anchor,
        flip=flip,
        dtype=dtype,
        axes=axes,
    )
    if stack is not None and plan.frames == 1:
        stack = stack[0]
    return stack, plan, library


def make_stack_plan(image, kernel, *, border, value, anchor, flip, dtype, axes=(0, 1)):
    """Validate and normalise; return ``(stack, plan, library, layout)``.

    ``stack`` is the ``(N, H, W, C)`` view of the caller's array (:mod:`gpuconv._layout`;
    None for a Dask array, whose blocks are planned again); it is never written to.
    Repeated calls with the same image shape and dtype, axes, kernel
    (a bank name, or an array's values), border, value, anchor, flip and dtype reuse
    the plan: only the image is checked again. The cache is bounded and thread-safe.
    """
    image, library = as_image_array(image)
    layout: Layout = layout_for(image.shape, axes)
    stack = None if library == "dask" else layout.to_stack(image)
    stack_shape = layout.stack_shape
    key = _plan_key(stack_shape, image.dtype, kernel, border, value, anchor, flip, dtype)

    def plan_anew():
        return _new_plan(stack_shape, image.dtype, kernel, border, value, anchor, flip, dtype)

    plan = plan_anew() if key is None else _PLANS.get(key, plan_anew)
    return stack, plan, library, layout


#: Plans kept for repeated calls (least recently used dropped first), keyed by value.
PLAN_CACHE_SIZE = 256
_PLANS = BoundedCache(PLAN_CACHE_SIZE)
#: Kernels up to this many taps are keyed by value (their bytes); larger ones are planned anew.
_KEYED_KERNEL_TAPS = 4096


def _typed(value):
    """A cache-key part that tells 1 from 1.0 from True (validation treats them differently)."""
    if isinstance(value, (tuple, list)):
        return (type(value), tuple(_typed(item) for item in value))
    return (type(value), value)


#: Argument types whose values key a plan as they are (with their type beside them).
_PLAIN_KEY_TYPES = frozenset((str, float, int, bool, type(None)))


def _plan_key(stack_shape, image_dtype, kernel, border, value, anchor, flip, dtype):
    """What a plan depends on, hashable; None where a call must be planned anew."""
    if isinstance(kernel, str):
        kernel_key = ("name", kernel)
    elif (
        type(kernel) is np.ndarray
        and kernel.dtype.kind in "biuf"
        and kernel.ndim == 2
        and 0 < kernel.size <= _KEYED_KERNEL_TAPS
    ):
        # The bytes (not the object): a caller may change an array between calls.
        kernel_key = ("array", kernel.dtype, kernel.shape, kernel.tobytes())
    else:
        return None
    options = (border, value, anchor, flip, dtype)
    types = tuple(map(type, options))
    if _PLAIN_KEY_TYPES.issuperset(types):  # the usual call: no tuple to look into
        return (kernel_key, image_dtype, stack_shape, options, types)  # hashable throughout
    key = (kernel_key, image_dtype, stack_shape, tuple(map(_typed, options)))
    try:
        hash(key)
    except TypeError:  # an unhashable argument: validation will say what is wrong with it
        return None
    return key


def clear_plan_cache() -> None:
    """Forget every cached plan (tests)."""
    _PLANS.clear()


def _new_plan(stack_shape, image_dtype, kernel, border, value, anchor, flip, dtype):
    """Validate and normalise everything but the image (already checked)."""
    kernel_array = as_kernel_array(kernel)
    kernel_height, kernel_width = kernel_array.shape
    anchor_x, anchor_y = _parse_anchor(anchor, kernel_height, kernel_width)
    if not isinstance(flip, (bool, np.bool_)):
        raise TypeError(f"flip must be True or False, got {flip!r}")
    if flip:
        # True convolution = correlation with the kernel rotated 180 degrees
        # about its corner, and the anchor mirrored with it.
        kernel_array = np.ascontiguousarray(kernel_array[::-1, ::-1])
        anchor_x = kernel_width - 1 - anchor_x
        anchor_y = kernel_height - 1 - anchor_y
    kernel_array.flags.writeable = False

    border_mode = parse_border(border)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"value (the constant border) must be a real number, got {value!r}")
    border_value = float(value)
    input_dtype = np.dtype(image_dtype)
    output_dtype = input_dtype if dtype is None else parse_dtype(dtype, "output dtype")
    if not np.isfinite(border_value) and input_dtype.kind != "f":
        raise ValueError(f"value must be finite for an integer image, got {value!r}")

    # Integer sums stay exact in int64 and in float64 while they are below 2**53;
    # bounding the absolute kernel sum by 2**31 keeps any uint16 image far inside.
    integer_kernel = bool(
        np.all(kernel_array == np.round(kernel_array)) and np.abs(kernel_array).sum() < 2**31
    )
    plan = ConvolutionPlan(
        kernel=kernel_array,
        anchor_y=anchor_y,
        anchor_x=anchor_x,
        border=border_mode,
        border_value=border_value,
        input_dtype=np.dtype(input_dtype),
        output_dtype=output_dtype,
        shape=tuple(int(n) for n in stack_shape[1:]),
        integer_kernel=integer_kernel,
        frames=int(stack_shape[0]),
    )
    return plan
