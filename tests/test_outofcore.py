"""Out-of-core files: band-wise results equal the in-memory chain, and bands stay bands."""

from __future__ import annotations

import errno
import os

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gpuconv
from gpuconv import _image_files, _outofcore
from gpuconv._outofcore import BandPipeline, apply_file, is_out_of_core_path

BORDERS = ["reflect101", "reflect", "replicate", "constant", "wrap"]
FORMATS = ["npy", "npy-fortran", "tif", "tif-zlib-strips", "tif-big-endian", "zarr"]


def _write(path_stem, image: np.ndarray, kind: str):
    """Write ``image`` as ``kind``; return the path."""
    if kind.startswith("npy"):
        path = path_stem.with_suffix(".npy")
        np.save(path, np.asfortranarray(image) if kind == "npy-fortran" else image)
        return path
    if kind.startswith("tif"):
        tifffile = pytest.importorskip("tifffile", reason="tifffile is not installed")
        path = path_stem.with_suffix(".tif")
        options = {"photometric": "minisblack", "planarconfig": "contig"} if image.ndim == 3 else {}
        if kind == "tif-zlib-strips":
            options.update(compression="zlib", rowsperstrip=3)
        if kind == "tif-big-endian":
            options.update(byteorder=">")
        tifffile.imwrite(path, image, **options)
        return path
    zarr = pytest.importorskip("zarr", reason="zarr is not installed")
    path = path_stem.with_suffix(".zarr")
    stored = zarr.open_array(
        str(path), mode="w", shape=image.shape, dtype=image.dtype, chunks=(4, *image.shape[1:])
    )
    stored[:] = image
    return path


def _read(path) -> np.ndarray:
    suffix = path.suffix
    if suffix == ".npy":
        return np.load(path)
    if suffix == ".tif":
        import tifffile

        return tifffile.imread(path)
    import zarr

    return zarr.open_array(str(path), mode="r")[:]


def _in_memory_chain(image, kernels, *, dtype=None, intermediate=np.float64, **options):
    """What ``gpuconv apply`` computes in memory: float64 between kernels (``intermediate``,
    None: the image's type), ``dtype`` (None: the image's) for the last."""
    final = image.dtype if dtype is None else dtype
    for index, kernel in enumerate(kernels):
        last = index == len(kernels) - 1
        image = gpuconv.convolve(image, kernel, dtype=final if last else intermediate, **options)
    return image


@pytest.mark.parametrize("kind", FORMATS)
@pytest.mark.parametrize("border", BORDERS)
def test_each_format_and_border_equals_the_in_memory_chain(kind, border, tmp_path, rng):
    image = rng.integers(0, 65536, (23, 17), dtype=np.uint16)
    kernels = [rng.normal(size=(4, 3)), "small_blur"]  # even, then a 7-row halo
    options = dict(border=border, value=1234.5, anchor=None, flip=False, backend="numpy")
    source = _write(tmp_path / "in", image, kind)
    target = source.with_name("out" + source.suffix)
    stats = apply_file(
        source, target, kernels, dtype=np.float32, rows_per_chunk=5, progress=False, **options
    )
    expected = _in_memory_chain(image, kernels, dtype=np.float32, **options)
    actual = _read(target)
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    np.testing.assert_array_equal(actual, expected)
    assert stats["shape"] == image.shape and stats["dtype"] == "float32"
    assert stats["bands"] == 5  # ceil(23 / 5)


@pytest.mark.parametrize("suffix", [".npy", ".tif", ".zarr"])
def test_colour_kernel_larger_than_the_image_and_flip(suffix, tmp_path, rng):
    image = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    kernels = [rng.normal(size=(9, 2)), np.arange(12.0).reshape(3, 4)]
    options = dict(border="wrap", value=0.0, anchor=(1, 0), flip=True, backend="numpy")
    source = _write(tmp_path / "in", image, suffix.lstrip("."))
    target = tmp_path / f"deeper/out{suffix}"
    target.parent.mkdir()  # apply_file creates no directories (a missing one is an error)
    apply_file(source, target, kernels, dtype=None, rows_per_chunk=1, progress=False, **options)
    np.testing.assert_array_equal(_read(target), _in_memory_chain(image, kernels, **options))


def test_output_kind_follows_the_output_suffix(tmp_path, rng):
    tifffile = pytest.importorskip("tifffile", reason="tifffile is not installed")
    image = rng.integers(0, 256, (12, 10), dtype=np.uint8)
    source = _write(tmp_path / "in", image, "npy")
    target = tmp_path / "out.tiff"
    apply_file(source, target, ["sharpen"], progress=False)
    np.testing.assert_array_equal(tifffile.imread(target), gpuconv.convolve(image, "sharpen"))


class _RecordingReader:
    """An in-memory image that remembers every read: the pipeline sees only this."""

    def __init__(self, image: np.ndarray, log: list):
        self.log = log
        self.image = image
        self.shape = image.shape
        self.dtype = image.dtype
        self.reads: list[tuple[int, int]] = []

    def read(self, start: int, stop: int) -> np.ndarray:
        assert 0 <= start < stop <= len(self.image)
        self.reads.append((start, stop))
        self.log.append(("read", stop - start))
        return self.image[start:stop].copy()

    def close(self) -> None:
        pass


