"""The kernel bank: named convolution kernels shared by every backend.

NumPy only. Every array here is read-only, so a kernel taken from the bank
cannot be changed by accident for every later caller.

The tutorial's bank (``small_blur``, ``large_blur``, ``sharpen``,
``laplacian``, ``sobel_x``, ``sobel_y``) is kept under its names and listed in
:data:`TUTORIAL_BANK`; :func:`names` lists everything that
``gpuconv.convolve(image, "name")`` accepts.

Examples
--------
>>> from gpuconv import kernels
>>> kernels.get("sharpen")
array([[ 0., -1.,  0.],
       [-1.,  5., -1.],
       [ 0., -1.,  0.]])
>>> kernels.box(3).sum()
np.float64(1.0)
>>> "sobel_x" in kernels.names()
True
"""

from __future__ import annotations

import difflib

import numpy as np

__all__ = [
    "TUTORIAL_BANK",
    "box",
    "gaussian",
    "get",
    "names",
]


def _frozen(values) -> np.ndarray:
    array = np.array(values, dtype=np.float64)
    array.flags.writeable = False
    return array


def box(size: int) -> np.ndarray:
    """Return a normalised ``size x size`` box (mean) kernel.

    Parameters
    ----------
    size : int
        Side length, at least 1.

    Returns
    -------
    numpy.ndarray
        Read-only float64 array whose entries are all ``1 / size**2``.

    Raises
    ------
    ValueError
        If ``size`` is not a positive integer.

    Examples
    --------
    >>> box(2)
    array([[0.25, 0.25],
           [0.25, 0.25]])
    """
    size = _positive_int(size, "size")
    return _frozen(np.full((size, size), 1.0 / (size * size)))


def gaussian(size: int, sigma: float | None = None) -> np.ndarray:
    """Return a normalised ``size x size`` Gaussian kernel.

    The kernel is the outer product of the 1-D kernel that
    ``cv2.getGaussianKernel(size, sigma)`` returns, so it is separable and
    sums to 1.

    Parameters
    ----------
    size : int
        Side length, at least 1.
    sigma : float, optional
        Standard deviation in pixels. ``None`` (or any value <= 0) uses
        OpenCV's rule ``0.3 * ((size - 1) * 0.5 - 1) + 0.8``.

    Returns
    -------
    numpy.ndarray
        Read-only float64 array of shape ``(size, size)``.

    Raises
    ------
    ValueError
        If ``size`` is not a positive integer or ``sigma`` is not finite.

    Examples
    --------
    >>> k = gaussian(5, 1.0)
    >>> k.shape, round(float(k.sum()), 12)
    ((5, 5), 1.0)
    """
    size = _positive_int(size, "size")
    if sigma is None or (np.isfinite(sigma) and sigma <= 0):
        sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    if not np.isfinite(sigma):
        raise ValueError(f"sigma must be finite, got {sigma!r}")
    offsets = np.arange(size) - (size - 1) / 2.0
    line = np.exp(-(offsets**2) / (2.0 * sigma * sigma))
    line /= line.sum()
    return _frozen(np.outer(line, line))


def _positive_int(value, what: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


_BANK: dict[str, np.ndarray] = {
    # The tutorial's six, under the tutorial's names.
    "small_blur": box(7),
    "large_blur": box(21),
    "sharpen": _frozen([[0, -1, 0], [-1, 5, -1], [0, -1, 0]]),
    "laplacian": _frozen([[0, 1, 0], [1, -4, 1], [0, 1, 0]]),
    "sobel_x": _frozen([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]),
    "sobel_y": _frozen([[-1, -2, -1], [0, 0, 0], [1, 2, 1]]),
    # The usual others.
    "identity": _frozen([[0, 0, 0], [0, 1, 0], [0, 0, 0]]),
    "box3": box(3),
    "box5": box(5),
    "gaussian3": gaussian(3),
    "gaussian5": gaussian(5),
    "laplacian8": _frozen([[1, 1, 1], [1, -8, 1], [1, 1, 1]]),
    "scharr_x": _frozen([[-3, 0, 3], [-10, 0, 10], [-3, 0, 3]]),
    "scharr_y": _frozen([[-3, -10, -3], [0, 0, 0], [3, 10, 3]]),
    "prewitt_x": _frozen([[-1, 0, 1], [-1, 0, 1], [-1, 0, 1]]),
    "prewitt_y": _frozen([[-1, -1, -1], [0, 0, 0], [1, 1, 1]]),
    "emboss": _frozen([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]]),
    "outline": _frozen([[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]]),
}

#: The tutorial's kernel bank, in the tutorial's order.
TUTORIAL_BANK: tuple[str, ...] = (
    "small_blur",
    "large_blur",
    "sharpen",
    "laplacian",
    "sobel_x",
    "sobel_y",
)


def names() -> list[str]:
    """Return the names ``gpuconv.convolve`` accepts as a kernel, sorted.

    Returns
    -------
    list of str
    """
    return sorted(_BANK)


def get(name: str) -> np.ndarray:
    """Return the bank kernel called ``name``.

    Parameters
    ----------
    name : str
        One of :func:`names`.

    Returns
    -------
    numpy.ndarray
        The read-only float64 kernel.

    Raises
    ------
    ValueError
        If there is no kernel of that name; the message lists the names and
        suggests the closest.
    """
    try:
        return _BANK[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), _BANK, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"unknown kernel {name!r}.{hint} Known kernels: {', '.join(names())}"
        ) from None


def __getattr__(name: str) -> np.ndarray:
    # kernels.sharpen, kernels.sobel_x, ... as module attributes.
    if name in _BANK:
        return _BANK[name]
    raise AttributeError(f"module 'gpuconv.kernels' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_BANK))
