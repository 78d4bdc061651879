"""The CUDA sources: where they are, how they are compiled, and compile checks.

- :func:`kernels_directory` finds ``kernels_cuda/`` (inside the installed
  package as ``gpuconv/kernels_cuda/``, or at the top of a source checkout).
- :func:`source` returns a ``.cu`` file with ``gpuconv_common.cuh`` inlined, so
  CuPy's compile cache (keyed on the source text) sees every change.
- :func:`cupy_function` and :func:`emulated_function` compile one template
  instantiation once per device (memoised) and return the callable kernel.
- :class:`Nvrtc` is a small ctypes binding to NVRTC, which compiles without a
  GPU or driver; the compile checks in CI use it through :func:`nvrtc_compile`,
  the GPU performance model (:mod:`gpuconv._gpumodel`) through :func:`nvrtc_cubin`.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import os
import re
import sys
from pathlib import Path

#: Options of every production compile (CuPy adds the architecture itself).
#: No fast-math: NaN propagation and round-half-to-even must stay IEEE.
COMPILE_OPTIONS: tuple[str, ...] = ("--std=c++17",)

COMMON_HEADER = "gpuconv_common.cuh"
_INCLUDE = re.compile(r'^#include "([^"]+)"\s*$', re.MULTILINE)


def kernels_directory() -> Path:
    """The directory holding the ``.cu`` files (installed wheel or source checkout)."""
    package = Path(__file__).resolve().parents[2]
    for candidate in (package / "kernels_cuda", package.parent / "kernels_cuda"):
        if (candidate / COMMON_HEADER).is_file():
            return candidate
    raise FileNotFoundError(
        f"kernels_cuda/ not found next to {package}: the gpuconv installation is incomplete"
    )


@functools.cache
def source(file_name: str) -> str:
    """The text of ``kernels_cuda/<file_name>`` with its local includes inlined."""
    directory = kernels_directory()
    text = (directory / file_name).read_text()

    def inline(match: re.Match) -> str:
        # #line directives keep compiler and emulator messages pointing at the real files.
        header = (directory / match.group(1)).read_text()
        resume = text.count("\n", 0, match.end()) + 2  # the line after the #include
        return (
            f'#line 1 "kernels_cuda/{match.group(1)}"\n'
            + header.replace("#pragma once", "")
            + f'\n#line {resume} "kernels_cuda/{file_name}"'
        )

    return f'#line 1 "kernels_cuda/{file_name}"\n' + _INCLUDE.sub(inline, text)


@functools.cache
def _cupy_module(file_name: str, name_expression: str, device_id: int):
    import cupy

    with cupy.cuda.Device(device_id):
        return cupy.RawModule(
            code=source(file_name),
            options=COMPILE_OPTIONS,
            name_expressions=[name_expression],
        )


def cupy_function(file_name: str, name_expression: str):
    """The compiled kernel for the current CuPy device (compiled once per device)."""
    import cupy

    device_id = cupy.cuda.runtime.getDevice()
    return _cupy_module(file_name, name_expression, device_id).get_function(name_expression)


@functools.cache
def _emulated_module(file_name: str, name_expression: str):
    from ..._emulator import EmulatedModule

    return EmulatedModule(
        source(file_name),
        name_expressions=[name_expression],
        options=COMPILE_OPTIONS,
        include_dirs=[str(kernels_directory())],
        debug=True,
    )


def emulated_function(file_name: str, name_expression: str):
    """The kernel built for the CPU emulator (built once per process, cached on disk)."""
    return _emulated_module(file_name, name_expression).get_function(name_expression)


# --------------------------------------------------------------------------- NVRTC


class NvrtcError(RuntimeError):
    """NVRTC refused a program; the message holds its log."""


def _nvrtc_candidates() -> list[str]:
    names = []
    for base in sys.path:
        names += sorted(
            glob.glob(os.path.join(base, "nvidia", "cuda_nvrtc", "lib", "libnvrtc.so*"))
        )
        names += sorted(glob.glob(os.path.join(base, "nvidia", "cu13", "lib", "libnvrtc.so*")))
    for root in sorted(glob.glob("/usr/local/cuda*"), reverse=True):
        names += sorted(glob.glob(os.path.join(root, "lib64", "libnvrtc.so*")))
    return names + ["libnvrtc.so.12", "libnvrtc.so.13", "libnvrtc.so"]


class Nvrtc:
    """A minimal ctypes binding to NVRTC (no GPU or driver needed)."""

    def __init__(self, library_path: str | None = None):
        errors = []
        for candidate in [library_path] if library_path else _nvrtc_candidates():
            if "builtins" in os.path.basename(candidate) or ".alt." in candidate:
                continue
            try:
                self._library = ctypes.CDLL(candidate)
                self.path = candidate
                break
            except OSError as error:
                errors.append(str(error))
        else:
            raise OSError(
                "libnvrtc not found: pip install 'gpuconv[nvrtc]'; " + "; ".join(errors[-2:])
            )
        lib = self._library
        lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        lib.nvrtcGetLoweredName.argtypes = [
            ctypes.c_void_p,
            ctypes.c_char_p,
            ctypes.POINTER(ctypes.c_char_p),
        ]

    def version(self) -> tuple[int, int]:
        major, minor = ctypes.c_int(), ctypes.c_int()
        self._check(self._library.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)))
        return major.value, minor.value

    def _check(self, result: int, log: str = "") -> None:
        if result != 0:
            message = self._library.nvrtcGetErrorString(result).decode()
            raise NvrtcError(f"{message}\n{log}".strip())

    def compile(self, code: str, name_expressions, options) -> tuple[str, dict[str, str]]:
        """Compile ``code``; return ``(log, {name expression: lowered name})``."""
        log, lowered, _ = self._compile(code, name_expressions, options, cubin=False)
        return log, lowered

    def compile_cubin(
        self, code: str, name_expressions, options
    ) -> tuple[str, dict[str, str], bytes]:
        """Compile ``code`` to machine code; return ``(log, lowered names, cubin)``.

        ``options`` must name a real architecture (``--gpu-architecture=sm_90``), not a
        virtual one (``compute_90``): only then does NVRTC run ptxas and keep a CUBIN.
        """
        return self._compile(code, name_expressions, options, cubin=True)

    def _compile(self, code: str, name_expressions, options, cubin: bool):
        lib = self._library
        program = ctypes.c_void_p()
        self._check(
            lib.nvrtcCreateProgram(
                ctypes.byref(program), code.encode(), b"gpuconv.cu", 0, None, None
            )
        )
        try:
            for expression in name_expressions:
                self._check(lib.nvrtcAddNameExpression(program, expression.encode()))
            encoded = [option.encode() for option in options]
            array = (ctypes.c_char_p * len(encoded))(*encoded)
            result = lib.nvrtcCompileProgram(program, len(encoded), array)
            size = ctypes.c_size_t()
            lib.nvrtcGetProgramLogSize(program, ctypes.byref(size))
            buffer = ctypes.create_string_buffer(size.value + 1)
            lib.nvrtcGetProgramLog(program, buffer)
            log = buffer.value.decode(errors="replace")
            self._check(result, log)
            lowered = {}
            for expression in name_expressions:
                name = ctypes.c_char_p()
                self._check(
                    lib.nvrtcGetLoweredName(program, expression.encode(), ctypes.byref(name))
                )
                lowered[expression] = name.value.decode()
            binary = b""
            if cubin:
                size = ctypes.c_size_t()
                self._check(lib.nvrtcGetCUBINSize(program, ctypes.byref(size)))
                if size.value == 0:
                    raise NvrtcError(
                        "NVRTC produced no CUBIN: compile for a real architecture "
                        "(--gpu-architecture=sm_XX), not a virtual one"
                    )
                buffer = ctypes.create_string_buffer(size.value)
                self._check(lib.nvrtcGetCUBIN(program, buffer))
                binary = buffer.raw[: size.value]
            return log, lowered, binary
        finally:
            lib.nvrtcDestroyProgram(ctypes.byref(program))


def nvrtc_compile(file_name: str, name_expressions, architecture: str, extra_options=()):
    """Compile instantiations of ``kernels_cuda/<file_name>`` for ``architecture`` (e.g. sm_90).

    Returns ``(log, lowered names)``; raises :class:`NvrtcError` with the log.
    """
    options = (*COMPILE_OPTIONS, f"--gpu-architecture={architecture}", *extra_options)
    return Nvrtc().compile(source(file_name), list(name_expressions), options)


def nvrtc_cubin(file_name: str, name_expressions, architecture: str = "sm_90", extra_options=()):
    """Machine code of instantiations of ``kernels_cuda/<file_name>`` for ``architecture``.

    The production options plus ``extra_options`` (e.g. ``-DGPUCONV_MODEL_INTERIOR``);
    returns ``(log, lowered names, cubin bytes)``; raises :class:`NvrtcError` with the log.
    """
    options = (*COMPILE_OPTIONS, f"--gpu-architecture={architecture}", *extra_options)
    return Nvrtc().compile_cubin(source(file_name), list(name_expressions), options)


# --------------------------------------------------------------------------- resource reports

_ENTRY = re.compile(r"Compiling entry function '(\w+)' for '(\w+)'")
_SPILLS = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_REGISTERS = re.compile(r"Used (\d+) registers")
_SHARED = re.compile(r"(\d+) bytes smem")


def resource_report(ptxas_log: str, names: dict[str, str] | None = None) -> list[dict]:
    """Parse ``ptxas -v`` output (from NVRTC or nvcc) into one record per kernel.

    Each record: ``kernel`` (the name expression when ``names`` maps lowered
    names back, else the mangled name), ``architecture``, ``registers``,
    ``static_shared_bytes``, ``stack_bytes``, ``spill_store_bytes``, ``spill_load_bytes``.
    """
    records: list[dict] = []
    for line in ptxas_log.splitlines():
        entry = _ENTRY.search(line)
        if entry:
            mangled, architecture = entry.groups()
            records.append(
                dict(
                    kernel=(names or {}).get(mangled, mangled),
                    architecture=architecture,
                    registers=0,
                    static_shared_bytes=0,
                    stack_bytes=0,
                    spill_store_bytes=0,
                    spill_load_bytes=0,
                )
            )
            continue
        if not records:
            continue
        spills = _SPILLS.search(line)
        if spills:
            stack, stores, loads = map(int, spills.groups())
            records[-1].update(stack_bytes=stack, spill_store_bytes=stores, spill_load_bytes=loads)
        registers = _REGISTERS.search(line)
        if registers:
            records[-1]["registers"] = int(registers.group(1))
            shared = _SHARED.search(line)
            if shared:
                records[-1]["static_shared_bytes"] = int(shared.group(1))
    return records


def format_report(records: list[dict]) -> str:
    """A fixed-width table of :func:`resource_report` records."""
    lines = [f"{'arch':6} {'regs':>4} {'smem':>6} {'stack':>5} {'spill':>5}  kernel"]
    for record in sorted(records, key=lambda r: (r["architecture"], r["kernel"])):
        spill = record["spill_store_bytes"] + record["spill_load_bytes"]
        lines.append(
            f"{record['architecture']:6} {record['registers']:4d} "
            f"{record['static_shared_bytes']:6d} {record['stack_bytes']:5d} {spill:5d}  "
            f"{record['kernel']}"
        )
    return "\n".join(lines)
