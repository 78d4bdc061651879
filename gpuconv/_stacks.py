"""``gpuconv apply --axes``: stacks of frames in ``.npy`` files and multi-page TIFFs.

A stack (``(N, H, W)``, ``(N, H, W, C)``, channels-first ``(C, H, W)``, any layout that
:func:`gpuconv.convolve`'s ``axes`` names) is read whole, filtered in one call per kernel
(every frame at once: numba's threads share the frames and bands, the cuda backend's
window kernels take the whole stack in one launch) and written whole, atomically, in the
same layout. Band streaming (:mod:`gpuconv._outofcore`) is for single images larger than
memory; a stack is held in memory.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from ._atomic import AtomicOutput
from ._convolve import convolve
from ._image_files import FormatError, ImageFileError
from ._layout import normalise_axes
from ._plan import SUPPORTED_DTYPES, parse_dtype

#: Formats that hold a stack of any number of dimensions.
STACK_SUFFIXES = (".npy", ".tif", ".tiff")


def read_stack(path) -> np.ndarray:
    """A ``.npy`` array (memory-mapped) or every page of a TIFF as one array."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(2, "No such file or directory", str(path))
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        elif suffix in (".tif", ".tiff"):
            import tifffile

            array = tifffile.imread(path)
        else:
            raise ImageFileError(
                f"{path}: --axes reads stacks from {', '.join(STACK_SUFFIXES)} files only"
            )
    except (ImageFileError, OSError):
        raise
    except Exception as error:  # a corrupt file: ValueError, struct.error, TiffFileError ...
        raise ImageFileError(f"cannot read {path}: {error}") from None
    if array.size == 0:
        raise ImageFileError(f"{path}: empty array, shape {array.shape}")
    if array.dtype not in SUPPORTED_DTYPES:
        raise ImageFileError(
            f"{path}: unsupported dtype {array.dtype}; supported: "
            f"{', '.join(str(d) for d in SUPPORTED_DTYPES)}"
        )
    return array


def write_stack(path, array: np.ndarray, *, durable: bool = True) -> None:
    """Write ``array`` whole to a new ``.npy`` or ``.tif`` at ``path``, atomically
    (``durable``: see :class:`gpuconv._atomic.AtomicOutput`)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in STACK_SUFFIXES:
        raise FormatError(f"{path}: --axes writes stacks to {', '.join(STACK_SUFFIXES)} files only")
    output = AtomicOutput(path, durable=durable)
    try:
        if suffix == ".npy":
            with open(output.temporary, "wb") as stream:
                np.save(stream, array, allow_pickle=False)
        else:
            import tifffile

            # Every frame a page; no photometric guess (a stack of 3 frames is not RGB).
            tifffile.imwrite(output.temporary, array, photometric="minisblack")
        output.commit()
    except BaseException:
        output.discard()
        raise


def apply_stack_file(
    input_path,
    output_path,
    kernels: list,
    *,
    axes,
    border="reflect101",
    value=0.0,
    dtype=None,
    backend="auto",
    intermediate_dtype=np.float64,
    durable=True,
) -> dict:
    """Apply ``kernels`` one after the other to the stack in a file, image axes ``axes``.

    Returns the statistics :func:`gpuconv._outofcore.apply_file` returns (one band).
    ``durable`` as for :func:`gpuconv._outofcore.apply_file`.
    """
    input_path, output_path = Path(input_path), Path(output_path)
    if output_path.suffix.lower() not in STACK_SUFFIXES:
        raise FormatError(
            f"{output_path}: --axes writes stacks to {', '.join(STACK_SUFFIXES)} files only"
        )
    if isinstance(kernels, str) or len(kernels) == 0:
        raise ValueError("kernels must be a non-empty list of kernels (arrays or bank names)")
    if intermediate_dtype is not None:
        intermediate_dtype = parse_dtype(intermediate_dtype, "intermediate dtype")
    stack = read_stack(input_path)
    if output_path.exists() and os.path.samefile(input_path, output_path):
        raise ValueError(
            f"the output {output_path} is the input {input_path}; choose another output path"
        )
    rows, columns = normalise_axes(axes, stack.ndim)
    final_dtype = stack.dtype if dtype is None else parse_dtype(dtype, "output dtype")
    started = time.perf_counter()
    values = stack
    for index, kernel in enumerate(kernels):
        last = index == len(kernels) - 1
        stage_dtype = final_dtype if last else (intermediate_dtype or stack.dtype)
        values = convolve(
            values,
            kernel,
            border=border,
            value=value,
            dtype=stage_dtype,
            axes=axes,
            backend=backend,
        )
    seconds = time.perf_counter() - started
    write_stack(output_path, values, durable=durable)
    height, width = stack.shape[rows], stack.shape[columns]
    return {
        "shape": tuple(stack.shape),
        "dtype": str(values.dtype),
        "computed_dtype": str(values.dtype),
        "format": output_path.suffix.lower().lstrip("."),
        "seconds": round(seconds, 3),
        "bands": 1,
        "rows_per_chunk": int(height),
        "megapixels_per_second": round(stack.size / 1e6 / max(seconds, 1e-9), 2),
        "image_axes": (rows, columns),
        "image_size": (int(height), int(width)),
        "peak_rss_mib": None,
    }
