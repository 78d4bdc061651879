"""Files and the command line never lose data (issue 13, CONTRACT.md "Files and the command line").

Each test runs ``gpuconv apply`` in a subprocess, as a user does, and checks the exit code,
that a failure is one line on stderr naming the file and the cause, and what is left at the
output path: nothing, or the previous file byte for byte. The numbered issue items each test
reproduces are in the test's docstring.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

import gpuconv
from gpuconv import kernels

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*arguments, preexec_fn=None, timeout=300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "GPUCONV_BACKEND"}
    return subprocess.run(
        [sys.executable, "-m", "gpuconv", *map(str, arguments)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        preexec_fn=preexec_fn,
    )


def assert_failure(result, code: int, *fragments: str) -> str:
    """Exit ``code``, exactly one line on stderr holding every fragment, no traceback."""
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("gpuconv apply: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert "Traceback" not in result.stderr
    return lines[0]


def names_in(directory: Path) -> list[str]:
    """Everything in ``directory``, temporaries (``.<name>.gpuconv-*.tmp``) included."""
    return sorted(path.name for path in directory.iterdir())


def _bgr_photo() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.coffee()[:96, :128, ::-1])  # OpenCV's BGR


def _smooth_16bit(channels: int) -> np.ndarray:
    y, x = np.mgrid[0:70, 0:90]
    planes = [((y * 613 + x * 331 + 4099 * c) * 7) % 65536 for c in range(channels)]
    image = np.stack(planes, axis=-1).astype(np.uint16)
    return image[:, :, 0] if channels == 1 else image


@pytest.fixture(scope="module")
def photo_png(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("photo") / "coffee.png"
    cv2.imwrite(str(path), _bgr_photo())
    return path


@pytest.fixture(scope="module")
def camera_png(tmp_path_factory) -> Path:
    from skimage import data

    path = tmp_path_factory.mktemp("camera") / "camera.png"
    cv2.imwrite(str(path), data.camera())
    return path


# --- round trips, exact against cv2.filter2D ---------------------------------------------------


def test_uint8_rgb_png_round_trip_is_exact(photo_png, tmp_path):
    """Done means: uint8 RGB PNG round trip; colour order kept through .tif as well."""
    source = cv2.imread(str(photo_png), cv2.IMREAD_UNCHANGED)
    expected = cv2.filter2D(source, -1, kernels.sharpen)
    for target in (tmp_path / "out.png", tmp_path / "out.tif"):
        result = run_cli("apply", photo_png, "-k", "sharpen", "-o", target)
        assert result.returncode == 0, result.stderr
        np.testing.assert_array_equal(cv2.imread(str(target), cv2.IMREAD_UNCHANGED), expected)


@pytest.mark.parametrize("channels", [1, 3])
def test_16_bit_lzw_tiff_round_trip_is_exact_and_colour_stays_colour(channels, tmp_path):
    """Items 2 and 5: an LZW TIFF as cv2.imwrite writes it is read (it was a traceback), and a
    16-bit colour output carries the RGB tag (cv2.imread read it back grey)."""
    import tifffile

    image = _smooth_16bit(channels)
    source, target = tmp_path / "in.tif", tmp_path / "out.tif"
    assert cv2.imwrite(str(source), image)
    with tifffile.TiffFile(source) as tiff:
        assert tiff.pages[0].compression == 5  # LZW: what OpenCV writes
    result = run_cli("apply", source, "-k", "sharpen", "-o", target)
    assert result.returncode == 0, result.stderr
    written = cv2.imread(str(target), cv2.IMREAD_UNCHANGED)
    expected = cv2.filter2D(image, -1, kernels.sharpen)
    assert written.dtype == np.uint16 and written.shape == image.shape
    np.testing.assert_array_equal(written, expected)
    with tifffile.TiffFile(target) as tiff:
        assert tiff.pages[0].photometric == (2 if channels == 3 else 1)  # RGB / MINISBLACK


@pytest.mark.parametrize("suffix", [".tif", ".npy"])
@pytest.mark.parametrize("colour", [False, True])
def test_float32_output_to_tif_and_npy_is_exact(suffix, colour, photo_png, camera_png, tmp_path):
    """Done means: float32 to .tif and .npy, exact against cv2.filter2D (negative values kept)."""
    source = photo_png if colour else camera_png
    target = tmp_path / f"out{suffix}"
    result = run_cli("apply", source, "-k", "sobel_x", "--dtype", "float32", "-o", target)
    assert result.returncode == 0, result.stderr
    bgr = cv2.imread(str(source), cv2.IMREAD_UNCHANGED)
    expected = cv2.filter2D(bgr, cv2.CV_32F, kernels.sobel_x)
    assert expected.min() < 0
    if suffix == ".tif":
        written = cv2.imread(str(target), cv2.IMREAD_UNCHANGED)
    else:
        written = np.load(target)
        if colour:
            written = written[:, :, ::-1]  # .npy holds RGB, as tifffile, PIL and skimage
    assert written.dtype == np.float32
    np.testing.assert_array_equal(written, expected)


def test_npy_to_png_and_png_to_npy(photo_png, tmp_path, rng):
    """Item 8: a PNG could not be written as .npy, nor an .npy as PNG."""
    rgb = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    np.save(tmp_path / "in.npy", rgb)
    result = run_cli("apply", tmp_path / "in.npy", "-k", "sharpen", "-o", tmp_path / "out.png")
    assert result.returncode == 0, result.stderr
    written = cv2.imread(str(tmp_path / "out.png"), cv2.IMREAD_UNCHANGED)[:, :, ::-1]
    np.testing.assert_array_equal(written, cv2.filter2D(rgb, -1, kernels.sharpen))

    result = run_cli("apply", photo_png, "-k", "sharpen", "-o", tmp_path / "photo.npy")
    assert result.returncode == 0, result.stderr
    bgr = cv2.imread(str(photo_png), cv2.IMREAD_UNCHANGED)
    expected = cv2.filter2D(bgr, -1, kernels.sharpen)[:, :, ::-1]
    np.testing.assert_array_equal(np.load(tmp_path / "photo.npy"), expected)


# --- item 1: no silent conversion ------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "int16"])
def test_a_format_that_cannot_hold_the_result_is_an_error(dtype, camera_png, tmp_path):
    """Item 1: float32 or int16 into a PNG exited 0 with a clipped uint8 file."""
    result = run_cli(
        "apply", camera_png, "-k", "sobel_x", "--dtype", dtype, "-o", tmp_path / "o.png"
    )
    assert_failure(result, 1, "o.png", f"PNG cannot hold {dtype}", ".tif", ".npy", "--convert")
    assert names_in(tmp_path) == []
    previous = tmp_path / "kept.png"
    previous.write_bytes(b"previous contents")
    result = run_cli("apply", camera_png, "-k", "sobel_x", "--dtype", dtype, "-o", previous)
    assert_failure(result, 1, "PNG cannot hold")
    assert previous.read_bytes() == b"previous contents"
    assert names_in(tmp_path) == ["kept.png"]


def test_convert_clips_and_rounds_when_asked(camera_png, tmp_path):
    """Item 1: the conversion happens only when asked for, and says so."""
    target = tmp_path / "o.png"
    result = run_cli(
        "apply", camera_png, "-k", "sobel_x", "--dtype", "float32", "--convert", "-o", target
    )
    assert result.returncode == 0, result.stderr
    assert "converted from float32 (clipped and rounded)" in result.stdout
    grey = cv2.imread(str(camera_png), cv2.IMREAD_UNCHANGED)
    sums = cv2.filter2D(grey, cv2.CV_32F, kernels.sobel_x)
    expected = np.clip(np.rint(sums), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(cv2.imread(str(target), cv2.IMREAD_UNCHANGED), expected)


def test_a_channel_count_the_format_cannot_hold_is_an_error(tmp_path, rng):
    np.save(tmp_path / "two.npy", rng.integers(0, 256, (20, 30, 2), dtype=np.uint8))
    result = run_cli("apply", tmp_path / "two.npy", "-k", "sharpen", "-o", tmp_path / "o.jpg")
    assert_failure(result, 1, "o.jpg", "not 2", ".tif", ".npy")
    assert names_in(tmp_path) == ["two.npy"]


# --- item 2: TIFF without Zarr -------------------------------------------------------------------


def test_tiff_needs_no_zarr(tmp_path):
    """Item 2: with the [numba] install (no zarr) an LZW TIFF ended in "No module named 'zarr'"."""
    image = _smooth_16bit(3)
    source, target = tmp_path / "in.tif", tmp_path / "out.tif"
    cv2.imwrite(str(source), image)
    script = (
        "import sys; sys.modules['zarr'] = None  # as if not installed\n"
        "from gpuconv.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, "apply", str(source), "-k", "sharpen", "-o", str(target)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(
        cv2.imread(str(target), cv2.IMREAD_UNCHANGED), cv2.filter2D(image, -1, kernels.sharpen)
    )


# --- item 3: the input is never overwritten --------------------------------------------------


@pytest.mark.parametrize("link", ["hard", "symbolic", "same path"])
@pytest.mark.parametrize("suffix", [".npy", ".png"])
def test_output_that_is_the_input_through_a_link_is_refused(link, suffix, tmp_path, rng):
    """Item 3: ``ln a.npy b.npy; gpuconv apply b.npy -o a.npy`` zeroed the data."""
    image = rng.integers(0, 256, (30, 40), dtype=np.uint8)
    original = tmp_path / f"a{suffix}"
    if suffix == ".npy":
        np.save(original, image)
    else:
        cv2.imwrite(str(original), image)
    before = original.read_bytes()
    source = tmp_path / f"b{suffix}"
    if link == "hard":
        os.link(original, source)
    elif link == "symbolic":
        source.symlink_to(original)
    else:
        source = original
    result = run_cli("apply", source, "-k", "sharpen", "-o", original)
    assert_failure(result, 1, "is the input", original.name)
    assert original.read_bytes() == before
    assert not any(".gpuconv-" in name for name in names_in(tmp_path))


# --- item 4: interrupted and failed writes leave nothing -------------------------------------


def _start_long_run(tmp_path, rng, target):
    """A banded .npy run slow enough to be interrupted mid-write (numpy backend, 11 x 11)."""
    source = tmp_path / "big.npy"
    np.save(source, rng.integers(0, 256, (3000, 2000), dtype=np.uint8))
    np.save(tmp_path / "k11.npy", rng.normal(size=(11, 11)))
    arguments = [
        "apply",
        source,
        "-k",
        tmp_path / "k11.npy",
        "--backend",
        "numpy",
        "--band-rows",
        "16",
        "-o",
        target,
    ]
    env = {k: v for k, v in os.environ.items() if k != "GPUCONV_BACKEND"}
    return subprocess.Popen(
        [sys.executable, "-m", "gpuconv", *map(str, arguments)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        # SIGINT as a terminal delivers it: a suite started as a background job (`make test &`)
        # ignores SIGINT, its children inherit that, and Python then installs no handler.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _wait_for_partial_temporary(process, directory: Path, name: str) -> Path:
    """Poll until the run's temporary holds a few bands (mid-write), then return it."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        for path in directory.glob(f".{name}.gpuconv-*.tmp"):
            try:
                written = path.stat().st_blocks * 512
            except FileNotFoundError:
                continue
            if written >= 3 * 16 * 2000:  # three bands of 16 rows
                return path
        time.sleep(0.01)
    process.kill()
    raise AssertionError("the run never got to writing its output")


