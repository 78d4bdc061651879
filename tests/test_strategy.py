"""The fast-path planner every compiled backend reuses (gpuconv._strategy)."""

from __future__ import annotations

import numpy as np
import pytest

from gpuconv import kernels
from gpuconv._plan import make_plan
from gpuconv._strategy import choose_strategy, separable_factors


def plan_for(kernel, dtype=np.uint8, out=None, border="reflect101", value=0.0, shape=(4, 4)):
    image = np.broadcast_to(np.zeros(1, dtype), shape)  # no memory for large shapes
    return make_plan(image, kernel, border=border, value=value, anchor=None, flip=False, dtype=out)[
        1
    ]


@pytest.mark.parametrize("name", ["small_blur", "large_blur", "gaussian5", "box5", "prewitt_x"])
def test_rank_one_kernels_are_separable(name):
    column, row = separable_factors(kernels.get(name))
    np.testing.assert_allclose(np.outer(column, row), kernels.get(name), rtol=0, atol=1e-15)


def test_integer_kernels_split_into_integer_factors():
    strategy = choose_strategy(plan_for(kernels.scharr_x))  # 3x3 = 9 taps: worth splitting
    assert strategy.separable and strategy.integer
    np.testing.assert_array_equal(strategy.column, [3, 10, 3])
    np.testing.assert_array_equal(strategy.row, [-1, 0, 1])
    np.testing.assert_array_equal(np.outer(strategy.column, strategy.row), kernels.scharr_x)


@pytest.mark.parametrize("name", ["sharpen", "laplacian", "emboss", "outline"])
def test_higher_rank_kernels_are_not_separable(name):
    assert np.linalg.matrix_rank(kernels.get(name)) > 1
    assert separable_factors(kernels.get(name)) is None
    assert not choose_strategy(plan_for(name)).separable


def test_random_kernel_is_not_separable_and_zero_kernel_is_direct(rng):
    assert separable_factors(rng.normal(size=(9, 9))) is None
    assert separable_factors(np.zeros((5, 5))) is None


def test_name_does_not_matter_only_numbers():
    assert choose_strategy(plan_for(np.ones((5, 5)) * 3)).separable
    assert not choose_strategy(plan_for(np.eye(5))).separable


def test_exact_integer_path_and_accumulator_width():
    assert choose_strategy(plan_for("sharpen")).accumulator == np.int32
    assert choose_strategy(plan_for("sharpen", np.uint16)).accumulator == np.int32
    huge = np.full((3, 3), 50_000.0)
    assert choose_strategy(plan_for(huge, np.uint16)).accumulator == np.int64
    assert not choose_strategy(plan_for("sharpen", np.float32)).integer
    assert not choose_strategy(plan_for("small_blur")).integer


def test_fractional_constant_border_leaves_the_integer_path():
    assert not choose_strategy(plan_for("sharpen", border="constant", value=0.5)).integer
    assert choose_strategy(plan_for("sharpen", border="constant", value=7.0)).integer


def test_astronomic_constant_falls_back_to_float64():
    strategy = choose_strategy(plan_for("sharpen", border="constant", value=1e30))
    assert not strategy.integer and strategy.accumulator == np.float64


def test_float32_sums_give_way_to_float64_where_they_could_miss_a_level(rng):
    large = (1024, 1024)
    assert choose_strategy(plan_for("small_blur", np.uint8, shape=large)).accumulator == np.float32
    assert choose_strategy(plan_for("large_blur", np.uint8, shape=large)).accumulator == np.float32
    # 16-bit sums, unnormalised random kernels: float32 would round too many pixels apart
    assert choose_strategy(plan_for("small_blur", np.uint16, shape=large)).accumulator == np.float64
    random9 = rng.normal(size=(9, 9))
    assert choose_strategy(plan_for(random9, np.uint8, shape=large)).accumulator == np.float64
    # a float image rounded to an integer output: its range is unbounded
    assert (
        choose_strategy(plan_for("small_blur", np.float32, out=np.uint8)).accumulator == np.float64
    )
    # float output: the contract's float32 tolerance is relative, float32 sums are fine
    float_out = plan_for(random9, np.uint16, out=np.float32, shape=large)
    assert choose_strategy(float_out).accumulator == np.float32
    assert choose_strategy(plan_for("sharpen", np.float64)).accumulator == np.float64


def test_zero_taps_skipped_only_for_integer_images():
    assert choose_strategy(plan_for("laplacian", np.uint8)).skip_zero_taps
    assert not choose_strategy(plan_for("laplacian", np.float32)).skip_zero_taps


# --- where each decision switches ---------------------------------------------------------


@pytest.mark.parametrize("scale", [1e-9, 1e-3, 1.0, 1e3, 1e9])
def test_separability_is_judged_relative_to_the_kernels_magnitude(rng, scale):
    kernel = scale * np.outer(rng.uniform(0.5, 1.5, 5), rng.uniform(0.5, 1.5, 5))
    column, row = separable_factors(kernel)
    np.testing.assert_allclose(np.outer(column, row), kernel, rtol=1e-14)
    # One tap off by 2e-10 of the largest: two passes would miss float64's 1e-12.
    near = kernel.copy()
    near[1, 3] += 2e-10 * np.abs(kernel).max()
    assert separable_factors(near) is None
    assert not choose_strategy(plan_for(near, np.float64)).separable


