"""Image files as rows: readers and writers for ``.npy``, ``.tif``/``.tiff`` and ``.zarr``.

:func:`open_reader` and :func:`open_writer` give objects that read or write
any range of whole rows (``read(start, stop)``, ``write(start, rows)``) and
also index like an array (``a[rows, ...]``), enough for
:func:`dask.array.from_array` and :func:`dask.array.store`. They serve
:func:`gpuconv.apply_file` and :func:`gpuconv._dask.read_dask`/``write_dask``.

Reads and writes use positioned file I/O (``os.pread``/``os.pwrite``)
rather than a memory map wherever the pixels are
stored contiguously (``.npy`` in C order, uncompressed contiguous TIFF), so
pages of the file never count towards the process's resident memory;
compressed or tiled TIFFs are read strip by strip through tifffile's Zarr view,
Zarr stores chunk by chunk.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


class _RowIndexing:
    """``a[rows, ...]`` and ``a[rows, :] = band`` on top of ``read``/``write``.

    Enough of an array for :func:`dask.array.from_array` and
    :func:`dask.array.store`: rows are read or written only when indexed, and
    there is no ``copy`` method, so Dask does not load the whole file into
    memory as it does with a memory map.
    """

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def _row_range(self, key) -> tuple[int, int, tuple]:
        key = key if isinstance(key, tuple) else (key,)
        rows = key[0] if key else slice(None)
        if not isinstance(rows, slice) or rows.step not in (None, 1):
            raise IndexError(f"rows must be indexed by a slice with step 1, got {rows!r}")
        start, stop, _ = rows.indices(self.shape[0])
        return start, max(start, stop), key[1:]

    def __getitem__(self, key) -> np.ndarray:
        start, stop, rest = self._row_range(key)
        return self.read(start, stop)[(slice(None), *rest)]

    def __setitem__(self, key, value) -> None:
        start, stop, rest = self._row_range(key)
        for part, size in zip(rest, self.shape[1:]):
            if not (isinstance(part, slice) and part.indices(size) == (0, size, 1)):
                raise IndexError("only whole rows can be written")
        self.write(start, np.broadcast_to(value, (stop - start, *self.shape[1:])))

    def __dask_tokenize__(self):
        return (type(self).__name__, id(self), self.shape, str(self.dtype))


class _PositionedFile(_RowIndexing):
    """Rows of a C-ordered array stored contiguously at ``offset`` in a file.

    Picklable (it reopens the file by name), so Dask workers in other
    processes can read and write it.
    """

    def __init__(self, path, shape, dtype, offset: int, mode: str):
        self.path, self.mode = str(path), mode
        self.shape = tuple(int(n) for n in shape)
        self.stored_dtype = np.dtype(dtype)
        self.dtype = self.stored_dtype.newbyteorder("=")
        self.offset = int(offset)
        self.row_items = int(np.prod(self.shape[1:]))
        self.row_bytes = self.row_items * self.stored_dtype.itemsize
        self._open()

    def _open(self) -> None:
        self.descriptor = os.open(self.path, os.O_RDONLY if self.mode == "r" else os.O_RDWR)

    def __getstate__(self) -> dict:
        return {key: value for key, value in self.__dict__.items() if key != "descriptor"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._open()

    def __dask_tokenize__(self):
        return (
            "_PositionedFile",
            self.path,
            os.stat(self.path).st_mtime_ns,
            self.offset,
            self.shape,
            str(self.stored_dtype),
        )

    def read(self, start: int, stop: int) -> np.ndarray:
        rows = np.empty((stop - start, *self.shape[1:]), dtype=self.stored_dtype)
        view = memoryview(rows.reshape(-1).view(np.uint8))
        position, done = self.offset + start * self.row_bytes, 0
        while done < len(view):  # pread may return fewer bytes than asked
            count = os.preadv(self.descriptor, [view[done:]], position + done)
            if count == 0:
                raise OSError(f"{self.path} is shorter than its header says")
            done += count
        return rows.astype(self.dtype, copy=False)

    def write(self, start: int, rows: np.ndarray) -> None:
        data = np.ascontiguousarray(rows, dtype=self.stored_dtype)
        view = memoryview(data.reshape(-1).view(np.uint8))
        position, done = self.offset + start * self.row_bytes, 0
        while done < len(view):
            done += os.pwrite(self.descriptor, view[done:], position + done)

    def close(self) -> None:
        if getattr(self, "descriptor", -1) >= 0:  # also when os.open failed
            os.close(self.descriptor)
            self.descriptor = -1

    def __del__(self):
        self.close()


class _ArrayRows(_RowIndexing):
    """Rows of anything sliceable (a Zarr array, a memory map)."""

    def __init__(self, array, owner=None):
        self.array = array
        self.owner = owner  # kept open while the array is read, closed after
        self.shape = tuple(int(n) for n in array.shape)
        self.dtype = np.dtype(array.dtype)

    def read(self, start: int, stop: int) -> np.ndarray:
        return np.asarray(self.array[start:stop])

    def write(self, start: int, rows: np.ndarray) -> None:
        self.array[start : start + len(rows)] = rows

    def close(self) -> None:
        if self.owner is not None:
            self.owner.close()


def open_reader(path):
    """A row reader (``shape``, ``dtype``, ``read(start, stop)``, ``close()``) for an image file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        mapped = np.load(path, mmap_mode="r")
        if mapped.flags.c_contiguous:
            reader = _PositionedFile(path, mapped.shape, mapped.dtype, mapped.offset, "r")
        else:  # Fortran order: rows are not contiguous; read them through the map
            reader = _ArrayRows(mapped)
        del mapped
        return reader
    if suffix in (".tif", ".tiff"):
        import tifffile

        tiff = tifffile.TiffFile(path)
        try:
            series = tiff.series[0]
            if len(tiff.series) != 1 or series.axes not in ("YX", "YXS"):
                raise ValueError(
                    f"{path}: expected one image with axes YX or YXS (channels last), found "
                    f"{len(tiff.series)} series, the first with axes {series.axes!r} shape "
                    f"{series.shape}"
                )
            page = tiff.pages[0]
            if len(tiff.pages) == 1 and page.is_contiguous and page.planarconfig != 2:
                stored = np.dtype(series.dtype).newbyteorder(tiff.byteorder)  # big-endian TIFFs
                reader = _PositionedFile(path, series.shape, stored, page.dataoffsets[0], "r")
                tiff.close()
                return reader
            import zarr

            return _ArrayRows(zarr.open(series.aszarr(), mode="r"), owner=tiff)
        except BaseException:
            tiff.close()
            raise
    if suffix == ".zarr":
        import zarr

        array = zarr.open(str(path), mode="r")
        if not hasattr(array, "shape"):
            raise ValueError(f"{path} is a Zarr group; pass the path of one array in it")
        return _ArrayRows(array)
    raise ValueError(f"{path}: unsupported suffix {suffix!r}")


