"""Image files to image files, one band of rows at a time: :func:`apply_file`.

:func:`apply_file` reads an image file in bands of rows, applies a sequence
of kernels to each band, and writes the result to a file of the kind the
output path names: ``gpuconv apply`` is this function. Any format
:mod:`gpuconv._image_files` reads can go to any format it writes that holds
the result's dtype and channels. Only a band is in memory when both files
are ``.npy``, ``.tif``/``.tiff`` or ``.zarr``: ``rows_per_chunk`` output rows
plus the halo the kernels read (``kh - 1`` rows per kernel). The band
defaults to about 4 MiB of input rows (of the widest type a band holds; at
least eight times the halo), and a run needs a few times that on top of the
interpreter: up to three
bands are in flight (band k+1 being read and band k-1 written while band
k is filtered, :func:`overlapped`), each as read and as filtered, and
the backend's temporaries. Measured on a 32768 x 32768 uint8 ``.npy``
(``benchmarks/outofcore_bench.py``, one band at a time with 32 MiB bands):
100 MiB above an idle interpreter, against 2 GiB for the in-memory call. That holds
whatever the image's height; it grows with its width. PNG, JPEG and the
other OpenCV formats are decoded or encoded whole, so with one of them on
either side the image is in memory, in one band.

Nothing is written before the input has been checked (readable, not
truncated, 2-D or 3-D, not empty, a supported dtype), the kernels and
options validated, and the output format found to hold the result; the
result goes to a temporary beside the output that is renamed into place
only once complete and flushed (:mod:`gpuconv._atomic`).

The result equals, bit for bit, the in-memory calls
``convolve(convolve(image, k1, dtype=float64), k2, dtype=dtype)...``:
between kernels the values stay in ``intermediate_dtype`` (float64 by
default), so a chain is rounded once, at the end; ``intermediate_dtype=None``
rounds to the image's type after every kernel instead, as repeated
``cv2.filter2D(image, -1, k)`` calls do. Each band is computed from exactly
the rows the border mode maps to (:func:`gpuconv._borders.source_indices`),
fetched as contiguous runs, so even ``wrap`` reads just a few rows from the
far end of the image.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import math
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

from ._borders import source_indices
from ._convolve import convolve
from ._image_files import (
    DIRECT_BLOCK,
    STREAMED_SUFFIXES,
    channels_of,
    check_image,
    fit_output,
    open_reader,
    open_writer,
    output_format,
)
from ._plan import Border, make_plan, parse_dtype

#: Suffixes :func:`apply_file` reads and writes band by band (memory bounded by a band).
OUT_OF_CORE_SUFFIXES = STREAMED_SUFFIXES

# Default Dask chunk (gpuconv.read_dask): this many bytes of input rows.
_BAND_INPUT_BYTES = 32 * 2**20
# Default band of apply_file: this many bytes of input rows (three bands are in flight at
# once: read, filtered, written). 4 MiB bands stay in the caches between the stages: a
# 16384 x 16384 uint8 sharpen, end to end, took 0.48-0.57 s with them against 0.63-0.86 s
# with 16 MiB ones (2-core Xeon, 2026-11-27; 1-2 MiB were no faster).
_STREAMED_BAND_BYTES = 4 * 2**20
# ... but at least this many times the rows the kernels' halo adds to a band, so that a
# tall kernel on a wide float image does not filter its halo rows again and again.
_BAND_PER_HALO_ROW = 8


def is_out_of_core_path(path) -> bool:
    """True for the file kinds read and written band by band: ``.npy``, ``.tif``, ``.tiff``, ``.zarr``.

    Examples
    --------
    >>> is_out_of_core_path("scan.TIFF"), is_out_of_core_path("photo.png")
    (True, False)
    """
    return Path(path).suffix.lower() in OUT_OF_CORE_SUFFIXES


def apply_file(
    input_path,
    output_path,
    kernels: list,
    *,
    border="reflect101",
    value=0.0,
    anchor=None,
    flip=False,
    dtype=None,
    backend="auto",
    rows_per_chunk=None,
    progress=True,
    intermediate_dtype=np.float64,
    convert=False,
    sync_directory=True,
    overlap=True,
    durable=True,
) -> dict:
    """Apply ``kernels`` one after the other to an image file, band by band.

    Parameters
    ----------
    input_path : str or path
        Any image file gpuconv reads: ``.npy``, a single-image ``.tif``/``.tiff``
        (``YX`` or ``YXS`` samples, any compression, strips or tiles), a
        ``.zarr`` array store, or whatever OpenCV decodes (PNG, JPEG ...);
        2-D ``(H, W)`` or channels-last ``(H, W, C)``.
    output_path : str or path
        Where to write; its suffix picks the format
        (:data:`gpuconv._image_files.FORMATS`). It appears only when the whole
        result is written and flushed (a temporary beside it is renamed into
        place); an existing file is replaced then, or left untouched by a
        failure. Must not be the input, also through a link.
    kernels : list
        Kernels (arrays or bank names) applied in order.
    border, value, anchor, flip, backend
        As for :func:`gpuconv.convolve`, for every kernel.
    dtype : dtype, optional
        Output dtype of the last kernel; default: the image's.
    rows_per_chunk : int, optional
        Output rows per band; default: about 4 MiB of input rows, and at least
        eight times the kernels' halo (the whole image when either file is
        decoded or encoded whole).
    progress : bool, default True
        Show a tqdm progress bar (on stderr) when tqdm is installed.
    intermediate_dtype : dtype or None, default float64
        Type of the results between chained kernels. ``None``: the image's
        type, rounded and saturated after every kernel.
    convert : bool, default False
        When the output format cannot hold ``dtype`` (float32 in a PNG),
        clip and round to a type it holds (the image's if it can, else its
        widest) instead of raising.
    sync_directory : bool, default True
        ``fsync`` the output's directory after the rename. ``False`` for a
        caller that writes many files into one directory and flushes it once
        at the end (``gpuconv apply --out-dir``); the output is still written
        to a flushed temporary and renamed into place, whole or not at all.
    durable : bool, default True
        Flush the output to the disk before renaming it into place (``fsync``), so that
        a power failure leaves the old file or the whole new one. ``False`` does not wait
        for the disk (``gpuconv apply --no-fsync``): other processes still never see a
        partial file, but a crash soon after may leave the output incomplete.
    overlap : bool, default True
        Read band k+1 and write band k-1 while band k is filtered
        (:func:`overlapped`); ``False``: one band after another (the same
        result; ``benchmarks/streaming_bench.py`` compares the two).

    Returns
    -------
    dict
        ``shape``, ``dtype`` (as written), ``computed_dtype`` (before any
        conversion), ``format``, ``seconds``, ``bands``, ``rows_per_chunk``,
        ``megapixels_per_second`` and ``peak_rss_mib`` (the process's peak
        resident memory so far, Linux and macOS).

    Raises
    ------
    FileNotFoundError
        ``input_path`` does not exist.
    gpuconv._image_files.ImageFileError (a ValueError)
        The input cannot be read (corrupt, truncated, no permission) or is
        no image gpuconv filters (not 2-D or 3-D, empty, unsupported dtype).
    gpuconv._image_files.FormatError (a ValueError)
        The output format is unknown or cannot hold the result.
    ValueError, TypeError
        As :func:`gpuconv.convolve` for the arguments; ``ValueError`` also for
        an empty kernel list or an output that is the input.
    gpuconv._atomic.OutputError (an OSError)
        The output cannot be written (no directory, no permission, no
        space); nothing is left at ``output_path``.
    """
    input_path, output_path = Path(input_path), Path(output_path)
    output_format(output_path)  # an unknown suffix fails before anything is read
    if isinstance(kernels, str) or len(kernels) == 0:
        raise ValueError("kernels must be a non-empty list of kernels (arrays or bank names)")
    if rows_per_chunk is not None and (
        isinstance(rows_per_chunk, bool)
        or not isinstance(rows_per_chunk, (int, np.integer))
        or rows_per_chunk < 1
    ):
        raise ValueError(f"rows_per_chunk must be a positive integer, got {rows_per_chunk!r}")
    if intermediate_dtype is not None:
        intermediate_dtype = parse_dtype(intermediate_dtype, "intermediate dtype")

    # PNG to PNG (any two formats OpenCV decodes and encodes): the pixels stay
    # in OpenCV's BGR order, as every kernel acts on each channel alike.
    reader = open_reader(input_path, opencv_order=not output_format(output_path).streamed)
    try:
        check_image(input_path, reader.shape, reader.dtype)
        if output_path.exists() and os.path.samefile(input_path, output_path):
            raise ValueError(
                f"the output {output_path} is the input {input_path} (the same file"
                f"{'' if input_path.resolve() == output_path.resolve() else ', through a link'}); "
                "choose another output path"
            )
        options = dict(border=border, value=value, anchor=anchor, flip=flip, backend=backend)
        pipeline = BandPipeline(
            reader, kernels, dtype=dtype, intermediate_dtype=intermediate_dtype, **options
        )
        computed = pipeline.output_dtype
        stored = fit_output(
            output_path,
            computed,
            channels_of(reader.shape),
            convert=convert,
            image_dtype=reader.dtype,
        )
        if stored != computed:  # an explicit conversion: the last kernel clips and rounds
            pipeline = BandPipeline(
                reader, kernels, dtype=stored, intermediate_dtype=intermediate_dtype, **options
            )
        height, width = reader.shape[:2]
        whole = getattr(reader, "in_memory", False) or not is_out_of_core_path(output_path)
        if rows_per_chunk is None:
            row_items = int(np.prod(reader.shape[1:]))
            widest = max([reader.dtype.itemsize, *pipeline.intermediate_itemsizes])
            row_bytes = widest * row_items
            streamed = max(
                1, _STREAMED_BAND_BYTES // row_bytes, _BAND_PER_HALO_ROW * pipeline.halo_rows
            )
            # Bands of whole blocks where that costs at most a halving (a durable .npy writes
            # them with O_DIRECT): a 10000-pixel uint8 row takes bands of 256 rows, not 419.
            unit = DIRECT_BLOCK // math.gcd(stored.itemsize * row_items, DIRECT_BLOCK)
            if unit <= streamed:
                streamed -= streamed % unit
            rows_per_chunk = height if whole else streamed
        rows_per_chunk = int(min(rows_per_chunk, height))
        started = time.perf_counter()
        with open_writer(
            output_path,
            reader.shape,
            stored,
            rows_per_chunk,
            opencv_order=getattr(reader, "opencv_order", False),
            sync_directory=sync_directory,
            durable=durable,
        ) as writer:
            bands = pipeline.run(writer, rows_per_chunk, progress=progress, overlap=overlap)
        seconds = time.perf_counter() - started
    finally:
        reader.close()
    return {
        "shape": tuple(reader.shape),
        "dtype": str(stored),
        "computed_dtype": str(computed),
        "format": output_format(output_path).name,
        "seconds": round(seconds, 3),
        "bands": bands,
        "rows_per_chunk": rows_per_chunk,
        "megapixels_per_second": round(height * width / 1e6 / max(seconds, 1e-9), 2),
        "peak_rss_mib": peak_rss_mib(),
    }


def peak_rss_mib() -> float | None:
    """The process's peak resident memory in MiB so far, or None where unknown.

    Linux: ``VmHWM``, which starts afresh at ``exec`` (``ru_maxrss`` may keep
    the peak of the parent that forked the process). Elsewhere ``ru_maxrss``.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 2**10, 1)
    except OSError:
        pass
    try:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    except (AttributeError, OSError):  # pragma: no cover - not POSIX
        return None
    # Linux reports kibibytes, macOS bytes.
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)