class _CollectingWriter:
    def __init__(self, shape, dtype, log: list):
        self.log = log
        self.output = np.full(shape, 77, dtype=dtype)
        self.written: list[tuple[int, int]] = []

    def write(self, start: int, rows: np.ndarray) -> None:
        self.written.append((start, start + len(rows)))
        self.log.append(("write", len(rows)))
        self.output[start : start + len(rows)] = rows


def _run_recorded(image, kernels, rows_per_chunk, **options):
    log: list[tuple[str, int]] = []
    reader = _RecordingReader(image, log)
    pipeline = BandPipeline(reader, kernels, **options)
    writer = _CollectingWriter(image.shape, pipeline.output_dtype, log)
    # One band after another, so that the log splits into bands (what a band
    # reads does not depend on the scheduling; the overlapped runs are below).
    pipeline.run(writer, rows_per_chunk, progress=False, overlap=False)
    return pipeline, reader, writer, _rows_read_per_band(log)


def _rows_read_per_band(log) -> list[int]:
    """Rows read between consecutive writes: what one band pulled from the file."""
    per_band, pending = [], 0
    for event, rows in log:
        if event == "read":
            pending += rows
        else:
            per_band.append(pending)
            pending = 0
    assert pending == 0  # nothing is read after the last band is written
    return per_band


@pytest.mark.parametrize("border", BORDERS)
def test_a_band_never_reads_more_than_its_rows_and_halo(border, rng):
    image = rng.integers(0, 256, (200, 7), dtype=np.uint8)
    kernels = ["small_blur", "sobel_y", np.ones((6, 1))]  # halos 6 + 2 + 5 rows
    options = dict(border=border, value=3.0, anchor=None, flip=False, dtype=None, backend="numpy")
    rows_per_chunk = 16
    pipeline, _, writer, rows_per_band = _run_recorded(image, kernels, rows_per_chunk, **options)
    assert pipeline.halo_rows == 13
    assert writer.written == [(top, min(200, top + 16)) for top in range(0, 200, 16)]
    # Each band reads at most its own rows plus the chain's halo (less at the
    # edges for constant and replicate), never the whole image.
    assert len(rows_per_band) == 13
    assert max(rows_per_band) <= rows_per_chunk + pipeline.halo_rows
    expected = _in_memory_chain(
        image, kernels, **{k: v for k, v in options.items() if k != "dtype"}
    )
    np.testing.assert_array_equal(writer.output, expected)


def test_apply_file_reads_the_file_band_by_band(tmp_path, monkeypatch, rng):
    image = rng.integers(0, 256, (120, 9), dtype=np.uint8)
    source = _write(tmp_path / "in", image, "npy")
    recorded = []
    real_open_reader = _outofcore.open_reader

    def recording_open_reader(path, **options):
        reader = real_open_reader(path, **options)
        real_read = reader.read

        def read(start, stop, **options):
            recorded.append(stop - start)
            return real_read(start, stop, **options)

        reader.read = read
        return reader

    monkeypatch.setattr(_outofcore, "open_reader", recording_open_reader)
    stats = apply_file(source, tmp_path / "out.npy", ["sharpen"], rows_per_chunk=10, progress=False)
    assert stats["bands"] == 12
    assert recorded and max(recorded) <= 10 + 2
    assert sum(recorded) <= 12 * (10 + 2)
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), gpuconv.convolve(image, "sharpen"))


@settings(max_examples=40, deadline=None)
@given(
    height=st.integers(1, 30),
    rows_per_chunk=st.integers(1, 12),
    kernel_heights=st.lists(st.integers(1, 9), min_size=1, max_size=3),
    border=st.sampled_from(BORDERS),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_bands_and_chains_match_in_memory(
    height, rows_per_chunk, kernel_heights, border, seed
):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, 5), dtype=np.uint8)
    kernels = [rng.normal(size=(kernel_height, 2)) for kernel_height in kernel_heights]
    options = dict(border=border, value=250.5, anchor=None, flip=False, backend="numpy")
    pipeline, _, writer, rows_per_band = _run_recorded(
        image, kernels, rows_per_chunk, dtype=np.float64, **options
    )
    expected = _in_memory_chain(image, kernels, dtype=np.float64, **options)
    np.testing.assert_array_equal(writer.output, expected)
    assert max(rows_per_band) <= rows_per_chunk + pipeline.halo_rows


def test_progress_bar_counts_rows(tmp_path, capsys, rng):
    pytest.importorskip("tqdm", reason="tqdm is not installed: pip install 'gpuconv[dask]'")
    source = _write(tmp_path / "in", rng.integers(0, 256, (30, 4), dtype=np.uint8), "npy")
    apply_file(source, tmp_path / "out.npy", ["sharpen"], rows_per_chunk=7, progress=True)
    assert "30/30" in capsys.readouterr().err
    apply_file(source, tmp_path / "quiet.npy", ["sharpen"], rows_per_chunk=7, progress=False)
    assert capsys.readouterr().err == ""


