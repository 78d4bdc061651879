"""What ``gpuconv bench`` times: gpuconv's host backends and the peers beside them.

:func:`implementations` maps a name (``"gpuconv:numba"``, ``"cv2.filter2D"``,
``"cupyx.scipy.ndimage.correlate"``, ``"torch.conv2d"``...) to a
``callable(image, kernel)`` that takes a host image and returns a finished
NumPy array, so :func:`gpuconv.bench.measure` times every one the same way.
Every peer computes gpuconv's correlation with reflect101 borders; a peer
that cannot be imported or has no device here is simply left out. Peers are
imported when :func:`implementations` is called, never at module import.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .. import _registry

#: Backends that run on host images (the CUDA benchmark is separate).
HOST_BACKENDS = ("numba", "numpy")


def _gpuconv_call(name: str) -> Callable:
    import gpuconv

    def call(image, kernel):
        return gpuconv.convolve(image, kernel, backend=name)

    return call


def _peer_calls() -> dict[str, Callable]:
    """Peers importable here; each computes the same correlation (reflect101)."""
    peers: dict[str, Callable] = {}
    try:
        import cv2

        peers["cv2.filter2D"] = lambda image, kernel: cv2.filter2D(image, -1, kernel)
    except ImportError:
        pass
    try:
        from scipy import ndimage

        def scipy_correlate(image, kernel):
            weights = kernel if image.ndim == 2 else kernel[:, :, None]
            return ndimage.correlate(image, weights, mode="mirror")

        peers["scipy.ndimage.correlate"] = scipy_correlate
    except ImportError:
        pass
    peers.update(_gpu_peer_calls())
    return peers


def _gpu_peer_calls() -> dict[str, Callable]:
    peers: dict[str, Callable] = {}
    try:
        import cupy
        from cupyx.scipy import ndimage as cupy_ndimage

        if cupy.cuda.runtime.getDeviceCount() > 0:

            def cupy_correlate(image, kernel):
                weights = kernel if image.ndim == 2 else kernel[:, :, None]
                result = cupy_ndimage.correlate(
                    cupy.asarray(image), cupy.asarray(weights), mode="mirror"
                )
                return cupy.asnumpy(result)  # synchronises

            peers["cupyx.scipy.ndimage.correlate"] = cupy_correlate
    except Exception:  # noqa: BLE001, S110 (no cupy, no driver, no device: not a peer here)
        pass
    try:
        import torch
        from torch.nn import functional

        def torch_conv2d(image, kernel):
            height, width = image.shape[:2]
            planes = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
            planes = planes.reshape(height, width, -1).permute(2, 0, 1)[:, None]
            weights = torch.from_numpy(np.asarray(kernel, np.float32))[None, None]
            kh, kw = kernel.shape
            ax, ay = kw // 2, kh // 2
            padded = functional.pad(planes, (ax, kw - 1 - ax, ay, kh - 1 - ay), mode="reflect")
            return functional.conv2d(padded, weights).numpy()  # conv2d correlates

        peers["torch.conv2d"] = torch_conv2d
    except Exception:  # noqa: BLE001, S110 (torch missing or broken: not a peer here)
        pass
    return peers


def implementations(backends=None, peers=True) -> dict[str, Callable]:
    """Name -> ``callable(image, kernel)`` for everything that can run here.

    Parameters
    ----------
    backends : iterable of str, optional
        gpuconv backends to include; None means every available host backend
        (``numba``, ``numpy``). Unavailable ones are left out.
    peers : bool
        Include cv2, scipy (and cupyx, torch where they run).

    Returns
    -------
    dict of str to callable
        ``"gpuconv:<backend>"`` and peer names.
    """
    chosen = HOST_BACKENDS if backends is None else tuple(backends)
    table: dict[str, Callable] = {}
    for name in chosen:
        _registry.check_name(name)
        if _registry.status(name).available:
            table[f"gpuconv:{name}"] = _gpuconv_call(name)
    if peers:
        table.update(_peer_calls())
    return table
