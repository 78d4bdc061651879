"""Image axes: any array of 2 or more dimensions as a stack of frames ``(N, H, W, C)``.

``axes`` names the two image axes (rows, then columns). Every other axis is
independent. The independent axes that come after both image axes become the
channel axis ``C`` (channels-last: the backends filter the channels of a pixel
together); all the others become the frame axis ``N`` (stacks, channels-first,
batches), which the backends run in parallel (numba: frames and bands of rows in one
parallel loop). ``numpy.moveaxis`` and a reshape of the independent axes give a view:
nothing is copied where the strides allow merging the axes of ``N`` (and of ``C``),
which is every C-contiguous layout and every single independent axis on each side;
otherwise the transposed image is copied once.
"""

from __future__ import annotations

import functools
import math
import operator
from dataclasses import dataclass

import numpy as np


def normalise_axes(axes, ndim: int) -> tuple[int, int]:
    """Check ``axes`` for an array of ``ndim`` dimensions; return them non-negative.

    Examples
    --------
    >>> normalise_axes((-2, -1), 3)
    (1, 2)
    >>> normalise_axes((0, 0), 2)
    Traceback (most recent call last):
    ...
    ValueError: axes (0, 0) name the same axis twice; give two different image axes
    """
    try:
        first, second = axes
        first, second = operator.index(first), operator.index(second)
    except (TypeError, ValueError):
        raise ValueError(
            f"axes must be a pair of integers (rows axis, columns axis), got {axes!r}"
        ) from None
    if isinstance(axes[0], (bool, np.bool_)) or isinstance(axes[1], (bool, np.bool_)):
        raise ValueError(f"axes must be a pair of integers, got {axes!r}")
    for axis in (first, second):
        if not -ndim <= axis < ndim:
            raise ValueError(
                f"axes {tuple(axes)} out of range for an image of {ndim} dimensions "
                f"(valid: {-ndim} .. {ndim - 1})"
            )
    first, second = first % ndim, second % ndim
    if first == second:
        raise ValueError(
            f"axes {tuple(axes)} name the same axis twice; give two different image axes"
        )
    return first, second


@dataclass(frozen=True)
class Layout:
    """How an image of ``shape`` maps to ``(N, H, W, C)`` and back.

    ``order`` is the transposition that brings the image to frame axes, image axes,
    channel axes; ``frame_shape`` and ``channel_shape`` are the sizes merged into N and C.
    """

    shape: tuple[int, ...]
    order: tuple[int, ...]
    frame_shape: tuple[int, ...]
    channel_shape: tuple[int, ...]

    @functools.cached_property  # layouts are cached (layout_for): computed once
    def stack_shape(self) -> tuple[int, int, int, int]:
        height, width = (self.shape[axis] for axis in self.order[len(self.frame_shape) :][:2])
        return (math.prod(self.frame_shape), int(height), int(width), math.prod(self.channel_shape))

    @functools.cached_property
    def is_plain(self) -> bool:
        """True for ``(H, W)`` and ``(H, W, C)`` read with ``axes=(0, 1)``: no transposition."""
        identity = self.order == tuple(range(len(self.shape)))
        return len(self.shape) <= 3 and not self.frame_shape and identity

    def to_stack(self, array):
        """The ``(N, H, W, C)`` view of ``array`` (a copy only where strides forbid a view)."""
        if self.is_plain:  # (H, W) or (H, W, C): indexing alone, the cheapest view
            return array[None, :, :, None] if len(self.shape) == 2 else array[None]
        transposed = array.transpose(self.order)
        if mergeable(transposed, 0, len(self.frame_shape)) and mergeable(
            transposed, len(self.frame_shape) + 2, array.ndim
        ):
            return transposed.reshape(self.stack_shape)
        return transposed.copy().reshape(self.stack_shape)  # C order after the copy

    def can_view(self, array) -> bool:
        """Whether :meth:`to_stack` gives a view of ``array`` (no copy)."""
        transposed = array.transpose(self.order)
        return mergeable(transposed, 0, len(self.frame_shape)) and mergeable(
            transposed, len(self.frame_shape) + 2, array.ndim
        )

    def from_stack(self, stack):
        """The ``(N, H, W, C)`` result viewed in the image's own axes (always a view)."""
        if self.is_plain:  # indexing alone: a repeated small call pays microseconds here
            return stack[0, :, :, 0] if len(self.shape) == 2 else stack[0]
        image_axes = tuple(stack.shape[1:3])
        transposed = stack.reshape(self.frame_shape + image_axes + self.channel_shape)
        return transposed.transpose(np.argsort(self.order))


def mergeable(array, start: int, stop: int) -> bool:
    """Whether axes ``start:stop`` of ``array`` merge into one axis without a copy."""
    previous_stride = None
    for axis in range(stop - 1, start - 1, -1):
        size, stride = array.shape[axis], array.strides[axis]
        if size == 1:
            continue
        if previous_stride is not None and stride != previous_stride:
            return False
        previous_stride = stride * size
    return True


def layout_for(shape: tuple[int, ...], axes) -> Layout:
    """The :class:`Layout` of an image of ``shape`` read with image axes ``axes``."""
    if type(axes) is tuple and len(axes) == 2 and type(axes[0]) is int and type(axes[1]) is int:
        return _cached_layout(tuple(shape), axes)  # the usual call: computed once per shape
    return _layout(shape, axes)


@functools.lru_cache(maxsize=256)
def _cached_layout(shape: tuple[int, ...], axes: tuple[int, int]) -> Layout:
    return _layout(shape, axes)


def _layout(shape: tuple[int, ...], axes) -> Layout:
    ndim = len(shape)
    rows, columns = normalise_axes(axes, ndim)
    last_image_axis = max(rows, columns)
    independent = [axis for axis in range(ndim) if axis not in (rows, columns)]
    channels = [axis for axis in independent if axis > last_image_axis]
    frames = [axis for axis in independent if axis < last_image_axis]
    order = (*frames, rows, columns, *channels)
    return Layout(
        shape=tuple(int(n) for n in shape),
        order=tuple(order),
        frame_shape=tuple(int(shape[axis]) for axis in frames),
        channel_shape=tuple(int(shape[axis]) for axis in channels),
    )
