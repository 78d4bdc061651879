"""Compile CUDA C++ source for the CPU emulator and cache the shared libraries it makes.

The build half of the emulator (:mod:`gpuconv._emulator.module` is the other):
whether a compiler is here (:func:`available`), NVRTC options translated to g++
flags, the generated C++ file that gives each name expression a launcher callable
through ctypes, the compiler invocation, and :func:`_build`, which returns the
loaded library.

Builds are cached on disk (``$GPUCONV_CACHE_DIR/emulator``, default
``~/.cache/gpuconv/emulator``) keyed by the source, the name expressions, the
options, the debug flag, the compiler and the emulator headers, and checked
against the contents of every header the source includes. Concurrent builds by
several processes are safe: each writes a temporary file and renames it.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

#: Number of times this process has run the compiler (the tests check the cache with it).
compile_count = 0

# NVRTC options that only matter on a GPU; the emulator ignores them.
_IGNORED_OPTION = re.compile(
    r"^(-?-(gpu-architecture|arch|fmad|use_fast_math|ftz|prec-div|prec-sqrt|maxrregcount|"
    r"device-debug|generate-line-info|lineinfo|dopt|extra-device-vectorization|"
    r"default-device|restrict|relocatable-device-code|rdc|device-as-default-execution-space|"
    r"expt-relaxed-constexpr|expt-extended-lambda|Xptxas|time|split-compile|minimal|"
    r"dlink-time-opt|dlto|optimization-info|no-source-include|builtin-move-forward|"
    r"builtin-initializer-list|pch|create-pch|use-pch|jump-table-density|"
    r"disable-warnings|w|G)\b.*)$"
)

_compile_lock = threading.Lock()
_loaded: dict[str, ctypes.CDLL] = {}


# Defined here, where a failed compile first raises it, so that this module needs nothing
# from .module; the package re-exports it as part of its public API.
class EmulatorError(RuntimeError):
    """A kernel could not be compiled or launched, or did something a GPU would not allow."""


def header_path() -> Path:
    """Path of ``cuda_emulator.h``, in ``include/`` beside this module."""
    return Path(__file__).resolve().parent / "include" / "cuda_emulator.h"


def _compiler() -> list[str]:
    return shlex.split(os.environ.get("CXX", "g++"))


def available() -> str | None:
    """Say whether kernels can be emulated here.

    Returns
    -------
    str or None
        ``None`` when a C++ compiler (``$CXX``, default ``g++``) and the emulator
        header are present on Linux; otherwise a sentence saying why not.
    """
    if not sys.platform.startswith("linux"):
        return f"the CUDA emulator needs Linux (ucontext fibers, dladdr1); this is {sys.platform}"
    compiler = _compiler()
    if not compiler or shutil.which(compiler[0]) is None:
        name = compiler[0] if compiler else "$CXX"
        return f"the CUDA emulator needs a C++17 compiler: {name!r} was not found (install g++)"
    if not header_path().is_file():
        return f"the CUDA emulator header is missing: {header_path()}"
    return None


def _cache_directory() -> Path:
    root = os.environ.get("GPUCONV_CACHE_DIR")
    if root:
        return Path(root) / "emulator"
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg) / "gpuconv" / "emulator"


def _translate_options(options: Sequence[str], include_dirs: Sequence[str | Path]) -> list[str]:
    """NVRTC options to g++ flags: keep macros, include paths and the language standard."""
    if isinstance(options, str) or isinstance(include_dirs, (str, Path)):
        raise TypeError("options and include_dirs must be sequences of strings, not one string")
    flags = [f"-I{Path(directory).resolve()}" for directory in include_dirs]
    standard = 17
    options = list(options)
    index = 0
    while index < len(options):
        option = str(options[index])
        index += 1
        for prefix, flag in (
            ("--define-macro=", "-D"),
            ("--undefine-macro=", "-U"),
            ("--include-path=", "-I"),
            ("-D", "-D"),
            ("-U", "-U"),
            ("-I", "-I"),
        ):
            if option.startswith(prefix):
                value = option[len(prefix) :]
                if not value and index < len(options):  # "-D", "NAME" as two items
                    value = str(options[index])
                    index += 1
                if flag == "-I":
                    value = str(Path(value).resolve())
                flags.append(flag + value)
                break
        else:
            standard_match = re.fullmatch(r"-?-std=c\+\+(\d+)", option)
            if standard_match:
                standard = max(standard, int(standard_match.group(1)))
            elif not _IGNORED_OPTION.match(option):
                raise ValueError(
                    f"the CUDA emulator does not understand the compiler option {option!r}; "
                    "it honours -D, -U, -I and --std and ignores GPU-only options"
                )
    return [f"-std=c++{standard}", *flags]


def _generated_source(code_path: Path, name_expressions: Sequence[str]) -> str:
    lines = [f'#include "{code_path}"', "", "namespace {"]
    for index, expression in enumerate(name_expressions):
        lines.append(
            f"void gpuconv_emu_thunk_{index}(void** args) "
            f"{{ ::gpuconv_emu::invoke_kernel(&{expression}, args); }}"
        )
    lines.append("void (*const gpuconv_emu_thunks[])(void**) = {")
    lines += [f"    gpuconv_emu_thunk_{index}," for index in range(len(name_expressions))]
    lines += ["    nullptr};", "}  // namespace", ""]
    lines.append(
        'extern "C" int gpuconv_emu_signature(int kernel, char* kinds, '
        "unsigned long long* sizes, int capacity) {"
    )
    lines.append("    switch (kernel) {")
    for index, expression in enumerate(name_expressions):
        lines.append(
            f"    case {index}: return ::gpuconv_emu::signature(&{expression}, kinds, sizes, capacity);"
        )
    lines += ["    default: return -1;", "    }", "}", ""]
    lines.append(
        'extern "C" int gpuconv_emu_launch(int kernel, const unsigned* grid, const unsigned* block,'
        " unsigned long long shared_bytes, void** args, const unsigned long long* allocations,"
        " int allocation_count, int workers, int schedule, unsigned long long seed,"
        " double timeout_seconds, char* message,"
        " unsigned long long capacity, int trace, const unsigned* blocks,"
        " unsigned long long block_count, unsigned long long* totals,"
        " unsigned long long* sectors, unsigned long long sector_capacity,"
        " unsigned long long* sector_offsets) {"
    )
    lines.append(
        "    return ::gpuconv_emu::launch(gpuconv_emu_thunks[kernel], grid, block, shared_bytes,"
        " args, allocations, allocation_count, workers, schedule, seed, timeout_seconds,"
        " message, capacity, trace, blocks, block_count, totals, sectors, sector_capacity,"
        " sector_offsets);"
    )
    lines.append("}")
    lines.append(
        'extern "C" unsigned long long gpuconv_emu_symbol_size(const void* address) '
        "{ return ::gpuconv_emu::symbol_size(address); }"
    )
    # One pool of fiber stacks for the process (see cuda_emulator_fibers.h): the loader
    # asks the first module for its pool's functions and gives them to every later one.
    lines.append(
        'extern "C" void* gpuconv_emu_own_stack_functions(int which) { return which == 0 ? '
        "reinterpret_cast<void*>(&::gpuconv_emu::take_own_stack) : "
        "reinterpret_cast<void*>(&::gpuconv_emu::return_own_stack); }"
    )
    lines.append(
        'extern "C" void gpuconv_emu_share_stacks(void* take, void* give) {'
        " ::gpuconv_emu::take_stack_from = reinterpret_cast<char* (*)()>(take);"
        " ::gpuconv_emu::return_stack_to = reinterpret_cast<void (*)(char*)>(give); }"
    )
    return "\n".join(lines) + "\n"


def _dependency_digest(paths: Sequence[str]) -> str | None:
    digest = hashlib.sha256()
    for path in paths:
        try:
            digest.update(path.encode() + b"\0" + Path(path).read_bytes() + b"\0")
        except OSError:
            return None
    return digest.hexdigest()


def _parse_dependencies(make_rule: str, skip: set[str]) -> list[str]:
    """Files named by a ``g++ -MMD`` rule, except the ones the cache key already covers."""
    body = make_rule.split(":", 1)[1] if ":" in make_rule else ""
    body = body.replace("\\\n", " ")
    paths = [token.replace("\\ ", " ") for token in re.findall(r"(?:\\ |[^\s])+", body)]
    return sorted({str(Path(path).resolve()) for path in paths} - skip)


def _write_atomically(path: Path, data: bytes) -> None:
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _compile(
    command_tail: list[str], key: str, directory: Path, code: str, name_expressions, skip
) -> Path:
    """Run the compiler once; return the library, renamed into the cache with its manifest."""
    global compile_count
    code_path = directory / f"{key}.cu"
    _write_atomically(code_path, code.encode())
    source_path = directory / f"{key}.cpp"
    _write_atomically(source_path, _generated_source(code_path, name_expressions).encode())
    work = Path(tempfile.mkdtemp(dir=directory, prefix=f"{key}.build."))
    try:
        output = work / "module.so"
        dependency_file = work / "module.d"
        command = [*_compiler(), *command_tail, "-MMD", "-MF", str(dependency_file)]
        command += ["-x", "c++", str(source_path), "-o", str(output)]
        compile_count += 1
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise EmulatorError(
                "the CUDA emulator could not compile the kernel source:\n"
                + result.stderr[-6000:]
                + f"\n(command: {shlex.join(command)})"
            )
        skip = {*skip, str(source_path.resolve()), str(code_path.resolve())}
        dependencies = _parse_dependencies(dependency_file.read_text(), skip)
        digest = _dependency_digest(dependencies)
        # The name holds the dependencies' digest: a rebuild never replaces a library that
        # another process may have loaded.
        library = directory / f"{key}-{(digest or 'none')[:16]}.so"
        os.replace(output, library)
        manifest = {"library": library.name, "dependencies": dependencies, "digest": digest}
        _write_atomically(directory / f"{key}.json", json.dumps(manifest, indent=1).encode())
        return library
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _writable_cache_directory() -> Path:
    """The cache directory, or a private temporary one when it cannot be written."""
    directory = _cache_directory()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        if os.access(directory, os.W_OK | os.X_OK):
            return directory
    except OSError:
        pass
    fallback = Path(tempfile.gettempdir()) / f"gpuconv-emulator-{os.getuid()}"
    fallback.mkdir(mode=0o700, parents=True, exist_ok=True)
    return fallback


def _build(
    code: str, name_expressions: Sequence[str], flags: list[str], debug: bool
) -> ctypes.CDLL:
    """Compile (or find in the cache) the shared library and load it."""
    header = header_path()
    mode = (
        ["-O1", "-g", "-DGPUCONV_EMULATOR_DEBUG=1", "-D_GLIBCXX_ASSERTIONS"] if debug else ["-O2"]
    )
    command_tail = [
        *mode,
        *flags,
        "-fPIC",
        "-shared",
        "-pthread",
        "-fno-strict-aliasing",
        "-fsigned-char",  # char is signed in CUDA, unsigned on some hosts (aarch64)
        # Frames larger than a page probe each page, so an overflow always hits the guard page.
        "-fstack-clash-protection",
        "-Wno-unknown-pragmas",
        "-U_FORTIFY_SOURCE",
        # Each module keeps its own inline variables and __shared__ statics: without this,
        # g++ marks them STB_GNU_UNIQUE and the dynamic linker merges them across modules.
        "-fno-gnu-unique",
        "-Wl,-Bsymbolic",
        "-include",
        str(header),
    ]
    emulator_headers = sorted(header.parent.glob("*.h"))
    header_texts = [path.read_text() for path in emulator_headers]
    key_material = json.dumps(
        [code, list(name_expressions), command_tail, _compiler(), header_texts]
    ).encode()
    key = hashlib.sha256(key_material).hexdigest()[:32]
    directory = _writable_cache_directory()

    def cached() -> Path | None:
        try:
            manifest = json.loads((directory / f"{key}.json").read_text())
            library = directory / manifest["library"]
            if (
                library.is_file()
                and _dependency_digest(manifest["dependencies"]) == manifest["digest"]
            ):
                return library
        except (OSError, ValueError, KeyError, TypeError):
            pass  # no manifest, or a damaged one: build again
        return None

    with _compile_lock:
        skip = {str(path.resolve()) for path in emulator_headers}
        library = cached() or _compile(command_tail, key, directory, code, name_expressions, skip)
        path = str(library)
        if path not in _loaded:
            try:
                loaded = ctypes.CDLL(path)
            except OSError:  # a damaged cache file: build it again, once
                library = _compile(command_tail, key, directory, code, name_expressions, skip)
                path = str(library)
                loaded = ctypes.CDLL(path)
            _share_stack_pool(loaded)
            _loaded[path] = loaded
        return _loaded[path]


#: The (take, give) functions of the process's one pool of fiber stacks: the first loaded
#: module's. Loaded modules are never unloaded (``_loaded`` holds them), so they stay valid.
_stack_pool: tuple[int, int] | None = None


def _share_stack_pool(library: ctypes.CDLL) -> None:
    """Point ``library`` at the process's pool of fiber stacks (the first module's own).

    Every stack is two memory mappings (the stack and its guard page) and Linux allows
    a process 65530 of them: with a pool per module, a few dozen modules that each ran
    a launch of 1024 threads would exhaust them and the next library would fail to load.
    """
    global _stack_pool
    own = library.gpuconv_emu_own_stack_functions
    own.restype, own.argtypes = ctypes.c_void_p, [ctypes.c_int]
    if _stack_pool is None:
        _stack_pool = (own(0), own(1))
        return
    share = library.gpuconv_emu_share_stacks
    share.restype, share.argtypes = None, [ctypes.c_void_p, ctypes.c_void_p]
    share(*_stack_pool)
