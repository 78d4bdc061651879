"""The Numba CPU backend: :mod:`.backend` (what the registry loads; imports without numba)
and :mod:`.kernels` (the compiled loops, imported on the first call)."""
