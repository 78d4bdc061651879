"""benchmarks/gpu_check.sh cannot rot: its --dry-run runs every step that needs no GPU."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STEPS = (
    "nvidia-smi",
    "kernel-times",
    "memcheck",
    "racecheck",
    "synccheck",
    "pytest",
    "bench",
    "ncu",
    "variants",
    "fft",
)


def _dry_run(out, timeout: int, **variables) -> subprocess.CompletedProcess:
    """``gpu_check.sh --dry-run`` writing to ``out``, every step unless STEPS is given."""
    environment = dict(os.environ, OUT=str(out), PYTHON=sys.executable)
    environment.pop("STEPS", None)
    environment.update(variables)
    return subprocess.run(
        ["bash", "benchmarks/gpu_check.sh", "--dry-run"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.slow
def test_dry_run_runs_every_step_and_writes_the_output_layout(tmp_path):
    result = _dry_run(tmp_path, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = (tmp_path / "summary.txt").read_text().splitlines()
    for step in STEPS:
        assert any(line.startswith(f"{step}: exit 0 ") for line in summary), (step, summary)
    assert summary[-1] == "0 step(s) failed"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu_check_logs.tar.gz", "summary.txt"]
    with tarfile.open(tmp_path / "gpu_check_logs.tar.gz") as archive:
        logs = {Path(name).name: archive.extractfile(name) for name in archive.getnames()}
        names = {name for name, handle in logs.items() if handle is not None}
        assert {f"{step}.log" for step in STEPS} <= names
        assert "kernel_times.json" in names  # the dry run writes the planned cases
        times = logs["kernel-times.log"].read().decode()
    # every case of the kernel-time script was planned, window and shared-memory launch;
    # where gpuconv_window_dp4a runs, also the gpuconv_window it replaced
    assert "sharpen uint8 C=3: gpuconv_window_dp4a<" in times
    assert "| gpuconv_window<unsigned char, unsigned char, int, 3, 3, 3, 8, false> |" in times
    assert "| gpuconv_direct<unsigned char, unsigned char, int, 3, 3>" in times


def test_a_failing_step_makes_the_run_fail(tmp_path):
    result = _dry_run(tmp_path, timeout=120, PYTHON="false", STEPS="kernel-times")
    assert result.returncode != 0
    assert "1 step(s) failed" in (tmp_path / "summary.txt").read_text()


def test_a_spent_budget_runs_no_further_step_and_says_so(tmp_path):
    """BUDGET caps the whole run (one lease call): a step with no time left is not started,
    and is counted as failed, so a clipped run never reads as a clean one."""
    result = _dry_run(tmp_path, timeout=120, BUDGET="0")
    assert result.returncode != 0
    summary = (tmp_path / "summary.txt").read_text().splitlines()
    for step in STEPS:
        assert f"{step}: not run, the budget of 0 s is spent" in summary, (step, summary)
    assert summary[-1] == f"{len(STEPS)} step(s) failed"
