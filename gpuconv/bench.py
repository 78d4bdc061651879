"""Timing gpuconv's backends against cv2, scipy (and GPU peers): the one timing loop.

``gpuconv bench``, the scripts in ``benchmarks/`` and the notebook all call
this module, so every published figure comes from the same code:

- :func:`implementations` names what can run here (gpuconv backends and peers);
- :func:`measure` times them *interleaved* (one call of each in turn, so a
  slow minute on a shared machine hurts every implementation alike), the
  median of ``repeats`` calls after ``warmup`` calls;
- :func:`ratios` divides times taken in the same run; :func:`format_table`
  prints them; :func:`compile_times` measures numba's first call with a cold
  and a warm on-disk cache, in fresh processes.

Timings of host implementations use :func:`time.perf_counter` around a call
that returns a finished NumPy array. GPU peers here take and return host
arrays (transfers included); device-resident CUDA timing with CUDA events is
``gpuconv._bench_cuda``'s job.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from . import _registry, kernels

#: Peers a gpuconv time is divided into, in the table's column order.
DEFAULT_PEERS = ("cv2.filter2D", "scipy.ndimage.correlate")
#: Backends that run on host images (the CUDA benchmark is separate).
HOST_BACKENDS = ("numba", "numpy")
#: A warm-up call longer than this many seconds is taken as the only measurement.
SLOW_CALL_SECONDS = 5.0


@dataclass
class Measurement:
    """One row of a benchmark table.

    Attributes
    ----------
    implementation : str
        ``"gpuconv:numba"``, ``"cv2.filter2D"``, ...
    kernel : str
        Kernel name (bank name, ``random9``...).
    shape : tuple of int
        Image shape.
    dtype : str
        Image dtype.
    median_ms : float
        Median wall time of one call, milliseconds.
    mpixels_per_s : float
        Image pixels (H x W) per second, millions.
    repeats : int
        Calls the median is taken over (1 when a single call was too slow to repeat).
    """

    implementation: str
    kernel: str
    shape: tuple
    dtype: str
    median_ms: float
    mpixels_per_s: float
    repeats: int = 0


def _gpuconv_call(name: str) -> Callable:
    import gpuconv

    def call(image, kernel):
        return gpuconv.convolve(image, kernel, backend=name)

    return call


def _peer_calls() -> dict[str, Callable]:
    """Peers importable here; each computes the same correlation (reflect101)."""
    peers: dict[str, Callable] = {}
    try:
        import cv2

        peers["cv2.filter2D"] = lambda image, kernel: cv2.filter2D(image, -1, kernel)
    except ImportError:
        pass
    try:
        from scipy import ndimage

        def scipy_correlate(image, kernel):
            weights = kernel if image.ndim == 2 else kernel[:, :, None]
            return ndimage.correlate(image, weights, mode="mirror")

        peers["scipy.ndimage.correlate"] = scipy_correlate
    except ImportError:
        pass
    peers.update(_gpu_peer_calls())
    return peers


def _gpu_peer_calls() -> dict[str, Callable]:
    peers: dict[str, Callable] = {}
    try:
        import cupy
        from cupyx.scipy import ndimage as cupy_ndimage

        if cupy.cuda.runtime.getDeviceCount() > 0:

            def cupy_correlate(image, kernel):
                weights = kernel if image.ndim == 2 else kernel[:, :, None]
                result = cupy_ndimage.correlate(
                    cupy.asarray(image), cupy.asarray(weights), mode="mirror"
                )
                return cupy.asnumpy(result)  # synchronises

            peers["cupyx.scipy.ndimage.correlate"] = cupy_correlate
    except Exception:  # noqa: BLE001, S110 (no cupy, no driver, no device: not a peer here)
        pass
    try:
        import torch
        from torch.nn import functional

        def torch_conv2d(image, kernel):
            height, width = image.shape[:2]
            planes = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
            planes = planes.reshape(height, width, -1).permute(2, 0, 1)[:, None]
            weights = torch.from_numpy(np.asarray(kernel, np.float32))[None, None]
            kh, kw = kernel.shape
            ax, ay = kw // 2, kh // 2
            padded = functional.pad(planes, (ax, kw - 1 - ax, ay, kh - 1 - ay), mode="reflect")
            return functional.conv2d(padded, weights).numpy()  # conv2d correlates

        peers["torch.conv2d"] = torch_conv2d
    except Exception:  # noqa: BLE001, S110 (torch missing or broken: not a peer here)
        pass
    return peers


def implementations(backends=None, peers=True) -> dict[str, Callable]:
    """Name -> ``callable(image, kernel)`` for everything that can run here.

    Parameters
    ----------
    backends : iterable of str, optional
        gpuconv backends to include; None means every available host backend
        (``numba``, ``numpy``). Unavailable ones are left out.
    peers : bool
        Include cv2, scipy (and cupyx, torch where they run).

    Returns
    -------
    dict of str to callable
        ``"gpuconv:<backend>"`` and peer names.
    """
    chosen = HOST_BACKENDS if backends is None else tuple(backends)
    table: dict[str, Callable] = {}
    for name in chosen:
        _registry.check_name(name)
        if _registry.status(name).available:
            table[f"gpuconv:{name}"] = _gpuconv_call(name)
    if peers:
        table.update(_peer_calls())
    return table


def measure(image, kernels_by_name, implementations, *, repeats=5, warmup=1, progress=False):
    """Time every implementation on every kernel, interleaved; median of ``repeats``.

    A warm-up call that takes longer than :data:`SLOW_CALL_SECONDS` is kept
    as the only measurement of that implementation and kernel (``repeats=1``
    in its row): scipy needs minutes per 8192 x 8192 large kernel.

    Returns
    -------
    list of Measurement
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats}, {warmup}")
    results = []
    pixels = image.shape[0] * image.shape[1]
    for kernel_name, kernel in kernels_by_name.items():
        times: dict[str, list[float]] = {name: [] for name in implementations}
        slow = set()
        for name, call in implementations.items():
            for _ in range(warmup):
                start = time.perf_counter()
                call(image, kernel)
                elapsed = time.perf_counter() - start
                if elapsed > SLOW_CALL_SECONDS:
                    times[name].append(elapsed)
                    slow.add(name)
                    break
        for _ in range(repeats):
            for name, call in implementations.items():
                if name in slow:
                    continue
                start = time.perf_counter()
                call(image, kernel)
                times[name].append(time.perf_counter() - start)
        for name, samples in times.items():
            median = statistics.median(samples)
            results.append(
                Measurement(
                    name,
                    kernel_name,
                    tuple(image.shape),
                    str(image.dtype),
                    median * 1e3,
                    pixels / median / 1e6,
                    len(samples),
                )
            )
            if progress:
                print(f"  {kernel_name:12s} {name:32s} {median * 1e3:10.2f} ms", file=sys.stderr)
    return results


