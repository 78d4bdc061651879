"""Compile checks of kernels_cuda/ that need no GPU.

- Every template instantiation the backend can request
  (``_cuda_launch.every_name_expression()``) compiles through NVRTC with the
  production options: to machine code for sm_90, where ptxas must report no
  spill and no stack frame for any of them; ``make compile-check`` also compiles
  them to PTX for sm_80 (single-image instantiations: a STACK one differs from its
  twin by two pointer offsets).
- Where nvcc is installed, the uint8 and float32 instantiations compile with
  nvcc (a second front end) to machine code for sm_80 (``make compile-check``:
  and sm_90), with its per-kernel resource report, again failing on any spill.
- The tile geometry in gpuconv_common.cuh agrees with the Python launch code.

Run with ``-s`` to see the resource tables (registers, shared memory, spills).
"""

from __future__ import annotations

import concurrent.futures
import glob
import os
import re
import shutil
import subprocess

import pytest

from gpuconv._backends.cuda import launch as _cuda_launch
from gpuconv._backends.cuda import source as _cuda_source
from gpuconv._backends.cuda.window import is_stack_expression

ARCHITECTURES = ("sm_80", "sm_90")
#: ``make compile-check`` sets it: also the compile checks that repeat what the default run
#: covers (NVRTC's PTX for sm_80; nvcc for sm_90, a second front end to NVRTC's sm_90),
#: about 75 s that ``make test`` leaves out to stay within its time on 2 cores.
FULL_CHECK = os.environ.get("GPUCONV_FULL_COMPILE_CHECK") == "1"
_FULL_ONLY = pytest.mark.skipif(
    not FULL_CHECK,
    reason="repeats a check the default run makes; `make compile-check` runs it "
    "(GPUCONV_FULL_COMPILE_CHECK=1; last results in benchmarks/results/compile-check.log)",
)
#: Instantiations per NVRTC program when compiling them all in parallel.
_CHUNK = 12


def _nvrtc_reason() -> str | None:
    try:
        _cuda_source.Nvrtc()
    except OSError as error:
        return str(error)
    return None


def _nvcc() -> str | None:
    found = shutil.which("nvcc")
    if found:
        return found
    candidates = sorted(glob.glob("/usr/local/cuda*/bin/nvcc"), reverse=True)
    return candidates[0] if candidates else None


def _no_spills(records: list[dict]) -> list[dict]:
    return [
        record
        for record in records
        if record["spill_store_bytes"] or record["spill_load_bytes"] or record["stack_bytes"]
    ]


def test_tile_geometry_matches_the_header():
    header = (_cuda_source.kernels_directory() / _cuda_source.COMMON_HEADER).read_text()
    defined = dict(re.findall(r"#define (GPUCONV_\w+) (\d+)\s*$", header, re.MULTILINE))
    assert int(defined["GPUCONV_TILE_WIDTH"]) == _cuda_launch.TILE_WIDTH
    assert int(defined["GPUCONV_BLOCK_HEIGHT"]) == _cuda_launch.BLOCK_HEIGHT
    assert int(defined["GPUCONV_ROWS_PER_THREAD"]) == _cuda_launch.ROWS_PER_THREAD
    assert _cuda_launch.BLOCK == (_cuda_launch.TILE_WIDTH, _cuda_launch.BLOCK_HEIGHT, 1)


def test_every_source_file_starts_with_a_header_comment_listing_its_kernels():
    for template, file_name in _cuda_launch.SOURCE_FILES.items():
        text = (_cuda_source.kernels_directory() / file_name).read_text()
        assert text.startswith(f"// {file_name}:")
        header = text.split("#include")[0]
        assert template in header and "Kernels:" in header


@pytest.mark.skipif(_nvrtc_reason() is not None, reason=f"NVRTC: {_nvrtc_reason()}")
@pytest.mark.parametrize("architecture", ["sm_61", "sm_70"])
def test_the_byte_kernels_compile_for_gpus_without_dp4a_or_cvt_pack(architecture):
    """dp4a needs sm_61 and cvt.pack.sat sm_72; older GPUs get the plain C of
    gpuconv_dp4a_u8s8 and gpuconv_pack_u8 (before that guard, sm_61 failed in ptxas, and with
    it every window kernel of convolve_window.cu that CuPy compiles in one module)."""
    expressions = [
        "gpuconv_window_dp4a<unsigned char, unsigned char, int, 3, 3, 3, 8, false>",
        "gpuconv_box_packed<unsigned char, unsigned char, float, 7, 3, 16>",
    ]
    _, lowered, cubin = _cuda_source.nvrtc_cubin("convolve_window.cu", expressions, architecture)
    assert set(lowered) == set(expressions) and cubin


def test_local_includes_are_inlined_for_the_compile_cache():
    text = _cuda_source.source("convolve_direct.cu")
    assert "#include" not in text
    assert "gpuconv_source_index" in text


def test_resource_report_parses_ptxas_output():
    log = (
        "ptxas info    : Compiling entry function '_Z1fv' for 'sm_90'\n"
        "ptxas info    : Function properties for _Z1fv\n"
        "ptxas         .     8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads\n"
        "ptxas info    : Used 40 registers, used 1 barriers, 96 bytes smem, 420 bytes cmem[0]\n"
    )
    (record,) = _cuda_source.resource_report(log, {"_Z1fv": "f<int>"})
    assert record == dict(
        kernel="f<int>",
        architecture="sm_90",
        registers=40,
        static_shared_bytes=96,
        stack_bytes=8,
        spill_store_bytes=4,
        spill_load_bytes=12,
    )
    assert _no_spills([record]) == [record]


