"""Large kernels: the low-rank, runs and FFT paths, and the cost model choosing them.

Every path the cost model may choose is forced in turn on the numba backend
(``convolve_path``) and held to the contract against the reference; the shared
``backend`` fixture runs a handful of large-kernel cases through ``"auto"`` on every backend.
"""

from __future__ import annotations

import numpy as np
import pytest
from support import assert_contract_accuracy, reference

from gpuconv import _costmodel, _fft, _lowrank
from gpuconv._plan import make_plan
from gpuconv.bench._inputs import difference_of_gaussians, disk

BORDERS = ["reflect101", "reflect", "replicate", "constant", "wrap"]


def plan_of(image, kernel, **options):
    defaults = dict(border="reflect101", value=0.0, anchor=None, flip=False, dtype=None)
    defaults.update(options)
    return make_plan(image, kernel, **defaults)


def numba_backend():
    pytest.importorskip("numba", reason="the paths are the numba backend's; numba is missing")
    from gpuconv._backends.numba import backend

    return backend


def paths_of(plan):
    """Every path the cost model offers for ``plan`` (numba)."""
    from gpuconv._backends.numba.backend import _strategy

    return list(_costmodel.choose_path(plan, _strategy(plan)).estimates)


def run_every_path(image, kernel, exact=False, expected_paths=(), **options):
    backend = numba_backend()
    image3d, plan, _ = plan_of(image, kernel, **options)
    expected = reference(image, kernel, **options)
    paths = paths_of(plan)
    for path in expected_paths:
        assert path in paths, (path, paths)
    for path in paths:
        actual = backend.convolve_path(image3d, plan, path)[:, :, 0]
        try:
            assert_contract_accuracy(actual, expected, exact=exact)
        except AssertionError as error:
            raise AssertionError(f"path {path}: {error}") from None
    return paths


# ---- the decompositions -------------------------------------------------------------


def test_difference_of_gaussians_is_rank_two_within_tolerance():
    kernel = difference_of_gaussians(25)
    columns, rows = _lowrank.float_terms(kernel, 1e-7)
    assert columns.shape == (2, 25) and rows.shape == (2, 25)
    error = np.abs(columns.T @ rows - kernel).sum()
    assert error <= 1e-7 * np.abs(kernel).sum()


def test_random_kernel_has_no_cheap_low_rank_form(rng):
    assert _lowrank.float_terms(rng.normal(size=(15, 15)), 1e-7, max_rank=7) is None
    assert _lowrank.float_terms(np.zeros((5, 5)), 1e-7) is None


def test_integer_terms_are_exact_integers_or_none():
    kernel = np.outer([1, 2, 1], [1, 0, -1]) + np.outer([0, 1, 3], [2, 2, 5])
    columns, rows = _lowrank.integer_terms(kernel)
    assert columns.shape[0] == 2
    np.testing.assert_array_equal(columns, np.round(columns))
    np.testing.assert_array_equal(columns.T @ rows, kernel)
    # A row that is half another: the basis row is divided by its gcd, so still integer.
    assert _lowrank.integer_terms(np.array([[2.0, 4.0], [1.0, 2.0], [3.0, 1.0]])) is not None
    # [1, 0] is half of [1, 1] + [1, -1]: no integer coefficients.
    assert _lowrank.integer_terms(np.array([[1.0, 1.0], [1.0, -1.0], [1.0, 0.0]])) is None
    assert _lowrank.integer_terms(disk(7), max_rank=3) is None


def test_runs_cover_every_non_zero_tap_once(rng):
    kernel = np.round(rng.normal(size=(9, 13)))
    kernel[kernel < 0] = 0
    rows, starts, stops, values = _lowrank.kernel_runs(kernel)
    rebuilt = np.zeros_like(kernel)
    for row, start, stop, value in zip(rows, starts, stops, values):
        assert np.all(rebuilt[row, start:stop] == 0)
        rebuilt[row, start:stop] = value
    np.testing.assert_array_equal(rebuilt, kernel)
    assert _lowrank.kernel_runs(disk(15))[0].size == 31  # one run per row