@pytest.mark.slow
@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("previous", [False, True])
def test_a_signal_mid_write_leaves_no_output(number, previous, tmp_path, rng):
    """Item 4: Ctrl-C during ``gpuconv apply big.npy -o x.npy`` left a valid-looking all-zero file."""
    target = tmp_path / "x.npy"
    if previous:
        np.save(target, np.arange(10, dtype=np.uint8))
    before = target.read_bytes() if previous else None
    process = _start_long_run(tmp_path, rng, target)
    temporary = _wait_for_partial_temporary(process, tmp_path, "x.npy")
    assert temporary.parent == target.parent  # beside the output: the rename is atomic
    process.send_signal(number)
    _, stderr = process.communicate(timeout=120)
    result = subprocess.CompletedProcess(process.args, process.returncode, "", stderr)
    assert_failure(result, 128 + number, f"({signal.Signals(number).name})")
    assert not temporary.exists()
    expected = ["big.npy", "k11.npy", *(["x.npy"] if previous else [])]
    assert names_in(tmp_path) == expected
    if previous:
        assert target.read_bytes() == before


def _file_size_limit(limit: int):
    def limit_file_size():  # runs in the child, before exec
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return limit_file_size


@pytest.mark.parametrize("suffix", [".npy", ".png", ".tif"])
@pytest.mark.parametrize("previous", [False, True])
def test_a_write_that_runs_out_of_space_leaves_no_output(suffix, previous, tmp_path, rng):
    """Item 4: a full disk left an all-zero file and a raw OSError traceback.

    RLIMIT_FSIZE in the child: a write past it raises SIGXFSZ, which gpuconv ignores, so
    the write fails with EFBIG, as it would with ENOSPC on a full disk.
    """
    source = tmp_path / "noise.npy"
    np.save(source, rng.integers(0, 256, (1200, 1000), dtype=np.uint8))  # 1.2 MB, incompressible
    target = tmp_path / f"out{suffix}"
    if previous:
        target.write_bytes(b"the previous result")
    result = run_cli(
        "apply",
        source,
        "-k",
        "sharpen",
        "--backend",
        "numpy",
        "-o",
        target,
        preexec_fn=_file_size_limit(256 * 1024),
    )
    assert_failure(result, 3, f"cannot write {target}", "file too large")
    assert names_in(tmp_path) == ["noise.npy", *([target.name] if previous else [])]
    if previous:
        assert target.read_bytes() == b"the previous result"