def test_near_rank_one_kernel_scaled_by_1e_minus_3_is_not_split():
    # The case of issue 17: a 5x5 kernel of magnitude 1e-3, one tap off by 3e-13.
    kernel = 1e-3 * np.outer([1.0, 2, 3, 2, 1], [1.0, 3, 4, 3, 1])
    assert choose_strategy(plan_for(kernel, np.float64)).separable
    kernel[2, 1] += 3e-13
    assert separable_factors(kernel) is None
    assert not choose_strategy(plan_for(kernel, np.float64)).separable


@pytest.mark.parametrize(
    "column, row",
    [
        ([0.0, 1, 2, 1], [3.0, 1, 0, 1]),  # a zero first row and a zero column
        ([2.0, 0, -1], [0.0, 0, 5]),  # the largest row last, two zero columns
        ([1.0, 0, 0, 0, 0], [0.0, 1, 0, 0, 2]),  # a single non-zero row
    ],
)
@pytest.mark.parametrize("integer", [False, True])
def test_rank_one_kernels_with_zero_rows_and_columns_split_exactly(column, row, integer):
    kernel = np.outer(column, row)
    factors = separable_factors(kernel, integer=integer)
    assert factors is not None
    np.testing.assert_array_equal(np.outer(*factors), kernel)
    if integer:
        assert all(np.array_equal(f, np.round(f)) for f in factors)


def test_integer_factors_divide_the_pivot_row_by_its_gcd():
    kernel = np.outer([3.0, 10, 3], [-4.0, 0, 4])  # row [-40, 0, 40] (pivot), gcd 40
    column, row = separable_factors(kernel, integer=True)
    np.testing.assert_array_equal(np.outer(column, row), kernel)
    np.testing.assert_array_equal(row, [-1, 0, 1])
    assert separable_factors(np.outer([1.0, 2], [1.0, 0.5, 3]), integer=True) is None


@pytest.mark.parametrize(
    "shape, separable",
    [((3, 3), True), ((2, 5), True), ((2, 4), False), ((1, 9), False), ((9, 1), False)],
)
def test_kernels_under_nine_taps_or_one_dimensional_run_direct(shape, separable):
    # Two passes cost kh + kw taps and a pass over an intermediate: below 9 taps, and for a
    # kernel that is already one line, the direct loop is as fast.
    kernel = np.outer(np.arange(1.0, shape[0] + 1), np.arange(2.0, shape[1] + 2))
    assert choose_strategy(plan_for(kernel)).separable is separable
    assert not choose_strategy(plan_for(kernel), allow_separable=False).separable


def test_int32_sums_only_while_every_sum_stays_below_2_31():
    # int16 -32768 times -65536 is 2**31: one past int32, so int64 (the exact answer 32767).
    def accumulator(kernel, dtype=np.int16):
        strategy = choose_strategy(plan_for(kernel, dtype))
        assert strategy.integer
        return strategy.accumulator

    assert accumulator([[-65536.0]]) == np.int64
    assert accumulator([[65535.0]]) == np.int32  # 65535 * 32768 < 2**31
    assert accumulator([[40000.0]]) == np.int32  # between 2**30 and 2**31
    # A separable integer kernel is bounded by the product of its factors' sums.
    assert accumulator(np.outer([1.0, 1, 1], [10922.0, 0, -10922])) == np.int32
    wide = np.outer([1.0, 1, 1], [10923.0, 0, -10923])  # 6 * 10923 * 32768 > 2**31
    assert choose_strategy(plan_for(wide, np.int16)).separable
    assert accumulator(wide) == np.int64


def test_integer_sums_leave_int64_at_2_62():
    # A constant border of 2**62 under a tap of 1 could reach 2**62: float64 from there on.
    def strategy(value):
        return choose_strategy(plan_for([[0.0, 1.0, 0.0]], border="constant", value=value))

    below = strategy(2.0**62 - 4096)
    assert below.integer and below.accumulator == np.int64
    at = strategy(2.0**62)
    assert not at.integer and at.accumulator == np.float64


def test_all_zero_kernel_plans_float32_sums_without_a_warning():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 0 * inf (a float image's range) must not be computed
        for image_dtype in (np.float32, np.uint8):
            strategy = choose_strategy(plan_for(np.zeros((3, 3)), image_dtype, out=np.uint8))
            assert not strategy.separable
            assert strategy.accumulator == (np.float32 if image_dtype == np.float32 else np.int32)


def test_separable_factors_accepts_integer_arrays_and_lists():
    for kernel in (np.outer([1, 2, 1], [3, 0, -3]), [[1, 2], [2, 4]]):
        for integer in (False, True):
            column, row = separable_factors(kernel, integer=integer)
            np.testing.assert_array_equal(np.outer(column, row), kernel)


def test_a_strategy_cannot_be_changed_once_chosen():
    import dataclasses

    strategy = choose_strategy(plan_for("small_blur"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        strategy.separable = False