# ---- the cost model ----------------------------------------------------------------------


def big(dtype):
    return np.broadcast_to(np.zeros(1, dtype), (2048, 2048))  # no memory


def chosen(kernel, dtype, **options):
    numba_backend()
    from gpuconv._backends.numba.backend import _strategy

    _, plan, _ = plan_of(big(dtype), kernel, **options)
    return _costmodel.choose_path(plan, _strategy(plan))


def test_cost_model_picks_the_cheap_form_of_each_large_kernel(rng):
    assert chosen(difference_of_gaussians(25), np.float32).path == "lowrank"
    assert chosen(disk(15), np.uint8).path == "runs"
    assert chosen(np.ones((31, 31)) / 961, np.uint8).path == "separable"
    assert chosen(rng.normal(size=(63, 63)), np.float32).path == "fft"
    assert chosen(rng.normal(size=(5, 5)), np.float32).path == "direct"


def test_exact_integer_plans_never_take_the_fft(rng):
    kernel = rng.integers(-3, 4, size=(63, 63)).astype(float)
    choice = chosen(kernel, np.uint8)
    assert "fft" not in choice.estimates
    assert choice.path in ("direct", "runs", "lowrank")


def test_forcing_a_path_that_cannot_run_is_a_value_error(rng):
    numba_backend()
    from gpuconv._backends.numba.backend import _strategy

    _, plan, _ = plan_of(big(np.uint8), disk(5))
    with pytest.raises(ValueError, match="cannot compute"):
        _costmodel.choose_path(plan, _strategy(plan), force="fft")


def test_fft_tiles_stay_bounded_whatever_the_image():
    _, plan, _ = plan_of(
        np.broadcast_to(np.zeros(1, np.float32), (65536, 65536)), np.ones((63, 63))
    )
    tile_y, tile_x = _fft.tile_shape(plan)
    assert tile_y <= 2048 and tile_x <= 2048


@pytest.mark.parametrize(
    ("shape", "kernel_shape"),
    [
        ((65536, 65536), (63, 63)),
        ((8192, 8192), (63, 63)),
        ((2048, 2048), (31, 31)),
        ((100, 40000), (31, 45)),
        ((40000, 100), (45, 31)),
        ((20, 33), (91, 91)),
    ],
)
def test_gpu_fft_bands_fit_their_scratch_and_cover_the_image(shape, kernel_shape):
    """The GPU's tiles (large, few): one band of tiles within GPU_BAND_ELEMENTS (the peak
    memory of the FFT path stays bounded whatever the image), every tile holding the
    kernel with room for output, and a whole image that fits taken in one tile."""
    _, plan, _ = plan_of(np.broadcast_to(np.zeros(1, np.float32), shape), np.ones(kernel_shape))
    tile_y, tile_x = _fft.gpu_tile_shape(plan)
    block_y, block_x = tile_y - kernel_shape[0] + 1, tile_x - kernel_shape[1] + 1
    assert block_y >= 1 and block_x >= 1
    tiles_x = -(-shape[1] // block_x)
    assert tile_y * tiles_x * tile_x <= _fft.GPU_BAND_ELEMENTS
    assert (tile_y, tile_x) == tuple(_fft.fast_length(n) for n in (tile_y, tile_x))
    whole = [_fft.fast_length(n + k - 1) for n, k in zip(shape, kernel_shape)]
    if whole[0] * whole[1] <= _fft.GPU_BAND_ELEMENTS:
        assert [tile_y, tile_x] == whole


# ---- every path against the reference (numba) --------------------------------------------


@pytest.mark.parametrize("border", BORDERS)
@pytest.mark.parametrize(
    ("kernel_shape", "anchor", "flip"),
    [((11, 11), None, False), ((16, 12), (2, 13), False), ((13, 20), None, True)],
)
def test_random_float_kernels_on_every_path(rng, border, kernel_shape, anchor, flip):
    image = rng.random((45, 61)).astype(np.float32)
    kernel = rng.normal(size=kernel_shape)
    paths = run_every_path(
        image, kernel, border=border, value=0.75, anchor=anchor, flip=flip, expected_paths=["fft"]
    )
    assert "direct" in paths


@pytest.mark.parametrize("border", BORDERS)
def test_difference_of_gaussians_on_every_path(rng, border):
    image = rng.random((40, 52)) * 1000
    run_every_path(
        image, difference_of_gaussians(25), border=border, value=-3.0, expected_paths=["lowrank"]
    )


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16])
@pytest.mark.parametrize("border", BORDERS)
def test_disk_on_integer_images_is_bit_identical_on_every_path(rng, dtype, border):
    info = np.iinfo(dtype)
    image = rng.integers(info.min, info.max, size=(41, 57), endpoint=True).astype(dtype)
    run_every_path(image, disk(7), exact=True, border=border, value=7, expected_paths=["runs"])


