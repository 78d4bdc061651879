"""A CPU emulator for CUDA C++: runs ``cupy.RawModule`` source without a GPU (see README.md).

A tool of its own: it knows CUDA C++, ``cupy.RawModule``'s calling convention and g++, and
nothing of the kernels it runs. Its users call :class:`EmulatedModule` as they would call
``cupy.RawModule``, and ``get_function`` on it as on a ``RawModule``.

- :mod:`.module`: :class:`EmulatedModule` and :class:`EmulatedFunction`, the checks of each
  argument against its kernel parameter, and the launch;
- :mod:`.build`: whether a compiler is here (:func:`available`), g++ and the on-disk cache;
- ``include/``: the C++ headers the source is compiled against (:func:`header_path`).
"""

from . import build
from .build import EmulatorError, available, header_path
from .module import AccessCounters, EmulatedFunction, EmulatedModule, LaunchCounters

__all__ = [
    "AccessCounters",
    "EmulatedFunction",
    "EmulatedModule",
    "EmulatorError",
    "LaunchCounters",
    "available",
    "header_path",
]


def __getattr__(name: str):
    # compile_count changes with every build, so it is read from the build module each
    # time rather than copied here once at import.
    if name == "compile_count":
        return build.compile_count
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