class BandPipeline:
    """A chain of kernels evaluated for any band of output rows of a row reader.

    ``reader`` needs ``shape``, ``dtype`` and ``read(start, stop)`` returning
    rows ``[start, stop)`` as an array; nothing else is ever read. Arguments
    are validated at construction, with :func:`gpuconv.convolve`'s errors.
    ``dtype`` is the last kernel's output type (None: the image's),
    ``intermediate_dtype`` that of every kernel before it (None: the image's).
    """

    def __init__(
        self,
        reader,
        kernels,
        *,
        border,
        value,
        anchor,
        flip,
        dtype,
        backend,
        intermediate_dtype=np.float64,
    ):
        from . import _registry

        _registry.check_name(backend)
        self.reader = reader
        self.height = int(reader.shape[0])
        channels = reader.shape[2:]
        self.stages = []  # (kernel, plan, options) per kernel
        stage_dtype = reader.dtype
        if dtype is None:
            dtype = reader.dtype  # the image's type, also after float intermediates
        for index, kernel in enumerate(kernels):
            last = index == len(kernels) - 1
            # A one-pixel dummy of the stage's input type: the same checks as
            # for a whole image, without reading any pixel.
            dummy = np.zeros((1, 1, *channels), dtype=stage_dtype)
            _, plan, _ = make_plan(
                dummy,
                kernel,
                border=border,
                value=value,
                anchor=anchor,
                flip=flip,
                dtype=dtype if last else intermediate_dtype,
            )
            options = dict(
                border=plan.border,
                value=plan.border_value,
                anchor=anchor,
                flip=flip,
                dtype=plan.output_dtype,
                backend=backend,
            )
            self.stages.append((kernel, plan, options))
            stage_dtype = plan.output_dtype
        self.output_dtype = stage_dtype
        #: Item sizes of the results between kernels (none for one kernel).
        self.intermediate_itemsizes = [
            plan.output_dtype.itemsize for _, plan, _ in self.stages[:-1]
        ]
        #: Rows a band reads beyond its own: the sum of every kernel's halo.
        self.halo_rows = sum(plan.kernel_height - 1 for _, plan, _ in self.stages)
        self._output_buffers = None  # set by run() while it runs
        self._input_buffers = None  # likewise

    def run(self, writer, rows_per_chunk: int, *, progress: bool, overlap: bool = True) -> int:
        """Compute every band and hand it to ``writer.write(start, rows)``; return the band count.

        With ``overlap`` (the default) band k+1 is read and band k-1 written
        while band k is filtered (:func:`overlapped`); without, one band after
        another. The result is the same.
        """
        bar = _progress_bar(self.height, progress)
        bands = [
            (top, min(self.height, top + rows_per_chunk))
            for top in range(0, self.height, rows_per_chunk)
        ]

        # A writer that is done with a band's rows when write() returns (a positioned
        # file, a Zarr store; not an encoder that keeps the whole image) gets them in
        # recycled buffers: a fresh 16 MiB band cost 4096 page faults, and OpenCV
        # filtered a band into fresh memory in 12 ms against 7 ms into a reused one.
        buffers = _BandBuffers("written") if getattr(writer, "done_with_rows", False) else None
        # The same for the bands read, from a reader that reads into a buffer it is given
        # (a positioned file): 12-19 ms a 16 MiB band into fresh memory, 3-4 ms into reused.
        inputs = _BandBuffers("read") if getattr(self.reader, "reads_into", False) else None

        def compute(fetched):
            rows = self.compute(fetched)
            if inputs is not None and not np.may_share_memory(rows, fetched[1]):
                inputs.give_back(fetched[1])
            return rows

        def write(band, rows):
            writer.write(band[0], rows)
            if buffers is not None:
                buffers.give_back(rows)
            if bar is not None:
                bar.update(band[1] - band[0])

        self._output_buffers, self._input_buffers = buffers, inputs
        try:
            with calls_expected(len(bands) * len(self.stages)):  # one call per band and kernel
                if overlap:
                    overlapped(bands, lambda band: self.fetch(*band), compute, write)
                else:
                    for band in bands:
                        write(band, compute(self.fetch(*band)))
        finally:
            self._output_buffers = self._input_buffers = None
            if bar is not None:
                bar.close()
        return len(bands)

    def band(self, top: int, bottom: int) -> np.ndarray:
        """Output rows ``[top, bottom)`` after every kernel, reading only what they need."""
        return self.compute(self.fetch(top, bottom))

    def fetch(self, top: int, bottom: int) -> tuple[list, np.ndarray]:
        """Read the file rows output rows ``[top, bottom)`` need: ``(needed, rows)`` for :meth:`compute`.

        From the last kernel back to the file, the set of rows each stage
        needs (the rows its border mode maps the halo to); ``needed[0]`` are
        the file's rows, read as contiguous runs. Every row of every stage is
        read or computed once per band, so a band reads at most
        ``bottom - top + halo_rows`` rows of the file.
        """
        needed = [np.empty(0, np.int64)] * len(self.stages) + [np.arange(top, bottom)]
        for stage in range(len(self.stages), 0, -1):
            plan = self.stages[stage - 1][1]
            sources = [
                self._source_rows(plan, run[0], run[-1] + 1)[0] for run in _runs(needed[stage])
            ]
            needed[stage - 1] = _sorted_unique(np.concatenate(sources))
        runs, buffers = _runs(needed[0]), self._input_buffers
        if buffers is not None and len(runs) == 1:  # inside run(): into a recycled buffer
            start, stop = int(runs[0][0]), int(runs[0][-1]) + 1
            shape = (stop - start, *self.reader.shape[1:])
            out = buffers.take(shape, self.reader.stored_dtype)
            return needed, self.reader.read(start, stop, out=out)
        pieces = [np.asarray(self.reader.read(run[0], run[-1] + 1)) for run in runs]
        return needed, pieces[0] if len(pieces) == 1 else np.concatenate(pieces)

    def compute(self, fetched: tuple[list, np.ndarray]) -> np.ndarray:
        """Every kernel, from the file's rows forward, each on exactly the rows the next needs.

        Inside :meth:`run`, the last kernel writes a band computed in one piece into a
        recycled buffer (:class:`_BandBuffers`) instead of a new array.
        """
        buffers = self._output_buffers
        needed, values = fetched
        for stage, (kernel, plan, options) in enumerate(self.stages, start=1):
            pieces = []
            runs = _runs(needed[stage])
            for run in runs:
                start, stop = int(run[0]), int(run[-1]) + 1
                rows, offset = self._source_rows(plan, start, stop)
                source = _take_rows(values, np.searchsorted(needed[stage - 1], rows))
                out = None
                if buffers is not None and stage == len(self.stages) and len(runs) == 1:
                    out = buffers.take(source.shape, plan.output_dtype)
                result = convolve(source, kernel, out=out, **options)
                pieces.append(result[offset : offset + stop - start])
            values = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
        return values

    def _source_rows(self, plan, start: int, stop: int) -> tuple[np.ndarray, int]:
        """Rows of the previous stage that outputs ``[start, stop)`` read, and where they start.

        Returns ``(rows, offset)``: convolving those rows (in that order) and
        keeping ``offset : offset + stop - start`` gives the outputs.
        """
        before, after = plan.anchor_y, plan.kernel_height - 1 - plan.anchor_y
        if plan.border == Border.CONSTANT:
            # Outside the image the band applies the constant itself, as the
            # whole image would; inside it holds every row the kernel reads.
            first, last = max(0, start - before), min(self.height, stop + after)
            return np.arange(first, last), start - first
        positions = np.arange(start - before, stop + after)
        return source_indices(positions, self.height, plan.border), before


