"""What every CUDA launch shares: the :class:`Launch` record and the kernels' C types.

Both :mod:`gpuconv._backends.cuda.launch` (the shared-memory kernels) and
:mod:`gpuconv._backends.cuda.window` (the register-window kernels) build a
:class:`Launch`; the real CuPy launch and the CPU emulator take it as it is.
Nothing here imports CuPy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: numpy dtype -> C type of the kernels' template arguments.
C_TYPES = {
    np.dtype(np.uint8): "unsigned char",
    np.dtype(np.uint16): "unsigned short",
    np.dtype(np.int16): "short",
    np.dtype(np.float16): "gpuconv_half",  # kernels_cuda/gpuconv_common.cuh
    np.dtype(np.float32): "float",
    np.dtype(np.float64): "double",
    np.dtype(np.int32): "int",
    np.dtype(np.int64): "long long",
}


def specialised(input_dtype, output_dtype, accumulator) -> bool:
    """Whether compile-time kernel sizes exist for this combination of types.

    Only for the common cases: 32-bit sums into the input's own type, and float32
    sums into float32 (raw responses). Unrolled 64-bit sums run out of registers
    and spill, and unrolled int32 sums into float32 took up to 215 registers on
    sm_90 (ptxas's report); every other combination runs the run-time-size
    template, which also keeps the number of instantiations (and CI's compile
    checks) small.
    """
    output_dtype, accumulator = np.dtype(output_dtype), np.dtype(accumulator)
    if accumulator.itemsize != 4:
        return False
    return output_dtype == np.dtype(input_dtype) or (
        output_dtype == accumulator == np.dtype(np.float32)
    )


@dataclass(frozen=True)
class DeviceLimits:
    """What the launch depends on in the device.

    ``shared_bytes_per_block``: dynamic shared memory a block may use (48 KiB without
    opting in; the backend passes the device's opt-in limit, 227 KiB on an H100).
    ``max_grid_y``, ``max_grid_z``: CUDA's limits on gridDim.y and gridDim.z; the kernels
    stride over the tile rows and channels beyond them. Tests set them small, so that
    every block loops over several tiles and channels (barrier and reuse checks).
    """

    shared_bytes_per_block: int = 48 * 1024
    max_grid_y: int = 65535
    max_grid_z: int = 65535


#: The limits of every GPU since Kepler, without the shared-memory opt-in.
DEFAULT_LIMITS = DeviceLimits()


@dataclass(frozen=True)
class Launch:
    """One kernel launch, ready for ``cupy.RawKernel`` or the emulator.

    Attributes
    ----------
    template : str
        ``"gpuconv_direct"``, ``"gpuconv_separable"`` or ``"gpuconv_global"``.
    name_expression : str
        The instantiation, e.g. ``"gpuconv_direct<unsigned char, unsigned char, int, 3, 3>"``.
    source_file : str
        The ``kernels_cuda/`` file that defines the template.
    grid, block : tuple of int
    shared_bytes : int
        Dynamic shared memory per block.
    weights : numpy.ndarray
        The taps (direct, global) or the column then row factors (separable),
        C-contiguous, in the accumulator's dtype.
    scalars : tuple
        The arguments after ``(image, output, weights)``, as numpy scalars of
        the exact C types the kernel declares.
    vector_pitch_aligned : bool or None
        For kernels that take a last ``vector_ok`` argument (the window kernels):
        whether every image and output row starts on 16 bytes when the arrays do;
        :meth:`arguments` adds the arrays' own alignment. None: no such argument.
    frames : int
        Frames of an ``(N, H, W, C)`` stack the launch covers (``gridDim.z``, the window
        kernels); 1: one launch per frame.
    """

    template: str
    name_expression: str
    source_file: str
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    shared_bytes: int
    weights: np.ndarray
    scalars: tuple
    vector_pitch_aligned: bool | None = None
    frames: int = 1

    def arguments(self, image, output, weights) -> tuple:
        """The whole argument tuple, given the (device) image, output and weights arrays."""
        if self.vector_pitch_aligned is None:
            return (image, output, weights, *self.scalars)
        aligned = self.vector_pitch_aligned and all(
            _address(array) % 16 == 0 for array in (image, output)
        )
        return (image, output, weights, *self.scalars, np.int32(aligned))


def _address(array) -> int:
    """The first byte of a NumPy or CuPy array (CuPy is not imported)."""
    pointer = getattr(getattr(array, "data", None), "ptr", None)  # CuPy: cheap
    if pointer is not None:
        return int(pointer)
    interface = getattr(array, "__cuda_array_interface__", None) or array.__array_interface__
    return int(interface["data"][0])
