"""Timing gpuconv's backends against cv2, scipy (and GPU peers): the one timing loop.

``gpuconv bench``, the scripts in ``benchmarks/`` and the notebook all call
this module, so every published figure comes from the same code:

- :func:`implementations` names what can run here (gpuconv backends and peers;
  defined in ``gpuconv.bench._implementations``);
- :func:`measure` times them *interleaved* (one call of each in turn, so a
  slow minute on a shared machine hurts every implementation alike), the
  median of ``repeats`` calls after ``warmup`` calls;
- :func:`ratios` divides times taken in the same run; :func:`format_table`
  prints them;
- :func:`machine_facts` describes the machine and :func:`compile_times`
  measures numba's first call with a cold and a warm on-disk cache, in fresh
  processes (both defined in ``gpuconv.bench._machine``);
- :func:`bench_kernels` and :func:`bench_image` make the kernels and seeded
  images timed (defined in ``gpuconv.bench._inputs``, shared with the GPU timing);
- :func:`add_arguments` and :func:`run` are ``gpuconv bench`` itself.

Timings of host implementations use :func:`time.perf_counter` around a call
that returns a finished NumPy array. GPU peers here take and return host
arrays (transfers included); device-resident CUDA timing with CUDA events is
``gpuconv.bench._cuda``'s job.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np

from .. import _registry, kernels
from . import _sweep
from ._implementations import HOST_BACKENDS, implementations
from ._inputs import bench_image, bench_kernels
from ._machine import (
    competing_processes,
    compile_times,
    first_call_seconds,
    machine_facts,
    set_threads,
)

# The public timing API lives here, whichever module defines it: the notebook and
# benchmarks/ call gpuconv.bench.NAME. (bench._cuda takes its inputs from ._inputs, so
# that this module, which imports bench._cuda, is never imported by it.)
__all__ = [
    "DEFAULT_PEERS",
    "HOST_BACKENDS",
    "SLOW_CALL_SECONDS",
    "Measurement",
    "add_arguments",
    "bench_image",
    "bench_kernels",
    "compile_times",
    "first_call_seconds",
    "format_table",
    "geometric_mean",
    "implementations",
    "machine_facts",
    "measure",
    "ratios",
    "run",
    "summarize",
]

#: Peers a gpuconv time is divided into, in the table's column order.
DEFAULT_PEERS = ("cv2.filter2D", "scipy.ndimage.correlate")
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
    p90_ms : float
        90th percentile of the same calls, milliseconds: the tail a busy machine
        stretches (``gpuconv bench --busy N``).
    """

    implementation: str
    kernel: str
    shape: tuple
    dtype: str
    median_ms: float
    mpixels_per_s: float
    repeats: int = 0
    p90_ms: float = 0.0


#: Implementations whose first call may compile (their slow warm-up call is timed again).
_COMPILING_PREFIX = "gpuconv:"


def _timed(call, image, kernel) -> float:
    start = time.perf_counter()
    call(image, kernel)
    return time.perf_counter() - start


