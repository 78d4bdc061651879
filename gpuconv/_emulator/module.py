"""Run CUDA C++ kernels on the CPU: a stand-in for ``cupy.RawModule`` without a GPU.

:class:`EmulatedModule` takes the same CUDA source text and name expressions that
the real backend hands to ``cupy.RawModule``, compiles it with g++ against
``include/cuda_emulator.h`` (which maps the CUDA keywords,
built-in variables, barriers and intrinsics to host code and runs each block's
threads as cooperative fibers), and launches kernels through ctypes with the
same ``kernel(grid, block, args, shared_mem=...)`` call as ``cupy.RawKernel``.

Compiling and caching the source is :mod:`gpuconv._emulator.build`;
this module holds what comes after: the module and kernel objects, the checks of
each argument against its kernel parameter, and the launch.

Errors a GPU would hide or crash on (a ``__syncthreads()`` that not every thread
of a block reaches, an out-of-bounds global access caught by
``gpuconv_emu::check_global_index`` in debug builds, ``__trap()``, impossible
launch dimensions) raise :class:`EmulatorError` naming file:line and the
block and thread; so do faults in kernel code (integer division by zero, a
fiber stack overflow, an invalid pointer), caught by a signal handler that is
installed only while a launch runs, and a launch that outlives
``GPUCONV_EMULATOR_TIMEOUT`` seconds (a thread looping forever).

Environment: ``GPUCONV_EMULATOR_THREADS`` (OS threads running blocks, default
the CPU count up to 8), ``GPUCONV_EMULATOR_SCHEDULE`` (``forward``, ``reverse``
or ``shuffle[:seed]``: the order of a block's threads between barriers),
``GPUCONV_EMULATOR_TIMEOUT`` (seconds, default 600, 0 for none).
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .build import EmulatorError, _build, _translate_options, available

_MESSAGE_CAPACITY = 4096
_MAX_PARAMETERS = 256
_SECTOR_CAPACITY = 1 << 21


@dataclass(frozen=True)
class AccessCounters:
    """One kind of memory access over a launch (or its listed blocks).

    ``requests``: warp requests (the k-th access of each thread of a warp at one call
    site); ``accesses``: thread accesses; ``bytes``: bytes the threads asked for;
    ``sectors``: 32-byte sectors the requests touched (global memory); ``wavefronts``:
    shared-memory wavefronts (the most distinct 4-byte words in one bank, per request).
    """

    requests: int = 0
    accesses: int = 0
    bytes: int = 0
    sectors: int = 0
    wavefronts: int = 0

    @property
    def sectors_per_request(self) -> float:
        return self.sectors / self.requests if self.requests else 0.0

    @property
    def wavefronts_per_request(self) -> float:
        return self.wavefronts / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class LaunchCounters:
    """What ``EmulatedFunction(..., counters=True)`` returns.

    ``loaded_sectors`` / ``stored_sectors``: for each block of ``blocks`` (only when the
    launch listed its blocks), the distinct global sectors (byte address // 32) it read or
    wrote, sorted.
    """

    global_load: AccessCounters
    global_store: AccessCounters
    shared_load: AccessCounters
    shared_store: AccessCounters
    blocks: tuple[tuple[int, int, int], ...] = ()
    loaded_sectors: dict = field(default_factory=dict)
    stored_sectors: dict = field(default_factory=dict)


def _itanium_name(name: str) -> str:
    """The mangled name of a namespace-scope variable ``a::b::name`` (g++'s ABI)."""
    parts = name.split("::")
    if len(parts) == 1:
        return name
    return "_ZN" + "".join(f"{len(part)}{part}" for part in parts) + "E"


class EmulatedModule:
    """CUDA C++ source compiled for the CPU emulator; mirrors ``cupy.RawModule``.

    Parameters
    ----------
    code : str
        The CUDA C++ source, as handed to ``cupy.RawModule``.
    name_expressions : sequence of str
        The kernels to instantiate, e.g. ``"stencil<float, 3>"``.
    options : sequence of str
        NVRTC-style options: ``-D``/``--define-macro``, ``-U``, ``-I``/``--include-path``
        and ``--std=c++NN`` are honoured, GPU-only options ignored.
    include_dirs : sequence of str or Path
        Extra include directories.
    debug : bool
        Compile with ``-O1 -g`` and the global bounds checks (default); ``False``
        gives ``-O2`` without checks.
    source_name : str or path-like, optional
        The file name that error messages (``__FILE__``) give the source, e.g. the
        ``.cu`` file it was read from. Not in ``cupy.RawModule``; by default the
        cached copy of the source is named.

    Raises
    ------
    EmulatorError
        If the source does not compile (the message holds the compiler's errors).
    ValueError
        For an option the emulator does not understand.
    """

    def __init__(
        self,
        code: str,
        *,
        name_expressions: Sequence[str],
        options: Sequence[str] = (),
        include_dirs: Sequence[str | Path] = (),
        debug: bool = True,
        source_name: str | os.PathLike | None = None,
    ) -> None:
        reason = available()
        if reason is not None:
            raise EmulatorError(reason)
        if isinstance(name_expressions, str):
            raise TypeError("name_expressions must be a sequence of strings, not one string")
        self.name_expressions = tuple(name_expressions)
        if not self.name_expressions:
            raise ValueError("name_expressions must name at least one kernel")
        self.debug = bool(debug)
        flags = _translate_options(options, include_dirs)
        if source_name is not None:
            # __FILE__ and compiler messages then name the original file.
            quoted = str(source_name).replace("\\", "\\\\").replace('"', '\\"')
            code = f'#line 1 "{quoted}"\n{code}'
        self._library = _build(code, self.name_expressions, flags, self.debug)
        self._library.gpuconv_emu_launch.restype = ctypes.c_int
        self._library.gpuconv_emu_signature.restype = ctypes.c_int
        self._library.gpuconv_emu_symbol_size.restype = ctypes.c_ulonglong
        self._library.gpuconv_emu_symbol_size.argtypes = [ctypes.c_void_p]
        self._functions: dict[str, EmulatedFunction] = {}

    def get_function(self, name_expression: str) -> EmulatedFunction:
        """Return the kernel instantiated for ``name_expression`` (one of the module's)."""
        if name_expression not in self.name_expressions:
            raise KeyError(
                f"{name_expression!r} is not one of this module's name_expressions "
                f"{list(self.name_expressions)}"
            )
        if name_expression not in self._functions:
            index = self.name_expressions.index(name_expression)
            self._functions[name_expression] = EmulatedFunction(self, index, name_expression)
        return self._functions[name_expression]

    def get_global(self, name: str) -> np.ndarray:
        """A writable uint8 view of the ``__device__`` or ``__constant__`` variable ``name``.

        ``name`` is a namespace-scope variable with external linkage (not ``static``
        nor ``const``), optionally qualified (``"stencil::weights"``).
        """
        for symbol in (name, _itanium_name(name)):
            try:
                address = ctypes.addressof(ctypes.c_char.in_dll(self._library, symbol))
            except ValueError:
                continue
            size = int(self._library.gpuconv_emu_symbol_size(address))
            if size == 0:
                break
            return np.ctypeslib.as_array((ctypes.c_uint8 * size).from_address(address))
        raise EmulatorError(
            f"the module has no __device__ or __constant__ variable named {name!r} "
            "(it must be a non-static, non-const namespace-scope variable)"
        )


# numpy scalar types and the parameter kind each may be passed as.
def _scalar_kind(value: np.generic) -> str:
    if isinstance(value, np.floating):
        return "f"
    if isinstance(value, (np.integer, np.bool_)):
        return "i"
    return "o"


_KIND_NAMES = {"p": "pointer", "f": "floating-point", "i": "integer", "o": "struct", "v": "void"}


def _byte_bounds(array: np.ndarray) -> tuple[int, int]:
    """The first and one-past-last byte addresses an array (a view, any strides) touches."""
    array_utils = getattr(np.lib, "array_utils", None)  # numpy >= 2; np.byte_bounds before
    return (array_utils.byte_bounds if array_utils else np.byte_bounds)(array)


def _default_workers() -> int:
    configured = os.environ.get("GPUCONV_EMULATOR_THREADS")
    if configured:
        try:
            return max(1, int(configured))
        except ValueError:
            raise ValueError(
                f"GPUCONV_EMULATOR_THREADS={configured!r} is not a positive integer"
            ) from None
    return max(1, min(os.cpu_count() or 1, 8))


def _timeout_seconds() -> float:
    """``GPUCONV_EMULATOR_TIMEOUT``: seconds a launch may run (default 600; 0: no limit)."""
    configured = os.environ.get("GPUCONV_EMULATOR_TIMEOUT", "600")
    try:
        seconds = float(configured)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0 or seconds == float("inf"):
        raise ValueError(
            f"GPUCONV_EMULATOR_TIMEOUT={configured!r} is not a number of seconds (0: no limit)"
        )
    return seconds


_SCHEDULES = {"forward": 0, "reverse": 1, "shuffle": 2}


def _schedule() -> tuple[int, int]:
    """``GPUCONV_EMULATOR_SCHEDULE``: ``forward`` (default), ``reverse`` or ``shuffle[:seed]``."""
    # Unset or empty: the default.
    configured = os.environ.get("GPUCONV_EMULATOR_SCHEDULE", "").strip().lower() or "forward"
    name, _, seed = configured.partition(":")
    if name not in _SCHEDULES or (seed and not seed.isdigit()) or (seed and name != "shuffle"):
        raise ValueError(
            f"GPUCONV_EMULATOR_SCHEDULE={configured!r}: expected 'forward', 'reverse', "
            "'shuffle' or 'shuffle:<seed>'"
        )
    return _SCHEDULES[name], int(seed or 0) % 2**64


def _dimensions(value, what: str) -> tuple[int, int, int]:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (value,)
    if not isinstance(value, tuple) or not 1 <= len(value) <= 3:
        raise TypeError(f"{what} must be an int or a tuple of 1 to 3 ints, not {value!r}")
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value):
        raise TypeError(f"{what} must hold ints, not {value!r}")
    padded = tuple(int(v) for v in value) + (1,) * (3 - len(value))
    if not all(0 <= v < 2**32 for v in padded):
        raise EmulatorError(f"invalid launch: {what} {value!r} must be positive")
    return padded


class EmulatedFunction:
    """One kernel of an :class:`EmulatedModule`; called like ``cupy.RawKernel``."""

    def __init__(self, module: EmulatedModule, index: int, name_expression: str) -> None:
        self.module = module
        self.index = index
        self.name_expression = name_expression
        kinds = ctypes.create_string_buffer(2 * _MAX_PARAMETERS)
        sizes = (ctypes.c_ulonglong * (2 * _MAX_PARAMETERS))()
        count = module._library.gpuconv_emu_signature(index, kinds, sizes, _MAX_PARAMETERS)
        if not 0 <= count <= _MAX_PARAMETERS:
            raise EmulatorError(f"{name_expression}: more than {_MAX_PARAMETERS} parameters")
        raw = kinds.raw.decode()
        #: (kind, sizeof) of each kernel parameter; kind is 'p' (pointer), 'f', 'i' or 'o'.
        self.parameters = tuple((raw[2 * i], int(sizes[2 * i])) for i in range(count))
        #: (kind, sizeof) of what each pointer parameter points to ('-', 0 for the others;
        #: 'v', 0 for void).
        self.pointees = tuple((raw[2 * i + 1], int(sizes[2 * i + 1])) for i in range(count))

    def __repr__(self) -> str:
        return f"<EmulatedFunction {self.name_expression}>"

    def _marshal(self, args: tuple):
        if not isinstance(args, (tuple, list)):
            raise TypeError(f"args must be a tuple, not {type(args).__name__}")
        if len(args) != len(self.parameters):
            raise TypeError(
                f"{self.name_expression} takes {len(self.parameters)} arguments, {len(args)} given"
            )
        buffers, allocations = [], []
        for index, (argument, (kind, size)) in enumerate(zip(args, self.parameters)):
            if isinstance(argument, np.ndarray):
                if kind != "p":
                    raise TypeError(
                        f"argument {index} of {self.name_expression}: parameter {index} is a "
                        f"{size}-byte {_KIND_NAMES[kind]}, not a pointer, but got a numpy array"
                    )
                self._check_pointee(index, argument.dtype)
                if argument.size:
                    low, high = _byte_bounds(argument)
                    allocations += [low, high, index]
                buffer = ctypes.c_void_p(argument.ctypes.data)
            elif isinstance(argument, np.generic):
                actual = _scalar_kind(argument)
                if kind == "p" or actual != kind or argument.nbytes != size:
                    raise TypeError(
                        f"argument {index} of {self.name_expression}: parameter {index} is a "
                        f"{size}-byte {_KIND_NAMES[kind]}, but got {type(argument).__name__} "
                        f"({argument.nbytes}-byte {_KIND_NAMES[actual]})"
                    )
                buffer = ctypes.create_string_buffer(argument.tobytes(), max(size, 8))
            elif isinstance(argument, (bool, int, float, complex)):
                raise TypeError(
                    f"argument {index} of {self.name_expression} is a Python "
                    f"{type(argument).__name__}: pass a numpy scalar of the kernel parameter's "
                    f"exact type (e.g. np.int32({argument!r})), parameter {index} is a "
                    f"{size}-byte {_KIND_NAMES[kind]}"
                )
            else:
                raise TypeError(
                    f"argument {index} of {self.name_expression}: expected a numpy array or "
                    f"numpy scalar, got {type(argument).__name__}"
                )
            buffers.append(buffer)
        pointers = (ctypes.c_void_p * max(1, len(buffers)))(
            *(ctypes.cast(ctypes.pointer(b), ctypes.c_void_p) for b in buffers)
        )
        allocation_array = (ctypes.c_ulonglong * max(1, len(allocations)))(*allocations)
        return buffers, pointers, allocation_array, len(allocations) // 3

    def _check_pointee(self, index: int, dtype: np.dtype) -> None:
        """An array for a ``float*`` must hold 4-byte floats, and so on (void* takes any)."""
        kind, size = self.pointees[index]
        if kind not in "fi":
            return
        actual = "f" if dtype.kind == "f" else "i" if dtype.kind in "iub" else "o"
        if actual != kind or dtype.itemsize != size:
            raise TypeError(
                f"argument {index} of {self.name_expression}: parameter {index} points to "
                f"{size}-byte {_KIND_NAMES[kind]}s, but got an array of {dtype}"
            )

    def __call__(
        self, grid, block, args, shared_mem: int = 0, *, counters: bool = False, blocks=None
    ) -> LaunchCounters | None:
        """Launch the kernel on ``grid`` x ``block`` threads; returns when it has finished.

        Parameters
        ----------
        grid, block : int or tuple of 1 to 3 ints
        args : tuple
            numpy arrays (passed as device pointers) and numpy scalars (passed as
            C values of exactly their type). Python ints and floats are refused.
        shared_mem : int
            Bytes of dynamic shared memory.
        counters : bool
            Not in ``cupy.RawKernel``: count the memory accesses that the kernel source
            declares with ``gpuconv_emu::trace_access`` (warp requests, sectors, shared
            wavefronts) and return them as :class:`LaunchCounters`.
        blocks : sequence of (x, y, z), optional
            Not in ``cupy.RawKernel``: run only these blocks of the grid (a sample, e.g.
            for the counters); by default every block.

        Raises
        ------
        TypeError
            If an argument does not match its kernel parameter (kind or size).
        EmulatorError
            If the launch is invalid or the kernel fails (barrier divergence,
            out-of-bounds access, ``__trap()``).
        """
        grid3 = _dimensions(grid, "grid")
        block3 = _dimensions(block, "block")
        if isinstance(shared_mem, bool) or not isinstance(shared_mem, (int, np.integer)):
            raise TypeError(f"shared_mem must be an int, not {type(shared_mem).__name__}")
        if shared_mem < 0:
            raise EmulatorError(f"invalid launch: shared_mem={shared_mem} is negative")
        keep_alive, pointers, allocations, allocation_count = self._marshal(args)
        schedule, seed = _schedule()
        message = ctypes.create_string_buffer(_MESSAGE_CAPACITY)
        listed = [] if blocks is None else [_dimensions(tuple(b), "block index") for b in blocks]
        if blocks is not None and not listed:
            raise ValueError("blocks must name at least one block of the grid")
        block_array = (ctypes.c_uint * max(3, 3 * len(listed)))(*[v for b in listed for v in b])
        totals = (ctypes.c_ulonglong * 20)()
        capacity = _SECTOR_CAPACITY if counters and listed else 0
        sectors = (ctypes.c_ulonglong * max(1, capacity))()
        offsets = (ctypes.c_ulonglong * (2 * len(listed) + 1))()
        status = self.module._library.gpuconv_emu_launch(
            ctypes.c_int(self.index),
            (ctypes.c_uint * 3)(*grid3),
            (ctypes.c_uint * 3)(*block3),
            ctypes.c_ulonglong(int(min(shared_mem, 2**64 - 1))),
            pointers,
            allocations,
            ctypes.c_int(allocation_count),
            ctypes.c_int(_default_workers()),
            ctypes.c_int(schedule),
            ctypes.c_ulonglong(seed),
            ctypes.c_double(_timeout_seconds()),
            message,
            ctypes.c_ulonglong(_MESSAGE_CAPACITY),
            ctypes.c_int(1 if counters else 0),
            block_array,
            ctypes.c_ulonglong(len(listed)),
            totals,
            sectors,
            ctypes.c_ulonglong(capacity),
            offsets,
        )
        del keep_alive
        if status != 0:
            raise EmulatorError(f"{self.name_expression}: {message.value.decode(errors='replace')}")
        if not counters:
            return None
        kinds = [AccessCounters(*totals[5 * kind : 5 * kind + 5]) for kind in range(4)]
        found = np.ctypeslib.as_array(sectors)
        loaded, stored = {}, {}
        if capacity:
            for slot, index in enumerate(listed):
                start, middle, end = offsets[2 * slot], offsets[2 * slot + 1], offsets[2 * slot + 2]
                loaded[index] = found[start:middle].copy()
                stored[index] = found[middle:end].copy()
        return LaunchCounters(*kinds, tuple(listed), loaded, stored)