def open_writer(path, shape, dtype, rows_per_chunk: int):
    """A row writer (``write(start, rows)``, ``close()``) creating ``path`` of the given type."""
    path = Path(path)
    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    dtype = np.dtype(dtype)
    if suffix == ".npy":
        created = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=tuple(shape))
        offset = created.offset
        del created  # only the header matters; rows go through pwrite
        return _PositionedFile(path, shape, dtype, offset, "w")
    if suffix in (".tif", ".tiff"):
        import tifffile

        nbytes = int(np.prod(shape)) * dtype.itemsize
        colour = len(shape) == 3 and shape[2] in (3, 4) and dtype == np.uint8
        created = tifffile.memmap(
            path,
            shape=tuple(shape),
            dtype=dtype,
            bigtiff=nbytes > 2**31,
            photometric="rgb" if colour else "minisblack",
            planarconfig="contig" if len(shape) == 3 else None,
        )
        offset = created.offset
        del created
        return _PositionedFile(path, shape, dtype, offset, "w")
    if suffix == ".zarr":
        import zarr

        chunks = (max(1, min(rows_per_chunk, shape[0])), *shape[1:])
        array = zarr.open_array(str(path), mode="w", shape=tuple(shape), dtype=dtype, chunks=chunks)
        return _ArrayRows(array)
    raise ValueError(f"{path}: unsupported suffix {suffix!r}")