def test_integer_low_rank_kernel_is_bit_identical(rng):
    kernel = np.outer(np.arange(1, 12), np.ones(13)) - 2 * np.outer(np.ones(11), np.arange(13))
    image = rng.integers(0, 256, size=(37, 44), dtype=np.uint8)
    run_every_path(image, kernel, exact=True, anchor=(3, 9), expected_paths=["lowrank"])


@pytest.mark.parametrize("border", BORDERS)
def test_kernels_larger_than_the_image(rng, border):
    image = rng.random((9, 14))
    run_every_path(image, rng.normal(size=(33, 21)), border=border, value=2.0)


def test_zero_sum_kernel_on_huge_dynamic_range(rng):
    image = 1e6 + rng.random((40, 48))
    image[5:9, 7:12] = 1e-3
    kernel = difference_of_gaussians(21)
    kernel -= kernel.mean()
    run_every_path(image, kernel)
    run_every_path(image.astype(np.float32), kernel, dtype=np.float32)


def test_float_kernel_to_integer_output_on_every_path(rng):
    image = rng.integers(0, 65536, size=(43, 50), dtype=np.uint16)
    run_every_path(image, difference_of_gaussians(17) * 50, expected_paths=["lowrank", "fft"])


def test_multichannel_image_on_every_path(rng):
    backend = numba_backend()
    image = rng.random((30, 35, 3)).astype(np.float32)
    kernel = rng.normal(size=(15, 15))
    image3d, plan, _ = plan_of(image, kernel, border="wrap")
    expected = reference(image, kernel, border="wrap")
    for path in paths_of(plan):
        assert_contract_accuracy(backend.convolve_path(image3d, plan, path), expected)


# ---- the FFT's refusals -------------------------------------------------------------------


def test_fft_refuses_non_finite_pixels_and_they_stay_local(rng):
    backend = numba_backend()
    image = rng.random((40, 40))
    image[10, 12] = np.nan
    image[30, 5] = np.inf
    kernel = rng.normal(size=(11, 11))
    image3d, plan, _ = plan_of(image, kernel)
    assert _fft.convolve_fft(image3d, plan) is None
    actual = backend.convolve_path(image3d, plan, "fft")[:, :, 0]
    expected = reference(image, kernel)
    assert_contract_accuracy(actual, expected)
    assert np.isfinite(actual).sum() > 0.5 * actual.size  # local, not spread over the image


def test_fft_refuses_when_its_error_estimate_misses_the_tolerance(rng):
    # float64 output of a zero-sum kernel over a 1e12 offset: sums of 1e-3 against pixels
    # of 1e12, beyond complex128's 1e-12 relative tolerance.
    image = 1e12 + rng.random((30, 30))
    kernel = np.zeros((11, 11))
    kernel[5, 4], kernel[5, 6] = 1.0, -1.0
    kernel += rng.normal(size=(11, 11)) * 1e-3
    kernel -= kernel.mean()
    _, plan, _ = plan_of(image, kernel)
    assert _fft.convolve_fft(image[:, :, None], plan) is None


