"""One room per backend family: ``numpy.py``, ``numba/``, ``cuda/``.

:data:`gpuconv._registry.BACKEND_MODULES` names the module of each backend (``numpy``,
``numba.backend``, ``cuda.backend``) and imports it on first use.
"""
