"""benchmarks/vips_bench.py cannot rot: its options parse, and without pyvips it says so.

The benchmark itself takes minutes and needs pyvips (an optional peer, not a test
dependency); these checks take well under a second and need neither.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def vips_bench():
    spec = importlib.util.spec_from_file_location(
        "vips_bench", ROOT / "benchmarks" / "vips_bench.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_defaults_are_the_issue_15_cases(vips_bench):
    args = vips_bench.build_parser().parse_args([])
    assert (args.size, args.files, args.repeats) == (16384, 200, 3)
    assert args.cases == ["big", "batch", "single"]
    assert args.output is None and args.scratch is None


def test_options_parse(vips_bench):
    args = vips_bench.build_parser().parse_args(
        ["--size", "8192", "--files", "20", "--repeats", "5", "--cases", "batch, single"]
    )
    assert (args.size, args.files, args.repeats, args.cases) == (8192, 20, 5, ["batch", "single"])


@pytest.mark.parametrize("cases", ["big,huge", "", " , "])
def test_an_unknown_case_is_a_usage_error(vips_bench, cases, capsys):
    with pytest.raises(SystemExit) as exit_info:
        vips_bench.build_parser().parse_args(["--cases", cases])
    assert exit_info.value.code == 2
    assert "choose from big, batch, single" in capsys.readouterr().err


def test_without_pyvips_it_says_so_and_exits_1(vips_bench, monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "pyvips", None)  # import pyvips raises ImportError
    output = tmp_path / "results.md"
    assert vips_bench.main(["--cases", "single", "--output", str(output)]) == 1
    error = capsys.readouterr().err
    assert "pyvips is not installed" in error and "pip install pyvips pyvips-binary" in error
    assert not output.exists()  # nothing measured, nothing written


def test_the_script_exits_1_without_pyvips_as_a_process(tmp_path):
    """Run as ``python benchmarks/vips_bench.py`` with pyvips hidden: exit 1, one clear line."""
    hide = (
        "import sys, runpy; sys.modules['pyvips'] = None; "
        f"sys.argv = ['vips_bench.py', '--cases', 'single']; "
        f"runpy.run_path({str(ROOT / 'benchmarks' / 'vips_bench.py')!r}, run_name='__main__')"
    )
    done = subprocess.run(
        [sys.executable, "-c", hide], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 1
    assert done.stderr.strip().startswith("vips_bench: pyvips is not installed")
    assert done.stdout == ""