class _BandBuffers:
    """Arrays for bands, handed out again once done with: the last kernel's output bands
    (``role="written"``, given back once written) or the file's rows (``"read"``, given
    back once filtered).

    :meth:`take` gives a C-contiguous array of the asked shape: the leading rows of a
    buffer given back (same row shape and dtype, at least as many rows), else a new one.
    A band goes back only once its stage is done with it, so a buffer is never
    handed out while its rows are still in flight; at most as many exist as bands of
    its role are held at once (two or three: one in use, one in flight, one given back late).
    """

    def __init__(self, role: str = "written"):
        self.role = role  # "written" (the last kernel's output) or "read" (the file's rows)
        self._free = collections.deque()  # append and pop are atomic: no lock needed
        self._owned: dict[int, np.ndarray] = {}

    def take(self, shape, dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        try:
            buffer = self._free.pop()
        except IndexError:
            buffer = None
        fits = (
            buffer is not None
            and buffer.dtype == dtype
            and buffer.shape[1:] == tuple(shape[1:])
            and len(buffer) >= shape[0]  # the first band may be shorter than the next
        )
        if not fits:
            if buffer is not None:
                del self._owned[id(buffer.base)]  # dropped: another shape or type from now on
            buffer = _aligned_empty(shape, dtype)
            self._owned[id(buffer.base)] = buffer
        return buffer[: shape[0]]

    def give_back(self, rows: np.ndarray) -> None:
        """Return the buffer ``rows`` is a view of (nothing for an array not handed out)."""
        buffer = self._owned.get(id(rows.base))
        if buffer is not None and buffer.base is rows.base:
            self._free.append(buffer)


def _aligned_empty(shape, dtype) -> np.ndarray:
    """``np.empty(shape, dtype)`` starting on a :data:`DIRECT_BLOCK` boundary (an ``O_DIRECT``
    write takes only such buffers), a view of the bytes it owns: ``.base`` holds them."""
    dtype = np.dtype(dtype)
    size = int(np.prod(shape)) * dtype.itemsize
    memory = np.empty(size + DIRECT_BLOCK, np.uint8)
    skip = -memory.ctypes.data % DIRECT_BLOCK
    return memory[skip : skip + size].view(dtype).reshape(shape)


def overlapped(items, read, compute, write) -> None:
    """``write(item, compute(read(item)))`` for every item in order, three items at a time.

    Why: read, filter and write one band after another, and the cores wait
    for the disk (and the disk for the cores) at every band. Here item k+1
    is read (in a worker thread) and item k-1 written (in another) while
    item k is computed in the calling thread; the readers (``os.preadv``,
    tifffile's decoders, zarr), the writers and the compiled filter loops
    release the GIL, so the three run at the same time.

    Memory stays bounded: at most one read, one computation and one write
    are in flight, so at most three items (bands) are held. Each item is
    read, and written, after the one before it, in order.

    An exception in any stage is raised here, unchanged, once the other
    stage in flight has finished (nothing is left running, nothing hangs:
    each stage is one bounded call); the caller's ``with`` then removes the
    output's temporary as for a failure without overlap.
    """
    items = list(items)
    if len(items) <= 1:  # nothing to overlap (a small image, a PNG): no threads
        for item in items:
            write(item, compute(read(item)))
        return
    with concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="gpuconv-band") as pool:
        reading = pool.submit(read, items[0])
        writing = None
        try:
            for index, item in enumerate(items):
                fetched = reading.result()  # a reader's error is raised here
                if index + 1 < len(items):
                    reading = pool.submit(read, items[index + 1])
                rows = compute(fetched)
                del fetched  # the band as read is no longer needed
                if writing is not None:
                    writing.result()  # a writer's error is raised here
                writing = pool.submit(write, item, rows)
                del rows
            writing.result()
        finally:
            # On an error: wait for the stage still in flight (the pool's exit
            # joins it), so that nothing writes into a temporary being removed.
            for future in (reading, writing):
                if future is not None:
                    future.cancel()


