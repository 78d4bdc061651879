"""torch tensors and any object with ``__dlpack__``: zero-copy in and out through DLPack.

A CPU tensor is viewed as a NumPy array (:func:`numpy.from_dlpack`), a CUDA tensor as a
CuPy array (:func:`cupy.from_dlpack`), and the result goes back to the input's library
through that library's own ``from_dlpack`` (``torch.from_dlpack``): no pixel is copied
either way. CUDA work runs on torch's current stream (CuPy is pointed at it for the
call), so it is ordered with the caller's torch work without a synchronisation.

torch is never imported here: it is found through the object's type, so
``import gpuconv`` costs nothing for those who never use it.
"""

from __future__ import annotations

import contextlib
import importlib
import sys

import numpy as np

# DLPack device types (dlpack.h: DLDeviceType).
_DLPACK_CPU = 1
_DLPACK_CUDA = 2
_DLPACK_CUDA_HOST = 3
_DLPACK_CUDA_MANAGED = 13
_NATIVE_MODULES = ("numpy", "cupy", "dask")


def _top_module(array) -> str:
    return type(array).__module__.split(".")[0]


def is_foreign(array) -> bool:
    """True for a torch tensor or another non-NumPy/CuPy/Dask object with ``__dlpack__``."""
    if isinstance(array, np.ndarray):
        return False
    module = _top_module(array)
    if module in _NATIVE_MODULES:
        return False
    return module == "torch" or hasattr(array, "__dlpack__")


def _exportable(array):
    # torch refuses to export a tensor that requires a gradient; the filter never
    # differentiates, so its data is what is wanted.
    if _top_module(array) == "torch" and getattr(array, "requires_grad", False):
        return array.detach()
    return array


def _device_type(array) -> int:
    try:
        device = array.__dlpack_device__()
    except AttributeError:
        return _DLPACK_CPU
    return int(device[0])


def to_native(array):
    """A NumPy (CPU) or CuPy (CUDA) view of a DLPack array, and the name of that library.

    Raises
    ------
    TypeError
        The object's device is neither the CPU nor a CUDA GPU, or DLPack refuses it.
    gpuconv.BackendUnavailableError
        A CUDA tensor but CuPy cannot run here.
    """
    array = _exportable(array)
    device = _device_type(array)
    # Outside the try: BackendUnavailableError is a RuntimeError, and must stay itself.
    cupy = _cupy() if device in (_DLPACK_CUDA, _DLPACK_CUDA_MANAGED) else None
    try:
        if device in (_DLPACK_CPU, _DLPACK_CUDA_HOST):
            return np.from_dlpack(array), "numpy"
        if cupy is not None:
            with cuda_stream_of(array):
                return cupy.from_dlpack(array), "cupy"
    except (BufferError, RuntimeError, ValueError) as error:
        raise TypeError(f"{type(array).__name__} cannot be read through DLPack: {error}") from None
    raise TypeError(
        f"{type(array).__name__} lives on DLPack device type {device}; gpuconv reads the CPU "
        "and CUDA GPUs"
    )


def _cupy():
    try:
        return importlib.import_module("cupy")
    except ImportError:
        from ._registry import BackendUnavailableError

        raise BackendUnavailableError(
            "a CUDA tensor needs cupy: pip install 'gpuconv[cuda12]' or 'gpuconv[cuda13]'"
        ) from None


def cuda_stream_of(array):
    """A context that makes CuPy use torch's current stream (nothing for other objects)."""
    torch = sys.modules.get("torch")
    if torch is None or _top_module(array) != "torch" or not array.is_cuda:
        return contextlib.nullcontext()
    cupy = _cupy()
    stream = torch.cuda.current_stream(array.device)
    return cupy.cuda.ExternalStream(stream.cuda_stream, array.device.index)


def from_native(result, like):
    """``result`` (NumPy or CuPy) as an array of ``like``'s library, zero-copy.

    Libraries without a module-level ``from_dlpack`` get the NumPy or CuPy array itself.
    """
    module = sys.modules.get(_top_module(like))
    from_dlpack = getattr(module, "from_dlpack", None)
    if from_dlpack is None:
        return result
    with cuda_stream_of(like):
        return from_dlpack(result)
