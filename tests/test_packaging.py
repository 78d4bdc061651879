"""Packaging: environment.yml matches pyproject.toml; the wheel ships kernels_cuda/ and the
emulator's headers."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib
import yaml

ROOT = Path(__file__).resolve().parent.parent
# PyPI name -> conda-forge name, where they differ.
CONDA_NAME = {
    "opencv-python-headless": "py-opencv",
    "matplotlib": "matplotlib-base",
    "nvidia-cuda-nvrtc-cu12": "cuda-nvrtc",
    "nvidia-cuda-nvdisasm": "cuda-nvdisasm",
    "nvidia-cuda-cuobjdump": "cuda-cuobjdump",
    "torch": "pytorch",
}
# Extras that environment.yml does not carry, and why.
NOT_IN_CONDA_ENV = {
    "cupy-cuda12x",  # GPU wheels: `conda install cupy` instead
    "cupy-cuda13x",
    "pyvips",  # gpuconv[vips]: benchmarks/vips_bench.py's optional peer, not a dev/test package
}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement.strip(), maxsplit=1)[0].lower()


def _pyproject_names() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {_name(r) for r in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        names |= {_name(r) for r in extra if not r.startswith("gpuconv")}
    names |= {
        _name(r)
        for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    }
    return names - NOT_IN_CONDA_ENV


def test_environment_yml_matches_pyproject():
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert environment["channels"] == ["conda-forge"]
    conda = {_name(d) for d in environment["dependencies"] if isinstance(d, str)} - {
        "python",
        "pip",
    }
    expected = {CONDA_NAME.get(name, name) for name in _pyproject_names()}
    assert conda == expected, (
        f"only in environment.yml: {conda - expected}; only in pyproject: {expected - conda}"
    )


@pytest.mark.slow
def test_wheel_ships_the_cuda_sources(tmp_path):
    hatchling = subprocess.run([sys.executable, "-c", "import hatchling"], capture_output=True)
    if hatchling.returncode != 0:
        pytest.skip("hatchling is not installed in this environment (it is in the test extra)")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("gpuconv-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    sources = [
        p for p in (ROOT / "kernels_cuda").rglob("*") if p.is_file() and p.name != ".gitkeep"
    ]
    for source in sources:
        relative = source.relative_to(ROOT / "kernels_cuda").as_posix()
        assert f"gpuconv/kernels_cuda/{relative}" in shipped, relative
    # The emulator's C++ headers live inside the package, beside its Python side.
    emulator = ROOT / "gpuconv" / "_emulator"
    headers = sorted((emulator / "include").glob("*.h"))
    assert headers
    for source in [*headers, emulator / "README.md"]:
        relative = source.relative_to(ROOT).as_posix()
        assert relative in shipped, relative
    assert "gpuconv/__init__.py" in shipped and "gpuconv/_backends/numpy.py" in shipped
    assert not any(name.startswith("tests/") for name in shipped)


def test_tiff_codecs_are_core_dependencies():
    """``gpuconv apply`` reads TIFF in every install (issue 13): tifffile and its codecs
    (imagecodecs: LZW, as cv2.imwrite writes it) are core dependencies, not an extra's."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {_name(requirement) for requirement in project["dependencies"]}
    assert {"tifffile", "imagecodecs"} <= core