@pytest.mark.parametrize(("scale", "transforms"), [(1.0, ["float64"]), (1e-3, ["float32"])])
def test_an_integer_image_transforms_once_in_the_precision_its_bound_allows(
    scale, transforms, rng, monkeypatch
):
    """uint8 in, uint8 out: the tolerance does not depend on the sums and no pixel exceeds
    255, so whether float32 passes the estimate is known before transforming. A kernel of
    large gain goes straight to float64 (the H200 threw away a float32 transform that cost
    as much as the float64 one); a small one stays in float32."""
    image = rng.integers(0, 256, size=(120, 140), dtype=np.uint8)
    kernel = rng.normal(size=(31, 31)) * scale
    image3d, plan, _ = plan_of(image, kernel)
    assert plan.accumulate_dtype == np.float32
    ran = []
    transform = _fft._overlap_save

    def spy(image3d, plan, tile, real_dtype, *rest):
        ran.append(np.dtype(real_dtype).name)
        return transform(image3d, plan, tile, real_dtype, *rest)

    monkeypatch.setattr(_fft, "_overlap_save", spy)
    result = _fft.convolve_fft(image3d, plan, tile=(256, 256))
    assert ran == transforms
    assert_contract_accuracy(result[:, :, 0], reference(image, kernel))


@pytest.mark.parametrize("tile", [(64, 64), (96, 80)], ids=["band-of-tiles", "one-tile"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ducc0_and_scipy_transforms_give_the_same_sums(tile, dtype, rng):
    """The CPU path's two transform libraries, on a band of strided tiles (axes 0 and 2)
    and on a single tile, in both precisions; the contract against the reference too."""
    pytest.importorskip("ducc0", reason="ducc0 is in the numba extra; not installed here")
    import scipy.fft

    image = rng.random((70, 45, 2)).astype(dtype)
    kernel = rng.normal(size=(13, 11))
    image3d, plan, _ = plan_of(image, kernel, border="wrap", anchor=(3, 8))
    with_ducc = _fft.convolve_fft(image3d, plan, tile=tile, fft=_fft.DuccTransforms)
    with_scipy = _fft.convolve_fft(image3d, plan, tile=tile, fft=scipy.fft)
    assert with_ducc.dtype == with_scipy.dtype == dtype
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(with_ducc, with_scipy, rtol=0, atol=tolerance * 50)
    assert_contract_accuracy(with_ducc, reference(image, kernel, border="wrap", anchor=(3, 8)))


def test_the_cpu_transforms_fall_back_to_scipy_without_ducc0(monkeypatch):
    import builtins

    import scipy.fft

    real_import = builtins.__import__

    def no_ducc0(name, *args, **kwargs):
        if name == "ducc0":
            raise ImportError("no ducc0 here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ducc0)
    assert _fft.cpu_transforms() is scipy.fft


def test_fft_leaves_the_input_alone(rng):
    image = rng.random((50, 50)).astype(np.float32)
    image.flags.writeable = False
    copy = image.copy()
    image3d, plan, _ = plan_of(image, rng.normal(size=(9, 9)), border="constant", value=5.0)
    result = _fft.convolve_fft(image3d, plan)
    assert result is not None and result.dtype == np.float32
    np.testing.assert_array_equal(image, copy)


# ---- every backend, through "auto" ----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "dtype"),
    [
        ("random17", np.float32),
        ("dog25", np.float64),
        ("disk9", np.uint8),
        ("random65", np.float32),
    ],
)
def test_large_kernels_on_every_backend(backend, rng, name, dtype):
    from gpuconv.bench._inputs import bench_kernels

    kernel = bench_kernels([name])[name]
    image = (rng.random((36, 47)) * 255).astype(dtype)
    exact = name.startswith("disk")
    expected = reference(image, kernel, border="reflect")
    assert_contract_accuracy(
        backend.convolve(image, kernel, border="reflect"), expected, exact=exact
    )


def test_auto_chooses_fft_on_a_large_image_and_matches(rng):
    import gpuconv

    numba_backend()
    image = rng.random((300, 280)).astype(np.float32)
    kernel = rng.normal(size=(41, 41))
    _, plan, _ = plan_of(image, kernel)
    assert chosen(kernel, np.float32).path == "fft"
    assert_contract_accuracy(
        gpuconv.convolve(image, kernel, backend="numba"), reference(image, kernel)
    )


# ---- gpuconv bench --kernel-sizes ----------------------------------------------------------


def test_kernel_size_ranges_parse():
    from gpuconv.bench._sweep import kernel_size_list

    assert kernel_size_list("3,5,...,11") == [3, 5, 7, 9, 11]
    assert kernel_size_list("4,9") == [4, 9]
    with pytest.raises(Exception, match="kernel sizes"):
        kernel_size_list("5,3,...,1")


def test_sweep_shows_the_chosen_path_and_every_path_against_cv2(tmp_path):
    pytest.importorskip("cv2", reason="the sweep times cv2.filter2D beside gpuconv")
    numba_backend()
    import argparse
    import json

    from gpuconv import bench

    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    json_path, table_path = tmp_path / "sweep.json", tmp_path / "sweep.md"
    arguments = "--kernel-sizes 3,17 --sizes 48 --repeats 1 --warmup 0 --families "
    arguments += f"random:float32,box:uint8,dog:float64 --json {json_path} --table {table_path}"
    assert bench.run(parser.parse_args(arguments.split())) == 0
    rows = json.loads(json_path.read_text())["sweep"]
    assert [(row["image"], row["kernel"]) for row in rows] == [
        ("48x48 float32", "random3"),
        ("48x48 float32", "random17"),
        ("48x48 uint8", "box3"),
        ("48x48 uint8", "box17"),
        ("48x48 float64", "dog3"),
        ("48x48 float64", "dog17"),
    ]
    by_kernel = {row["kernel"]: row for row in rows}
    assert set(by_kernel["random17"]["ms"]) == {"cv2.filter2D", "gpuconv", "direct", "fft"}
    assert by_kernel["box17"]["chosen"] == "separable"
    assert by_kernel["dog17"]["chosen"] in by_kernel["dog17"]["ms"]
    assert all(ms > 0 for row in rows for ms in row["ms"].values())
    assert "| 48x48 uint8 | box17 | separable |" in table_path.read_text()


# ---- the CUDA backend's low-rank path (through the emulator in CI) ---------------------------


def cuda_backend():
    from gpuconv import _registry

    state = _registry.status("cuda")
    if not state.available:
        pytest.skip(f"backend 'cuda' is not available here: {state.reason}")
    from gpuconv._backends.cuda import lowrank

    return lowrank


@pytest.mark.parametrize(
    ("dtype", "out", "border"),
    [(np.float32, None, "reflect101"), (np.uint8, None, "constant"), (np.float64, None, "wrap")],
)
def test_cuda_low_rank_path_matches_the_reference(rng, dtype, out, border):
    import gpuconv

    lowrank = cuda_backend()
    image = (rng.random((33, 41)) * 200).astype(dtype)
    kernel = difference_of_gaussians(25)
    _, plan, _ = plan_of(image, kernel, border=border, value=9.0)
    launches, accumulator = lowrank.lowrank_launches(plan)
    assert len(launches) == 2
    assert {launch.template for launch in launches} <= {"gpuconv_separable", "gpuconv_global"}
    actual = gpuconv.convolve(image, kernel, backend="cuda", border=border, value=9.0)
    assert_contract_accuracy(actual, reference(image, kernel, border=border, value=9.0))


def test_cuda_keeps_the_direct_kernel_for_exact_integer_and_full_rank_kernels(rng):
    lowrank = cuda_backend()
    integer_rank_two = np.outer(np.arange(1, 12), np.ones(13)) - np.outer(
        np.ones(11), np.arange(13)
    )
    _, plan, _ = plan_of(np.zeros((20, 20), np.uint8), integer_rank_two)
    assert lowrank.lowrank_launches(plan) is None
    _, plan, _ = plan_of(np.zeros((20, 20), np.float32), rng.normal(size=(15, 15)))
    assert lowrank.lowrank_launches(plan) is None
