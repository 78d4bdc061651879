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