# --- item 6: inputs checked before any output exists -----------------------------------------


def _write_npy_header_only(path: Path) -> None:
    np.save(path, np.zeros((500, 400), np.uint8))
    path.write_bytes(path.read_bytes()[: 128 + 1000])  # header + 1000 of 200000 pixels


@pytest.mark.parametrize(
    "make, fragments",
    [
        (lambda p: np.save(p, np.zeros(10, np.uint8)), ["1-D array of shape (10,)"]),
        (lambda p: np.save(p, np.zeros((0, 10), np.uint8)), ["empty image, shape (0, 10)"]),
        (
            lambda p: np.save(p, np.zeros((2, 64, 64, 3), np.uint8)),
            ["4-D array of shape (2, 64, 64, 3)"],
        ),
        (lambda p: np.save(p, np.zeros((5, 5), np.int64)), ["unsupported image dtype int64"]),
        (lambda p: np.save(p, np.zeros((5, 5), np.complex64)), ["unsupported image dtype"]),
        (
            lambda p: np.save(p, np.array([[None]], dtype=object), allow_pickle=True),
            ["Python objects"],
        ),
        (_write_npy_header_only, ["truncated", "200000 bytes"]),
        (lambda p: p.write_bytes(b"not a numpy file at all"), ["not a .npy file"]),
    ],
    ids=["1-D", "empty", "4-D", "int64", "complex", "object", "truncated", "not-npy"],
)
@pytest.mark.parametrize("output", ["out.npy", "out.png"])
def test_bad_npy_inputs_are_one_line_and_write_nothing(make, fragments, output, tmp_path):
    """Item 6: 1-D -> "not enough values to unpack"; (0, 10) -> "range() arg 3 must not be zero"
    and a 128-byte output; 4-D (2, 64, 64, 3) reported as (1, 1, 64, 3)."""
    source = tmp_path / "in.npy"
    make(source)
    result = run_cli("apply", source, "-k", "sharpen", "-o", tmp_path / output)
    assert_failure(result, 1, "in.npy", *fragments)
    assert names_in(tmp_path) == ["in.npy"]


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _corrupted(data: bytes) -> bytes:
    middle = len(data) // 2
    return (
        data[:middle] + bytes(b ^ 0x5A for b in data[middle : middle + 512]) + data[middle + 512 :]
    )


