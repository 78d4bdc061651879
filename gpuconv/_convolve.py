"""``gpuconv.convolve``: validate once, choose a backend, run the plan.

Arrays of a library with an adapter in :data:`gpuconv._adapters.ARRAY_ADAPTERS` (Dask) are
handed to it whole instead; it calls back here for each piece.
"""

from __future__ import annotations

import numpy as np

from . import _adapters, _foreign, _registry
from ._cache import BoundedCache
from ._plan import SUPPORTED_DTYPES, _plan_key, array_library, make_stack_plan, parse_dtype


def convolve(
    image,
    kernel,
    *,
    border="reflect101",
    value=0.0,
    anchor=None,
    flip=False,
    dtype=None,
    axes=(0, 1),
    out=None,
    backend="auto",
):
    """Slide ``kernel`` over ``image`` (correlation, like ``cv2.filter2D``).

    ``out[y, x] = sum(kernel[i, j] * src(y + i - ay, x + j - ax))`` over the
    kernel, where ``src`` reads outside the image through ``border``.

    Parameters
    ----------
    image : array of 2 or more dimensions
        NumPy or CuPy array (views, strided and read-only arrays are fine),
        a Dask array (see Returns), a torch tensor (CPU or CUDA) or any object
        with ``__dlpack__`` (read without a copy), or anything
        :func:`numpy.asarray` takes (nested lists, a PIL image: NumPy out).
        dtype uint8, uint16, int16, float16, float32 or float64. ``axes`` names
        the two image axes; every other axis (colour channels, frames) is
        filtered independently with the same kernel. Never modified.
    kernel : array_like, shape (kh, kw), or str
        Any size from 1 x 1, odd or even, finite real numbers; or the name of
        a kernel in :mod:`gpuconv.kernels` (``"sharpen"``, ``"sobel_x"``...).
    border : str or int, default "reflect101"
        ``"reflect101"`` (``gfedcb|abcdefgh|gfedcba``, OpenCV's default),
        ``"reflect"`` (``fedcba|abcdefgh|hgfedcb``), ``"replicate"``
        (``aaaaaa|abcdefgh|hhhhhhh``), ``"constant"`` (``value`` outside) or
        ``"wrap"`` (``cdefgh|abcdefgh|abcdefg``). scipy.ndimage mode names
        (``"mirror"``, ``"nearest"``...) and ``cv2.BORDER_*`` constants are
        accepted as aliases.
    value : float, default 0.0
        The pixel value outside the image for ``border="constant"``, used as
        given (not rounded to the image type).
    anchor : (int, int), optional
        ``(x, y)`` of the kernel tap that sits on the output pixel, OpenCV's
        order. ``None`` means ``(kw // 2, kh // 2)``, OpenCV's default also
        for even sizes.
    flip : bool, default False
        True computes true convolution (kernel rotated 180 degrees, anchor
        mirrored), equal to ``scipy.ndimage.convolve``.
    dtype : dtype, optional
        Output dtype, one of the image dtypes. ``None`` keeps the input's.
        Integer outputs are rounded half to even and saturated (NaN becomes
        0), like OpenCV's ``saturate_cast``; float outputs hold the raw sums
        (float16: float32 sums rounded once, to nearest).
    axes : (int, int), default (0, 1)
        The image axes, rows then columns, as ``scipy.ndimage.correlate(...,
        axes=...)`` for a 2-D kernel (kernel rows run along ``axes[0]``).
        ``(0, 1)`` reads ``(H, W)`` and channels-last ``(H, W, C)``; a stack
        ``(N, H, W[, C])`` takes ``(1, 2)``, channels-first ``(C, H, W)``
        ``(-2, -1)``. Negative axes count from the end.
    out : array, optional
        Where to write the result: the image's library and shape; its dtype is
        the output dtype (``dtype`` None or the same). It may be the image
        itself or overlap it; the result is as without aliasing (a temporary
        is used only then).
    backend : {"auto", "cuda", "numba", "numpy"}, default "auto"
        ``"auto"`` sends a CuPy array to ``"cuda"`` and a NumPy array to the
        fastest available backend for its size; :func:`gpuconv.use_backend`
        and the ``GPUCONV_BACKEND`` environment variable change what
        ``"auto"`` means.

    Returns
    -------
    array
        A new array of the image's shape and ``dtype`` (or ``out``), in the
        image's array library: NumPy in, NumPy out; CuPy in, CuPy out (no host
        round trip); torch in, torch out on the same device (zero-copy);
        Dask in, a lazy Dask array out.

    Raises
    ------
    TypeError
        Unsupported image, output or kernel dtype (the message lists the
        supported ones); a non-integer anchor; a non-boolean ``flip``.
    ValueError
        Image under 2-D, or empty; duplicate or out-of-range ``axes``; kernel
        not 2-D, empty, or holding NaN/inf; unknown kernel name, border or
        backend; anchor outside the kernel; ``out`` of the wrong library,
        shape or dtype, or read-only.
    gpuconv.BackendUnavailableError
        ``backend`` names a backend that cannot run here; the message says why
        and what to install.

    See Also
    --------
    cv2.filter2D, scipy.ndimage.correlate, scipy.ndimage.convolve

    Examples
    --------
    >>> import numpy as np, gpuconv
    >>> gpuconv.convolve(np.array([[1, 2, 3, 4]], np.uint8), [[0.5]])
    array([[0, 1, 2, 2]], dtype=uint8)
    >>> image = np.arange(12, dtype=np.float32).reshape(3, 4)
    >>> gpuconv.convolve(image, "sobel_x", border="replicate")
    array([[4., 8., 8., 4.],
           [4., 8., 8., 4.],
           [4., 8., 8., 4.]], dtype=float32)
    >>> frames = np.zeros((2, 3, 3), np.uint8); frames[:, 1, 1] = 10
    >>> gpuconv.convolve(frames, [[1, 1, 1]], axes=(1, 2), border="constant")[:, 1]
    array([[10, 10, 10],
           [10, 10, 10]], dtype=uint8)
    >>> _ = gpuconv.convolve(frames, "identity", axes=(1, 2), out=frames)  # in place
    """
    call_key = None
    if type(image) is np.ndarray:  # the usual call: the foreign-array checks skipped
        library = "numpy"
        if out is None and image.flags.c_contiguous and image.dtype.isnative:
            call_key = _call_key(image, kernel, border, value, anchor, flip, dtype, axes, backend)
            repeat = None if call_key is None else _REPEATS.find(call_key)
            if repeat is not None:
                result = repeat(image)
                if result is not None:
                    return result
    elif _foreign.is_foreign(image):
        return _convolve_foreign(
            image,
            kernel,
            border=border,
            value=value,
            anchor=anchor,
            flip=flip,
            dtype=dtype,
            axes=axes,
            out=out,
            backend=backend,
        )
    else:
        library = array_library(image)
        if (
            library == "numpy"
            and not isinstance(image, np.ndarray)
            and not hasattr(image, "__cuda_array_interface__")
        ):
            image = np.asarray(image)  # nested lists, PIL images, anything with __array__
    adapter = None if library == "numpy" else _adapters.adapter_for(library)
    if adapter is not None:
        if out is not None:
            raise ValueError(f"out= is not supported for {library} arrays (the result is lazy)")
        return adapter(
            image,
            kernel,
            border=border,
            value=value,
            anchor=anchor,
            flip=flip,
            dtype=dtype,
            axes=axes,
            backend=backend,
        )
    _registry.check_name(backend)
    if out is not None:
        _check_out(out, image, library)
        dtype = _output_dtype(out, dtype)
    stack, plan, library, layout = make_stack_plan(
        image,
        kernel,
        border=border,
        value=value,
        anchor=anchor,
        flip=flip,
        dtype=dtype,
        axes=axes,
    )
    _, module = _registry.resolve(backend, plan, library)
    if out is None:
        result = layout.from_stack(module.convolve(stack, plan, library))
        make = getattr(module, "repeat_runner", None)
        if call_key is not None and make is not None and layout.is_plain:
            # Asked only of the backend that ran: a stand-in that runs while numba is not
            # worth loading stores nothing, so numba's runner can come later.
            _REPEATS.get(call_key, lambda: make(plan))
        return result
    if layout.can_view(out) and not _overlaps(out, image, library):
        out_stack = layout.to_stack(out)
        if out_stack.flags.c_contiguous:
            module.convolve(stack, plan, library, output=out_stack)
            return out
    # out overlaps the image (or cannot be written as one stack): through a temporary.
    out[...] = layout.from_stack(module.convolve(stack, plan, library))
    return out


