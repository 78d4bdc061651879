"""The command line, through a subprocess as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import gpuconv
from gpuconv import kernels


def run_cli(*arguments, cwd=None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "GPUCONV_BACKEND"}
    return subprocess.run(
        [sys.executable, "-m", "gpuconv", *map(str, arguments)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
        env=env,
    )


@pytest.fixture(scope="module")
def colour_png(tmp_path_factory) -> Path:
    from skimage import data

    path = tmp_path_factory.mktemp("images") / "coffee.png"
    cv2.imwrite(str(path), data.coffee()[:120, :160, ::-1])
    return path


def test_info_lists_backends_and_versions():
    result = run_cli("info")
    assert result.returncode == 0, result.stderr
    assert f"gpuconv {gpuconv.__version__}" in result.stdout
    for name in ("cuda", "numba", "numpy"):
        assert f"  {name}" in result.stdout
    assert "numpy  available" in result.stdout


def test_apply_keeps_colour_and_matches_the_api(colour_png, tmp_path):
    target = tmp_path / "out.png"
    result = run_cli("apply", colour_png, "-k", "sharpen", "-o", target)
    assert result.returncode == 0, result.stderr
    written = cv2.imread(str(target), cv2.IMREAD_UNCHANGED)
    source = cv2.imread(str(colour_png), cv2.IMREAD_UNCHANGED)
    assert written.shape == source.shape == (120, 160, 3)
    np.testing.assert_array_equal(written, cv2.filter2D(source, -1, kernels.sharpen))


def test_apply_chains_kernels_and_keeps_16_bits(tmp_path):
    image = (np.arange(40 * 50, dtype=np.uint16).reshape(40, 50) * 31) % 65535
    source, target = tmp_path / "deep.png", tmp_path / "deep_out.png"
    cv2.imwrite(str(source), image)
    result = run_cli(
        "apply",
        source,
        "-k",
        "small_blur",
        "-k",
        "laplacian",
        "--border",
        "replicate",
        "-o",
        target,
    )
    assert result.returncode == 0, result.stderr
    written = cv2.imread(str(target), cv2.IMREAD_UNCHANGED)
    assert written.dtype == np.uint16
    # float64 between the kernels, rounded once to the image's uint16 at the end
    between = gpuconv.convolve(image, "small_blur", border="replicate", dtype=np.float64)
    expected = gpuconv.convolve(between, "laplacian", border="replicate", dtype=np.uint16)
    np.testing.assert_array_equal(written, expected)


def test_apply_accepts_a_kernel_file(colour_png, tmp_path):
    kernel = np.array([[0.0, 0.25], [0.5, 0.25]])
    np.save(tmp_path / "mine.npy", kernel)
    target = tmp_path / "out.png"
    result = run_cli("apply", colour_png, "-k", tmp_path / "mine.npy", "-o", target)
    assert result.returncode == 0, result.stderr
    source = cv2.imread(str(colour_png))
    np.testing.assert_array_equal(cv2.imread(str(target)), cv2.filter2D(source, -1, kernel))


@pytest.mark.parametrize(
    "make_input, kernel, message",
    [
        (lambda d: d / "missing.png", "sharpen", "no such file"),
        (
            lambda d: (d / "text.png").write_text("not an image") and d / "text.png",
            "sharpen",
            "cannot read",
        ),
        (None, "sharpenn", "unknown kernel 'sharpenn'. Did you mean 'sharpen'"),
    ],
)
def test_apply_errors_are_clear(colour_png, tmp_path, make_input, kernel, message):
    source = colour_png if make_input is None else make_input(tmp_path)
    result = run_cli("apply", source, "-k", kernel, "-o", tmp_path / "o.png")
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_apply_bad_border_lists_valid_ones(colour_png, tmp_path):
    result = run_cli(
        "apply", colour_png, "-k", "sharpen", "--border", "mirrored", "-o", tmp_path / "o.png"
    )
    assert result.returncode == 1
    assert "reflect101" in result.stderr and "Traceback" not in result.stderr


def test_usage_errors_exit_2():
    assert run_cli("apply").returncode == 2
    assert run_cli("frobnicate").returncode == 2


def test_demo_writes_six_montages_that_agree(tmp_path):
    result = run_cli("demo", "--out", tmp_path / "demo")
    assert result.returncode == 0, result.stderr
    assert "[OK] gpuconv agrees with cv2.filter2D" in result.stdout
    for name in kernels.TUTORIAL_BANK:
        montage = cv2.imread(str(tmp_path / "demo" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        assert montage is not None, name
        assert montage.shape == (512 + 28, 3 * 512)  # original | gpuconv | OpenCV, with labels
        original, ours, theirs = np.hsplit(montage[28:], 3)
        assert np.abs(ours.astype(int) - theirs).max() <= 1, name
        assert not np.array_equal(ours, original), name
        assert f"{name}" in result.stdout


def test_demo_on_a_given_image(colour_png, tmp_path):
    result = run_cli("demo", colour_png, "--out", tmp_path / "demo", "--backend", "numpy")
    assert result.returncode == 0, result.stderr
    assert "image 160x120 grey, backend 'numpy'" in result.stdout
    assert len(list((tmp_path / "demo").glob("*.png"))) == 6


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "gpuconv"
    if not script.exists():
        pytest.skip(f"no console script beside {sys.executable}: gpuconv is not pip-installed here")
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == f"gpuconv {gpuconv.__version__}"