@pytest.mark.parametrize(
    "suffix, damage",
    [
        (".png", _truncated),
        (".png", _corrupted),
        (".tif", _truncated),
        (".tif", _corrupted),
        (".jpg", _truncated),  # flipped bytes in a JPEG decode to (wrong) pixels: undetectable
    ],
    ids=["png-truncated", "png-corrupt", "tif-truncated", "tif-corrupt", "jpg-truncated"],
)
def test_damaged_images_are_one_line_and_write_nothing(suffix, damage, tmp_path, rng):
    """Items 4 and 6: corrupt and truncated images end in one line, exit 1, no output."""
    image = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    source = tmp_path / f"in{suffix}"
    if suffix == ".tif":
        import tifffile

        tifffile.imwrite(source, image, compression="lzw", photometric="rgb", rowsperstrip=8)
    else:
        cv2.imwrite(str(source), image)
    source.write_bytes(damage(source.read_bytes()))
    result = run_cli("apply", source, "-k", "sharpen", "-o", tmp_path / "out.npy")
    assert_failure(result, 1, f"in{suffix}")
    assert names_in(tmp_path) == [f"in{suffix}"]


def test_a_missing_or_unreadable_input_is_one_line(tmp_path):
    result = run_cli("apply", tmp_path / "missing.png", "-k", "sharpen", "-o", tmp_path / "o.png")
    assert_failure(result, 1, "no such file", "missing.png")
    (tmp_path / "adir.png").mkdir()
    result = run_cli("apply", tmp_path / "adir.png", "-k", "sharpen", "-o", tmp_path / "o.png")
    assert_failure(result, 1, "adir.png", "directory")
    (tmp_path / "empty.png").write_bytes(b"")
    result = run_cli("apply", tmp_path / "empty.png", "-k", "sharpen", "-o", tmp_path / "o.png")
    assert_failure(result, 1, "empty.png", "empty")
    assert names_in(tmp_path) == ["adir.png", "empty.png"]


