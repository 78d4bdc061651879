"""Array libraries the dispatcher hands over whole, named by string and imported on first use.

:func:`gpuconv.convolve` filters a NumPy or CuPy array itself, through a backend. An array of
a library named in :data:`ARRAY_ADAPTERS` (a Dask array) goes instead, with every argument,
to that library's adapter, which builds its result from calls of :func:`gpuconv.convolve` on
ordinary arrays (Dask: one call per block). The adapters import the dispatcher; the
dispatcher reaches them only through this table, by name, as :mod:`gpuconv._registry`
reaches the backends, so the imports between these modules run one way.
"""

from __future__ import annotations

import importlib

#: Array library (as :func:`gpuconv._plan.array_library` names it) -> ``"module:function"``,
#: a function called as ``function(image, kernel, **options)`` with
#: :func:`gpuconv.convolve`'s arguments.
ARRAY_ADAPTERS: dict[str, str] = {
    "dask": "gpuconv._dask:convolve_dask",
}


def adapter_for(library: str):
    """The function that takes a whole array of ``library`` over, or None (a backend filters it).

    Examples
    --------
    >>> adapter_for("numpy") is None
    True
    >>> adapter_for("dask").__name__
    'convolve_dask'
    """
    target = ARRAY_ADAPTERS.get(library)
    if target is None:
        return None
    module_name, _, function_name = target.partition(":")
    return getattr(importlib.import_module(module_name), function_name)
