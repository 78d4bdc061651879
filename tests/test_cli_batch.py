"""``gpuconv apply IN... --out-dir DIR``: many files in one process (issue 15).

Each output equals ``cv2.filter2D`` on its input (a peer no one here wrote), each is
written atomically under the input's name, and one bad file is reported without
stopping the others.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data
from support import reference

import gpuconv
from gpuconv import kernels
from gpuconv.cli import EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, main


def _write_photos(directory, count: int) -> list:
    photo = np.ascontiguousarray(data.astronaut()[:64, :80, ::-1])  # BGR, as OpenCV writes
    paths = []
    for index in range(count):
        path = directory / f"shot{index}.png"
        cv2.imwrite(str(path), np.roll(photo, 7 * index, axis=1))
        paths.append(path)
    return paths


def _expected(path) -> np.ndarray:
    return cv2.filter2D(
        cv2.imread(str(path)), -1, kernels.get("sharpen"), borderType=cv2.BORDER_REFLECT_101
    )


def test_every_file_goes_to_out_dir_under_its_name_as_cv2_filters_it(tmp_path, capsys):
    inputs = _write_photos(tmp_path, 5)
    out_dir = tmp_path / "out" / "nested"  # created when missing
    code = main(["apply", *map(str, inputs), "-k", "sharpen", "--out-dir", str(out_dir), "-q"])
    assert code == EXIT_OK
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(p.name for p in inputs)
    for path in inputs:
        np.testing.assert_array_equal(cv2.imread(str(out_dir / path.name)), _expected(path))
    assert "wrote 5 of 5 files" in capsys.readouterr().out


def test_a_directory_stands_for_the_image_files_inside_it(tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    inputs = _write_photos(source, 3)
    (source / "notes.txt").write_text("not an image")
    out_dir = tmp_path / "out"
    assert main(["apply", str(source), "-k", "sharpen", "--out-dir", str(out_dir), "-q"]) == 0
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(p.name for p in inputs)


def test_a_bad_file_is_reported_at_the_end_and_the_others_complete(tmp_path, capsys):
    inputs = _write_photos(tmp_path, 3)
    broken = tmp_path / "broken.png"
    broken.write_bytes(inputs[0].read_bytes()[:100])  # truncated
    missing = tmp_path / "missing.png"
    out_dir = tmp_path / "out"
    arguments = [*map(str, inputs), str(broken), str(missing)]
    code = main(["apply", *arguments, "-k", "sharpen", "--out-dir", str(out_dir), "-q"])
    assert code == EXIT_SOME_FAILED
    captured = capsys.readouterr()
    assert "wrote 3 of 5 files" in captured.out
    errors = captured.err.splitlines()
    assert len(errors) == 2
    assert any(str(broken) in line for line in errors)
    assert any(str(missing) in line and "no such file" in line for line in errors)
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(p.name for p in inputs)
    for path in inputs:
        np.testing.assert_array_equal(cv2.imread(str(out_dir / path.name)), _expected(path))


def test_two_inputs_with_one_name_are_refused_before_anything_is_written(tmp_path, capsys):
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir(), second.mkdir()
    (one,) = _write_photos(first, 1)
    (other,) = _write_photos(second, 1)
    out_dir = tmp_path / "out"
    code = main(["apply", str(one), str(other), "-k", "sharpen", "--out-dir", str(out_dir)])
    assert code == EXIT_USAGE
    assert "would both be written" in capsys.readouterr().err
    assert not out_dir.exists()


@pytest.mark.parametrize(
    "arguments, fragment",
    [
        (["--out-dir", "DIR", "-o", "x.png"], "either -o/--output"),
        ([], "either -o/--output"),
        (["-o", "x.png"], "names one output"),
    ],
)
def test_output_options_are_one_or_the_other(tmp_path, capsys, arguments, fragment):
    (image,) = _write_photos(tmp_path, 1)
    images = [str(image)] * (2 if fragment == "names one output" else 1)
    arguments = [str(tmp_path / a) if a == "DIR" else a for a in arguments]
    code = main(["apply", *images, "-k", "sharpen", *arguments])
    assert code == EXIT_USAGE
    assert fragment in capsys.readouterr().err


def test_info_startup_reports_each_cost_of_a_fresh_process(capsys):
    assert main(["info", "--startup"]) == EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    figures = lines[lines.index("start-up of a fresh process (seconds, median of 3):") + 1 :]
    rows = {line[:60].strip(): line[60:].split(None, 1) for line in figures}
    assert list(rows)[0] == "import gpuconv" and len(rows) == 5
    assert all(float(row[0]) > 0 for row in rows.values())
    # OpenCV stands in for sharpen on uint8 (same bits); a float kernel on 16 Mpixel costs
    # the reference more than loading numba, unless a real GPU takes it; a named backend
    # loads numba.
    cuda = gpuconv.backends()["cuda"]
    real_gpu = bool(cuda) and not cuda.emulated
    assert rows["first call, 512 x 512 RGB, sharpen, auto"][1] == "numba not loaded"
    assert rows["first call, 4096 x 4096, sharpen, auto"][1] == "numba not loaded"
    assert rows["first call, 4096 x 4096, gaussian5, auto"][1] == (
        "numba not loaded" if real_gpu else "numba loaded"
    )
    assert rows["first call, 512 x 512 RGB, sharpen, backend='numba'"][1] == "numba loaded"


def test_each_file_is_flushed_and_the_directory_once_at_the_end(tmp_path, monkeypatch):
    """Every output is flushed (fsync) before its rename; the directory once, after all."""
    from gpuconv import _atomic

    inputs = _write_photos(tmp_path, 4)
    out_dir = tmp_path / "out"
    flushed = []
    real_fsync_path = _atomic._fsync_path

    def recording_fsync_path(path):
        flushed.append(path)
        real_fsync_path(path)

    monkeypatch.setattr(_atomic, "_fsync_path", recording_fsync_path)
    code = main(["apply", *map(str, inputs), "-k", "sharpen", "--out-dir", str(out_dir), "-q"])
    assert code == EXIT_OK
    files = [path for path in flushed if path != out_dir]
    assert len(files) == 4 and all(_atomic.TEMPORARY_MARK in path.name for path in files)
    assert flushed[-1] == out_dir and flushed.count(out_dir) == 1
    for path in inputs:  # BGR kept from decoding to encoding: the colours are right
        np.testing.assert_array_equal(cv2.imread(str(out_dir / path.name)), _expected(path))


def test_a_single_apply_flushes_its_directory(tmp_path, monkeypatch):
    from gpuconv import _atomic

    (source,) = _write_photos(tmp_path, 1)
    flushed = []
    real_fsync_path = _atomic._fsync_path
    monkeypatch.setattr(
        _atomic, "_fsync_path", lambda path: (flushed.append(path), real_fsync_path(path))
    )
    assert main(["apply", str(source), "-k", "sharpen", "-o", str(tmp_path / "o.png"), "-q"]) == 0
    assert flushed[-1] == tmp_path and len(flushed) == 2  # the file, then its directory


@pytest.mark.parametrize("mode", ["single npy", "batch", "stack"])
def test_no_fsync_flushes_nothing_and_writes_the_same_pixels(tmp_path, monkeypatch, mode):
    """``--no-fsync``: no file or directory flushed, no writeback started; same output."""
    from gpuconv import _atomic, _image_files

    synced = []
    monkeypatch.setattr(_atomic, "_fsync_path", lambda path: synced.append(path))
    monkeypatch.setattr(_atomic, "_fsync_tree", lambda path: synced.append(path))
    monkeypatch.setattr(_image_files, "start_writeback", lambda *args: synced.append(args))
    image = np.random.default_rng(5).integers(0, 256, (70, 40), dtype=np.uint8)
    if mode == "batch":
        inputs = list(map(str, _write_photos(tmp_path, 3)))
        outputs = [tmp_path / "out" / Path(path).name for path in inputs]
        target = ["--out-dir", str(tmp_path / "out")]
    else:
        inputs = [str(tmp_path / "in.npy")]
        np.save(inputs[0], image[None] if mode == "stack" else image)
        outputs = [tmp_path / "out.npy"]
        target = ["-o", str(outputs[0])] + (["--axes", "1,2"] if mode == "stack" else [])
    band_rows = ["--band-rows", "16"] if mode == "single npy" else []  # several bands
    arguments = ["apply", *inputs, "-k", "sharpen", *target, *band_rows, "-q", "--no-fsync"]
    assert main(arguments) == EXIT_OK
    assert synced == []
    if mode == "batch":
        for source, output in zip(inputs, outputs):
            np.testing.assert_array_equal(cv2.imread(str(output)), _expected(Path(source)))
    else:
        expected = reference(image, "sharpen")
        written = np.load(outputs[0])
        np.testing.assert_array_equal(written[0] if mode == "stack" else written, expected)
    assert not [path for path in tmp_path.rglob("*") if _atomic.TEMPORARY_MARK in path.name]


def test_the_report_reaches_stderr_after_threads_decoded_at_once(tmp_path):
    """A whole process (file descriptor 2, not pytest's capture): the failures are printed.

    The threads of a batch hide the codecs' messages at once; each saving and restoring
    descriptor 2 on its own once left it on a deleted temporary, and the report was lost.
    """
    import subprocess
    import sys

    photo = np.ascontiguousarray(data.astronaut()[:, :, ::-1])  # 512 x 512: decodes overlap
    inputs = [tmp_path / f"big{index}.png" for index in range(8)]
    for index, path in enumerate(inputs):
        cv2.imwrite(str(path), np.roll(photo, index, axis=0))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    done = subprocess.run(
        [sys.executable, "-m", "gpuconv", "apply", *map(str, [*inputs, bad]), "-k", "sharpen"]
        + ["--out-dir", str(tmp_path / "out"), "-q"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == EXIT_SOME_FAILED
    assert f"gpuconv apply: error: {bad}: cannot read {bad}" in done.stderr
    assert "wrote 8 of 9 files" in done.stdout


def test_a_batch_announces_its_files_to_the_ski_rental(tmp_path, monkeypatch):
    """The files of a batch are one piece of work: ``auto`` is told how many are coming,
    so that numba loads at the first file where the whole batch pays for it."""
    import contextlib

    pytest.importorskip("numba", reason="numba is not installed: nothing to load")
    from gpuconv._backends.numba import backend

    announced = []

    @contextlib.contextmanager
    def expecting(calls):
        announced.append(calls)
        yield

    monkeypatch.setattr(backend, "expecting", expecting)
    inputs = _write_photos(tmp_path, 3)
    assert (
        main(["apply", *map(str, inputs), "-k", "sharpen", "--out-dir", str(tmp_path / "a")]) == 0
    )
    assert announced[0] == 3  # the batch first, then one band per file
    assert sorted(announced[1:]) == [1, 1, 1]


@pytest.mark.parametrize("backend, code", [("numba", 0), ("numpy", 0), ("numba", 1)])
def test_the_console_entry_flushes_runs_exit_handlers_and_keeps_the_exit_code(
    tmp_path, backend, code
):
    """``console_main`` ends a process that loaded numba with ``os._exit`` (issue 15: the
    interpreter's teardown cost 0.2-0.3 s): output, exit handlers and code must survive."""
    import subprocess
    import sys

    if backend == "numba":
        pytest.importorskip("numba", reason="numba is not installed: the quick exit is for it")
    (source,) = _write_photos(tmp_path, 1)
    if code:
        source = tmp_path / "missing.png"
    script = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('exit handler ran'))\n"
        "from gpuconv.cli import console_main\n"
        f"sys.argv = ['gpuconv', 'apply', {str(source)!r}, '-k', 'sharpen', '-o', "
        f"{str(tmp_path / 'out.png')!r}, '--backend', {backend!r}]\n"
        "console_main()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == code, done.stderr
    assert done.stdout.rstrip().endswith("exit handler ran")  # after main's own line
    if code:
        assert f"gpuconv apply: error: no such file: {source}" in done.stderr
    else:
        assert done.stdout.startswith(f"wrote {tmp_path / 'out.png'}")
        np.testing.assert_array_equal(cv2.imread(str(tmp_path / "out.png")), _expected(source))


def test_the_progress_bar_reaches_the_terminal_while_files_are_decoded(tmp_path):
    """stderr on a terminal (a pseudo-terminal here): the bar shows its updates, although
    descriptor 2 points to the codecs' message trap while threads decode and encode."""
    import os
    import subprocess
    import sys

    pytest.importorskip("tqdm", reason="tqdm is not installed: no progress bar to show")
    pty = pytest.importorskip("pty", reason="no pseudo-terminals on this platform")
    photo = np.ascontiguousarray(data.astronaut()[:, :, ::-1])
    inputs = tmp_path / "in"
    inputs.mkdir()
    for index in range(40):
        cv2.imwrite(str(inputs / f"p{index:02d}.png"), np.roll(photo, index, axis=1))
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "gpuconv", "apply", str(inputs), "-k", "sharpen"]
        + ["--out-dir", str(tmp_path / "out")],
        stdout=subprocess.DEVNULL,
        stderr=terminal,
    )
    os.close(terminal)
    shown = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the process ended: the terminal is closed
            break
        if not chunk:
            break
        shown += chunk
    os.close(controller)
    assert process.wait() == 0
    updates = [part for part in shown.decode(errors="replace").split("\r") if "file/s" in part]
    assert any("40/40" in part for part in updates)
    assert len(updates) >= 3  # the start, updates while decoding, the end
