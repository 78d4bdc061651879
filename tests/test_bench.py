"""The benchmark module: structures, ratios and the CLI run (no timing assertions).

Speed is measured by ``gpuconv bench``, never asserted here; these tests
check that what it reports is computed correctly from what it measured.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import cv2  # a core dependency (opencv-python-headless): never skipped
import numpy as np
import pytest
from support import reference

from gpuconv import bench, kernels


def _arguments(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_every_implementation_computes_the_same_correlation():
    image = bench.bench_image(48, "uint8")
    kernel = kernels.get("sobel_x")
    table = bench.implementations(["numpy"], peers=True)
    assert {"gpuconv:numpy", "cv2.filter2D", "scipy.ndimage.correlate"} <= set(table)
    expected = reference(image, kernel)
    for name in ("gpuconv:numpy", "cv2.filter2D"):
        np.testing.assert_array_equal(
            np.asarray(table[name](image, kernel)), expected, err_msg=name
        )
    # scipy truncates instead of rounding, but an integer kernel has integer sums:
    # compare the float responses.
    floats = image.astype(np.float32)
    np.testing.assert_allclose(
        table["scipy.ndimage.correlate"](floats, kernel), reference(floats, kernel), atol=1e-4
    )


def test_implementations_leave_out_peers_and_unknown_backends_fail():
    assert set(bench.implementations(["numpy"], peers=False)) == {"gpuconv:numpy"}
    with pytest.raises(ValueError, match="unknown backend"):
        bench.implementations(["opencl"])


def test_measure_returns_one_consistent_row_per_kernel_and_implementation():
    image = bench.bench_image(40, "float32")
    chosen = bench.bench_kernels(["sharpen", "random5"])
    table = bench.implementations(["numpy"], peers=True)
    rows = bench.measure(image, chosen, table, repeats=3, warmup=1)
    assert len(rows) == len(chosen) * len(table)
    assert {(row.kernel, row.implementation) for row in rows} == {
        (kernel, name) for kernel in chosen for name in table
    }
    for row in rows:
        assert row.shape == (40, 40) and row.dtype == "float32" and row.repeats == 3
        assert row.median_ms > 0
        assert math.isclose(row.mpixels_per_s, 40 * 40 / (row.median_ms / 1e3) / 1e6)


def test_a_slow_warm_up_call_is_the_only_measurement(monkeypatch):
    monkeypatch.setattr(bench, "SLOW_CALL_SECONDS", 0.0)  # every call counts as slow
    calls = []
    rows = bench.measure(
        np.zeros((8, 8), np.uint8),
        {"identity": kernels.get("identity")},
        {"counting": lambda image, kernel: calls.append(1)},
        repeats=5,
        warmup=1,
    )
    assert [row.repeats for row in rows] == [1] and len(calls) == 1


def test_a_slow_first_gpuconv_call_that_compiled_is_not_the_measurement(monkeypatch):
    """numba's first call on a cold cache compiles for seconds; the bench must time calls."""
    monkeypatch.setattr(bench, "SLOW_CALL_SECONDS", 0.05)
    calls = []

    def compiling_first(image, kernel):
        calls.append(1)
        if len(calls) == 1:
            time.sleep(0.1)  # the compile

    def always_slow(image, kernel):
        time.sleep(0.06)

    rows = bench.measure(
        np.zeros((8, 8), np.uint8),
        {"identity": kernels.get("identity")},
        {"gpuconv:numba": compiling_first, "scipy.ndimage.correlate": always_slow},
        repeats=3,
        warmup=1,
    )
    by_name = {row.implementation: row for row in rows}
    assert by_name["gpuconv:numba"].repeats == 3 and len(calls) == 2 + 3
    assert by_name["gpuconv:numba"].median_ms < 50
    assert by_name["scipy.ndimage.correlate"].repeats == 1  # a peer is not timed twice


def test_ratios_and_summary_are_computed_from_the_measured_times():
    rows = [
        bench.Measurement("gpuconv:numba", "a", (4, 4), "uint8", 2.0, 8.0, 5),
        bench.Measurement("cv2.filter2D", "a", (4, 4), "uint8", 3.0, 5.3, 5),
        bench.Measurement("gpuconv:numba", "b", (4, 4), "uint8", 8.0, 2.0, 5),
        bench.Measurement("cv2.filter2D", "b", (4, 4), "uint8", 2.0, 8.0, 5),
        bench.Measurement("gpuconv:numba", "c", (4, 4), "uint8", 1.0, 16.0, 5),  # no cv2 row
    ]
    ratios = bench.ratios(rows, "cv2.filter2D")
    assert ratios == {
        ("gpuconv:numba", "a", (4, 4), "uint8"): 1.5,
        ("gpuconv:numba", "b", (4, 4), "uint8"): 0.25,
    }
    summary = bench.summarize(rows, peers=("cv2.filter2D",))
    mean, low, high = summary[("gpuconv:numba", "4x4 uint8", "cv2.filter2D")]
    assert math.isclose(mean, math.sqrt(1.5 * 0.25)) and (low, high) == (0.25, 1.5)
    table = bench.format_table(rows, peers=("cv2.filter2D", "scipy.ndimage.correlate"))
    assert "| 4x4 uint8 | a | gpuconv:numba | 2.00 | 8.0 | 1.50 |" in table
    assert "scipy" not in table  # a peer with no measurement gets no column
    assert f"| {math.sqrt(1.5 * 0.25):.2f} | 0.25 | 1.50 |" in table


