"""``gpuconv apply --axes``: stacks in .npy files and multi-page TIFFs, filtered frame by frame."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

import gpuconv
from gpuconv.cli import main


@pytest.fixture
def stack(rng):
    return rng.integers(0, 256, (4, 18, 15), dtype=np.uint8)


def _expected(stack, axes=(1, 2)):
    between = gpuconv.convolve(stack, "sharpen", axes=axes, dtype=np.float64, backend="numpy")
    return gpuconv.convolve(between, "small_blur", axes=axes, dtype=stack.dtype, backend="numpy")


@pytest.mark.parametrize("suffix", [".npy", ".tif"])
def test_a_stack_is_filtered_frame_by_frame(tmp_path, capsys, stack, suffix):
    source = tmp_path / f"stack{suffix}"
    if suffix == ".npy":
        np.save(source, stack)
    else:
        tifffile.imwrite(source, stack, photometric="minisblack")  # one page per frame
    target = tmp_path / f"out{suffix}"
    code = main(
        [
            "apply",
            str(source),
            "-k",
            "sharpen",
            "-k",
            "small_blur",
            "--axes",
            "1,2",
            "--backend",
            "numpy",
            "-o",
            str(target),
        ]
    )
    assert code == 0, capsys.readouterr().err
    written = np.load(target) if suffix == ".npy" else tifffile.imread(target)
    np.testing.assert_array_equal(written, _expected(stack))
    assert "stack of shape (4, 18, 15)" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([source.name, target.name])


def test_channels_first_axes(tmp_path, capsys, stack):
    source, target = tmp_path / "cfirst.npy", tmp_path / "out.npy"
    np.save(source, stack)
    code = main(
        [
            "apply",
            str(source),
            "-k",
            "sharpen",
            "-k",
            "small_blur",
            "--axes=-2,-1",  # the = keeps argparse from reading -2 as an option
            "--backend",
            "numpy",
            "-o",
            str(target),
        ]
    )
    assert code == 0, capsys.readouterr().err
    np.testing.assert_array_equal(np.load(target), _expected(stack, axes=(-2, -1)))


@pytest.mark.parametrize(
    "arguments, code, fragment",
    [
        (["--axes", "1,5"], 1, "out of range"),
        (["--axes", "1"], 2, "ROWS,COLUMNS"),
        (["--axes", "1,1"], 1, "same axis"),
        (["--axes", "1,2", "--band-rows", "4"], 2, "--band-rows"),
    ],
)
def test_bad_axes_are_one_line_errors(tmp_path, capsys, stack, arguments, code, fragment):
    source, target = tmp_path / "stack.npy", tmp_path / "out.npy"
    np.save(source, stack)
    try:
        result = main(["apply", str(source), "-k", "sharpen", "-o", str(target), *arguments])
    except SystemExit as exit:  # argparse's usage errors
        result = exit.code
    assert result == code
    error = capsys.readouterr().err
    assert fragment in error and "Traceback" not in error
    assert len(error.strip().splitlines()) == 1
    assert not target.exists()


def test_a_stack_to_an_image_format_is_refused(tmp_path, capsys, stack):
    source, target = tmp_path / "stack.npy", tmp_path / "out.png"
    np.save(source, stack)
    assert main(["apply", str(source), "-k", "sharpen", "--axes", "1,2", "-o", str(target)]) == 1
    assert ".npy, .tif, .tiff" in capsys.readouterr().err
    assert not target.exists()