def _key(row: Measurement) -> tuple:
    return (row.kernel, row.shape, row.dtype)


def ratios(measurements, baseline: str) -> dict[tuple, float]:
    """``baseline time / implementation time`` for every row with a baseline in its run.

    Returns
    -------
    dict
        ``(implementation, kernel, shape, dtype) -> ratio``; above 1 means
        faster than the baseline.
    """
    base = {_key(row): row.median_ms for row in measurements if row.implementation == baseline}
    return {
        (row.implementation, *_key(row)): base[_key(row)] / row.median_ms
        for row in measurements
        if _key(row) in base and row.implementation != baseline
    }


def geometric_mean(values) -> float:
    values = list(values)
    if not values:
        return float("nan")
    return math.exp(sum(math.log(v) for v in values) / len(values))


def format_table(measurements, peers=DEFAULT_PEERS) -> str:
    """A Markdown table: ms, Mpixel/s and, for gpuconv rows, the speed-up over each peer."""
    peers = [peer for peer in peers if any(r.implementation == peer for r in measurements)]
    peer_ratios = {peer: ratios(measurements, peer) for peer in peers}
    header = ["image", "kernel", "implementation", "ms", "Mpixel/s", *(f"x vs {p}" for p in peers)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in measurements:
        cells = [
            f"{'x'.join(map(str, row.shape))} {row.dtype}",
            row.kernel,
            row.implementation,
            f"{row.median_ms:.2f}" + ("*" if row.repeats == 1 else ""),
            f"{row.mpixels_per_s:.1f}",
        ]
        for peer in peers:
            ratio = peer_ratios[peer].get((row.implementation, *_key(row)))
            cells.append(
                f"{ratio:.2f}"
                if ratio is not None and row.implementation.startswith("gpuconv:")
                else ""
            )
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        "ratio = peer time / gpuconv time in the same run (above 1: gpuconv faster); "
        "* = a single call (too slow to repeat)."
    )
    summary = summarize(measurements, peers)
    if summary:
        lines += [
            "",
            "| implementation | image | vs | geometric mean | min | max |",
            "|---|---|---|---|---|---|",
        ]
        for (implementation, image, peer), (mean, low, high) in summary.items():
            lines.append(
                f"| {implementation} | {image} | {peer} | {mean:.2f} | {low:.2f} | {high:.2f} |"
            )
    return "\n".join(lines)