def test_random_kernels_are_seeded_and_bank_names_resolve():
    first, second = bench.bench_kernels(["random9"]), bench.bench_kernels(["random9"])
    assert first["random9"].shape == (9, 9)
    np.testing.assert_array_equal(first["random9"], second["random9"])
    assert bench.bench_kernels(["sharpen"])["sharpen"] is kernels.get("sharpen")
    with pytest.raises(ValueError, match="unknown kernel"):
        bench.bench_kernels(["randomX"])


def test_run_writes_table_and_json_with_machine_facts(tmp_path, capsys):
    json_path, table_path = tmp_path / "out.json", tmp_path / "out.md"
    args = _arguments(
        "--backend",
        "numpy",
        "--sizes",
        "32",
        "--dtypes",
        "uint8,float32",
        "--kernels",
        "sharpen,random9",
        "--repeats",
        "1",
        "--warmup",
        "0",
        "--json",
        str(json_path),
        "--table",
        str(table_path),
        "--no-compile-times",
    )
    assert bench.run(args) == 0
    record = json.loads(json_path.read_text())
    assert record["machine"]["logical_cpus"] >= 1 and record["machine"]["numpy"] == np.__version__
    cells = {(row["implementation"], row["kernel"], row["dtype"]) for row in record["measurements"]}
    assert ("gpuconv:numpy", "random9", "float32") in cells
    assert ("cv2.filter2D", "sharpen", "uint8") in cells
    printed = capsys.readouterr().out
    assert "x vs cv2.filter2D" in printed
    assert table_path.read_text().startswith("Command: `")


def test_run_rejects_bad_options_with_a_message(capsys):
    assert bench.run(_arguments("--kernels", "no_such_kernel", "--no-peers")) == 1
    assert "unknown kernel" in capsys.readouterr().err
    assert bench.run(_arguments("--dtypes", "complex64", "--no-peers")) == 1
    with pytest.raises(SystemExit):
        _arguments("--sizes", "big")


