"""``gpuconv.convolve``: validate once, choose a backend, run the plan.

Arrays of a library with an adapter in :data:`gpuconv._adapters.ARRAY_ADAPTERS` (Dask) are
handed to it whole instead; it calls back here for each piece.
"""

from __future__ import annotations

import numpy as np

from . import _adapters, _registry
from ._plan import array_library, make_plan


def convolve(
    image,
    kernel,
    *,
    border="reflect101",
    value=0.0,
    anchor=None,
    flip=False,
    dtype=None,
    backend="auto",
):
    """Slide ``kernel`` over ``image`` (correlation, like ``cv2.filter2D``).

    ``out[y, x] = sum(kernel[i, j] * src(y + i - ay, x + j - ax))`` over the
    kernel, where ``src`` reads outside the image through ``border``.

    Parameters
    ----------
    image : array, shape (H, W) or (H, W, C)
        NumPy or CuPy array (views, strided and read-only arrays are fine),
        a Dask array (see Returns), or anything :func:`numpy.asarray` takes
        (nested lists, a PIL image: NumPy out). dtype uint8, uint16, int16, float32 or
        float64. Colour images are channels-last; every channel is filtered
        with the same kernel. Never modified.
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
        0), like OpenCV's ``saturate_cast``; float outputs hold the raw sums.
    backend : {"auto", "cuda", "numba", "numpy"}, default "auto"
        ``"auto"`` sends a CuPy array to ``"cuda"`` and a NumPy array to the
        fastest available backend for its size; :func:`gpuconv.use_backend`
        and the ``GPUCONV_BACKEND`` environment variable change what
        ``"auto"`` means.

    Returns
    -------
    array
        A new array of the image's shape and ``dtype``, in the image's array
        library: NumPy in, NumPy out; CuPy in, CuPy out (no host round trip);
        Dask in, a lazy Dask array out.

    Raises
    ------
    TypeError
        Unsupported image, output or kernel dtype (the message lists the
        supported ones); a non-integer anchor; a non-boolean ``flip``.
    ValueError
        Image not 2-D or 3-D, or empty; kernel not 2-D, empty, or holding
        NaN/inf; unknown kernel name, border or backend; anchor outside the
        kernel.
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
    """
    library = array_library(image)
    if (
        library == "numpy"
        and not isinstance(image, np.ndarray)
        and not hasattr(image, "__cuda_array_interface__")
    ):
        image = np.asarray(image)  # nested lists, PIL images, anything with __array__
    adapter = _adapters.adapter_for(library)
    if adapter is not None:
        return adapter(
            image,
            kernel,
            border=border,
            value=value,
            anchor=anchor,
            flip=flip,
            dtype=dtype,
            backend=backend,
        )
    _registry.check_name(backend)
    image3d, plan, library = make_plan(
        image, kernel, border=border, value=value, anchor=anchor, flip=flip, dtype=dtype
    )
    _, module = _registry.resolve(backend, plan, library)
    output = module.convolve(image3d, plan, library)
    # np.ndim, not image.ndim: a nested list or another array-like has no .ndim
    return output if np.ndim(image) == 3 else output[:, :, 0]
