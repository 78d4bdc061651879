"""Dask arrays: lazy results equal, bit for bit, to the in-memory call on any chunking.

Also a real ``dask.distributed`` cluster of two worker processes on loopback.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gpuconv
from gpuconv import _outofcore
from gpuconv._dask import merge_small_chunks, read_dask, write_dask

da = pytest.importorskip("dask.array", reason="dask is not installed: pip install 'gpuconv[dask]'")
dask = pytest.importorskip("dask", reason="dask is not installed: pip install 'gpuconv[dask]'")

BORDERS = ["reflect101", "reflect", "replicate", "constant", "wrap"]


@pytest.fixture(params=["numpy", "numba"])
def cpu_backend(request) -> str:
    state = gpuconv.backends()[request.param]
    if not state:
        pytest.skip(f"backend {request.param!r} is not available here: {state.reason}")
    return request.param


def _both(image, kernel, chunks, **options):
    """(dask result computed, in-memory result) for the same arguments."""
    lazy = gpuconv.convolve(da.from_array(image, chunks=chunks), kernel, **options)
    assert isinstance(lazy, da.Array)
    return lazy.compute(scheduler="synchronous"), gpuconv.convolve(image, kernel, **options)


def _assert_identical(actual, expected):
    assert actual.dtype == expected.dtype
    assert actual.shape == expected.shape
    np.testing.assert_array_equal(actual, expected)


@pytest.mark.parametrize("border", BORDERS)
@pytest.mark.parametrize("chunks", [1, 2, 5, (3, 7), ((1, 9, 2, 1), (4, 1, 8))])
def test_every_border_on_every_chunking(border, chunks, cpu_backend, rng):
    # An even, off-centre 4x5 float kernel: asymmetric halos of 1/2 rows and 2/2 columns,
    # chunks of 1 pixel (thinner than the halo) and uneven chunks.
    image = rng.integers(0, 256, (13, 13), dtype=np.uint8)
    kernel = rng.normal(size=(4, 5))
    actual, expected = _both(
        image, kernel, chunks, border=border, value=17.25, dtype=np.float32, backend=cpu_backend
    )
    _assert_identical(actual, expected)


@pytest.mark.parametrize("border", BORDERS)
@pytest.mark.parametrize("anchor", [(0, 0), (4, 2), (1, 2)])
@pytest.mark.parametrize("flip", [False, True])
def test_anchor_and_flip(border, anchor, flip, cpu_backend, rng):
    image = rng.integers(0, 65536, (11, 9), dtype=np.uint16)
    kernel = rng.normal(size=(3, 5))
    actual, expected = _both(
        image, kernel, (2, 3), border=border, anchor=anchor, flip=flip, backend=cpu_backend
    )
    _assert_identical(actual, expected)


@pytest.mark.parametrize("border", BORDERS)
def test_kernel_larger_than_the_image(border, cpu_backend, rng):
    # The border pattern repeats several times over: padding must follow the
    # exact index mapping, not the chunk's own edges.
    image = rng.normal(size=(3, 4)).astype(np.float64)
    kernel = rng.normal(size=(9, 12))
    actual, expected = _both(image, kernel, 1, border=border, value=-2.0, backend=cpu_backend)
    _assert_identical(actual, expected)


@pytest.mark.parametrize("channel_chunks", [1, 2, 3])
def test_colour_with_chunks_over_channels(channel_chunks, cpu_backend, rng):
    image = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
    actual, expected = _both(
        image, "small_blur", (4, 5, channel_chunks), border="wrap", backend=cpu_backend
    )
    _assert_identical(actual, expected)


@pytest.mark.parametrize("out_dtype", [np.uint8, np.int16, np.float32, np.float64])
def test_dtype_changes(out_dtype, cpu_backend, rng):
    image = rng.integers(0, 1000, (9, 10), dtype=np.int16)
    actual, expected = _both(
        image, "sobel_y", 3, border="reflect", dtype=out_dtype, backend=cpu_backend
    )
    _assert_identical(actual, expected)


@settings(max_examples=40, deadline=None)
@given(
    height=st.integers(1, 12),
    width=st.integers(1, 12),
    kernel_height=st.integers(1, 7),
    kernel_width=st.integers(1, 7),
    chunk_rows=st.integers(1, 6),
    chunk_cols=st.integers(1, 6),
    border=st.sampled_from(BORDERS),
    flip=st.booleans(),
    data=st.data(),
)
def test_random_geometry_matches_in_memory(
    height, width, kernel_height, kernel_width, chunk_rows, chunk_cols, border, flip, data
):
    anchor = data.draw(
        st.one_of(
            st.none(),
            st.tuples(st.integers(0, kernel_width - 1), st.integers(0, kernel_height - 1)),
        )
    )
    seed = data.draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width), dtype=np.uint8)
    kernel = rng.normal(size=(kernel_height, kernel_width))
    actual, expected = _both(
        image,
        kernel,
        (chunk_rows, chunk_cols),
        border=border,
        value=99.5,
        anchor=anchor,
        flip=flip,
        backend="numpy",
    )
    _assert_identical(actual, expected)


def test_result_keeps_chunks_that_are_thicker_than_the_halo(rng):
    image = da.from_array(rng.integers(0, 256, (40, 30), dtype=np.uint8), chunks=(10, (12, 18)))
    for border in BORDERS:
        assert gpuconv.convolve(image, "sobel_x", border=border).chunks == image.chunks


def test_chunks_thinner_than_the_halo_are_merged():
    assert merge_small_chunks((1, 1, 1, 1, 1), 2) == (2, 3)
    assert merge_small_chunks((5,), 9) == (5,)
    image = da.zeros((20, 20), dtype=np.uint8, chunks=1)
    result = gpuconv.convolve(image, "large_blur")  # halo of 10 on every side
    assert min(min(sizes) for sizes in result.chunks) >= 10
    assert sum(result.chunks[0]) == 20


def test_use_backend_at_build_time_holds_for_the_blocks(monkeypatch, rng):
    from gpuconv._backends import numpy as _numpy

    calls = []
    real_convolve = _numpy.convolve

    def counting_convolve(image3d, plan, library="numpy"):
        calls.append(image3d.shape)
        return real_convolve(image3d, plan, library)

    monkeypatch.setattr(_numpy, "convolve", counting_convolve)
    image = rng.integers(0, 256, (12, 12), dtype=np.uint8)
    with gpuconv.use_backend("numpy"):
        lazy = gpuconv.convolve(da.from_array(image, chunks=6), "sharpen")
    result = lazy.compute(scheduler="threads")  # blocks run in other threads, outside the with
    assert len(calls) == 4  # one call per block, all on the chosen backend
    np.testing.assert_array_equal(result, real_convolve(image[:, :, None], _plan(image))[:, :, 0])


def _plan(image):
    from gpuconv._plan import make_plan

    return make_plan(
        image, "sharpen", border="reflect101", value=0.0, anchor=None, flip=False, dtype=None
    )[1]


def test_nothing_is_computed_until_asked():
    def explode(block):
        raise RuntimeError("a block was computed")

    image = da.zeros((8, 8), dtype=np.uint8, chunks=4).map_blocks(explode, dtype=np.uint8)
    lazy = gpuconv.convolve(image, "sharpen")  # must not touch a block
    with pytest.raises(RuntimeError, match="a block was computed"):
        lazy.compute(scheduler="synchronous")


@pytest.mark.parametrize(
    "arguments",
    [
        dict(kernel="sharpen", border="mirrorish"),
        dict(kernel=[[1.0, np.nan]]),
        dict(kernel="no_such_kernel"),
        dict(kernel="sharpen", anchor=(3, 0)),
        dict(kernel="sharpen", dtype=np.int64),
        dict(kernel="sharpen", backend="opencl"),
        dict(kernel="sharpen", flip="yes"),
        dict(kernel=np.zeros((2, 2, 2))),
    ],
)
def test_errors_are_eager_and_the_same_as_for_numpy(arguments):
    image = np.zeros((6, 6), dtype=np.uint8)
    with pytest.raises((TypeError, ValueError)) as numpy_error:
        gpuconv.convolve(image, **arguments)
    with pytest.raises(numpy_error.type) as dask_error:
        gpuconv.convolve(da.from_array(image, chunks=3), **arguments)
    assert str(dask_error.value) == str(numpy_error.value)


def test_unsupported_image_dtype_is_refused_eagerly():
    with pytest.raises(TypeError, match="unsupported image dtype int64"):
        gpuconv.convolve(da.zeros((4, 4), dtype=np.int64, chunks=2), "sharpen")


def test_unknown_chunk_sizes_are_refused():
    image = da.arange(36, chunks=6).astype(np.uint8)
    unknown = image[image > 3]  # data-dependent length: unknown chunks
    with pytest.raises(ValueError, match="unknown chunk sizes"):
        gpuconv.convolve(da.stack([unknown, unknown], axis=1), "sharpen")


def test_cupy_chunks_use_the_cuda_backend(rng):
    from gpuconv._backends.cuda import backend as _cuda

    state = gpuconv.backends()["cuda"]
    if not state or _cuda.is_emulated():
        pytest.skip(f"needs the cuda backend on a real GPU: {state.reason}")
    cupy = pytest.importorskip("cupy", reason="cupy is not installed")
    image = rng.integers(0, 256, (64, 48, 3), dtype=np.uint8)
    lazy = gpuconv.convolve(
        da.from_array(cupy.asarray(image), chunks=(16, 20, 3)), "small_blur", border="wrap"
    )
    assert type(lazy._meta).__module__.split(".")[0] == "cupy"
    result = lazy.compute(scheduler="synchronous")
    assert isinstance(result, cupy.ndarray)
    expected = gpuconv.convolve(cupy.asarray(image), "small_blur", border="wrap")
    np.testing.assert_array_equal(result.get(), expected.get())


@pytest.mark.parametrize("suffix", [".npy", ".tif", ".zarr"])
def test_files_through_dask_band_by_band(suffix, tmp_path, monkeypatch, rng):
    pytest.importorskip("tifffile", reason="tifffile is not installed: pip install 'gpuconv[dask]'")
    pytest.importorskip("zarr", reason="zarr is not installed: pip install 'gpuconv[dask]'")
    image = rng.integers(0, 256, (50, 20, 3), dtype=np.uint8)
    source = tmp_path / f"in{suffix}"
    writer = _outofcore.open_writer(source, image.shape, image.dtype, 50)
    writer.write(0, image)
    writer.close()
    reads = []
    real_open_reader = _outofcore.open_reader

    def recording_open_reader(path):
        reader = real_open_reader(path)
        real_read = reader.read

        def read(start, stop, **options):
            reads.append((start, stop))
            return real_read(start, stop, **options)

        reader.read = read
        return reader

    monkeypatch.setattr(_outofcore, "open_reader", recording_open_reader)
    lazy = gpuconv.convolve(read_dask(source, rows_per_chunk=8), "small_blur", border="wrap")
    assert reads == []  # building the graph reads nothing
    target = tmp_path / f"out{suffix}"
    # One thread: numba's fallback "workqueue" threading layer aborts when two
    # threads call a parallel function at once (the distributed test below
    # uses one thread per worker process for the same reason).
    with dask.config.set(scheduler="synchronous"):
        write_dask(lazy, target)
    assert reads and max(stop - start for start, stop in reads) <= 8
    written = _outofcore.open_reader(target)
    try:
        np.testing.assert_array_equal(
            written.read(0, 50), gpuconv.convolve(image, "small_blur", border="wrap")
        )
    finally:
        written.close()


@pytest.mark.slow
def test_real_two_process_cluster_gives_the_in_memory_array(tmp_path, rng):
    distributed = pytest.importorskip(
        "distributed", reason="distributed is not installed: pip install 'gpuconv[dask]'"
    )
    image = rng.integers(0, 256, (96, 80, 3), dtype=np.uint8)
    options = dict(border="wrap", dtype=np.float32)  # integer kernel: exact on every backend
    expected = gpuconv.convolve(image, "sobel_x", **options)
    lazy = gpuconv.convolve(da.from_array(image, chunks=(24, 20, 3)), "sobel_x", **options)
    source, target = tmp_path / "in.npy", tmp_path / "out.npy"
    np.save(source, image)
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            # No dashboard; the scheduler's small HTTP server (health checks)
            # on a free port rather than 8787, which another cluster may hold.
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
            timeout=60,
        ) as cluster,
        distributed.Client(cluster, timeout=60) as client,
    ):
        worker_pids = client.run(os.getpid, wait=True)
        result = client.compute(lazy).result(timeout=120)
        # Files too: workers open the input and output by name and write bands.
        from_file = gpuconv.convolve(read_dask(source, rows_per_chunk=20), "sobel_x", **options)
        client.compute(write_dask(from_file, target, compute=False)).result(timeout=120)
        assert len(worker_pids) == 2
        assert os.getpid() not in worker_pids.values()
    _assert_identical(result, expected)
    _assert_identical(np.load(target), expected)
