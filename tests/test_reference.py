"""The NumPy reference itself: bounded memory, vectorised, and its border table."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import scipy.ndimage as ndi

from gpuconv import Border
from gpuconv._backends import numpy as _numpy
from gpuconv._borders import source_indices
from gpuconv._plan import make_plan

# The contract's table, image "abcdefgh" (indices 0..7), six pixels each side.
BORDER_TABLE = {
    Border.REFLECT101: ("gfedcb", "gfedcba"),
    Border.REFLECT: ("fedcba", "hgfedcb"),
    Border.REPLICATE: ("aaaaaa", "hhhhhhh"),
    Border.WRAP: ("cdefgh", "abcdefg"),
}


@pytest.mark.parametrize("border", list(BORDER_TABLE))
def test_border_patterns_are_the_contracts_table(border):
    letters = "abcdefgh"
    before, after = BORDER_TABLE[border]
    indices = source_indices(np.arange(-6, 8 + 7), 8, border)
    spelled = "".join(letters[i] for i in indices)
    assert spelled == before + letters + after


def test_constant_border_marks_outside():
    assert source_indices([-2, -1, 0, 7, 8], 8, Border.CONSTANT).tolist() == [-1, -1, 0, 7, -1]


@pytest.mark.parametrize(
    "border, mode",
    [
        (Border.REFLECT101, "mirror"),
        (Border.REFLECT, "reflect"),
        (Border.REPLICATE, "nearest"),
        (Border.WRAP, "wrap"),
    ],
)
@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_far_outside_repeats_like_scipy(border, mode, size):
    # scipy extends a line of `size` by `pad` on each side; a one-hot kernel reads it back
    line = np.arange(size, dtype=np.float64)
    pad = 4 * size + 3
    for offset in range(-pad, pad + 1):
        kernel = np.zeros(2 * pad + 1)
        kernel[pad + offset] = 1.0
        read = ndi.correlate1d(line, kernel, mode=mode)
        expected = line[source_indices(np.arange(size) + offset, size, border)]
        np.testing.assert_array_equal(read, expected)


def test_memory_is_bounded_by_bands():
    # 4096 x 4096 uint8 = 16 MiB in; a whole-image float64 approach needs >= 128 MiB per temporary.
    image = np.zeros((4096, 4096), np.uint8)
    image[::7, ::5] = 200
    _, plan, _ = make_plan(
        image, "small_blur", border="reflect101", value=0.0, anchor=None, flip=False, dtype=None
    )
    tracemalloc.start()
    try:
        out = _numpy.convolve(image[:, :, None], plan)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    output_bytes = out.nbytes
    assert peak - output_bytes < 80 * 2**20, f"peak {peak / 2**20:.0f} MiB beyond the output"
    row = 100
    expected = ndi.correlate(
        image[row - 3 : row + 4].astype(np.float64), plan.kernel, mode="mirror"
    )[3]
    np.testing.assert_array_equal(out[row, :, 0], _numpy.saturate_cast(expected, np.uint8))


def test_saturate_cast_rounds_half_to_even_and_clamps():
    values = np.array([-1.5, -0.5, 0.5, 1.5, 2.5, 254.5, 255.5, 300.0, np.nan, -np.inf, np.inf])
    assert _numpy.saturate_cast(values, np.uint8).tolist() == [
        0,
        0,
        0,
        2,
        2,
        254,
        255,
        255,
        0,
        0,
        255,
    ]
    assert _numpy.saturate_cast(values, np.int16).tolist() == [
        -2,
        0,
        0,
        2,
        2,
        254,
        256,
        300,
        0,
        -32768,
        32767,
    ]


@pytest.mark.parametrize("budget_rows", [1, 2, 3, 7])
@pytest.mark.parametrize("border", list(Border))
def test_bands_join_seamlessly_whatever_their_height(monkeypatch, rng, budget_rows, border):
    # Shrink the band budget so the 23 rows go through in bands of a few rows (or one, when
    # the kernel alone is over budget): every band boundary must be invisible.
    image = rng.normal(size=(23, 10, 2))
    kernel = rng.normal(size=(5, 3))
    bytes_per_row = 3 * 8 * (10 + 3) * 2
    monkeypatch.setattr(_numpy, "_BAND_BUDGET_BYTES", bytes_per_row * (5 + budget_rows))
    mode = {"REFLECT101": "mirror", "REPLICATE": "nearest"}.get(border.name, border.name.lower())
    for anchor in [(1, 2), (0, 0), (2, 4)]:
        _, plan, _ = make_plan(
            image, kernel, border=border, value=-1.5, anchor=anchor, flip=False, dtype=None
        )
        out = _numpy.convolve(image, plan)
        origin = (anchor[1] - 2, anchor[0] - 1)
        for channel in range(2):
            expected = ndi.correlate(
                image[:, :, channel], kernel, mode=mode, cval=-1.5, origin=origin
            )
            np.testing.assert_allclose(out[:, :, channel], expected, rtol=0, atol=1e-12)


def test_a_kernel_taller_than_the_band_budget_still_runs_one_row_at_a_time(monkeypatch, rng):
    monkeypatch.setattr(_numpy, "_BAND_BUDGET_BYTES", 1)
    image = rng.integers(0, 256, size=(6, 5)).astype(np.uint8)
    kernel = rng.normal(size=(3, 3))
    _, plan, _ = make_plan(
        image, kernel, border="reflect101", value=0.0, anchor=None, flip=False, dtype=np.float64
    )
    out = _numpy.convolve(image[:, :, None], plan)[:, :, 0]
    expected = ndi.correlate(image.astype(np.float64), kernel, mode="mirror")
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12 * np.abs(expected).max())


def test_an_unknown_border_code_is_an_error_not_a_silent_mapping():
    with pytest.raises(AssertionError, match="unhandled border 7"):
        source_indices(np.arange(-2, 5), 3, 7)


def test_a_large_image_goes_through_in_a_few_large_bands(monkeypatch):
    # Vectorised over whole bands of about 48 MiB of float64 temporaries (3 per pixel of a
    # band row): a 2048 x 2048 image takes about three bands, never one row at a time.
    image = np.zeros((2048, 2048), np.uint8)
    image[::5, ::3] = 255
    _, plan, _ = make_plan(
        image, "small_blur", border="reflect101", value=0.0, anchor=None, flip=False, dtype=None
    )
    bands, columns = [], set()
    gather = _numpy._gather

    def counting_gather(image3d, rows, cols, plan):
        bands.append(rows.size)
        columns.add(cols.size)
        return gather(image3d, rows, cols, plan)

    monkeypatch.setattr(_numpy, "_gather", counting_gather)
    out = _numpy.convolve(image[:, :, None], plan)
    rows_per_band = 48 * 2**20 // (3 * 8 * (2048 + 7)) - 7
    assert 2 <= len(bands) <= 2 * -(-2048 // rows_per_band)
    # Each band reads its rows and the kernel's halo, and no more: 6 rows and 6 columns.
    assert sum(rows - 6 for rows in bands) == 2048
    assert columns == {2048 + 6}
    expected = ndi.correlate(image[1000:1010].astype(np.float64), plan.kernel, mode="mirror")[3:7]
    np.testing.assert_array_equal(out[1003:1007, :, 0], _numpy.saturate_cast(expected, np.uint8))
