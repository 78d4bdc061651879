"""``gpuconv bench --kernel-sizes 3,5,...``: the numba backend's paths over kernel sizes.

For each kernel family (``random`` on float32, ``box`` on uint8 by default), image size and
kernel size, times interleaved (one call of each in turn, the order rotating every repeat,
median of ``repeats``):
``cv2.filter2D``, ``gpuconv`` as it runs (the path the cost model chose) and every path
the cost model could have chosen (:func:`gpuconv._backends.numba.backend.convolve_path`),
so the crossovers can be read off the table and the constants of
:mod:`gpuconv._costmodel` checked against them.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

from .._costmodel import PATHS
from ._inputs import bench_image, bench_kernels

#: Kernel family and image dtype of each default sweep.
DEFAULT_FAMILIES = ("random:float32", "box:uint8")


def interleaved_medians(calls: dict, *, repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median milliseconds of each of ``calls`` (name -> callable without arguments), timed
    interleaved: ``warmup`` untimed calls of each, then ``repeats`` rounds of one call of
    each in turn, the order turning every round (a call right after a long multi-threaded
    one, numba's or cv2's threads still spinning, is slowed, whichever it is)."""
    for call in calls.values():
        for _ in range(warmup):
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for repeat in range(repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(samples) * 1e3 for name, samples in times.items()}


def _cases(families, sizes, kernel_sizes):
    for family in families:
        name, _, dtype = family.partition(":")
        if name not in ("random", "box", "dog") or not dtype:
            raise ValueError(f"family {family!r}: expected random|box|dog:DTYPE")
        for size in sizes:
            image = bench_image(size, dtype)
            for kernel_size in kernel_sizes:
                kernel_name = f"{name}{kernel_size}"
                yield image, kernel_name, bench_kernels([kernel_name])[kernel_name]


def sweep(families, sizes, kernel_sizes, *, repeats=5, warmup=1, progress=True):
    """Rows of the sweep: one dict per (family, image size, kernel size)."""
    import cv2
    import numba

    import gpuconv
    from gpuconv._backends.numba import backend as numba_backend
    from gpuconv._plan import make_plan

    rows = []
    for image, kernel_name, kernel in _cases(families, sizes, kernel_sizes):
        image3d, plan, _ = make_plan(
            image, kernel, border="reflect101", value=0.0, anchor=None, flip=False, dtype=None
        )
        run = numba_backend.cached_execution(plan, numba.get_num_threads())
        calls = {
            "cv2.filter2D": lambda image=image, kernel=kernel: cv2.filter2D(image, -1, kernel),
            "gpuconv": lambda image=image, kernel=kernel: gpuconv.convolve(
                image, kernel, backend="numba"
            ),
        }
        estimates = run.choice.estimates if run.choice is not None else {}
        for path in estimates:
            calls[path] = lambda path=path, image3d=image3d, plan=plan: numba_backend.convolve_path(
                image3d, plan, path
            )
        medians = interleaved_medians(calls, repeats=repeats, warmup=warmup)
        row = {
            "image": f"{image.shape[0]}x{image.shape[1]} {image.dtype}",
            "kernel": kernel_name,
            "chosen": run.path_name,
            "ms": medians,
            "estimated_ms": {path: seconds * 1e3 for path, seconds in estimates.items()},
            "x_vs_cv2": medians["cv2.filter2D"] / medians["gpuconv"],
        }
        rows.append(row)
        if progress:
            cells = " ".join(f"{name}={ms:.1f}" for name, ms in medians.items())
            print(
                f"  {row['image']} {kernel_name:9s} chosen={row['chosen']:9s} "
                f"x{row['x_vs_cv2']:.2f} vs cv2  {cells}",
                file=sys.stderr,
            )
    return rows


def format_sweep(rows) -> str:
    """A Markdown table: chosen path, its time against cv2, and every path's time."""
    header = ["image", "kernel", "chosen", "gpuconv ms", "cv2 ms", "x vs cv2", *PATHS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        ms = row["ms"]
        cells = [
            row["image"],
            row["kernel"],
            row["chosen"],
            f"{ms['gpuconv']:.1f}",
            f"{ms['cv2.filter2D']:.1f}",
            f"{row['x_vs_cv2']:.2f}",
            *(f"{ms[path]:.1f}" if path in ms else "" for path in PATHS),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        "Milliseconds, median of the run's repeats, every column of a row measured "
        "interleaved in the same run; x vs cv2 = cv2 time / gpuconv time (above 1: faster). "
        "Path columns: the same call forced onto that path (empty: the path cannot "
        "compute this plan within the contract; 3 x 3 kernels always run the fused loop)."
    )
    return "\n".join(lines)


def run_sweep(args) -> int:
    """``gpuconv bench --kernel-sizes``; returns the exit code."""
    from ._machine import machine_facts, set_threads

    if any(size < 1 for size in args.kernel_sizes):
        print("gpuconv bench: kernel sizes must be positive", file=sys.stderr)
        return 1
    if getattr(args, "threads", None) is not None and not set_threads(args.threads):
        return 1
    try:
        rows = sweep(
            args.families or list(DEFAULT_FAMILIES),
            args.sizes,
            args.kernel_sizes,
            repeats=args.repeats,
            warmup=args.warmup,
        )
    except (ValueError, ImportError) as error:
        print(f"gpuconv bench: {error}", file=sys.stderr)
        return 1
    facts = machine_facts()
    text = format_sweep(rows)
    print(text)
    loads = " ".join(f"{load:.1f}" for load in os.getloadavg())
    if args.table:
        with open(args.table, "w") as handle:
            handle.write(
                f"Command: `{facts['command']}`\n\nMachine: {facts['cpu']}, "
                f"{facts['logical_cpus']} logical CPUs, numba threads "
                f"{facts.get('numba_threads', '-')}, cv2 threads {facts.get('cv2_threads', '-')}, "
                f"load average {loads}, {facts['date_utc']}\n\n{text}\n"
            )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"machine": facts, "sweep": rows}, handle, indent=1)
    return 0


def kernel_size_list(text: str) -> list[int]:
    """``"3,5,...,63"`` (an arithmetic range by its first two terms) or ``"3,5,7"``."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    try:
        if len(items) == 4 and items[2] == "...":
            first, second, last = int(items[0]), int(items[1]), int(items[3])
            if second <= first:
                raise ValueError("a range needs an increasing first two sizes")
            return list(range(first, last + 1, second - first))
        return [int(item) for item in items]
    except ValueError as error:
        import argparse

        raise argparse.ArgumentTypeError(f"kernel sizes {text!r}: {error}") from None


__all__ = ["DEFAULT_FAMILIES", "format_sweep", "kernel_size_list", "run_sweep", "sweep"]