def _take_rows(values: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """``values[indices]``, as a view (no copy of the band) when the indices are consecutive."""
    if (
        len(indices)
        and indices[-1] - indices[0] == len(indices) - 1
        and np.all(np.diff(indices) == 1)
    ):
        return values[indices[0] : indices[-1] + 1]
    return values[indices]


def calls_expected(calls: int):
    """Tell ``backend="auto"`` that ``calls`` calls like the next one are coming.

    The bands of one file (or the files of a batch) are one piece of work: where
    all of them on the stand-in (the reference, or OpenCV) would cost more than
    loading numba, numba loads at the first call instead of after the first few
    (:func:`gpuconv._backends.numba.backend.expecting`). Nothing where numba's
    module does not import.
    """
    try:
        from ._backends.numba import backend as numba_backend
    except ImportError:  # pragma: no cover - numba's module imports numba lazily
        return contextlib.nullcontext()
    return numba_backend.expecting(calls)


def _sorted_unique(rows: np.ndarray) -> np.ndarray:
    """``np.unique`` of row indices, without the ``numpy.ma`` import (7 ms) it pulls in."""
    rows = np.sort(rows)
    return rows[np.concatenate(([True], rows[1:] != rows[:-1]))] if len(rows) else rows


def _runs(sorted_rows: np.ndarray) -> list[np.ndarray]:
    """Split sorted unique row numbers into runs of consecutive rows."""
    return np.split(sorted_rows, np.flatnonzero(np.diff(sorted_rows) != 1) + 1)


def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is optional (gpuconv[dask]); run without a bar
        return None
    return tqdm(total=total, unit="row", desc="gpuconv", file=sys.stderr)