#: Repeated calls (:func:`_call_key`) a backend can run from its own cached state: a
#: function of the image that returns the result, or None where the whole call must run
#: (then it runs as if there were none). None is stored where the backend has none.
REPEAT_CACHE_SIZE = 64
_REPEATS = BoundedCache(REPEAT_CACHE_SIZE)


def _call_key(image, kernel, border, value, anchor, flip, dtype, axes, backend):
    """What a call on a C-contiguous NumPy image of native byte order with no ``out``
    depends on, hashable; None where it cannot be a repeat.

    Why: a small image's filter (a 3 x 3 kernel on 256 x 256 pixels: 15-25 us) cost as much
    again in validation, planning, choosing a backend and reaching the loop, through a
    dozen Python functions; the image shape, dtype and arguments (as the plan cache keys
    them), the axes and the backend choice (with, for ``"auto"``, the default backend in
    force and ``GPUCONV_BACKEND``) decide all of that, so a repeat of them runs the
    backend's loop at once (:func:`gpuconv._backends.numba.backend.repeat_runner`).
    """
    if type(axes) is not tuple or type(backend) is not str:
        return None
    plan_key = _plan_key(image.shape, image.dtype, kernel, border, value, anchor, flip, dtype)
    if plan_key is None:
        return None
    if backend != "auto":
        return (plan_key, axes, backend)
    choice = (_registry._default_backend.get(), _registry._environment_backend())
    return (plan_key, axes, backend, choice)