# --- item 7: write errors say what is wrong ----------------------------------------------------


@pytest.mark.parametrize("suffix", [".png", ".npy", ".tif", ".zarr"])
def test_write_errors_name_the_cause(suffix, photo_png, tmp_path):
    """Item 7: a missing directory, or .npy/.tif in a bad place, gave raw tracebacks."""
    result = run_cli("apply", photo_png, "-k", "sharpen", "-o", tmp_path / "nowhere" / f"o{suffix}")
    assert_failure(result, 3, f"nowhere/o{suffix}", "directory", "does not exist")
    (tmp_path / "afile").write_text("a file")
    result = run_cli("apply", photo_png, "-k", "sharpen", "-o", tmp_path / "afile" / f"o{suffix}")
    assert_failure(result, 3, "afile is a file, not a directory")
    if suffix != ".zarr":
        (tmp_path / f"adir{suffix}").mkdir()
        result = run_cli("apply", photo_png, "-k", "sharpen", "-o", tmp_path / f"adir{suffix}")
        assert_failure(result, 3, f"adir{suffix}", "is a directory")
        (tmp_path / f"adir{suffix}").rmdir()
    assert names_in(tmp_path) == ["afile"]


@pytest.mark.parametrize("suffix", [".png", ".npy", ".tif"])
def test_a_read_only_directory_is_a_write_error(suffix, photo_png, tmp_path):
    """Item 7: a read-only directory with .png said "choose a format that holds it"."""
    if os.geteuid() == 0:
        pytest.skip(
            "running as root: directory permissions do not stop root from writing "
            "(the parent-is-a-file and missing-directory cases are tested for root too)"
        )
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        result = run_cli("apply", photo_png, "-k", "sharpen", "-o", locked / f"o{suffix}")
        assert_failure(result, 3, f"o{suffix}", "permission denied")
        assert names_in(locked) == []
    finally:
        locked.chmod(0o755)