def test_default_band_size_and_stats(tmp_path, rng):
    image = rng.integers(0, 256, (50, 40), dtype=np.uint8)
    source = _write(tmp_path / "in", image, "npy")
    stats = apply_file(source, tmp_path / "out.npy", ["sharpen", "laplacian"], progress=False)
    assert stats["rows_per_chunk"] == 50 and stats["bands"] == 1  # small image: one band
    assert stats["peak_rss_mib"] is None or stats["peak_rss_mib"] > 0
    assert stats["seconds"] >= 0


def test_is_out_of_core_path():
    assert [is_out_of_core_path(name) for name in ("a.npy", "b.TIF", "c.tiff", "d.zarr")] == [
        True
    ] * 4
    assert not any(is_out_of_core_path(name) for name in ("a.png", "b.jpg", "npy", "c.npz"))


def test_errors_are_raised_before_any_output_is_written(tmp_path):
    from gpuconv._atomic import OutputError
    from gpuconv._image_files import FormatError, ImageFileError

    source = tmp_path / "in.npy"
    np.save(source, np.zeros((4, 4), dtype=np.int64))
    target = tmp_path / "out.npy"
    with pytest.raises(ImageFileError, match="in.npy: unsupported image dtype int64"):
        apply_file(source, target, ["sharpen"], progress=False)
    np.save(source, np.zeros((4, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="unknown border"):
        apply_file(source, target, ["sharpen"], border="mirrorish", progress=False)
    with pytest.raises(ValueError, match="unknown kernel"):
        apply_file(source, target, ["no_such_kernel"], progress=False)
    with pytest.raises(ValueError, match="non-empty list"):
        apply_file(source, target, [], progress=False)
    with pytest.raises(ValueError, match="rows_per_chunk"):
        apply_file(source, target, ["sharpen"], rows_per_chunk=0, progress=False)
    with pytest.raises(ValueError, match="is the input"):
        apply_file(source, source, ["sharpen"], progress=False)
    with pytest.raises(FormatError, match="unknown output format '.xyz'"):
        apply_file(source, tmp_path / "out.xyz", ["sharpen"], progress=False)
    with pytest.raises(FormatError, match="PNG cannot hold float32 .* .tif, .tiff, .npy, .zarr"):
        apply_file(source, tmp_path / "out.png", ["sharpen"], dtype="float32", progress=False)
    with pytest.raises(FileNotFoundError):
        apply_file(tmp_path / "missing.npy", target, ["sharpen"], progress=False)
    with pytest.raises(OutputError, match="directory .*missing_dir does not exist"):
        apply_file(source, tmp_path / "missing_dir" / "out.npy", ["sharpen"], progress=False)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["in.npy"]


def test_multi_page_tiff_is_refused(tmp_path):
    tifffile = pytest.importorskip("tifffile", reason="tifffile is not installed")
    source = tmp_path / "stack.tif"
    tifffile.imwrite(source, np.zeros((3, 8, 8), dtype=np.uint8), photometric="minisblack")
    with pytest.raises(ValueError, match="axes YX or YXS"):
        apply_file(source, tmp_path / "out.tif", ["sharpen"], progress=False)


def test_cli_apply_streams_out_of_core_files(tmp_path, capsys, rng):
    from gpuconv.cli import main

    image = rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)
    source = _write(tmp_path / "in", image, "zarr")
    target = tmp_path / "out.zarr"
    argv = [
        "apply",
        str(source),
        "-k",
        "sharpen",
        "-k",
        "sobel_x",
        "-o",
        str(target),
        "--border",
        "wrap",
        "--dtype",
        "float32",
        "--quiet",
    ]
    assert main(argv) == 0
    assert "wrote" in capsys.readouterr().out
    expected = _in_memory_chain(image, ["sharpen", "sobel_x"], border="wrap", dtype=np.float32)
    np.testing.assert_array_equal(_read(target), expected)


def _tiff_layouts():
    """(id, image, tifffile.imwrite options) for TIFFs that are read strip by strip."""
    rng = np.random.default_rng(7)
    grey16 = rng.integers(0, 65536, (53, 37), dtype=np.uint16)
    rgb8 = rng.integers(0, 256, (53, 37, 3), dtype=np.uint8)
    return [
        ("lzw-strips-grey", grey16, dict(compression="lzw", rowsperstrip=5)),
        ("zlib-tiles-rgb", rgb8, dict(compression="zlib", tile=(16, 16), photometric="rgb")),
        (
            "lzw-planar-rgb",
            np.moveaxis(rgb8, -1, 0),  # tifffile takes separate planes first
            dict(compression="lzw", photometric="rgb", planarconfig="separate", rowsperstrip=4),
        ),
        (
            "zstd-predictor-float32",
            rng.normal(size=(53, 37)).astype(np.float32),
            dict(compression="zstd", predictor=True, rowsperstrip=7),
        ),
        ("packbits-big-endian", grey16, dict(compression="packbits", byteorder=">")),
    ]


@pytest.mark.parametrize(
    "image, options", [case[1:] for case in _tiff_layouts()], ids=[c[0] for c in _tiff_layouts()]
)
def test_compressed_tiled_and_planar_tiffs_are_read_by_strips(image, options, tmp_path):
    """Issue 13, item 2: LZW (and every other codec, tiles, planes) through tifffile alone."""
    tifffile = pytest.importorskip("tifffile", reason="tifffile is not installed")
    from gpuconv._image_files import open_reader

    path = tmp_path / "in.tif"
    tifffile.imwrite(path, image, **options)
    whole = tifffile.imread(path)
    if options.get("planarconfig") == "separate":
        whole = np.moveaxis(whole, 0, -1)
    reader = open_reader(path)
    try:
        assert type(reader).__name__ == "_TiffSegments"  # strip by strip, not whole, no Zarr
        assert reader.shape == whole.shape and reader.dtype == whole.dtype.newbyteorder("=")
        for start, stop in [(0, 53), (3, 21), (52, 53), (16, 32)]:
            np.testing.assert_array_equal(reader.read(start, stop), whole[start:stop])
    finally:
        reader.close()
    target = tmp_path / "out.tif"
    apply_file(path, target, ["sharpen", "box3"], rows_per_chunk=6, backend="numpy", progress=False)
    expected = _in_memory_chain(whole, ["sharpen", "box3"], backend="numpy")
    np.testing.assert_array_equal(_read(target), expected)


def test_a_missing_output_directory_is_not_created(tmp_path, rng):
    from gpuconv._atomic import OutputError

    source = _write(tmp_path / "in", rng.integers(0, 256, (12, 10), dtype=np.uint8), "npy")
    with pytest.raises(OutputError, match="does not exist"):
        apply_file(source, tmp_path / "a" / "b" / "out.npy", ["sharpen"], progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.npy"]


def test_intermediate_dtype_none_rounds_after_every_kernel(tmp_path, rng):
    image = rng.integers(0, 256, (30, 20), dtype=np.uint8)
    source = _write(tmp_path / "in", image, "npy")
    chain = ["sobel_x", "sobel_x"]
    apply_file(source, tmp_path / "f.npy", chain, dtype="int16", progress=False)
    apply_file(
        source, tmp_path / "r.npy", chain, dtype="int16", intermediate_dtype=None, progress=False
    )
    floated = _in_memory_chain(image, chain, dtype=np.int16)
    rounded = _in_memory_chain(image, chain, dtype=np.int16, intermediate=None)
    np.testing.assert_array_equal(np.load(tmp_path / "f.npy"), floated)
    np.testing.assert_array_equal(np.load(tmp_path / "r.npy"), rounded)
    assert floated.min() < rounded.min()  # the per-kernel rounding clipped negative responses


# --- overlapped streaming (issue 15, deliverable 1) ---------------------------------------


@pytest.mark.parametrize("kind", ["npy", "tif", "tif-zlib-strips", "zarr"])
@pytest.mark.parametrize("border", ["wrap", "reflect101", "constant"])
@pytest.mark.parametrize("rows_per_chunk", [1, 4, 9, 64])
def test_overlapped_streaming_equals_the_in_memory_chain(
    kind, border, rows_per_chunk, tmp_path, rng
):
    image = rng.integers(0, 256, (37, 11, 3), dtype=np.uint8)
    kernels = ["small_blur", rng.normal(size=(4, 2))]  # a 6-row halo, then an even kernel
    options = dict(border=border, value=9.5, anchor=None, flip=False, backend="numpy")
    source = _write(tmp_path / "in", image, kind)
    target = source.with_name("out" + source.suffix)
    stats = apply_file(
        source,
        target,
        kernels,
        dtype=np.float32,
        rows_per_chunk=rows_per_chunk,
        progress=False,
        **options,
    )
    assert stats["bands"] == -(-37 // rows_per_chunk)
    np.testing.assert_array_equal(
        _read(target), _in_memory_chain(image, kernels, dtype=np.float32, **options)
    )


class _RecordingBuffers(_outofcore._BandBuffers):
    """The pipeline's band buffers, each pool recording every array it hands out."""

    pools: dict = {}  # role ("written", "read") -> pool

    def __init__(self, role):
        super().__init__(role)
        self.handed_out = []
        type(self).pools[role] = self

    def take(self, shape, dtype):
        band = super().take(shape, dtype)
        self.handed_out.append(band)
        return band


@pytest.mark.parametrize("backend", ["auto", "numpy"])  # auto: OpenCV's dst, numpy: out=
@pytest.mark.parametrize("border", ["replicate", "constant", "wrap"])
def test_bands_reuse_written_buffers_and_equal_the_in_memory_call(
    backend, border, tmp_path, rng, monkeypatch
):
    monkeypatch.setattr(_RecordingBuffers, "pools", {})
    monkeypatch.setattr(_outofcore, "_BandBuffers", _RecordingBuffers)
    image = rng.integers(0, 256, (61, 23), dtype=np.uint8)
    source = _write(tmp_path / "in", image, "npy")
    target = tmp_path / "out.npy"
    stats = apply_file(
        source,
        target,
        ["sharpen"],
        border=border,
        backend=backend,
        rows_per_chunk=6,
        progress=False,
    )
    options = dict(border=border, value=0.0, anchor=None, flip=False, backend="numpy")
    np.testing.assert_array_equal(_read(target), _in_memory_chain(image, ["sharpen"], **options))
    assert stats["bands"] == 11
    # Two pools: the bands written, and the bands read from the .npy. With "wrap" the first
    # and last bands read two runs of rows (their halo from the other end), concatenated
    # into a new array: those two take no buffer.
    pools = _RecordingBuffers.pools
    bands_read = 9 if border == "wrap" else 11
    for bands, expected in (
        (pools["written"].handed_out, 11),
        (pools["read"].handed_out, bands_read),
    ):
        assert len(bands) == expected
        owners = {id(band.base) for band in bands}
        assert len(owners) <= 3 < len(bands)  # reused: at most three bands are live at once


def test_a_byte_order_to_swap_reads_into_new_arrays(tmp_path, rng, monkeypatch):
    # A big-endian .npy is read and then swapped into a new array: a recycled buffer would
    # never come back, so the bands read get no pool (the bands written still do).
    monkeypatch.setattr(_RecordingBuffers, "pools", {})
    monkeypatch.setattr(_outofcore, "_BandBuffers", _RecordingBuffers)
    image = rng.integers(0, 65536, (40, 30), dtype=np.uint16)
    source = tmp_path / "in.npy"
    np.save(source, image.astype(">u2"))
    target = tmp_path / "out.npy"
    apply_file(source, target, ["sharpen"], rows_per_chunk=7, progress=False)
    options = dict(border="reflect101", value=0.0, anchor=None, flip=False, backend="numpy")
    np.testing.assert_array_equal(_read(target), _in_memory_chain(image, ["sharpen"], **options))
    assert list(_RecordingBuffers.pools) == ["written"]
    assert len(_RecordingBuffers.pools["written"].handed_out) == 6


def test_a_positioned_file_reads_into_the_buffer_it_is_given(tmp_path, rng):
    from gpuconv._image_files import open_reader

    image = rng.integers(0, 256, (9, 5, 3), dtype=np.uint8)
    np.save(tmp_path / "in.npy", image)
    reader = open_reader(tmp_path / "in.npy")
    try:
        assert reader.reads_into
        out = np.full((4, 5, 3), 7, np.uint8)
        assert reader.read(2, 6, out=out) is out
        np.testing.assert_array_equal(out, image[2:6])
        for wrong in (np.empty((3, 5, 3), np.uint8), np.empty((4, 5, 3), np.uint16)):
            with pytest.raises(ValueError, match="out must be"):
                reader.read(2, 6, out=wrong)
    finally:
        reader.close()


def test_an_encoder_that_keeps_its_rows_gets_new_arrays(tmp_path, rng, monkeypatch):
    band_buffers = _outofcore._BandBuffers

    def refuse(role):
        # The .npy's bands read may be recycled; the bands written may not.
        assert role != "written", "a PNG writer keeps the rows: no buffer may be reused"
        return band_buffers(role)

    monkeypatch.setattr(_outofcore, "_BandBuffers", refuse)
    image = rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)
    source = _write(tmp_path / "in", image, "npy")
    apply_file(source, tmp_path / "out.png", ["sharpen"], rows_per_chunk=7, progress=False)
    options = dict(border="reflect101", value=0.0, anchor=None, flip=False, backend="numpy")
    expected = _in_memory_chain(image, ["sharpen"], **options)
    written = cv2.imread(str(tmp_path / "out.png"), cv2.IMREAD_UNCHANGED)[:, :, ::-1]  # BGR
    np.testing.assert_array_equal(written, expected)


def test_band_buffers_hand_out_only_what_was_given_back():
    buffers = _outofcore._BandBuffers()
    first = buffers.take((4, 5, 3), np.uint8)
    second = buffers.take((4, 5, 3), np.uint8)
    assert first.flags.c_contiguous and first.shape == (4, 5, 3)
    assert not np.shares_memory(first, second)  # the first was not given back
    buffers.give_back(first[1:3])  # a view of a band gives back the whole buffer
    buffers.give_back(np.empty((4, 5, 3), np.uint8))  # not one of its own: ignored
    shorter = buffers.take((3, 5, 3), np.uint8)
    assert np.shares_memory(shorter, first) and shorter.shape == (3, 5, 3)
    assert not np.shares_memory(buffers.take((4, 5, 3), np.uint8), first)  # none left
    buffers.give_back(shorter)
    longer = buffers.take((6, 5, 3), np.uint8)  # too short a buffer is replaced
    assert longer.shape == (6, 5, 3) and not np.shares_memory(longer, first)
    buffers.give_back(longer)
    assert buffers.take((6, 5, 3), np.float32).dtype == np.float32  # another type: new


def test_overlapped_streaming_with_the_compiled_backend(tmp_path, rng):
    pytest.importorskip("numba", reason="numba is not installed: the compiled loops are its")
    image = rng.integers(0, 256, (301, 67), dtype=np.uint8)
    source = _write(tmp_path / "in", image, "npy")
    apply_file(
        source,
        tmp_path / "out.npy",
        ["sharpen"],
        backend="numba",
        rows_per_chunk=13,
        border="wrap",
        progress=False,
    )
    np.testing.assert_array_equal(
        np.load(tmp_path / "out.npy"), gpuconv.convolve(image, "sharpen", border="wrap")
    )


class _InstrumentedReader(_RecordingReader):
    """Counts bands in flight: a band is live from its read until its write ends."""

    def __init__(self, image, state):
        super().__init__(image, [])
        self.state = state

    def read(self, start, stop):
        with self.state["lock"]:
            self.state["started"] += 1
            live = self.state["started"] - self.state["finished"]
            self.state["most_live"] = max(self.state["most_live"], live)
            if self.state["started"] == 3:
                self.state["third_read"].set()
        return super().read(start, stop)


def _instrumented_sharpen(image):
    """``(state, pipeline, writer)``: sharpen through a reader that counts the bands live
    (started, not yet written) in ``state``; reflect101 and one 3 x 3 kernel make one read
    per band, so reads count bands."""
    import threading

    state = dict(lock=threading.Lock(), started=0, finished=0, most_live=0)
    state["third_read"] = threading.Event()
    reader = _InstrumentedReader(image, state)
    pipeline = BandPipeline(
        reader,
        ["sharpen"],
        border="reflect101",
        value=0.0,
        anchor=None,
        flip=False,
        dtype=None,
        backend="numpy",
    )
    return state, pipeline, _CollectingWriter(image.shape, pipeline.output_dtype, [])


def test_reads_filters_and_writes_overlap_with_at_most_three_bands_live(rng):
    image = rng.integers(0, 256, (64, 5), dtype=np.uint8)
    state, pipeline, writer = _instrumented_sharpen(image)
    overlapped_writes = []
    real_write = writer.write

    def slow_write(start, rows):
        if start == 0:
            # Band 0 is being written: with overlap, band 1 is filtered and band
            # 2 read meanwhile. Without, this wait would run out (and fail below).
            overlapped_writes.append(state["third_read"].wait(timeout=30))
        real_write(start, rows)
        with state["lock"]:
            state["finished"] += 1

    writer.write = slow_write
    assert pipeline.run(writer, 4, progress=False) == 16
    assert overlapped_writes == [True]  # band 2 was read while band 0 was written
    assert 2 <= state["most_live"] <= 3
    assert state["finished"] == 16
    np.testing.assert_array_equal(writer.output, gpuconv.convolve(image, "sharpen"))


def test_overlapped_memory_stays_bounded_over_many_bands(rng):
    """Without bounds a fast reader would run ahead: hold it to one band beyond the filter."""
    image = rng.integers(0, 256, (200, 3), dtype=np.uint8)
    state, pipeline, writer = _instrumented_sharpen(image)
    real_write = writer.write

    def slow_write(start, rows):  # a slow disk: the reader must wait, not pile up bands
        import time

        time.sleep(0.002)
        real_write(start, rows)
        with state["lock"]:
            state["finished"] += 1

    writer.write = slow_write
    assert pipeline.run(writer, 2, progress=False) == 100
    assert state["most_live"] <= 3
    np.testing.assert_array_equal(writer.output, gpuconv.convolve(image, "sharpen"))


def _run_to_completion(function):
    """Run ``function()`` in a thread; assert it ends (no hang); return its exception."""
    import threading

    outcome = {}

    def target():
        try:
            function()
        except BaseException as error:  # noqa: BLE001 - handed to the test
            outcome["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout=120)
    assert not thread.is_alive(), "apply_file hung after a failure in a stage"
    return outcome.get("error")


@pytest.mark.parametrize("kind", ["npy", "tif", "zarr"])
def test_a_reader_failure_mid_stream_raises_and_leaves_nothing(kind, tmp_path, monkeypatch, rng):
    import threading

    from gpuconv._image_files import ImageFileError

    image = rng.integers(0, 256, (60, 8), dtype=np.uint8)
    source = _write(tmp_path / "in", image, kind)
    real_open_reader = _outofcore.open_reader
    reads = []

    def failing_open_reader(path, **options):
        reader = real_open_reader(path, **options)
        real_read = reader.read

        def read(start, stop, **options):
            reads.append(threading.current_thread().name)
            if len(reads) == 4:
                raise ImageFileError(f"{path}: cannot decode rows {start}-{stop} (injected)")
            return real_read(start, stop, **options)

        reader.read = read
        return reader

    monkeypatch.setattr(_outofcore, "open_reader", failing_open_reader)
    target = tmp_path / ("out." + source.suffix.lstrip("."))
    error = _run_to_completion(
        lambda: apply_file(source, target, ["sharpen"], rows_per_chunk=5, progress=False)
    )
    assert isinstance(error, ImageFileError) and "injected" in str(error)
    assert len(reads) == 4  # nothing read after the failure
    assert all(name.startswith("gpuconv-band") for name in reads)  # read in the reader thread
    assert sorted(p.name for p in tmp_path.iterdir()) == [source.name]  # no output, no temporary


@pytest.mark.parametrize("kind", ["npy", "tif", "zarr"])
def test_a_writer_failure_mid_stream_raises_and_leaves_nothing(kind, tmp_path, monkeypatch, rng):
    import errno

    from gpuconv._atomic import OutputError

    image = rng.integers(0, 256, (60, 8), dtype=np.uint8)
    source = _write(tmp_path / "in", image, kind)
    target = tmp_path / ("out." + source.suffix.lstrip("."))
    real_open_writer = _outofcore.open_writer
    writes = []

    def failing_open_writer(*args, **kwargs):
        writer = real_open_writer(*args, **kwargs)
        real_write = writer._write

        def _write(start, rows):
            writes.append(start)
            if len(writes) == 3:
                raise OSError(errno.ENOSPC, "No space left on device")
            real_write(start, rows)

        writer._write = _write
        return writer

    monkeypatch.setattr(_outofcore, "open_writer", failing_open_writer)
    error = _run_to_completion(
        lambda: apply_file(source, target, ["sharpen"], rows_per_chunk=5, progress=False)
    )
    assert isinstance(error, OutputError)
    assert str(error) == f"cannot write {target}: no space left on device"
    assert writes == [0, 5, 10]  # in order, and none after the failure
    assert sorted(p.name for p in tmp_path.iterdir()) == [source.name]


def test_a_filter_failure_mid_stream_raises_and_leaves_nothing(tmp_path, monkeypatch, rng):
    image = rng.integers(0, 256, (60, 8), dtype=np.uint8)
    source = _write(tmp_path / "in", image, "npy")
    real_compute = BandPipeline.compute
    calls = []

    def failing_compute(self, fetched):
        calls.append(1)
        if len(calls) == 2:
            raise MemoryError("injected")
        return real_compute(self, fetched)

    monkeypatch.setattr(BandPipeline, "compute", failing_compute)
    error = _run_to_completion(
        lambda: apply_file(
            source, tmp_path / "out.npy", ["sharpen"], rows_per_chunk=5, progress=False
        )
    )
    assert isinstance(error, MemoryError)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.npy"]


def test_overlapped_runs_in_order_and_raises_the_first_failure():
    from gpuconv._outofcore import overlapped

    written = []
    overlapped(range(7), lambda i: i * 10, lambda v: v + 1, lambda i, v: written.append((i, v)))
    assert written == [(i, i * 10 + 1) for i in range(7)]
    overlapped([], None, None, None)  # nothing to do: no thread, no call

    def read(i):
        if i == 2:
            raise KeyError("read 2")
        return i

    written.clear()
    with pytest.raises(KeyError, match="read 2"):
        overlapped(range(7), read, lambda v: v, lambda i, v: written.append(i))
    assert written == [0, 1]  # the bands before the failure were written, none after


def test_the_bands_of_one_file_are_announced_to_the_ski_rental(tmp_path, monkeypatch):
    """The bands of one image are one piece of work: ``auto`` is told how many are coming."""
    pytest.importorskip("numba", reason="numba is not installed: nothing to load")
    import contextlib

    from gpuconv._backends.numba import backend as numba_backend

    announced, seen = [], []

    @contextlib.contextmanager
    def expecting(calls):
        announced.append(calls)
        yield

    monkeypatch.setattr(numba_backend, "expecting", expecting)
    real_worth_loading = numba_backend.worth_loading
    monkeypatch.setattr(
        numba_backend,
        "worth_loading",
        lambda plan, *rest: seen.append(announced[-1:]) or real_worth_loading(plan, *rest),
    )
    source = _write(tmp_path / "in", np.zeros((64, 48), np.uint8), "npy")
    apply_file(source, tmp_path / "a.npy", ["sharpen"], rows_per_chunk=8, progress=False)
    assert announced == [8]  # 64 rows in bands of 8, announced before the first band
    assert seen and all(entry == [8] for entry in seen)
    apply_file(source, tmp_path / "b.npy", ["sharpen"], progress=False)  # one band
    assert announced == [8, 1]


def test_overlap_false_reads_one_band_after_another_in_the_calling_thread(
    tmp_path, monkeypatch, rng
):
    import threading

    image = rng.integers(0, 256, (50, 9), dtype=np.uint8)
    source = _write(tmp_path / "in", image, "npy")
    real_open_reader = _outofcore.open_reader
    threads = []

    def recording_open_reader(path, **options):
        reader = real_open_reader(path, **options)
        real_read = reader.read

        def read(start, stop, **options):
            threads.append(threading.current_thread())
            return real_read(start, stop, **options)

        reader.read = read
        return reader

    monkeypatch.setattr(_outofcore, "open_reader", recording_open_reader)
    for overlap in (False, True):
        threads.clear()
        target = tmp_path / f"out-{overlap}.npy"
        apply_file(source, target, ["sharpen"], rows_per_chunk=7, overlap=overlap, progress=False)
        np.testing.assert_array_equal(np.load(target), gpuconv.convolve(image, "sharpen"))
        in_caller = {thread is threading.main_thread() for thread in threads}
        assert in_caller == ({True} if not overlap else {False})


# A durable .npy output: whole blocks of pixels go to the disk with O_DIRECT.


def _o_direct_supported(directory) -> bool:
    probe = directory / "o_direct_probe"
    probe.write_bytes(b"")
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_DIRECT))
    except OSError:
        return False
    finally:
        probe.unlink()
    return True


class _DirectWrites:
    """Counts the positioned file's direct writes that were taken (True) and declined."""

    def __init__(self, monkeypatch):
        self.taken = self.declined = 0
        real = _image_files._PositionedFile._write_direct

        def counting(file, data, view, position):
            taken = real(file, data, view, position)
            if taken:
                self.taken += 1
            else:
                self.declined += 1
            return taken

        monkeypatch.setattr(_image_files._PositionedFile, "_write_direct", counting)


@pytest.mark.skipif(not hasattr(os, "O_DIRECT"), reason="no O_DIRECT on this system")
def test_a_durable_npy_writes_whole_blocks_directly_and_equals_the_in_memory_call(
    tmp_path, rng, monkeypatch
):
    if not _o_direct_supported(tmp_path):
        pytest.skip(f"the file system of {tmp_path} refuses O_DIRECT (the fallback is tested)")
    writes = _DirectWrites(monkeypatch)
    image = rng.integers(0, 256, (41, 4096), dtype=np.uint8)  # a row is one block
    source = _write(tmp_path / "in", image, "npy")
    target = tmp_path / "out.npy"
    stats = apply_file(source, target, ["sharpen"], rows_per_chunk=4, progress=False)
    options = dict(border="reflect101", value=0.0, anchor=None, flip=False, backend="numpy")
    np.testing.assert_array_equal(np.load(target), _in_memory_chain(image, ["sharpen"], **options))
    assert (writes.taken, writes.declined) == (stats["bands"], 0) == (11, 0)
    with open(target, "rb") as file:  # the pixels start on a block, after NumPy's header
        np.lib.format.read_magic(file)
        np.lib.format.read_array_header_1_0(file)
        assert file.tell() == _image_files.DIRECT_BLOCK


def test_unaligned_bands_and_a_non_durable_output_go_through_the_page_cache(
    tmp_path, rng, monkeypatch
):
    writes = _DirectWrites(monkeypatch)
    image = rng.integers(0, 256, (41, 1000), dtype=np.uint8)  # 4 rows: 4000 bytes, no block
    source = _write(tmp_path / "in", image, "npy")
    options = dict(border="reflect101", value=0.0, anchor=None, flip=False, backend="numpy")
    expected = _in_memory_chain(image, ["sharpen"], **options)
    apply_file(source, tmp_path / "a.npy", ["sharpen"], rows_per_chunk=4, progress=False)
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), expected)
    assert writes.taken == 0 and writes.declined == 11
    aligned = rng.integers(0, 256, (41, 4096), dtype=np.uint8)
    source = _write(tmp_path / "aligned", aligned, "npy")
    apply_file(
        source, tmp_path / "b.npy", ["sharpen"], rows_per_chunk=4, progress=False, durable=False
    )
    np.testing.assert_array_equal(
        np.load(tmp_path / "b.npy"), _in_memory_chain(aligned, ["sharpen"], **options)
    )
    assert writes.taken == 0 and writes.declined == 11  # not even asked: not durable