def summarize(measurements, peers=DEFAULT_PEERS) -> dict[tuple, tuple[float, float, float]]:
    """``(implementation, image, peer) -> (geometric mean, min, max)`` of the ratios."""
    summary = {}
    for peer in peers:
        groups: dict[tuple, list[float]] = {}
        for (implementation, _, shape, dtype), ratio in ratios(measurements, peer).items():
            if implementation.startswith("gpuconv:"):
                image = f"{'x'.join(map(str, shape))} {dtype}"
                groups.setdefault((implementation, image, peer), []).append(ratio)
        for key, values in groups.items():
            summary[key] = (geometric_mean(values), min(values), max(values))
    return summary


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
    if program.endswith(".py"):
        program = f"python {program}"
    elif program.endswith(("gpuconv", "__main__.py")):
        program = "gpuconv bench"
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


def bench_kernels(names) -> dict[str, np.ndarray]:
    """Kernels by name: bank names, plus ``randomN`` (N x N, normal, seeded)."""
    chosen = {}
    for name in names:
        if name.startswith("random") and name[6:].isdigit() and int(name[6:]) > 0:
            size = int(name[6:])
            chosen[name] = np.random.default_rng(size).standard_normal((size, size)) / size
        else:
            chosen[name] = kernels.get(name)
    return chosen


def bench_image(size: int, dtype: str) -> np.ndarray:
    """A seeded random ``size x size`` image (uint8 levels; floats scaled to [0, 1])."""
    levels = np.random.default_rng(size).integers(0, 256, (size, size), dtype=np.uint8)
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return (levels / 255).astype(dtype)
    return levels.astype(dtype)


