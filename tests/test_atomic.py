"""Outputs appear whole or not at all: the temporary, the rename, and every writer's failure path."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from gpuconv._atomic import AtomicOutput, OutputError
from gpuconv._image_files import open_reader, open_writer, read_image, write_image

SUFFIXES = [".npy", ".tif", ".zarr", ".png"]


def _names(directory) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


def test_commit_renames_and_discard_removes(tmp_path):
    target = tmp_path / "out.bin"
    output = AtomicOutput(target)
    assert output.temporary.parent == tmp_path  # same directory: the rename is atomic
    assert output.temporary.name.startswith(".out.bin.gpuconv-")
    output.temporary.write_bytes(b"new")
    output.commit()
    assert target.read_bytes() == b"new" and _names(tmp_path) == ["out.bin"]
    second = AtomicOutput(target)
    second.temporary.write_bytes(b"never seen")
    second.discard()
    second.discard()  # twice is fine
    assert target.read_bytes() == b"new" and _names(tmp_path) == ["out.bin"]


def test_exchange_swaps_two_files_or_changes_nothing(tmp_path):
    from gpuconv import _atomic

    first, second = tmp_path / "a", tmp_path / "b"
    first.write_bytes(b"first")
    second.write_bytes(b"second")
    if _atomic.exchange(first, second):
        assert (first.read_bytes(), second.read_bytes()) == (b"second", b"first")
        with pytest.raises(FileNotFoundError):  # errors other than "unsupported" are raised
            _atomic.exchange(tmp_path / "missing", second)
    else:  # not Linux, an old C library, or a file system without RENAME_EXCHANGE
        assert (first.read_bytes(), second.read_bytes()) == (b"first", b"second")


@pytest.mark.parametrize("supported", [True, False])
def test_a_non_durable_commit_swaps_names_over_an_existing_file(supported, tmp_path, monkeypatch):
    """durable=False replaces an existing file by exchanging the two names, then removing
    the old file (a rename over it made ext4 write the new file out first); where the
    exchange is unsupported, os.replace. Either way: the new bytes, nothing left over."""
    from gpuconv import _atomic

    swaps = []
    real = _atomic.exchange

    def recording(first, second):
        swaps.append((first, second))
        return real(first, second) if supported else False

    monkeypatch.setattr(_atomic, "exchange", recording)
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    output = AtomicOutput(target, durable=False)
    output.temporary.write_bytes(b"new")
    output.commit()
    assert target.read_bytes() == b"new" and _names(tmp_path) == ["out.bin"]
    assert swaps == [(output.temporary, target)]
    # No file to replace, or a durable commit (its fsync left ext4 nothing to write): a rename.
    swaps.clear()
    for durable, existing in ((False, False), (True, True)):
        fresh = tmp_path / f"fresh-{durable}.bin"
        if existing:
            fresh.write_bytes(b"old")
        output = AtomicOutput(fresh, durable=durable)
        output.temporary.write_bytes(b"new")
        output.commit()
        assert fresh.read_bytes() == b"new"
    assert swaps == []
    assert _names(tmp_path) == ["fresh-False.bin", "fresh-True.bin", "out.bin"]
    # A link at the output path is replaced by the file, as os.replace does; what it
    # pointed to is left alone.
    pointed = tmp_path / "pointed.bin"
    pointed.write_bytes(b"keep")
    link = tmp_path / "link.bin"
    link.symlink_to(pointed)
    output = AtomicOutput(link, durable=False)
    output.temporary.write_bytes(b"new")
    output.commit()
    assert not link.is_symlink() and link.read_bytes() == b"new"
    assert pointed.read_bytes() == b"keep"
    assert "link.bin" in _names(tmp_path) and not any(".tmp" in n for n in _names(tmp_path))


def test_destination_errors_are_output_errors(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="directory .*missing does not exist"):
        AtomicOutput(tmp_path / "missing" / "out.npy")
    with pytest.raises(OutputError, match="file is a file, not a directory"):
        AtomicOutput(tmp_path / "file" / "deeper" / "out.npy")
    (tmp_path / "dir.npy").mkdir()
    with pytest.raises(OutputError, match="is a directory"):
        AtomicOutput(tmp_path / "dir.npy")
    assert _names(tmp_path) == ["dir.npy", "file"]


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_a_writer_that_fails_leaves_the_previous_file(suffix, tmp_path, rng):
    target = tmp_path / f"out{suffix}"
    previous = rng.integers(0, 256, (8, 6, 3), dtype=np.uint8)
    write_image(target, previous)
    before = read_image(target)
    with pytest.raises(RuntimeError, match="boom"):
        with open_writer(target, (20, 10, 3), np.uint8, 5) as writer:
            writer.write(0, np.full((5, 10, 3), 9, np.uint8))
            raise RuntimeError("boom")
    np.testing.assert_array_equal(read_image(target), before)
    assert _names(tmp_path) == [target.name]


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_a_complete_writer_replaces_the_previous_file(suffix, tmp_path, rng):
    target = tmp_path / f"out{suffix}"
    write_image(target, np.zeros((4, 4), np.uint8))
    image = rng.integers(0, 256, (20, 10, 3), dtype=np.uint8)
    with open_writer(target, image.shape, image.dtype, 5) as writer:
        for top in range(0, 20, 5):
            writer.write(top, image[top : top + 5])
        assert writer.temporary.exists()
        # Until the writer closes, the output path holds the previous file.
        np.testing.assert_array_equal(read_image(target), np.zeros((4, 4), np.uint8))
    np.testing.assert_array_equal(read_image(target), image)
    assert _names(tmp_path) == [target.name]


def test_an_unclosed_writer_dropped_by_its_owner_removes_its_temporary(tmp_path):
    writer = open_writer(tmp_path / "out.npy", (4, 4), np.uint8, 4)
    temporary = writer.temporary
    assert temporary.exists()
    del writer
    assert not temporary.exists() and _names(tmp_path) == []


def test_a_pickled_copy_writes_the_same_temporary_and_never_aborts_it(tmp_path):
    writer = open_writer(tmp_path / "out.npy", (4, 3), np.uint8, 2)
    copy = pickle.loads(pickle.dumps(writer))
    copy.write(0, np.full((4, 3), 7, np.uint8))
    del copy  # a worker's copy going away leaves the temporary alone
    assert writer.temporary.exists()
    writer.close()
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), np.full((4, 3), 7, np.uint8))


def test_write_dask_failure_leaves_nothing(tmp_path):
    da = pytest.importorskip("dask.array", reason="dask is not installed: gpuconv[dask]")
    from gpuconv import write_dask

    def explode(block):
        if block.sum() > 0:
            raise RuntimeError("a failing block")
        return block

    lazy = da.from_array(np.arange(40, dtype=np.uint8).reshape(8, 5), chunks=2).map_blocks(explode)
    target = tmp_path / "out.npy"
    np.save(target, np.ones(3, np.uint8))
    before = target.read_bytes()
    with pytest.raises(RuntimeError, match="a failing block"):
        write_dask(lazy, target)
    assert target.read_bytes() == before and _names(tmp_path) == ["out.npy"]
    with pytest.raises(ValueError, match="write_dask writes .tif, .tiff, .npy, .zarr"):
        write_dask(lazy, tmp_path / "out.png")


def test_readers_give_rgb_and_writers_take_it(tmp_path, rng):
    """One colour order in memory: RGB(A), whatever the file format."""
    import cv2
    import tifffile

    rgba = rng.integers(0, 256, (6, 7, 4), dtype=np.uint8)
    for suffix in (".png", ".tif", ".npy"):
        write_image(tmp_path / f"c{suffix}", rgba)
        np.testing.assert_array_equal(read_image(tmp_path / f"c{suffix}"), rgba)
    bgra = cv2.imread(str(tmp_path / "c.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(bgra, rgba[:, :, [2, 1, 0, 3]])
    with tifffile.TiffFile(tmp_path / "c.tif") as tiff:
        page = tiff.pages[0]
        assert page.photometric == 2 and tuple(page.extrasamples) == (2,)  # RGB + straight alpha
        np.testing.assert_array_equal(page.asarray(), rgba)
    rgb = rgba[:, :, :3]
    write_image(tmp_path / "rgb.tif", rgb)
    np.testing.assert_array_equal(
        cv2.imread(str(tmp_path / "rgb.tif"), cv2.IMREAD_UNCHANGED), rgb[:, :, ::-1]
    )
    reader = open_reader(tmp_path / "c.png")
    assert reader.in_memory and reader.shape == (6, 7, 4)
    reader.close()


def test_a_full_disk_mid_write_leaves_the_previous_file(tmp_path, monkeypatch, rng):
    """ENOSPC on the third band (a sparse .npy fills up as it is written): one OutputError
    naming the output, the temporary removed, the previous file kept byte for byte."""
    import errno
    import os

    from gpuconv import apply_file

    source, target = tmp_path / "in.npy", tmp_path / "out.npy"
    np.save(source, rng.integers(0, 256, (100, 50), dtype=np.uint8))
    np.save(target, np.arange(5))
    before = target.read_bytes()
    real_pwrite, calls = os.pwrite, []

    def pwrite(descriptor, data, position):
        calls.append(position)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_pwrite(descriptor, data, position)

    monkeypatch.setattr(os, "pwrite", pwrite)
    with pytest.raises(OutputError, match=r"cannot write .*out\.npy: no space left on device$"):
        apply_file(source, target, ["sharpen"], rows_per_chunk=10, progress=False)
    assert len(calls) == 3
    assert target.read_bytes() == before and _names(tmp_path) == ["in.npy", "out.npy"]
