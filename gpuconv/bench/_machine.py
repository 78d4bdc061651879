"""The machine under ``gpuconv bench``: its facts, its thread counts, numba's first call.

:func:`machine_facts` records the CPU, thread counts, library versions and
the command line, written beside every published table; :func:`set_threads`
applies ``gpuconv bench --threads`` to numba and cv2; :func:`compile_times`
measures numba's first call (import plus one convolution) in fresh
processes, with a cold and then a warm on-disk cache. numba and cv2 are
looked up in ``sys.modules`` or imported inside functions, never here.
"""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

from .. import _registry

_FIRST_CALL_SCRIPT = """
import time
start = time.perf_counter()
import numpy as np, gpuconv
image = np.zeros((256, 256), np.{dtype})
gpuconv.convolve(image, {kernel!r}, backend="numba")
print(time.perf_counter() - start)
"""


def first_call_seconds(cache_dir: str, dtype: str = "uint8", kernel: str = "sharpen") -> float:
    """Seconds from ``import gpuconv`` to the end of the first numba call, in a new process.

    ``cache_dir`` is numba's on-disk cache (``NUMBA_CACHE_DIR``): empty for a
    cold start, filled by an earlier call for a warm one.
    """
    environment = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    script = _FIRST_CALL_SCRIPT.format(dtype=np.dtype(dtype).name, kernel=kernel)
    completed = subprocess.run(
        [sys.executable, "-c", script], env=environment, capture_output=True, text=True, check=True
    )
    return float(completed.stdout.strip().splitlines()[-1])


def compile_times(dtype: str = "uint8", kernel: str = "sharpen") -> dict[str, float]:
    """First-call seconds with a cold then a warm numba cache (fresh processes)."""
    with tempfile.TemporaryDirectory(prefix="gpuconv-numba-cache-") as cache_dir:
        cold = first_call_seconds(cache_dir, dtype, kernel)
        warm = first_call_seconds(cache_dir, dtype, kernel)
    return {"cold_s": cold, "warm_s": warm, "dtype": dtype, "kernel": kernel}


def machine_facts() -> dict:
    """CPU, thread counts and versions, for the JSON beside the numbers."""
    facts = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "numpy": np.__version__,
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": _command_line(),
    }
    for module in ("numba", "cv2", "scipy", "cupy", "torch"):
        if module in sys.modules:
            facts[module] = getattr(sys.modules[module], "__version__", "?")
    if "numba" in sys.modules:
        numba = sys.modules["numba"]
        facts["numba_threads"] = numba.get_num_threads()
        try:
            facts["numba_threading_layer"] = numba.threading_layer()
        except ValueError:  # no parallel region has run yet
            facts["numba_threading_layer"] = "not started"
    if "cv2" in sys.modules:
        facts["cv2_threads"] = sys.modules["cv2"].getNumThreads()
    return facts


def _command_line() -> str:
    program = sys.argv[0]
    if program.endswith(("gpuconv", "__main__.py")):  # the console script, python -m gpuconv
        program = "gpuconv"  # sys.argv[1:] starts with "bench"
    elif program.endswith(".py"):
        program = f"python {program}"
    # Environment variables that change what is measured belong to the command.
    settings = [
        f"{name}={os.environ[name]}"
        for name in ("NUMBA_NUM_THREADS", "NUMBA_THREADING_LAYER", "OMP_NUM_THREADS")
        if name in os.environ
    ]
    return " ".join([*settings, program, *sys.argv[1:]])


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def set_threads(threads: int) -> bool:
    """Give numba and cv2 ``threads`` threads each; False (with a message) if impossible."""
    if threads < 1:
        print(f"gpuconv bench: --threads must be >= 1, got {threads}", file=sys.stderr)
        return False
    if _registry.status("numba").available:
        import numba

        if threads > numba.config.NUMBA_NUM_THREADS:
            print(
                f"gpuconv bench: numba was started with {numba.config.NUMBA_NUM_THREADS} "
                f"threads; set NUMBA_NUM_THREADS={threads} for more",
                file=sys.stderr,
            )
            return False
        numba.set_num_threads(threads)
    try:
        import cv2

        cv2.setNumThreads(threads)
    except ImportError:
        pass
    return True


#: What each competing process of ``gpuconv bench --busy N`` runs: one core, spinning.
_SPIN_SCRIPT = "while True:\n    pass\n"


@contextlib.contextmanager
def competing_processes(count: int):
    """``with competing_processes(n):`` runs ``n`` spinning processes for the block.

    They stand for the other work of a busy machine (a build, another service):
    each keeps one core busy at normal priority until the block ends, when they
    are killed and reaped, whatever happened inside.
    """
    if count < 0:
        raise ValueError(f"the number of competing processes must be >= 0, got {count}")
    processes = []
    try:
        for _ in range(count):
            processes.append(subprocess.Popen([sys.executable, "-c", _SPIN_SCRIPT]))
        if processes:
            time.sleep(0.2)  # let the scheduler see them before the first timed call
        yield processes
    finally:
        for process in processes:
            process.kill()
        for process in processes:
            process.wait()