def measure(image, kernels_by_name, implementations, *, repeats=5, warmup=1, progress=False):
    """Time every implementation on every kernel, interleaved; median of ``repeats``.

    A warm-up call that takes longer than :data:`SLOW_CALL_SECONDS` is kept
    as the only measurement of that implementation and kernel (``repeats=1``
    in its row): scipy needs minutes per 8192 x 8192 large kernel. A gpuconv
    implementation's slow warm-up call is timed once more first: it may have compiled
    numba's loop (a cold cache), which is no measure of the call.

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
                elapsed = _timed(call, image, kernel)
                if elapsed > SLOW_CALL_SECONDS and name.startswith(_COMPILING_PREFIX):
                    # gpuconv's first call of a dtype triple may compile numba's loop
                    # (a cold on-disk cache): only a second slow call makes it slow.
                    elapsed = _timed(call, image, kernel)
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
                    float(np.percentile(samples, 90)) * 1e3,
                )
            )
            if progress:
                print(f"  {kernel_name:12s} {name:32s} {median * 1e3:10.2f} ms", file=sys.stderr)
    return results


def _key(row: Measurement) -> tuple:
    return (row.kernel, row.shape, row.dtype)


def ratios(measurements, baseline: str, statistic: str = "median_ms") -> dict[tuple, float]:
    """``baseline time / implementation time`` for every row with a baseline in its run.

    Parameters
    ----------
    measurements : list of Measurement
    baseline : str
        The implementation divided into the others (``"cv2.filter2D"``).
    statistic : {"median_ms", "p90_ms"}
        Which time of each row is compared: the median or the 90th percentile.

    Returns
    -------
    dict
        ``(implementation, kernel, shape, dtype) -> ratio``; above 1 means
        faster than the baseline.
    """
    if statistic not in ("median_ms", "p90_ms"):
        raise ValueError(f"statistic must be 'median_ms' or 'p90_ms', got {statistic!r}")
    base = {
        _key(row): getattr(row, statistic) for row in measurements if row.implementation == baseline
    }
    return {
        (row.implementation, *_key(row)): base[_key(row)] / getattr(row, statistic)
        for row in measurements
        if _key(row) in base and row.implementation != baseline
    }


def geometric_mean(values) -> float:
    values = list(values)
    if not values:
        return float("nan")
    return math.exp(sum(math.log(v) for v in values) / len(values))


def format_table(measurements, peers=DEFAULT_PEERS, tail: bool = False) -> str:
    """A Markdown table: ms, Mpixel/s and, for gpuconv rows, the speed-up over each peer.

    With ``tail=True`` (``gpuconv bench --busy N``) it also shows each row's 90th
    percentile and the speed-up of gpuconv's p90 over each peer's p90.
    """
    peers = [peer for peer in peers if any(r.implementation == peer for r in measurements)]
    statistics_compared = ("median_ms", "p90_ms") if tail else ("median_ms",)
    peer_ratios = {
        (peer, statistic): ratios(measurements, peer, statistic)
        for peer in peers
        for statistic in statistics_compared
    }
    header = ["image", "kernel", "implementation", "ms"]
    header += ["p90 ms"] if tail else []
    header += ["Mpixel/s", *(f"x vs {p}" for p in peers)]
    header += [f"p90 x vs {p}" for p in peers] if tail else []
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in measurements:
        cells = [
            f"{'x'.join(map(str, row.shape))} {row.dtype}",
            row.kernel,
            row.implementation,
            f"{row.median_ms:.2f}" + ("*" if row.repeats == 1 else ""),
        ]
        cells += [f"{row.p90_ms:.2f}"] if tail else []
        cells.append(f"{row.mpixels_per_s:.1f}")
        for statistic in statistics_compared:
            for peer in peers:
                ratio = peer_ratios[peer, statistic].get((row.implementation, *_key(row)))
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
        + (" p90: the 90th percentile of the same calls." if tail else "")
    )
    for statistic in statistics_compared:
        summary = summarize(measurements, peers, statistic)
        if summary:
            what = "geometric mean" if statistic == "median_ms" else "p90: geometric mean"
            lines += [
                "",
                f"| implementation | image | vs | {what} | min | max |",
                "|---|---|---|---|---|---|",
            ]
            for (implementation, image, peer), (mean, low, high) in summary.items():
                lines.append(
                    f"| {implementation} | {image} | {peer} | {mean:.2f} | {low:.2f} | {high:.2f} |"
                )
    return "\n".join(lines)


def summarize(
    measurements, peers=DEFAULT_PEERS, statistic: str = "median_ms"
) -> dict[tuple, tuple[float, float, float]]:
    """``(implementation, image, peer) -> (geometric mean, min, max)`` of the ratios."""
    summary = {}
    for peer in peers:
        groups: dict[tuple, list[float]] = {}
        for (implementation, _, shape, dtype), ratio in ratios(
            measurements, peer, statistic
        ).items():
            if implementation.startswith("gpuconv:"):
                image = f"{'x'.join(map(str, shape))} {dtype}"
                groups.setdefault((implementation, image, peer), []).append(ratio)
        for key, values in groups.items():
            summary[key] = (geometric_mean(values), min(values), max(values))
    return summary


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
        default=[256, 512, 2048, 8192],
        help="square image sides, comma-separated (default 256,512,2048,8192)",
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
        "--peers",
        type=_comma_list(str),
        help="only these peers, comma-separated (e.g. cv2.filter2D; default: every one here)",
    )
    parser.add_argument(
        "--busy",
        type=int,
        default=0,
        metavar="N",
        help="run N competing spin processes while timing (a busy machine) and report "
        "the 90th percentile beside the median",
    )
    parser.add_argument(
        "--no-compile-times",
        action="store_true",
        help="skip the cold/warm numba cache first-call measurement",
    )
    parser.add_argument(
        "--kernel-sizes",
        type=_sweep.kernel_size_list,
        metavar="3,5,...,63",
        help="sweep square kernel sizes on the numba backend: the path the cost model "
        "chooses and the time of every path, against cv2.filter2D (use with --sizes)",
    )
    parser.add_argument(
        "--families",
        type=_comma_list(str),
        help="kernel family:image dtype pairs of the sweep "
        f"(default {','.join(_sweep.DEFAULT_FAMILIES)}; families random, box, dog)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 256x256, uint8, tutorial bank, 2 repeats, no compile times",
    )


def run(args: argparse.Namespace) -> int:
    """What ``gpuconv bench`` does; returns the exit code."""
    if getattr(args, "kernel_sizes", None):
        return _sweep.run_sweep(args)
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
    busy = getattr(args, "busy", 0)
    if any(size < 1 for size in args.sizes) or args.repeats < 1 or args.warmup < 0 or busy < 0:
        print(
            "gpuconv bench: sizes and repeats must be positive, warmup and --busy >= 0",
            file=sys.stderr,
        )
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
    if getattr(args, "threads", None) is not None and not set_threads(args.threads):
        return 1
    table = implementations(requested, peers=not args.no_peers)
    wanted_peers = getattr(args, "peers", None)
    if wanted_peers:
        unknown = [name for name in wanted_peers if name not in implementations([], peers=True)]
        if unknown:
            print(f"gpuconv bench: unknown or unavailable peers {unknown}", file=sys.stderr)
            return 1
        table = {
            name: call
            for name, call in table.items()
            if name.startswith("gpuconv:") or name in wanted_peers
        }
    measurements = []
    with competing_processes(busy):
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
    text = format_table(measurements, tail=busy > 0)
    if busy:
        text += f"\n\nTimed with {busy} competing spin process(es) running (--busy {busy})."
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
            "busy": busy,
            "measurements": [asdict(row) for row in measurements],
            "compile_times": compile_report,
            "cuda": cuda_result,
        }
        with open(args.json, "w") as handle:
            json.dump(record, handle, indent=1)
    return 0


def _run_cuda(args) -> int | str:
    """Run the CUDA engineer's device-resident benchmark, or say why not."""
    try:
        from . import _cuda
    except ImportError as error:
        message = f"CUDA benchmark unavailable ({error}); timing host backends only"
        print(message)
        return message
    try:
        return _cuda.run_cuda_benchmark(args)
    except Exception as error:  # noqa: BLE001 (no GPU, no driver: the host part still runs)
        message = (
            f"CUDA benchmark failed ({type(error).__name__}: {error}); timing host backends only"
        )
        print(message)
        return message