def test_cuda_request_without_its_benchmark_goes_on_with_the_host(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gpuconv.bench._cuda", None)  # import fails
    # (doctest collection may have imported it already: the package attribute goes too)
    monkeypatch.delattr(bench, "_cuda", raising=False)
    args = _arguments(
        "--backend",
        "cuda",
        "--backend",
        "numpy",
        "--sizes",
        "16",
        "--dtypes",
        "uint8",
        "--kernels",
        "sharpen",
        "--repeats",
        "1",
        "--no-peers",
    )
    assert bench.run(args) == 0
    printed = capsys.readouterr().out
    assert "CUDA benchmark unavailable" in printed and "gpuconv:numpy" in printed


@pytest.mark.slow
def test_first_call_seconds_fills_a_cold_cache(tmp_path):
    pytest.importorskip("numba", reason="compile times are numba's: pip install 'gpuconv[numba]'")
    seconds = bench.first_call_seconds(str(tmp_path), dtype="uint8", kernel="sharpen")
    assert seconds > 0
    assert list(tmp_path.rglob("*.nbi")), "the cold call wrote no numba cache index"


def test_threads_option_sets_numba_and_cv2_threads(capsys):
    numba = pytest.importorskip("numba", reason="the thread option drives numba's pool")
    before = (numba.get_num_threads(), cv2.getNumThreads())
    try:
        args = _arguments(
            "--backend", "numpy", "--sizes", "8", "--dtypes", "uint8", "--kernels", "identity",
            "--repeats", "1", "--threads", "1", "--no-peers",
        )  # fmt: skip
        assert bench.run(args) == 0
        assert (numba.get_num_threads(), cv2.getNumThreads()) == (1, 1)
        too_many = numba.config.NUMBA_NUM_THREADS + 1
        assert bench.run(_arguments("--threads", str(too_many), "--no-peers")) == 1
        assert "NUMBA_NUM_THREADS" in capsys.readouterr().err
    finally:
        numba.set_num_threads(before[0])
        cv2.setNumThreads(before[1])


def test_tail_ratios_compare_ninetieth_percentiles_and_the_table_shows_them():
    rows = [
        bench.Measurement("gpuconv:numba", "a", (4, 4), "uint8", 2.0, 8.0, 9, 3.0),
        bench.Measurement("cv2.filter2D", "a", (4, 4), "uint8", 1.0, 16.0, 9, 6.0),
    ]
    assert bench.ratios(rows, "cv2.filter2D") == {("gpuconv:numba", "a", (4, 4), "uint8"): 0.5}
    tail = bench.ratios(rows, "cv2.filter2D", statistic="p90_ms")
    assert tail == {("gpuconv:numba", "a", (4, 4), "uint8"): 2.0}
    with pytest.raises(ValueError, match="statistic"):
        bench.ratios(rows, "cv2.filter2D", statistic="mean")
    table = bench.format_table(rows, peers=("cv2.filter2D",), tail=True)
    assert "| 4x4 uint8 | a | gpuconv:numba | 2.00 | 3.00 | 8.0 | 0.50 | 2.00 |" in table
    assert "| gpuconv:numba | 4x4 uint8 | cv2.filter2D | 2.00 | 2.00 | 2.00 |" in table
    assert "p90" not in bench.format_table(rows, peers=("cv2.filter2D",))


def test_measure_records_a_ninetieth_percentile_at_or_above_the_median():
    image = np.zeros((8, 8), np.uint8)
    delays = iter([0.0] + [0.001] * 8 + [0.02, 0.02])  # warm-up, 8 fast calls, 2 slow ones

    def call(image, kernel):
        time.sleep(next(delays))

    (row,) = bench.measure(image, {"k": np.ones((1, 1))}, {"f": call}, repeats=10, warmup=1)
    assert row.repeats == 10
    assert row.median_ms < 10 < row.p90_ms  # two slow calls of ten reach the 90th percentile


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="counts processes in Linux /proc")
def test_busy_option_runs_spinning_processes_only_while_timing(tmp_path, monkeypatch):
    seen = []
    original = bench.measure

    def measure_and_count(*args, **kwargs):
        seen.append(_spinning_children())
        return original(*args, **kwargs)

    monkeypatch.setattr(bench, "measure", measure_and_count)
    args = _arguments(
        "--backend", "numpy", "--sizes", "8", "--dtypes", "uint8", "--kernels", "identity",
        "--repeats", "2", "--no-peers", "--busy", "2", "--json", str(tmp_path / "r.json"),
    )  # fmt: skip
    assert bench.run(args) == 0
    assert seen == [2]
    assert _spinning_children() == 0  # killed and reaped at the end
    assert json.loads((tmp_path / "r.json").read_text())["busy"] == 2
    assert bench.run(_arguments("--busy", "-1", "--no-peers")) == 1


def _spinning_children() -> int:
    """Live child processes of this one running the --busy spin loop (Linux /proc)."""
    count = 0
    for status in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = status.read_text().rsplit(")", 1)[1].split()
            cmdline = (status.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and fields[0] != "Z" and b"while True" in cmdline:
            count += 1
    return count


def test_peers_option_keeps_only_the_named_peers(tmp_path, capsys):
    json_path = tmp_path / "r.json"
    args = _arguments(
        "--backend", "numpy", "--sizes", "8", "--dtypes", "uint8", "--kernels", "sharpen",
        "--repeats", "1", "--peers", "cv2.filter2D", "--json", str(json_path),
        "--no-compile-times",
    )  # fmt: skip
    assert bench.run(args) == 0
    names = {row["implementation"] for row in json.loads(json_path.read_text())["measurements"]}
    assert names == {"gpuconv:numpy", "cv2.filter2D"}
    assert bench.run(_arguments("--peers", "no_such_peer", "--no-compile-times")) == 1
    assert "no_such_peer" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["/venv/bin/gpuconv", "bench", "--sizes", "256"], "gpuconv bench --sizes 256"),
        (["/repo/gpuconv/__main__.py", "bench", "--sizes", "256"], "gpuconv bench --sizes 256"),
        (["benchmarks/run_cpu.py", "--repeats", "7"], "python benchmarks/run_cpu.py --repeats 7"),
    ],
)
def test_results_files_name_the_command_that_made_them(monkeypatch, argv, expected):
    from gpuconv.bench import _machine

    monkeypatch.setattr(sys, "argv", argv)
    for name in ("NUMBA_NUM_THREADS", "NUMBA_THREADING_LAYER", "OMP_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    assert _machine._command_line() == expected
    monkeypatch.setenv("NUMBA_NUM_THREADS", "2")
    assert _machine._command_line() == f"NUMBA_NUM_THREADS=2 {expected}"