@pytest.mark.skipif(not hasattr(os, "O_DIRECT"), reason="no O_DIRECT on this system")
def test_a_file_system_that_refuses_o_direct_gets_the_page_cache(tmp_path, rng, monkeypatch):
    real_open = os.open
    refused = []

    def refusing_open(path, flags, *args, **kwargs):
        if flags & os.O_DIRECT:
            refused.append(path)
            raise OSError(errno.EINVAL, "Invalid argument", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(_image_files.os, "open", refusing_open)
    image = rng.integers(0, 256, (41, 4096), dtype=np.uint8)
    source = _write(tmp_path / "in", image, "npy")
    target = tmp_path / "out.npy"
    apply_file(source, target, ["sharpen"], rows_per_chunk=4, progress=False)
    options = dict(border="reflect101", value=0.0, anchor=None, flip=False, backend="numpy")
    np.testing.assert_array_equal(np.load(target), _in_memory_chain(image, ["sharpen"], **options))
    assert len(refused) == 1  # asked once; every band after went through the page cache


def test_aligned_band_buffers_start_on_a_block_and_are_given_back():
    buffers = _outofcore._BandBuffers()
    band = buffers.take((5, 7, 3), np.float32)
    assert band.ctypes.data % _image_files.DIRECT_BLOCK == 0 and band.shape == (5, 7, 3)
    buffers.give_back(band[2:])
    assert np.shares_memory(buffers.take((5, 7, 3), np.float32), band)


@pytest.mark.parametrize(
    ("shape", "dtype", "rows"),
    [
        ((1000, 10000), np.uint8, 256),  # 419 rows of 4 MiB, rounded down to whole blocks
        ((1000, 4096), np.uint8, 1000),  # 1024 rows: the whole image
        ((700, 10001), np.uint8, 419),  # a block needs 4096 rows: not worth it
        ((600, 1000, 3), np.uint16, 512),  # 6000-byte rows: 699 rows, whole blocks every 512
    ],
)
def test_default_bands_hold_whole_blocks_where_that_costs_at_most_half(
    shape, dtype, rows, tmp_path, monkeypatch
):
    seen = []
    real_run = BandPipeline.run

    def recording_run(self, writer, rows_per_chunk, **options):
        seen.append(rows_per_chunk)
        return real_run(self, writer, rows_per_chunk, **options)

    monkeypatch.setattr(BandPipeline, "run", recording_run)
    source = tmp_path / "in.npy"
    np.save(source, np.zeros(shape, dtype))
    apply_file(source, tmp_path / "out.npy", ["identity"], progress=False)
    assert seen == [rows]
