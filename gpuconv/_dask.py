"""Dask arrays in, Dask arrays out: :func:`gpuconv.convolve` on images of any size.

:func:`gpuconv.convolve` hands a Dask array here (its adapter in
:data:`gpuconv._adapters.ARRAY_ADAPTERS`). The result is a lazy Dask array
built with :func:`dask.array.map_overlap`. Every block runs through the
ordinary dispatcher, :func:`gpuconv.convolve`, so NumPy chunks go to numba
(or the NumPy reference) and CuPy chunks to the CUDA backend; on a
``dask-cuda`` cluster (one worker per GPU) each GPU filters the CuPy chunks
it holds.

How the result stays equal, bit for bit, to the in-memory call:

- The halo is what one output pixel reads: ``anchor_y`` rows before and
  ``kh - 1 - anchor_y`` after (columns likewise), so it is asymmetric for
  even kernels and off-centre anchors. ``map_overlap`` gets those per-axis
  ``(before, after)`` depths with ``boundary="none"``: Dask itself never
  invents pixels beyond the image.
- Every border mode but ``constant`` is applied once, to the whole Dask
  array, by gathering the exact rows and columns the mode reads
  (:func:`gpuconv._borders.source_indices`), so ``wrap`` sees the far side of
  the image and patterns repeat for kernels larger than the image. The
  block's own border then only touches outputs that ``map_overlap`` trims.
- ``constant`` is not padded (the value may not fit the image dtype, and the
  contract uses it as given): blocks on the true image edge reach the edge
  and apply the constant themselves, exactly as the in-memory call does.
- Chunks thinner than the halo are merged with their neighbours (the
  result's chunks then differ from the input's along that axis).

Each pixel is then computed from the same source pixels, with the same
backend code, as in the in-memory call. With ``backend="auto"`` a backend
chooses per call, so a whole image and a chunk of it could go to different
backends (within the contract's accuracy of each other); name the backend
for bit-identical results on every machine. A :func:`gpuconv.use_backend`
block around the call that builds the graph applies to every block of it.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from . import _registry
from ._borders import source_indices
from ._convolve import convolve
from ._layout import normalise_axes
from ._plan import Border, array_library, as_kernel_array, make_plan


def convolve_dask(
    image,
    kernel,
    *,
    border="reflect101",
    value=0.0,
    anchor=None,
    flip=False,
    dtype=None,
    axes=(0, 1),
    backend="auto",
):
    """:func:`gpuconv.convolve` for a Dask array: return a lazy Dask array.

    Arguments are validated now, with the same errors as for a NumPy image;
    nothing is computed until the result is.

    Parameters
    ----------
    image : dask.array.Array, 2 or more dimensions
        Chunks of NumPy or CuPy arrays, any chunking (chunks may split the
        independent axes, channels or frames, freely). Chunk sizes must be known.
    kernel, border, value, anchor, flip, dtype, axes, backend
        As for :func:`gpuconv.convolve`.

    Returns
    -------
    dask.array.Array
        The image's shape, ``dtype`` (``None``: the image's), and the input's
        chunks where every chunk is at least as thick as the halo.

    Raises
    ------
    ValueError, TypeError, gpuconv.BackendUnavailableError
        As :func:`gpuconv.convolve`; also ``ValueError`` for unknown chunk
        sizes.

    Examples
    --------
    >>> import numpy as np, dask.array as da, gpuconv
    >>> image = da.from_array(np.arange(36, dtype=np.uint8).reshape(6, 6), chunks=2)
    >>> lazy = gpuconv.convolve(image, "small_blur", border="wrap", backend="numpy")
    >>> bool((lazy.compute() == gpuconv.convolve(image.compute(), "small_blur",
    ...                                           border="wrap", backend="numpy")).all())
    True
    """
    import dask.array as da

    _registry.check_name(backend)
    if any(np.isnan(size) for sizes in image.chunks for size in sizes):
        raise ValueError(
            "the Dask array has unknown chunk sizes; call image.compute_chunk_sizes() first"
        )
    # The same validation as for NumPy input; it reads only dtype and shape.
    _, plan, _ = make_plan(
        image, kernel, border=border, value=value, anchor=anchor, flip=flip, dtype=dtype, axes=axes
    )
    rows_axis, columns_axis = normalise_axes(axes, image.ndim)
    if (rows_axis, columns_axis) != (0, 1):
        # The image axes first (a lazy transposition); the other axes need no halo.
        moved = da.moveaxis(image, (rows_axis, columns_axis), (0, 1))
        result = convolve_dask(
            moved,
            kernel,
            border=border,
            value=value,
            anchor=anchor,
            flip=flip,
            dtype=dtype,
            backend=backend,
        )
        return da.moveaxis(result, (0, 1), (rows_axis, columns_axis))
    chunk_library = array_library(image._meta)
    if backend == "auto":
        # gpuconv.use_backend() holds at graph-building time: blocks run
        # later, in other threads or processes, where it is not set.
        backend = _registry._default_backend.get() or "auto"
    if backend != "auto":
        # A named backend must run here and take these chunks; "auto" is left
        # to each worker, whose hardware may differ from the client's.
        _registry.resolve(backend, plan, chunk_library)

    height, width = image.shape[:2]
    kernel_height, kernel_width = plan.kernel.shape
    depths = [
        (plan.anchor_y, kernel_height - 1 - plan.anchor_y),
        (plan.anchor_x, kernel_width - 1 - plan.anchor_x),
    ]
    block_convolve = functools.partial(
        _convolve_block,
        kernel=as_kernel_array(kernel),  # the user's kernel: each block flips it itself
        border=plan.border,
        value=plan.border_value,
        anchor=anchor,
        flip=bool(flip),
        dtype=plan.output_dtype,
        backend=backend,
    )
    meta = image._meta.astype(plan.output_dtype)

    def filter_with_halo(array, depths):
        # Blocks see their neighbours' pixels out to the kernel's reach, no more.
        return da.map_overlap(
            block_convolve,
            array,
            depth=_depth_dict(depths, image.ndim),
            boundary="none",
            trim=True,
            dtype=plan.output_dtype,
            meta=meta,
        )

    if plan.border == Border.CONSTANT:
        # A block reaches outside the image only at the true edges, where it
        # applies the constant itself; a halo longer than the axis is clipped.
        depths = [
            (min(before, size), min(after, size))
            for (before, after), size in zip(depths, (height, width))
        ]
        chunks = _chunks_at_least(image.chunks, depths)
        return filter_with_halo(image.rechunk(chunks), depths)

    chunks = _chunks_at_least(image.chunks, depths)
    padded = image
    for axis, (before, after) in enumerate(depths):
        size = image.shape[axis]
        lead = source_indices(np.arange(-before, 0), size, plan.border)
        tail = source_indices(np.arange(size, size + after), size, plan.border)
        pieces = [_take(padded, lead, axis), padded, _take(padded, tail, axis)]
        padded = da.concatenate([piece for piece in pieces if piece.shape[axis]], axis=axis)
    # The padding joins the first and last chunks, so after trimming the
    # halo and the padding the result has the (merged) input chunks.
    padded_chunks = list(chunks)
    for axis, (before, after) in enumerate(depths):
        sizes = list(chunks[axis])
        sizes[0] += before
        sizes[-1] += after
        padded_chunks[axis] = tuple(sizes)
    padded = padded.rechunk(tuple(padded_chunks))
    filtered = filter_with_halo(padded, depths)
    (top, _), (left, _) = depths
    return filtered[top : top + height, left : left + width]


def _convolve_block(block, *, kernel, border, value, anchor, flip, dtype, backend):
    return convolve(
        block,
        kernel,
        border=border,
        value=value,
        anchor=anchor,
        flip=flip,
        dtype=dtype,
        backend=backend,
    )


def _take(array, indices: np.ndarray, axis: int):
    selection = [slice(None)] * array.ndim
    selection[axis] = indices
    return array[tuple(selection)]


def _depth_dict(depths, ndim: int) -> dict:
    depth = {axis: tuple(pair) for axis, pair in enumerate(depths)}
    for axis in range(2, ndim):
        depth[axis] = (0, 0)  # channels and frames are independent
    return depth


def _chunks_at_least(chunks, depths) -> tuple:
    """Merge neighbouring chunks until each spatial chunk is as thick as its halo."""
    merged = list(chunks)
    for axis, (before, after) in enumerate(depths):
        merged[axis] = merge_small_chunks(chunks[axis], max(before, after, 1))
    return tuple(merged)


def merge_small_chunks(sizes, minimum: int) -> tuple[int, ...]:
    """Merge consecutive chunk sizes so that each is at least ``minimum``.

    The total is kept; a single chunk smaller than ``minimum`` (the whole
    axis) stays as it is.

    Examples
    --------
    >>> merge_small_chunks((1, 1, 1, 5, 1), 3)
    (3, 6)
    >>> merge_small_chunks((4, 4, 1), 3)
    (4, 5)
    """
    merged: list[int] = []
    pending = 0
    for size in sizes:
        pending += int(size)
        if pending >= minimum:
            merged.append(pending)
            pending = 0
    if pending:
        if merged:
            merged[-1] += pending
        else:
            merged.append(pending)
    return tuple(merged)


def read_dask(path, rows_per_chunk: int | None = None):
    """Open a ``.npy``, ``.tif``/``.tiff`` or ``.zarr`` image as a lazy Dask array.

    Nothing is read until the array is computed; each chunk is a band of
    whole rows read with positioned I/O (``.npy``, contiguous TIFF) or
    through Zarr. Unlike ``dask.array.from_array(np.load(path,
    mmap_mode="r"))``, which copies the whole memory map into memory when
    the graph is built, this keeps an image larger than memory on disk.

    Parameters
    ----------
    path : str or path
    rows_per_chunk : int, optional
        Rows per chunk; default about 32 MiB of rows.

    Returns
    -------
    dask.array.Array
        shape ``(H, W)`` or ``(H, W, C)``, the file's dtype (native byte order).

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "image.npy")
    >>> np.save(path, np.arange(12, dtype=np.uint8).reshape(4, 3))
    >>> image = read_dask(path, rows_per_chunk=2)
    >>> image.chunks, int(image.sum().compute())
    (((2, 2), (3,)), 66)
    """
    import dask.array as da

    from ._outofcore import _BAND_INPUT_BYTES, open_reader

    reader = open_reader(path)
    if rows_per_chunk is None:
        row_bytes = reader.dtype.itemsize * int(np.prod(reader.shape[1:]))
        rows_per_chunk = max(1, _BAND_INPUT_BYTES // row_bytes)
    chunks = (min(int(rows_per_chunk), reader.shape[0]), *reader.shape[1:])
    return da.from_array(
        reader,
        chunks=chunks,
        asarray=True,
        lock=False,
        meta=np.empty((0,) * len(reader.shape), dtype=reader.dtype),
    )


def write_dask(array, path, *, compute: bool = True):
    """Compute a Dask array band by band into a new ``.npy``, ``.tif``/``.tiff`` or ``.zarr``.

    Blocks are written as they are computed (``dask.array.store``), so the
    result never has to fit in memory. They go to a temporary beside
    ``path``, renamed into place once every block is written and flushed: a
    failure or an interrupt leaves ``path`` as it was (a file there is
    replaced only by a complete result). The array is rechunked to bands of
    whole rows first (as many rows as its first chunk), which a Zarr output
    also uses as its chunks.

    Parameters
    ----------
    array : dask.array.Array
        2-D or 3-D, any dtype the output format holds.
    path : str or path
        ``.npy``, ``.tif``/``.tiff`` or ``.zarr``; the suffix picks the format.
    compute : bool, default True
        False creates the temporary and returns a ``dask.delayed`` that
        stores the blocks and then renames the result into place (e.g. for
        ``client.compute(...).result(timeout)``). A failed or never computed
        delayed leaves the temporary ``.<name>.gpuconv-*.tmp`` beside ``path``.

    Examples
    --------
    >>> import numpy as np, dask.array as da, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "out.npy")
    >>> write_dask(da.ones((5, 4), dtype=np.uint8, chunks=2), path)
    >>> np.load(path).sum()
    np.uint64(20)
    """
    import dask
    import dask.array as da

    from ._outofcore import OUT_OF_CORE_SUFFIXES, open_writer

    if Path(path).suffix.lower() not in OUT_OF_CORE_SUFFIXES:
        raise ValueError(
            f"{path}: write_dask writes {', '.join(OUT_OF_CORE_SUFFIXES)} band by band; for "
            "other formats compute the array and use gpuconv.apply_file or an image library"
        )
    rows = int(array.chunks[0][0])
    bands = array.rechunk({0: rows, **{axis: -1 for axis in range(1, array.ndim)}})
    writer = open_writer(path, array.shape, array.dtype, rows)
    if not compute:
        stored = da.store(bands, writer, lock=False, compute=False)
        # The delayed owns the temporary now: it renames it into place when
        # computed (in this process or on a worker); one never computed
        # leaves its ``.<name>.gpuconv-*.tmp`` beside ``path``.
        writer.owner = False
        return dask.delayed(_close_after, pure=False)(stored, writer)
    with writer:  # renamed into place at the end; removed on any failure
        da.store(bands, writer, lock=False)
    return None


def _close_after(_stored, writer) -> None:
    """Rename a writer's temporary into place once ``_stored`` (every block) is done."""
    writer.close()