@pytest.mark.slow
@pytest.mark.skipif(_nvrtc_reason() is not None, reason=f"NVRTC is unavailable: {_nvrtc_reason()}")
@pytest.mark.parametrize(
    "architecture",
    [
        # sm_90: machine code (ptxas runs), every kernel's resources checked for spills.
        "sm_90",
        # sm_80: PTX only, which halves the time; ptxas for sm_80 runs in the nvcc test below
        # on the common instantiations.
        pytest.param("compute_80", marks=_FULL_ONLY),
    ],
)
def test_every_instantiation_compiles_through_nvrtc(architecture):
    machine_code = architecture.startswith("sm_")
    options = ("--ptxas-options=-v",) if machine_code else ()
    # NVRTC compiles one program on one thread (and ctypes releases the GIL): chunks of
    # each file's instantiations compile in parallel, one per CPU.
    every = _cuda_launch.every_name_expression()
    if not machine_code:
        # A STACK instantiation is its single-image twin plus two pointer offsets: sm_90
        # (and nvcc below) compile them; the PTX-only pass skips them to save CI time.
        every = {f: [e for e in es if not is_stack_expression(e)] for f, es in every.items()}
    tasks = [
        (file_name, expressions[start : start + _CHUNK])
        for file_name, expressions in every.items()
        for start in range(0, len(expressions), _CHUNK)
    ]

    def compile_chunk(task):
        file_name, expressions = task
        return expressions, _cuda_source.nvrtc_compile(
            file_name, expressions, architecture, options
        )

    records = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for expressions, (log, lowered) in pool.map(compile_chunk, tasks):
            assert set(lowered) == set(expressions)
            if machine_code:
                names = {mangled: expression for expression, mangled in lowered.items()}
                chunk_records = _cuda_source.resource_report(log, names)
                assert {record["kernel"] for record in chunk_records} == set(expressions)
                records += chunk_records
    if machine_code:
        print(f"\nNVRTC {_cuda_source.Nvrtc().version()} resource report, {architecture}:")
        print(_cuda_source.format_report(records))
        spilling = _no_spills(records)
        assert not spilling, "kernels with spills:\n" + _cuda_source.format_report(spilling)


def _window_channels(expression: str) -> int | None:
    """The channel count of a window or box instantiation (None for the other kernels)."""
    template, arguments = expression.split("<", 1)
    values = [a.strip() for a in arguments.rstrip(">").split(",")]
    position = {
        "gpuconv_window": 5,
        "gpuconv_window_dp4a": 5,
        "gpuconv_box": 4,
        "gpuconv_box_packed": 4,
        "gpuconv_box_float": 4,
    }.get(template)
    return position and int(values[position])


def _explicit_instantiations(expressions: list[str]) -> str:
    """C++ explicit instantiations of name expressions, for nvcc (which has no name_expressions)."""
    lines = []
    for expression in expressions:
        template, arguments = expression.split("<", 1)
        types = [t.strip() for t in arguments.rstrip(">").split(",")][:3]
        input_type, output_type, accumulator = types
        pointers = f"const {input_type}*, {output_type}*, const {accumulator}*, "
        if template in ("gpuconv_window", "gpuconv_window_dp4a", "gpuconv_box_float"):
            # height, width, anchor_y, border, value, rows, vector_ok
            parameters = pointers + "int, " * 4 + f"{accumulator}, int, int"
        elif template in ("gpuconv_box", "gpuconv_box_packed"):
            # ... kernel_height, ..., an int border value
            parameters = pointers + "int, " * 7 + "int"
        else:
            parameters = pointers + "int, " * 8 + f"{accumulator}, int"
        lines.append(f"template __global__ void {expression}({parameters});")
    return "\n".join(lines) + "\n"


@pytest.mark.slow
@pytest.mark.skipif(_nvcc() is None, reason="nvcc is not installed (no /usr/local/cuda*/bin/nvcc)")
@pytest.mark.parametrize(
    "architecture",
    # sm_80: the only ptxas run for sm_80 (register caps differ: a STACK kernel spilled
    # there and not on sm_90). sm_90: NVRTC above already checks every instantiation.
    ["sm_80", pytest.param("sm_90", marks=_FULL_ONLY)],
)
def test_nvcc_compiles_the_common_instantiations_without_spills(architecture, tmp_path):
    # A representative set (uint8 and float32, every template and size) keeps this quick;
    # NVRTC above covers every instantiation.
    records = []
    for file_name, expressions in _cuda_launch.every_name_expression().items():
        chosen = [
            e
            for e in expressions
            if ("<unsigned char, unsigned char," in e or "<float, float, float" in e)
            and _window_channels(e) in (None, 1, 3)  # grey and RGB; NVRTC checks every one
            # STACK twins only where a register cap binds (32-bit grey: 3 blocks per SM);
            # one spilled here (sm_80) before that cap was set.
            and (not is_stack_expression(e) or e.startswith("gpuconv_window<float, float, float"))
        ]
        source = tmp_path / f"instantiate_{file_name}"
        source.write_text(f'#include "{file_name}"\n' + _explicit_instantiations(chosen))
        command = [
            _nvcc(),
            f"-arch={architecture}",
            "-cubin",
            "-std=c++17",
            "-Xptxas",
            "-v",
            f"-I{_cuda_source.kernels_directory()}",
            str(source),
            "-o",
            str(tmp_path / "out.cubin"),
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr[-4000:]
        file_records = _cuda_source.resource_report(result.stderr + result.stdout)
        assert len(file_records) == len(chosen)
        records += file_records
    print(f"\nnvcc resource report, {architecture}:")
    print(_cuda_source.format_report(records))
    spilling = _no_spills(records)
    assert not spilling, "kernels with spills:\n" + _cuda_source.format_report(spilling)