def clear_repeat_cache() -> None:
    """Forget every repeated call (tests)."""
    _REPEATS.clear()


def _output_dtype(out, dtype):
    """The output dtype ``out`` asks for; ``dtype`` must be None or the same."""
    out_dtype = getattr(out, "dtype", None)
    if out_dtype is None or np.dtype(out_dtype) not in SUPPORTED_DTYPES:
        raise ValueError(
            f"out has dtype {out_dtype}; an output dtype must be one of "
            f"{', '.join(str(d) for d in SUPPORTED_DTYPES)}"
        )
    if dtype is not None and parse_dtype(dtype, "output dtype") != np.dtype(out_dtype):
        raise ValueError(f"dtype={np.dtype(dtype)} disagrees with out.dtype {out_dtype}")
    return np.dtype(out_dtype)


def _check_out(out, image, library: str) -> None:
    out_library = array_library(out)
    if out_library != library or (library == "numpy" and not isinstance(out, np.ndarray)):
        raise ValueError(
            f"out must be a {library} array like the image, got {type(out).__module__}."
            f"{type(out).__name__}"
        )
    if tuple(out.shape) != tuple(np.shape(image)):
        raise ValueError(f"out has shape {tuple(out.shape)}; the result has {tuple(image.shape)}")
    flags = getattr(out, "flags", None)
    if flags is not None and not getattr(flags, "writeable", True):
        raise ValueError("out is read-only; pass a writeable array")


def _overlaps(out, image, library: str) -> bool:
    """Whether writing ``out`` could change ``image`` (then the result goes through a copy)."""
    if library == "cupy":
        import cupy

        return bool(cupy.shares_memory(out, image))
    if not np.may_share_memory(out, image):
        return False
    try:
        return bool(np.shares_memory(out, image, max_work=10_000))
    except np.exceptions.TooHardError:
        return True


def _convolve_foreign(image, kernel, *, out, **options):
    """A torch tensor or another DLPack object: filter its NumPy/CuPy view, give the same kind."""
    native, library = _foreign.to_native(image)
    native_out = None
    if out is not None:
        if not _foreign.is_foreign(out) or type(out) is not type(image):
            raise ValueError(
                f"out must be a {type(image).__module__}.{type(image).__name__} like the image, "
                f"got {type(out).__module__}.{type(out).__name__}"
            )
        native_out, out_library = _foreign.to_native(out)
        if out_library != library:
            raise ValueError("out must be on the image's device")
    with _foreign.cuda_stream_of(image):
        result = convolve(native, kernel, out=native_out, **options)
    if out is not None:
        return out
    return _foreign.from_native(result, image)