def _comma_list(convert):
    def parse(text: str):
        try:
            return [convert(item) for item in text.split(",") if item]
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``gpuconv bench``."""
    parser.add_argument(
        "--backend",
        action="append",
        choices=list(_registry.BACKEND_MODULES),
        help="gpuconv backend to time (repeatable; default: every available host backend)",
    )
    parser.add_argument(
        "--sizes",
        type=_comma_list(int),
        default=[2048, 8192],
        help="square image sides, comma-separated (default 2048,8192)",
    )
    parser.add_argument(
        "--dtypes",
        type=_comma_list(str),
        default=["uint8", "float32"],
        help="image dtypes, comma-separated (default uint8,float32)",
    )
    parser.add_argument(
        "--kernels",
        type=_comma_list(str),
        default=[*kernels.TUTORIAL_BANK, "random9"],
        help="bank names and randomN, comma-separated (default: tutorial bank + random9)",
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per cell (median)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls first")
    parser.add_argument(
        "--json", metavar="PATH", help="write measurements and machine facts as JSON"
    )
    parser.add_argument("--table", metavar="PATH", help="also write the Markdown table to PATH")
    parser.add_argument(
        "--threads",
        type=int,
        help="threads for numba and cv2 (default: numba's NUMBA_NUM_THREADS, cv2's own)",
    )
    parser.add_argument("--no-peers", action="store_true", help="time gpuconv only")
    parser.add_argument(
        "--no-compile-times",
        action="store_true",
        help="skip the cold/warm numba cache first-call measurement",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 256x256, uint8, tutorial bank, 2 repeats, no compile times",
    )


def run(args: argparse.Namespace) -> int:
    """What ``gpuconv bench`` does; returns the exit code."""
    if args.quick:
        args.sizes, args.dtypes, args.repeats = [256], ["uint8"], 2
        args.kernels = list(kernels.TUTORIAL_BANK)
        args.no_compile_times = True
    try:
        chosen_kernels = bench_kernels(args.kernels)
        for dtype in args.dtypes:
            if np.dtype(dtype).name not in ("uint8", "uint16", "int16", "float32", "float64"):
                raise ValueError(f"unsupported image dtype {dtype}")
    except (ValueError, TypeError) as error:
        print(f"gpuconv bench: {error}", file=sys.stderr)
        return 1
    if any(size < 1 for size in args.sizes) or args.repeats < 1 or args.warmup < 0:
        print("gpuconv bench: sizes and repeats must be positive, warmup >= 0", file=sys.stderr)
        return 1
    requested = args.backend or [name for name in HOST_BACKENDS if _registry.status(name).available]
    cuda_result = None
    if "cuda" in requested:
        requested = [name for name in requested if name != "cuda"]
        cuda_result = _run_cuda(args)
    for name in requested:
        state = _registry.status(name)
        if not state.available:
            print(f"skipping backend {name!r}: {state.reason}")
    if getattr(args, "threads", None) is not None and not _set_threads(args.threads):
        return 1
    table = implementations(requested, peers=not args.no_peers)
    measurements = []
    for size in args.sizes:
        for dtype in args.dtypes:
            image = bench_image(size, dtype)
            print(f"{size}x{size} {dtype}:", file=sys.stderr)
            measurements += measure(
                image,
                chosen_kernels,
                table,
                repeats=args.repeats,
                warmup=args.warmup,
                progress=True,
            )
    text = format_table(measurements)
    compile_report = None
    if "gpuconv:numba" in table and not args.no_compile_times:
        compile_report = compile_times()
        text += (
            f"\n\nnumba first call (import + {compile_report['kernel']} on "
            f"{compile_report['dtype']}, new process): cold cache "
            f"{compile_report['cold_s']:.2f} s, warm cache {compile_report['warm_s']:.2f} s"
        )
    facts = machine_facts()
    print(text)
    if args.table:
        with open(args.table, "w") as handle:
            handle.write(
                f"Command: `{facts['command']}`\n\nMachine: {facts['cpu']}, "
                f"{facts['logical_cpus']} logical CPUs, numba threads "
                f"{facts.get('numba_threads', '-')} ({facts.get('numba_threading_layer', '-')} "
                f"layer), cv2 threads {facts.get('cv2_threads', '-')}, load average "
                f"{' '.join(f'{load:.1f}' for load in os.getloadavg())}, "
                f"{facts['date_utc']}\n\n{text}\n"
            )
    if args.json:
        record = {
            "machine": facts,
            "measurements": [asdict(row) for row in measurements],
            "compile_times": compile_report,
            "cuda": cuda_result,
        }
        with open(args.json, "w") as handle:
            json.dump(record, handle, indent=1)
    return 0


def _set_threads(threads: int) -> bool:
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


def _run_cuda(args) -> int | str:
    """Run the CUDA engineer's device-resident benchmark, or say why not."""
    try:
        from . import _bench_cuda
    except ImportError as error:
        message = f"CUDA benchmark unavailable ({error}); timing host backends only"
        print(message)
        return message
    try:
        return _bench_cuda.run_cuda_benchmark(args)
    except Exception as error:  # noqa: BLE001 (no GPU, no driver: the host part still runs)
        message = (
            f"CUDA benchmark failed ({type(error).__name__}: {error}); timing host backends only"
        )
        print(message)
        return message
