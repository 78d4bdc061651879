"""Image files as rows: readers and writers for every format gpuconv reads and writes.

:func:`open_reader` and :func:`open_writer` give objects that read or write
any range of whole rows (``read(start, stop)``, ``write(start, rows)``) and
also index like an array (``a[rows, ...]``), enough for
:func:`dask.array.from_array` and :func:`dask.array.store`. They serve
:func:`gpuconv.apply_file`, ``gpuconv apply`` and
:func:`gpuconv._dask.read_dask`/``write_dask``.

The reader and the writer are chosen by what the data needs, each from its
own path, whatever the other one is:

- ``.npy``: read and written band by band with positioned file I/O
  (``os.pread``/``os.pwrite``; Fortran order through a memory map);
- ``.tif``/``.tiff``: through tifffile; uncompressed contiguous pixels with
  positioned I/O, compressed (LZW, deflate, zstd, JPEG ... through
  ``imagecodecs``), tiled or planar files strip by strip (tile by tile), so
  no TIFF needs Zarr. Written uncompressed, ``RGB`` for 3 or 4 channels of
  any dtype (the 4th an unassociated alpha), ``MINISBLACK`` otherwise;
- ``.zarr``: chunk by chunk through zarr (``gpuconv[dask]``);
- everything else (PNG, JPEG, BMP, WebP, PNM ...): decoded and encoded
  whole by OpenCV.

Pixels in memory are channels-last in the file's colour order, RGB(A), as
tifffile, PIL and scikit-image give them (OpenCV's BGR is swapped on the way
in and out). ``.npy`` and ``.zarr`` arrays are taken as they are.

Writers never write at the output path: they fill a temporary beside it
(:class:`gpuconv._atomic.AtomicOutput`), and ``close()`` flushes it and
renames it into place; ``abort()``, a failure inside ``with``, or a writer
dropped unclosed removes it. :func:`fit_output` says, before anything is
computed, whether a format holds a result's dtype and channels, and names
the formats that do when it does not.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._atomic import (
    AtomicOutput,
    OutputError,
    describe_os_error,
    output_error,
    start_writeback,
)
from ._plan import SUPPORTED_DTYPES


class ImageFileError(ValueError):
    """An input file that cannot be used: unreadable, corrupt, truncated, wrong shape or dtype.

    The message names the file and the problem.
    """


class FormatError(ValueError):
    """An output format that cannot hold the result (dtype, channels) or is unknown.

    The message names the formats that can hold it.
    """


# --- formats --------------------------------------------------------------------------------

_ALL_DTYPES = tuple(str(dtype) for dtype in SUPPORTED_DTYPES)


@dataclass(frozen=True)
class ImageFormat:
    """What an output format holds.

    ``channels`` None means any number (and 2-D images); ``streamed`` formats
    are written band by band, the others encoded whole in memory.
    """

    name: str
    suffixes: tuple[str, ...]
    dtypes: tuple[str, ...]
    channels: tuple[int, ...] | None
    streamed: bool

    def holds(self, dtype, channels: int) -> bool:
        return str(np.dtype(dtype)) in self.dtypes and (
            self.channels is None or channels in self.channels
        )


#: Every format gpuconv writes, with what it holds (OpenCV's encoders, measured).
FORMATS: tuple[ImageFormat, ...] = (
    ImageFormat("PNG", (".png",), ("uint8", "uint16"), (1, 3, 4), False),
    ImageFormat("JPEG", (".jpg", ".jpeg", ".jpe"), ("uint8",), (1, 3), False),
    ImageFormat("BMP", (".bmp",), ("uint8",), (1, 3, 4), False),
    ImageFormat("WebP", (".webp",), ("uint8",), (3, 4), False),
    ImageFormat("PGM", (".pgm",), ("uint8", "uint16"), (1,), False),
    ImageFormat("PPM", (".ppm",), ("uint8", "uint16"), (3,), False),
    ImageFormat("PNM", (".pnm",), ("uint8", "uint16"), (1, 3), False),
    ImageFormat("TIFF", (".tif", ".tiff"), _ALL_DTYPES, None, True),
    ImageFormat("NumPy", (".npy",), _ALL_DTYPES, None, True),
    ImageFormat("Zarr", (".zarr",), _ALL_DTYPES, None, True),
)

#: Suffixes read and written band by band (memory bounded by a band, not the image).
STREAMED_SUFFIXES = tuple(s for f in FORMATS if f.streamed for s in f.suffixes)


def output_format(path) -> ImageFormat:
    """The :class:`ImageFormat` an output path's suffix names; :class:`FormatError` if none.

    Examples
    --------
    >>> output_format("out.TIFF").name
    'TIFF'
    """
    suffix = Path(path).suffix.lower()
    for image_format in FORMATS:
        if suffix in image_format.suffixes:
            return image_format
    known = ", ".join(s for f in FORMATS for s in f.suffixes)
    raise FormatError(
        f"{path}: unknown output format {suffix or '(no suffix)'!r}; gpuconv writes {known}"
    )


def channels_of(shape) -> int:
    """1 for a 2-D image, C for a channels-last (H, W, C) one."""
    return 1 if len(shape) == 2 else int(shape[2])


def formats_holding(dtype, channels: int) -> list[str]:
    """Suffixes of the formats that hold images of ``dtype`` with ``channels`` channels.

    Examples
    --------
    >>> formats_holding("float32", 3)
    ['.tif', '.tiff', '.npy', '.zarr']
    """
    return [s for f in FORMATS if f.holds(dtype, channels) for s in f.suffixes]


def fit_output(path, dtype, channels: int, *, convert: bool, image_dtype) -> np.dtype:
    """The dtype ``path``'s format stores a ``dtype`` result in, or :class:`FormatError`.

    ``dtype`` itself where the format holds it. Otherwise, with ``convert``,
    the type the result is clipped and rounded to: the input image's
    ``image_dtype`` if the format holds it, else the format's widest type;
    without ``convert``, an error naming the formats that hold ``dtype``.
    A channel count the format cannot hold is an error either way.

    Examples
    --------
    >>> fit_output("a.png", "uint16", 3, convert=False, image_dtype="uint8")
    dtype('uint16')
    >>> fit_output("a.png", "float32", 1, convert=True, image_dtype="uint8")
    dtype('uint8')
    """
    image_format = output_format(path)
    dtype = np.dtype(dtype)
    if image_format.channels is not None and channels not in image_format.channels:
        others = ", ".join(formats_holding(dtype, channels)) or "none"
        raise FormatError(
            f"{path}: {image_format.name} holds images with "
            f"{' or '.join(map(str, image_format.channels))} channel(s), not {channels}; "
            f"formats that hold {channels} channel(s) of {dtype}: {others}"
        )
    if str(dtype) in image_format.dtypes:
        return dtype
    held = str(np.dtype(image_dtype))
    target = np.dtype(held if held in image_format.dtypes else image_format.dtypes[-1])
    if convert:
        return target
    raise FormatError(
        f"{path}: {image_format.name} cannot hold {dtype} pixels (only "
        f"{' or '.join(image_format.dtypes)}); formats that hold {dtype}: "
        f"{', '.join(formats_holding(dtype, channels))}; or ask for a conversion "
        f"(gpuconv apply --convert, apply_file(convert=True)) to clip and round to {target}"
    )


def check_image(path, shape, dtype) -> None:
    """Raise :class:`ImageFileError` unless ``shape`` and ``dtype`` make an image gpuconv filters.

    Examples
    --------
    >>> check_image("a.npy", (2, 64, 64, 3), np.uint8)
    Traceback (most recent call last):
        ...
    gpuconv._image_files.ImageFileError: a.npy: 4-D array of shape (2, 64, 64, 3); gpuconv filters 2-D (H, W) or channels-last 3-D (H, W, C) images
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) not in (2, 3):
        raise ImageFileError(
            f"{path}: {len(shape)}-D array of shape {shape}; gpuconv filters 2-D (H, W) or "
            "channels-last 3-D (H, W, C) images"
        )
    if 0 in shape:
        raise ImageFileError(f"{path}: empty image, shape {shape}")
    if np.dtype(dtype) not in SUPPORTED_DTYPES:
        raise ImageFileError(
            f"{path}: unsupported image dtype {np.dtype(dtype)}; supported: "
            f"{', '.join(_ALL_DTYPES)}"
        )


