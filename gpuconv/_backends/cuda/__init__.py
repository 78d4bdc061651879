"""The CUDA backend: :mod:`.backend` (what the registry loads: CuPy launches, or the CPU
emulator with ``GPUCONV_CUDA_EMULATOR=1``), :mod:`.launch` (the launch arithmetic, plain
Python) and :mod:`.source` (finding, compiling and checking ``kernels_cuda/``)."""
