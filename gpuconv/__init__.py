"""gpuconv: fast 2-D image convolution on NVIDIA GPUs, with a fast CPU fallback.

>>> import numpy as np, gpuconv
>>> image = np.zeros((5, 5), np.uint8); image[2, 2] = 100
>>> gpuconv.convolve(image, "laplacian")[1:4, 1:4]
array([[  0, 100,   0],
       [100,   0, 100],
       [  0, 100,   0]], dtype=uint8)

The public API: :func:`convolve`, the kernel bank :mod:`gpuconv.kernels`,
:func:`backends`, :func:`use_backend` and :class:`BackendUnavailableError`;
for images bigger than memory, :func:`apply_file` (band by band, files to
files) and :func:`read_dask` / :func:`write_dask` (files as Dask arrays).
Importing gpuconv loads neither numba nor cupy; each loads on first use.
"""

from . import kernels
from ._convolve import convolve
from ._dask import read_dask, write_dask
from ._outofcore import apply_file
from ._plan import SUPPORTED_DTYPES, Border
from ._registry import BackendStatus, BackendUnavailableError, backends, use_backend

__version__ = "0.1.0"

__all__ = [
    "SUPPORTED_DTYPES",
    "BackendStatus",
    "BackendUnavailableError",
    "Border",
    "apply_file",
    "backends",
    "convolve",
    "kernels",
    "read_dask",
    "use_backend",
    "write_dask",
]