# --- rows -----------------------------------------------------------------------------------


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


#: Bytes of a block for ``O_DIRECT``: positions, lengths and buffer addresses of direct
#: writes are multiples of it (4096 covers disks of 512- and 4096-byte sectors).
DIRECT_BLOCK = 4096


class _PositionedFile(_RowIndexing):
    """Rows of a C-ordered array stored contiguously at ``offset`` in a file.

    Picklable (it reopens the file by name), so Dask workers in other
    processes can read and write it.
    """

    in_memory = False

    def __init__(
        self,
        path,
        shape,
        dtype,
        offset: int,
        mode: str,
        *,
        writeback: bool = True,
        direct: bool = False,
    ):
        self.path, self.mode = str(path), mode
        #: Start the disk write of each written band at once (for a durable output, whose
        #: commit waits for the disk anyway); see gpuconv._atomic.start_writeback.
        self.writeback = writeback
        #: Write whole blocks with O_DIRECT (a durable output): see _write_direct.
        self.direct = direct and hasattr(os, "O_DIRECT")
        self.direct_descriptor = -1
        self.shape = tuple(int(n) for n in shape)
        self.stored_dtype = np.dtype(dtype)
        self.dtype = self.stored_dtype.newbyteorder("=")
        self.offset = int(offset)
        self.row_items = int(np.prod(self.shape[1:]))
        self.row_bytes = self.row_items * self.stored_dtype.itemsize
        self._open()

    def _open(self) -> None:
        self.descriptor = os.open(self.path, os.O_RDONLY if self.mode == "r" else os.O_RDWR)
        if self.direct and self.mode != "r":
            # Opened here, once, not at the first write: writers in several threads
            # (gpuconv.write_dask) would race to open it.
            try:
                self.direct_descriptor = os.open(self.path, os.O_WRONLY | os.O_DIRECT)
            except OSError as error:
                if error.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                    self.close()
                    raise
                self.direct = False  # tmpfs and some others: the page cache it is

    def __getstate__(self) -> dict:
        descriptors = ("descriptor", "direct_descriptor")
        return {key: value for key, value in self.__dict__.items() if key not in descriptors}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.direct_descriptor = -1
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

    @property
    def reads_into(self) -> bool:
        """Whether :meth:`read` returns the ``out=`` buffer it is given (the band pipeline
        recycles its bands): not for a byte order to swap, whose rows come back new."""
        return self.stored_dtype == self.dtype

    def read(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        """Rows ``[start, stop)`` in native byte order; read into ``out`` where given.

        ``out`` must be C-contiguous, of the stored dtype and of the rows' shape. A fresh
        16 MiB band costs 4096 page faults to fill; a recycled one costs none (the band
        pipeline's reads took 12-19 ms into fresh memory against 3-4 ms into reused).
        """
        shape = (stop - start, *self.shape[1:])
        if out is None:
            rows = np.empty(shape, dtype=self.stored_dtype)
        elif out.shape != shape or out.dtype != self.stored_dtype or not out.flags.c_contiguous:
            raise ValueError(f"out must be C-contiguous {self.stored_dtype} of shape {shape}")
        else:
            rows = out
        view = memoryview(rows.reshape(-1).view(np.uint8))
        position, done = self.offset + start * self.row_bytes, 0
        while done < len(view):  # pread may return fewer bytes than asked
            count = os.preadv(self.descriptor, [view[done:]], position + done)
            if count == 0:
                raise ImageFileError(f"{self.path} is shorter than its header says (truncated)")
            done += count
        return rows.astype(self.dtype, copy=False)

    def write(self, start: int, rows: np.ndarray) -> None:
        data = np.ascontiguousarray(rows, dtype=self.stored_dtype)
        view = memoryview(data.reshape(-1).view(np.uint8))
        position, done = self.offset + start * self.row_bytes, 0
        if self.direct and self._write_direct(data, view, position):
            return
        while done < len(view):
            done += os.pwrite(self.descriptor, view[done:], position + done)
        if self.writeback:
            start_writeback(self.descriptor, position, len(view))

    def _write_direct(self, data: np.ndarray, view: memoryview, position: int) -> bool:
        """Write ``view`` at ``position`` with ``O_DIRECT``; False (nothing written) where
        the position, the length or the buffer's address is not a whole number of
        :data:`DIRECT_BLOCK` bytes, or the device refuses the write (then this file never
        asks again; a file system that refuses ``O_DIRECT`` altogether is found at open).

        Why: a durable output's pixels must reach the disk before the rename anyway.
        Through the page cache the CPU copies them there and the kernel writes them back
        (0.07-0.30 s of CPU for 256 MiB on 2 cores, taken from the filter running
        beside); ``O_DIRECT`` hands the buffer to the disk as it is (10 ms of CPU). The
        commit's ``fsync`` still runs: it makes the file's size and blocks durable and
        flushes the disk's cache. The pages written are disjoint from any written through
        the page cache (the header, an unaligned last band): only whole blocks go direct.
        """
        block = DIRECT_BLOCK
        if position % block or len(view) % block or data.ctypes.data % block:
            return False
        done = 0
        while done < len(view):
            if done % block:  # after a short write (rare): the rest through the page cache
                done += os.pwrite(self.descriptor, view[done:], position + done)
                continue
            try:
                done += os.pwrite(self.direct_descriptor, view[done:], position + done)
            except OSError as error:
                if error.errno != errno.EINVAL or done:
                    raise
                self.direct = False  # alignment this device does not take: never again
                return False
        return True

    def flush(self) -> None:
        os.fsync(self.descriptor)

    def close(self) -> None:
        if getattr(self, "direct_descriptor", -1) >= 0:
            os.close(self.direct_descriptor)
            self.direct_descriptor = -1
        if getattr(self, "descriptor", -1) >= 0:  # also when os.open failed
            os.close(self.descriptor)
            self.descriptor = -1

    def __del__(self):
        self.close()


class _ArrayRows(_RowIndexing):
    """Rows of anything sliceable (a Zarr array, a memory map, a decoded image)."""

    def __init__(self, array, owner=None, *, in_memory: bool = False):
        self.array = array
        self.owner = owner  # kept open while the array is read, closed after
        self.shape = tuple(int(n) for n in array.shape)
        self.dtype = np.dtype(array.dtype).newbyteorder("=")
        self.in_memory = in_memory

    def read(self, start: int, stop: int) -> np.ndarray:
        return np.asarray(self.array[start:stop]).astype(self.dtype, copy=False)

    def write(self, start: int, rows: np.ndarray) -> None:
        self.array[start : start + len(rows)] = rows

    def close(self) -> None:
        if self.owner is not None:
            self.owner.close()


class _TiffSegments(_RowIndexing):
    """Rows of a compressed, tiled or planar single-image TIFF, decoded strip by strip.

    Only the strips (tiles) that hold the rows asked for are read and
    decoded, through tifffile's own decoders (``imagecodecs``). Picklable: it
    reopens the file by name.
    """

    in_memory = False

    def __init__(self, path, shape, dtype):
        self.path = str(path)
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype).newbyteorder("=")
        self._open()

    def _open(self) -> None:
        import tifffile

        self.tiff = tifffile.TiffFile(self.path)
        self.lock = threading.Lock()
        page = self.page = self.tiff.pages[0]
        planes, depth, height, width, _ = page.shaped
        self.planes = planes if page.planarconfig == 2 else 1
        self.segment_height = page.tilelength if page.is_tiled else min(page.rowsperstrip, height)
        self.segment_width = page.tilewidth if page.is_tiled else width
        self.segment_rows = -(-height // self.segment_height)
        self.segment_columns = -(-width // self.segment_width)
        self.decode_options = {"_fullsize": page.is_tiled}
        if page.compression in (6, 7, 34892, 33007):  # JPEG variants
            self.decode_options.update(jpegtables=page.jpegtables, jpegheader=page.jpegheader)

    def __getstate__(self) -> dict:
        return {"path": self.path, "shape": self.shape, "dtype": self.dtype}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._open()

    def read(self, start: int, stop: int) -> np.ndarray:
        page, planes = self.page, self.planes
        width = self.shape[1]
        contiguous = page.shaped[4]
        band = np.zeros((planes, stop - start, width, contiguous), dtype=self.dtype)
        first, last = start // self.segment_height, (stop - 1) // self.segment_height
        indices = [
            (plane * self.segment_rows + row) * self.segment_columns + column
            for plane in range(planes)
            for row in range(first, last + 1)
            for column in range(self.segment_columns)
        ]
        handle = self.tiff.filehandle
        for index in indices:
            offset, count = page.dataoffsets[index], page.databytecounts[index]
            with self.lock:
                handle.seek(offset)
                data = handle.read(count)
            if len(data) < count:
                raise ImageFileError(f"{self.path} is truncated: a strip ends past the file's end")
            try:
                segment, (plane, _, top, left, _), _ = page.decode(
                    data or None, index, **self.decode_options
                )
            except Exception as error:  # codec errors come in many types
                raise ImageFileError(
                    f"{self.path}: cannot decode rows {start}-{stop} (corrupt or truncated "
                    f"strip): {error}"
                ) from None
            if segment is None:
                continue  # an empty strip: zeros, as tifffile fills it
            rows = segment[0]  # (h, w, contiguous samples)
            low, high = max(top, start), min(top + rows.shape[0], stop)
            right = min(left + rows.shape[1], width)
            if low < high and left < right:
                band[plane, low - start : high - start, left:right] = rows[
                    low - top : high - top, : right - left
                ]
        if page.planarconfig == 2:  # (S, rows, W, 1) -> (rows, W, S)
            band = np.moveaxis(band[..., 0], 0, -1)
        else:
            band = band[0]
        return band.reshape((stop - start, *self.shape[1:]))

    def close(self) -> None:
        tiff = self.__dict__.pop("tiff", None)
        if tiff is not None:
            tiff.close()

    def __del__(self):
        self.close()


# --- readers --------------------------------------------------------------------------------


def open_reader(path, *, opencv_order: bool = False):
    """A row reader (``shape``, ``dtype``, ``read(start, stop)``, ``close()``) for an image file.

    ``opencv_order=True``: a file OpenCV decodes (PNG, JPEG ...) keeps OpenCV's
    BGR(A) channel order (no swap; the reader's ``opencv_order`` says so), for
    a caller that filters every channel alike and encodes the result with
    OpenCV again (:func:`open_writer` with ``opencv_order=True``). Other
    formats are read as always. Raises ``FileNotFoundError`` for a missing file and :class:`ImageFileError`
    (naming the file) for one that cannot be read: no permission, corrupt,
    truncated, not an image. The shape and dtype are not judged here
    (:func:`check_image` does).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return _open_npy(path)
        if suffix in (".tif", ".tiff"):
            return _open_tiff(path)
        if suffix == ".zarr":
            return _open_zarr(path)
        return _open_encoded(path, opencv_order)
    except OSError as error:
        raise ImageFileError(f"cannot read {path}: {describe_os_error(error)}") from None


def _open_npy(path: Path):
    with open(path, "rb") as file:
        try:
            version = np.lib.format.read_magic(file)
            read_header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, fortran_order, dtype = read_header(file)
        except (ValueError, SyntaxError, TypeError, EOFError) as error:
            raise ImageFileError(f"{path}: not a .npy file ({error})") from None
        offset = file.tell()
    dtype = np.dtype(dtype)
    if dtype.hasobject:
        raise ImageFileError(f"{path}: holds Python objects (dtype {dtype}), not pixels")
    promised = int(np.prod(shape)) * dtype.itemsize
    held = os.path.getsize(path) - offset
    if held < promised:
        raise ImageFileError(
            f"{path} is truncated: its header promises {shape} {dtype} ({promised} bytes of "
            f"pixels), the file holds {max(held, 0)}"
        )
    if fortran_order and len(shape) > 1:  # rows are not contiguous: read them through a map
        mapped = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F")
        return _ArrayRows(mapped)
    return _PositionedFile(path, shape, dtype, offset, "r")


@contextlib.contextmanager
def _tifffile_messages():
    """Collect tifffile's logged warnings (instead of printing them); yields the list."""
    logger = logging.getLogger("tifffile")
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    handler = Collect(logging.WARNING)
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def _open_tiff(path: Path):
    import tifffile

    with _tifffile_messages() as messages:
        try:
            tiff = tifffile.TiffFile(path)
        except OSError:
            raise
        except Exception as error:  # TiffFileError, struct.error, ValueError ...
            raise ImageFileError(f"cannot read {path} as a TIFF: {error}") from None
        try:
            return _tiff_reader(path, tiff, messages)
        except BaseException:
            tiff.close()
            raise


def _tiff_reader(path: Path, tiff, messages: list[str]):
    if not tiff.pages or not tiff.series:
        detail = f" ({messages[0]})" if messages else ""
        raise ImageFileError(f"cannot read {path}: no image in it (corrupt or truncated){detail}")
    series = tiff.series[0]
    if len(tiff.series) != 1 or len(tiff.pages) != 1 or series.axes not in ("YX", "YXS", "SYX"):
        raise ImageFileError(
            f"{path}: expected one image with axes YX or YXS (channels last), found "
            f"{len(tiff.series)} series, the first with axes {series.axes!r} shape "
            f"{series.shape}"
        )
    page = tiff.pages[0]
    if page.photometric == 3:  # PALETTE
        raise ImageFileError(
            f"{path}: a palette-colour TIFF (indices into a colour map); convert it to RGB first"
        )
    if page.imagedepth != 1:
        raise ImageFileError(f"{path}: a volume (image depth {page.imagedepth}), not an image")
    shape = tuple(series.shape)
    if series.axes == "SYX":
        shape = (*shape[1:], shape[0])
    dtype = np.dtype(series.dtype)
    if page.is_contiguous and page.planarconfig != 2 and page.compression == 1:
        offset = page.dataoffsets[0]
        promised = int(np.prod(shape)) * dtype.itemsize
        if os.path.getsize(path) < offset + promised:
            raise ImageFileError(
                f"{path} is truncated: its pixels end past the file's end ({promised} bytes "
                f"promised at offset {offset}, the file holds {os.path.getsize(path)})"
            )
        stored = dtype.newbyteorder(tiff.byteorder)  # big-endian TIFFs
        reader = _PositionedFile(path, shape, stored, offset, "r")
        tiff.close()
        return reader
    planes, _, height, width, _ = page.shaped
    segment_height = page.tilelength if page.is_tiled else min(page.rowsperstrip, height)
    segment_width = page.tilewidth if page.is_tiled else width
    expected = (planes if page.planarconfig == 2 else 1) * (
        -(-height // segment_height) * -(-width // segment_width)
    )
    segments = len(page.dataoffsets)
    tiff.close()
    if expected != segments:
        # An unusual layout: decode the whole image once (still without Zarr).
        import tifffile

        try:
            return _ArrayRows(tifffile.imread(path), in_memory=True)
        except Exception as error:
            raise ImageFileError(f"cannot read {path}: {error}") from None
    return _TiffSegments(path, shape, dtype)


def _open_zarr(path: Path):
    try:
        import zarr
    except ImportError:
        raise ImageFileError(
            f"cannot read {path}: reading .zarr needs zarr: pip install 'gpuconv[dask]'"
        ) from None
    try:
        array = zarr.open(str(path), mode="r")
    except OSError:
        raise
    except Exception as error:
        raise ImageFileError(f"cannot read {path} as a Zarr array: {error}") from None
    if not hasattr(array, "shape"):
        raise ImageFileError(f"{path} is a Zarr group; pass the path of one array in it")
    return _ArrayRows(array)


class _QuietStderr:
    """File descriptor 2 sent to a temporary file while any thread decodes or encodes.

    The descriptor is the process's, shared by every thread: the first thread in
    redirects it, the last one out puts it back (threads of ``apply --out-dir``
    overlap; each saving and restoring on its own would leave descriptor 2 on
    another thread's deleted temporary, and the batch's report lost).
    """

    def __init__(self):
        self.lock = threading.Lock()
        self.users = 0
        self.saved = self.capture = None
        self.log_level = None

    def enter(self) -> int:
        """Start (or join) the redirection; return where this caller's messages begin."""
        with self.lock:
            if self.users == 0:
                self._redirect()
            self.users += 1
            return self._end()

    def leave(self, offset: int) -> list[str]:
        """What the codecs wrote since ``offset`` (other threads' lines too), one per line."""
        with self.lock:
            text = ""
            if self.capture is not None:  # pread: the codecs' writes keep their offset
                size = max(0, self._end() - offset)
                text = os.pread(self.capture.fileno(), size, offset).decode(errors="replace")
            self.users -= 1
            if self.users == 0:
                self._restore()
        return [line.strip() for line in text.splitlines() if line.strip()]

    def _end(self) -> int:
        """Bytes written to the capture so far (the shared offset of descriptor 2)."""
        if self.capture is None:
            return 0
        return os.lseek(self.capture.fileno(), 0, os.SEEK_CUR)

    def _redirect(self) -> None:
        import cv2

        logging_module = getattr(getattr(cv2, "utils", None), "logging", None)
        if logging_module is not None:
            self.log_level = (logging_module, logging_module.getLogLevel())
            logging_module.setLogLevel(logging_module.LOG_LEVEL_SILENT)
        import tempfile  # here: 3 ms of every process's start-up otherwise

        try:
            sys.stderr.flush()
            self.capture = tempfile.TemporaryFile()
            self.saved = os.dup(2)
            os.dup2(self.capture.fileno(), 2)
        except (OSError, ValueError):  # no file descriptor 2 (embedded interpreters)
            if self.capture is not None:
                self.capture.close()
            self.saved = self.capture = None

    def _restore(self) -> None:
        if self.capture is not None:
            os.dup2(self.saved, 2)
            os.close(self.saved)
            self.capture.close()
            self.saved = self.capture = None
        if self.log_level is not None:
            logging_module, level = self.log_level
            logging_module.setLogLevel(level)
            self.log_level = None


_QUIET = _QuietStderr()


@contextlib.contextmanager
def _opencv_quiet():
    """OpenCV's log and its codecs' messages (libpng writes to stderr itself) kept off stderr.

    Yields a list that receives, at the end of the block, what the codecs
    wrote, so that an error can quote it on its one line. The process's
    file descriptor 2 points to a temporary file meanwhile (one for all the
    threads inside such a block at once: :class:`_QuietStderr`).
    """
    messages: list[str] = []
    offset = _QUIET.enter()
    try:
        yield messages
    finally:
        messages.extend(_QUIET.leave(offset))


def from_opencv(image: np.ndarray) -> np.ndarray:
    """OpenCV's BGR(A) channel order to RGB(A); grey and other channel counts as they are."""
    if image.ndim == 3 and image.shape[2] == 3:
        return np.ascontiguousarray(image[:, :, ::-1])
    if image.ndim == 3 and image.shape[2] == 4:
        return np.ascontiguousarray(image[:, :, [2, 1, 0, 3]])
    return image


def to_opencv(image: np.ndarray) -> np.ndarray:
    """RGB(A) to OpenCV's BGR(A); ``(H, W, 1)`` to ``(H, W)``."""
    if image.ndim == 3 and image.shape[2] == 1:
        return np.ascontiguousarray(image[:, :, 0])
    return np.ascontiguousarray(from_opencv(image))  # the swap is its own inverse


def _open_encoded(path: Path, opencv_order: bool = False):
    import cv2

    if path.is_dir():
        raise ImageFileError(f"cannot read {path}: it is a directory")
    data = path.read_bytes()
    if not data:
        raise ImageFileError(f"cannot read {path}: the file is empty")
    with _opencv_quiet() as messages:
        try:
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        except cv2.error:
            image = None
    if image is None:
        detail = f" ({messages[-1]})" if messages else ""
        raise ImageFileError(
            f"cannot read {path}: OpenCV does not recognise it as an image, or it is corrupt "
            f"or truncated{detail}"
        )
    if opencv_order:
        reader = _ArrayRows(image, in_memory=True)
        reader.opencv_order = True
        return reader
    return _ArrayRows(from_opencv(image), in_memory=True)


def read_image(path) -> np.ndarray:
    """The whole image in ``path`` (any format :func:`open_reader` reads), RGB(A) channels last."""
    reader = open_reader(path)
    try:
        return reader.read(0, reader.shape[0])
    finally:
        reader.close()


# --- writers --------------------------------------------------------------------------------


class _Writer(_RowIndexing):
    """Rows into a temporary beside ``path``; ``close()`` renames it into place, ``abort()`` not.

    As a context manager: closed at the end of the block, aborted if the
    block raises. A writer dropped unclosed by the process that made it is
    aborted. Copies sent to other processes (Dask workers, pickled) write
    into the same temporary and never abort it.
    """

    streamed = True
    #: Whether ``write`` has copied the rows out when it returns (the caller may then
    #: reuse their memory); an encoder that keeps the whole image says no.
    done_with_rows = False

    def _start(
        self,
        path,
        shape,
        dtype,
        *,
        directory: bool = False,
        sync_directory: bool = True,
        durable: bool = True,
    ) -> None:
        self.path = Path(path)
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype)
        self.finished = False
        self.owner = True
        self.output = AtomicOutput(
            self.path, directory=directory, sync_directory=sync_directory, durable=durable
        )

    @property
    def temporary(self) -> Path:
        return self.output.temporary

    def write(self, start: int, rows: np.ndarray) -> None:
        try:
            self._write(start, rows)
        except OSError as error:
            raise output_error(self.path, error) from None

    def close(self) -> None:
        """Flush everything to the disk and rename the temporary to ``path``."""
        if self.finished:
            return
        try:
            self._finish()
            self.output.commit()
        except OSError as error:
            self.abort()
            raise output_error(self.path, error) from None
        except BaseException:
            self.abort()
            raise
        self.finished = True

    def abort(self) -> None:
        """Remove the temporary; the output path keeps what it had."""
        self.finished = True
        with contextlib.suppress(Exception):
            self._release()
        self.output.discard()

    def __enter__(self):
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()

    def __getstate__(self) -> dict:
        return dict(self.__dict__)

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.owner = False

    def __del__(self):
        if getattr(self, "owner", False) and not getattr(self, "finished", True):
            with contextlib.suppress(Exception):
                self.abort()

    # Subclasses: _write, _finish (make the temporary complete and flushed), _release.
    def _finish(self) -> None:
        self._release()

    def _release(self) -> None:
        pass


class _PositionedWriter(_Writer):
    """``.npy`` and ``.tif``: a header, then the pixels with ``os.pwrite`` at their offsets."""

    done_with_rows = True  # pwrite copies them into the page cache, or (O_DIRECT) to the disk

    def __init__(
        self, path, shape, dtype, kind: str, *, sync_directory: bool = True, durable: bool = True
    ):
        self._start(path, shape, dtype, sync_directory=sync_directory, durable=durable)
        temporary = self.output.temporary
        try:
            header = _npy_header if kind == "npy" else _tiff_header
            offset = header(temporary, self.shape, self.dtype)
            # Not durable: nothing waits for the disk, so no writeback is started, and
            # the pixels stay in the page cache (no O_DIRECT) for whoever reads them next.
            self.file = _PositionedFile(
                temporary, self.shape, self.dtype, offset, "w", writeback=durable, direct=durable
            )
        except OSError as error:
            self.output.discard()
            self.finished = True
            raise output_error(self.path, error) from None
        except BaseException:
            self.output.discard()
            self.finished = True
            raise

    def _write(self, start: int, rows: np.ndarray) -> None:
        self.file.write(start, rows)

    def _finish(self) -> None:
        self.file.close()  # the commit flushes the file (fsync) before the rename

    def _release(self) -> None:
        if "file" in self.__dict__:
            self.file.close()


def _npy_header(path: Path, shape, dtype: np.dtype) -> int:
    """Write a ``.npy`` header for ``shape`` and ``dtype``; return the pixels' offset.

    The header is padded with spaces (as NumPy pads it) to :data:`DIRECT_BLOCK` bytes, so
    that the pixels start on a block and whole bands can be written with ``O_DIRECT``
    (``np.load`` reads headers of up to 10000 bytes).
    """
    header = {
        "descr": np.lib.format.dtype_to_descr(dtype),
        "fortran_order": False,
        "shape": tuple(shape),
    }
    text = io.BytesIO()
    np.lib.format.write_array_header_1_0(text, header)
    text = text.getvalue()
    padding = DIRECT_BLOCK - len(text)
    with open(path, "r+b") as file:
        if padding >= 0:
            # magic (6 bytes), version (2), header length (2, little-endian), then the
            # dictionary, spaces and a newline.
            length = int.from_bytes(text[8:10], "little") + padding
            file.write(text[:8] + length.to_bytes(2, "little") + text[10:-1])
            file.write(b" " * padding + b"\n")
        else:  # never for the dtypes gpuconv writes: NumPy's own padding
            try:
                np.lib.format.write_array_header_1_0(file, header)
            except ValueError:  # a header over 64 KiB
                file.seek(0)
                np.lib.format.write_array_header_2_0(file, header)
        offset = file.tell()
        file.truncate(offset + int(np.prod(shape)) * dtype.itemsize)  # sparse until written
    return offset


def _tiff_header(path: Path, shape, dtype: np.dtype) -> int:
    import tifffile

    nbytes = int(np.prod(shape)) * dtype.itemsize
    channels = channels_of(shape)
    options: dict = {"photometric": "rgb" if channels in (3, 4) else "minisblack"}
    if len(shape) == 3:
        options["planarconfig"] = "contig"
    if channels == 4:
        options["extrasamples"] = ["unassalpha"]
    created = tifffile.memmap(
        path, shape=tuple(shape), dtype=dtype, bigtiff=nbytes > 2**31, **options
    )
    offset = created.offset
    del created
    return offset


class _ZarrWriter(_Writer):
    """A ``.zarr`` store, built in a temporary directory and renamed into place."""

    done_with_rows = True  # each chunk is encoded and stored before the assignment returns

    def __init__(
        self,
        path,
        shape,
        dtype,
        rows_per_chunk: int,
        *,
        sync_directory: bool = True,
        durable: bool = True,
    ):
        try:
            import zarr
        except ImportError:
            raise FormatError(
                f"{path}: writing .zarr needs zarr: pip install 'gpuconv[dask]'"
            ) from None
        self._start(
            path, shape, dtype, directory=True, sync_directory=sync_directory, durable=durable
        )
        try:
            chunks = (max(1, min(rows_per_chunk, self.shape[0])), *self.shape[1:])
            self.array = zarr.open_array(
                str(self.output.temporary),
                mode="w",
                shape=self.shape,
                dtype=self.dtype,
                chunks=chunks,
            )
        except BaseException as error:
            self.output.discard()
            self.finished = True
            if isinstance(error, OSError):
                raise output_error(self.path, error) from None
            raise

    def _write(self, start: int, rows: np.ndarray) -> None:
        self.array[start : start + len(rows)] = rows


class _EncodedWriter(_Writer):
    """PNG, JPEG, ...: rows gathered in memory, encoded by OpenCV, written at ``close()``.

    ``opencv_order``: the rows are in OpenCV's BGR(A) order already (no swap).
    """

    streamed = False

    def __init__(
        self, path, shape, dtype, *, opencv_order=False, sync_directory=True, durable=True
    ):
        self._start(path, shape, dtype, sync_directory=sync_directory, durable=durable)
        self.opencv_order = opencv_order
        self.pixels = None  # the whole image, allocated by the first band unless that is all

    def _write(self, start: int, rows: np.ndarray) -> None:
        if start == 0 and rows.shape == self.shape and rows.dtype == self.dtype:
            self.pixels = rows  # one band, the whole image: no copy
            return
        if self.pixels is None:
            self.pixels = np.zeros(self.shape, self.dtype)
        self.pixels[start : start + len(rows)] = rows

    def __getstate__(self) -> dict:
        raise TypeError(f"{self.path}: a {self.path.suffix} file is encoded in one process")

    def _finish(self) -> None:
        import cv2

        pixels = np.zeros(self.shape, self.dtype) if self.pixels is None else self.pixels
        if self.opencv_order:
            pixels = pixels[:, :, 0] if pixels.ndim == 3 and pixels.shape[2] == 1 else pixels
        else:
            pixels = to_opencv(pixels)
        with _opencv_quiet() as messages:
            try:
                written, encoded = cv2.imencode(self.path.suffix, pixels)
            except cv2.error as error:
                written = False
                messages.append(str(error).strip().splitlines()[-1])
        if not written:
            detail = f" ({messages[-1]})" if messages else ""
            raise OutputError(
                f"cannot write {self.path}: OpenCV could not encode {self.dtype} "
                f"{self.shape} as {self.path.suffix}{detail}"
            )
        data = memoryview(encoded.reshape(-1))
        descriptor = os.open(self.output.temporary, os.O_WRONLY | os.O_TRUNC)
        try:
            done = 0
            while done < len(data):
                done += os.write(descriptor, data[done:])
        finally:  # the commit flushes the file (fsync) before the rename
            os.close(descriptor)
        self.pixels = None


def open_writer(
    path,
    shape,
    dtype,
    rows_per_chunk: int,
    *,
    opencv_order=False,
    sync_directory=True,
    durable=True,
):
    """A row writer (``write(start, rows)``, ``close()``, ``abort()``) for a new ``path``.

    ``opencv_order=True``: rows for a format OpenCV encodes come in its BGR(A)
    order (from :func:`open_reader` with ``opencv_order=True``) and are not
    swapped. ``sync_directory=False`` and ``durable=False``: see
    :class:`gpuconv._atomic.AtomicOutput`.

    The format follows the suffix (:data:`FORMATS`); the rows go to a
    temporary beside ``path`` that ``close()`` renames into place. Raises
    :class:`FormatError` for a format that cannot hold ``dtype`` and
    ``shape`` and :class:`gpuconv._atomic.OutputError` when the temporary
    cannot be created (no directory, no permission, no space).
    """
    path = Path(path)
    fit_output(path, dtype, channels_of(shape), convert=False, image_dtype=dtype)
    suffix = path.suffix.lower()
    syncs = dict(sync_directory=sync_directory, durable=durable)
    if suffix == ".npy":
        return _PositionedWriter(path, shape, dtype, "npy", **syncs)
    if suffix in (".tif", ".tiff"):
        return _PositionedWriter(path, shape, dtype, "tif", **syncs)
    if suffix == ".zarr":
        return _ZarrWriter(path, shape, dtype, rows_per_chunk, **syncs)
    return _EncodedWriter(path, shape, dtype, opencv_order=opencv_order, **syncs)


def write_image(path, image: np.ndarray) -> None:
    """Write a whole image (RGB(A) channels last) to ``path`` atomically."""
    image = np.asarray(image)
    with open_writer(path, image.shape, image.dtype, image.shape[0]) as writer:
        writer.write(0, image)