# --- item 8: the smaller ones ---------------------------------------------------------------


def test_a_missing_kernel_file_says_no_such_file(photo_png, tmp_path):
    """Item 8: ``-k nofile.npy`` said "unknown kernel"."""
    result = run_cli("apply", photo_png, "-k", tmp_path / "nofile.npy", "-o", tmp_path / "o.png")
    assert_failure(result, 1, "no such file", "nofile.npy")
    result = run_cli("apply", photo_png, "-k", "sharpenn", "-o", tmp_path / "o.png")
    assert_failure(result, 1, "unknown kernel 'sharpenn'", "Did you mean 'sharpen'")
    assert names_in(tmp_path) == []


@pytest.mark.parametrize(
    "content, fragment",
    [
        (np.array([1.0, 2.0, 3.0]), "must be 2-D"),
        (np.array([[1.0, np.nan]]), "NaN"),
        (b"garbage", "cannot read kernel"),
    ],
    ids=["1-D", "nan", "corrupt"],
)
def test_bad_kernel_files_are_one_line(content, fragment, photo_png, tmp_path):
    kernel = tmp_path / "k.npy"
    if isinstance(content, bytes):
        kernel.write_bytes(content)
    else:
        np.save(kernel, content)
    result = run_cli("apply", photo_png, "-k", kernel, "-o", tmp_path / "o.png")
    assert_failure(result, 1, "k.npy", fragment)
    assert names_in(tmp_path) == ["k.npy"]


def test_border_accepts_the_opencv_constants(photo_png, tmp_path):
    """Item 8: ``--border 4`` was refused though the help lists the OpenCV constants."""
    source = cv2.imread(str(photo_png), cv2.IMREAD_UNCHANGED)
    for number, mode in [(4, cv2.BORDER_REFLECT_101), (1, cv2.BORDER_REPLICATE)]:
        target = tmp_path / f"b{number}.png"
        result = run_cli("apply", photo_png, "-k", "sharpen", "--border", number, "-o", target)
        assert result.returncode == 0, result.stderr
        expected = cv2.filter2D(source, -1, kernels.sharpen, borderType=mode)
        np.testing.assert_array_equal(cv2.imread(str(target), cv2.IMREAD_UNCHANGED), expected)
    assert "4 reflect101" in " ".join(run_cli("apply", "--help").stdout.split())


