"""Out-of-core files: filter an image too large for memory, one band of rows at a time.

:func:`apply_file` reads a ``.npy``, ``.tif``/``.tiff`` or ``.zarr`` image in
bands of rows, applies a sequence of kernels to each band, and writes the
result to a file of the kind the output path names. Only a band is in memory:
``rows_per_chunk`` output rows plus the halo the kernels read (``kh - 1``
rows per kernel). The band defaults to about 32 MiB of input rows, and a run
needs a few times that on top of the interpreter: the band as read, the
filtered band, and the backend's temporaries. Measured on a 32768 x 32768
uint8 ``.npy`` (``benchmarks/outofcore_bench.py``): 100 MiB above an idle
interpreter, against 2 GiB for the in-memory call. That holds whatever the
image's height; it grows with its width.

Files are read and written through the row readers and writers of
:mod:`gpuconv._image_files`, which keep pages of the file out of the
process's resident memory.

The result equals, bit for bit, the in-memory calls
``convolve(convolve(image, k1), k2)...`` (``dtype`` applies to the last
kernel; intermediate results keep the image's type, like ``gpuconv apply``):
each band is computed from exactly the rows the border mode maps to
(:func:`gpuconv._borders.source_indices`), fetched as contiguous runs, so even
``wrap`` reads just a few rows from the far end of the image.
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

import numpy as np

from ._borders import source_indices
from ._convolve import convolve
from ._image_files import open_reader, open_writer
from ._plan import Border, make_plan

#: Suffixes :func:`apply_file` reads and writes band by band.
OUT_OF_CORE_SUFFIXES = (".npy", ".tif", ".tiff", ".zarr")

# Default band size: this many bytes of input rows per band.
_BAND_INPUT_BYTES = 32 * 2**20


def is_out_of_core_path(path) -> bool:
    """True for the file kinds :func:`apply_file` streams: ``.npy``, ``.tif``, ``.tiff``, ``.zarr``.

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
) -> dict:
    """Apply ``kernels`` one after the other to an image file, band by band.

    Parameters
    ----------
    input_path : str or path
        A ``.npy`` file, a single-image ``.tif``/``.tiff`` (``YX`` or ``YXS``
        samples, any compression) or a ``.zarr`` array store, 2-D ``(H, W)``
        or channels-last ``(H, W, C)``.
    output_path : str or path
        Where to write; its suffix (one of the same four) picks the format.
        An existing file is overwritten. Must differ from ``input_path``.
    kernels : list
        Kernels (arrays or bank names) applied in order.
    border, value, anchor, flip, backend
        As for :func:`gpuconv.convolve`, for every kernel.
    dtype : dtype, optional
        Output dtype of the last kernel; intermediate results keep the
        image's dtype.
    rows_per_chunk : int, optional
        Output rows per band; default: about 32 MiB of input rows.
    progress : bool, default True
        Show a tqdm progress bar (on stderr) when tqdm is installed.

    Returns
    -------
    dict
        ``shape``, ``dtype`` (of the output), ``seconds``, ``bands``,
        ``rows_per_chunk``, ``megapixels_per_second`` and ``peak_rss_mib``
        (the process's peak resident memory so far, Linux and macOS).

    Raises
    ------
    ValueError, TypeError
        As :func:`gpuconv.convolve` for the arguments and the file's dtype or
        shape; ``ValueError`` also for an unsupported suffix, an empty kernel
        list, a multi-image TIFF or ``output_path == input_path``.
    FileNotFoundError
        ``input_path`` does not exist.
    """
    input_path, output_path = Path(input_path), Path(output_path)
    for path in (input_path, output_path):
        if not is_out_of_core_path(path):
            raise ValueError(
                f"{path}: out-of-core files must end in {', '.join(OUT_OF_CORE_SUFFIXES)}"
            )
    if not input_path.exists():
        raise FileNotFoundError(f"no such file: {input_path}")
    if input_path.resolve() == output_path.resolve():
        raise ValueError(
            "output_path must differ from input_path (the input is read while written)"
        )
    if isinstance(kernels, str) or len(kernels) == 0:
        raise ValueError("kernels must be a non-empty list of kernels (arrays or bank names)")
    if rows_per_chunk is not None and (
        isinstance(rows_per_chunk, bool)
        or not isinstance(rows_per_chunk, (int, np.integer))
        or rows_per_chunk < 1
    ):
        raise ValueError(f"rows_per_chunk must be a positive integer, got {rows_per_chunk!r}")

    reader = open_reader(input_path)
    try:
        options = dict(border=border, value=value, anchor=anchor, flip=flip, backend=backend)
        pipeline = BandPipeline(reader, kernels, dtype=dtype, **options)
        height, width = reader.shape[:2]
        if rows_per_chunk is None:
            row_bytes = reader.dtype.itemsize * int(np.prod(reader.shape[1:]))
            rows_per_chunk = max(1, _BAND_INPUT_BYTES // row_bytes)
        rows_per_chunk = int(min(rows_per_chunk, height))
        started = time.perf_counter()
        writer = open_writer(output_path, reader.shape, pipeline.output_dtype, rows_per_chunk)
        try:
            bands = pipeline.run(writer, rows_per_chunk, progress=progress)
        finally:
            writer.close()
        seconds = time.perf_counter() - started
    finally:
        reader.close()
    return {
        "shape": tuple(reader.shape),
        "dtype": str(pipeline.output_dtype),
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
    """

    def __init__(self, reader, kernels, *, border, value, anchor, flip, dtype, backend):
        from . import _registry

        _registry.check_name(backend)
        self.reader = reader
        self.height = int(reader.shape[0])
        channels = reader.shape[2:]
        self.stages = []  # (kernel, plan, options) per kernel
        stage_dtype = reader.dtype
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
                dtype=dtype if last else None,
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
        #: Rows a band reads beyond its own: the sum of every kernel's halo.
        self.halo_rows = sum(plan.kernel_height - 1 for _, plan, _ in self.stages)

    def run(self, writer, rows_per_chunk: int, *, progress: bool) -> int:
        """Compute every band and hand it to ``writer.write(start, rows)``; return the band count."""
        bar = _progress_bar(self.height, progress)
        bands = 0
        try:
            for top in range(0, self.height, rows_per_chunk):
                bottom = min(self.height, top + rows_per_chunk)
                writer.write(top, self.band(top, bottom))
                bands += 1
                if bar is not None:
                    bar.update(bottom - top)
        finally:
            if bar is not None:
                bar.close()
        return bands

    def band(self, top: int, bottom: int) -> np.ndarray:
        """Output rows ``[top, bottom)`` after every kernel, reading only what they need.

        First, from the last kernel back to the file, the set of rows each
        stage needs (the rows its border mode maps the halo to); then, from
        the file forward, each stage computed on exactly those rows. Every
        row of every stage is read or computed once per band, so a band reads
        at most ``bottom - top + halo_rows`` rows of the file.
        """
        needed = [np.empty(0, np.int64)] * len(self.stages) + [np.arange(top, bottom)]
        for stage in range(len(self.stages), 0, -1):
            plan = self.stages[stage - 1][1]
            sources = [
                self._source_rows(plan, run[0], run[-1] + 1)[0] for run in _runs(needed[stage])
            ]
            needed[stage - 1] = np.unique(np.concatenate(sources))
        values = np.concatenate(
            [np.asarray(self.reader.read(run[0], run[-1] + 1)) for run in _runs(needed[0])]
        )
        for stage, (kernel, plan, options) in enumerate(self.stages, start=1):
            pieces = []
            for run in _runs(needed[stage]):
                start, stop = int(run[0]), int(run[-1]) + 1
                rows, offset = self._source_rows(plan, start, stop)
                source = values[np.searchsorted(needed[stage - 1], rows)]
                pieces.append(convolve(source, kernel, **options)[offset : offset + stop - start])
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