def test_value_without_a_constant_border_is_a_usage_error(photo_png, tmp_path):
    """Item 8: ``--value`` was silently ignored without ``--border constant``."""
    result = run_cli("apply", photo_png, "-k", "sharpen", "--value", 9, "-o", tmp_path / "o.png")
    assert_failure(result, 2, "--value", "--border constant")
    assert names_in(tmp_path) == []
    result = run_cli(
        "apply", photo_png, "-k", "box3", "--border", "constant", "--value", 255,
        "-o", tmp_path / "o.png",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    source = cv2.imread(str(photo_png), cv2.IMREAD_UNCHANGED)
    expected = gpuconv.convolve(source, "box3", border="constant", value=255.0)
    np.testing.assert_array_equal(
        cv2.imread(str(tmp_path / "o.png"), cv2.IMREAD_UNCHANGED), expected
    )


def test_chains_are_rounded_once_at_the_end(camera_png, tmp_path):
    """Item 8: ``-k sobel_x -k sobel_x`` rounded to uint8 between the kernels (-1020 where the
    float chain gives -6748), undocumented. Now float64 between kernels, or ``--intermediate
    input`` for the old per-kernel rounding, and both are in ``--help``."""
    grey = cv2.imread(str(camera_png), cv2.IMREAD_UNCHANGED)
    result = run_cli(
        "apply", camera_png, "-k", "sobel_x", "-k", "sobel_x", "--dtype", "float32",
        "-o", tmp_path / "float.npy",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    float_chain = cv2.filter2D(
        cv2.filter2D(grey.astype(np.float64), -1, kernels.sobel_x), -1, kernels.sobel_x
    )
    written = np.load(tmp_path / "float.npy")
    np.testing.assert_array_equal(written, float_chain.astype(np.float32))
    assert written.min() == -6748
    result = run_cli(
        "apply", camera_png, "-k", "sobel_x", "-k", "sobel_x", "--dtype", "int16",
        "--intermediate", "input", "-o", tmp_path / "rounded.npy",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rounded = cv2.filter2D(cv2.filter2D(grey, -1, kernels.sobel_x), cv2.CV_16S, kernels.sobel_x)
    np.testing.assert_array_equal(np.load(tmp_path / "rounded.npy"), rounded)
    assert rounded.min() == -1020
    helptext = " ".join(run_cli("apply", "--help").stdout.split())
    assert "float64 between kernels, rounded once at the end" in helptext


def test_statistics_are_one_readable_line(tmp_path, rng):
    """Item 8: large-file runs printed their statistics as a Python dict."""
    np.save(tmp_path / "in.npy", rng.integers(0, 256, (300, 200), dtype=np.uint8))
    result = run_cli(
        "apply", tmp_path / "in.npy", "-k", "sharpen", "--band-rows", "64", "-o", tmp_path / "o.npy"
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"wrote {tmp_path / 'o.npy'}: 200x300 grey")
    assert "5 bands of up to 64 rows" in lines[0]
    assert "{" not in lines[0] and "'shape'" not in lines[0]
    assert result.stderr == ""  # no progress bar when stderr is not a terminal


def test_usage_errors_are_one_line_with_exit_2(tmp_path):
    result = run_cli("apply", "in.png", "-k", "sharpen")
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1 and "-o/--output" in result.stderr


def test_debug_shows_the_traceback(tmp_path):
    result = run_cli("apply", tmp_path / "missing.png", "-k", "sharpen", "-o", tmp_path / "o.png")
    assert "Traceback" not in result.stderr
    result = run_cli(
        "apply", tmp_path / "missing.png", "-k", "sharpen", "-o", tmp_path / "o.png", "--debug"
    )
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("gpuconv apply: error: no such file")


def test_an_unexpected_exception_is_an_internal_error(monkeypatch, capsys, photo_png, tmp_path):
    from gpuconv import _outofcore, cli

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(_outofcore, "apply_file", broken)
    code = cli.main(["apply", str(photo_png), "-k", "sharpen", "-o", str(tmp_path / "o.png")])
    assert code == cli.EXIT_INTERNAL == 70
    error = capsys.readouterr().err
    assert len(error.splitlines()) == 1
    assert "internal error: ZeroDivisionError: a bug" in error and "--debug" in error


def test_readme_and_help_list_every_exit_code():
    """Item 4 (documented exit codes): the README's table and ``--help`` name each code."""
    from gpuconv.cli import EXIT_CODES

    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Command line") : readme.index("## Performance")]
    helptext = run_cli("--help").stdout
    for code in EXIT_CODES:
        assert f"| {code} |" in section, code
        assert f"  {code} " in helptext, code


# --- the Python API ------------------------------------------------------------------------


def test_convolve_takes_nested_lists_and_pil_images():
    """Done means: the Python API takes nested lists and PIL images (through numpy.asarray)."""
    from PIL import Image

    result = gpuconv.convolve([[1.0, 2, 3], [4, 5, 6]], "box3")
    assert isinstance(result, np.ndarray) and result.shape == (2, 3)
    np.testing.assert_allclose(
        result, cv2.filter2D(np.array([[1.0, 2, 3], [4, 5, 6]]), -1, kernels.box3)
    )
    rgb = np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    from_pil = gpuconv.convolve(Image.fromarray(rgb), "sharpen")
    assert isinstance(from_pil, np.ndarray)
    np.testing.assert_array_equal(from_pil, cv2.filter2D(rgb, -1, kernels.sharpen))
    with pytest.raises(TypeError, match="unsupported image dtype int64"):
        gpuconv.convolve([[1, 2], [3, 4]], "box3")  # Python ints: int64, as numpy makes them
