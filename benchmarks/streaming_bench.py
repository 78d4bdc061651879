"""Overlapped streaming against one band after another: ``apply_file(overlap=True/False)``.

Issue 15, deliverable 1. In one process (numba loaded, page cache warm, so the figure is
the streaming itself, not start-up), a ``--size`` x ``--size`` uint8 image as ``.npy`` and
as a deflate-compressed ``.tif`` (its strips decoded by the reader thread) is filtered
into a file of the same kind, alternating ``overlap=True`` and ``overlap=False``,
``--repeats`` times; the table gives medians and the ratio (sequential / overlapped, above 1:
the overlap helps). The outputs of the two are compared byte for byte.

Usage: ``python benchmarks/streaming_bench.py [--size 16384] [--repeats 5] [--output PATH]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=16384)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--kernels", nargs="+", default=["sharpen", "small_blur"])
    parser.add_argument("--output", help="write the Markdown table here too")
    args = parser.parse_args(argv)

    import tifffile

    from gpuconv import apply_file

    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    rows = []
    with tempfile.TemporaryDirectory(prefix="streaming-bench-") as scratch:
        scratch = Path(scratch)
        image = np.random.default_rng(15).integers(0, 256, (args.size, args.size), np.uint8)
        np.save(scratch / "in.npy", image)
        tifffile.imwrite(scratch / "in.tif", image, compression="zlib", rowsperstrip=64)
        del image
        for suffix in (".npy", ".tif"):
            for kernel in args.kernels:
                source = scratch / f"in{suffix}"
                outputs = {mode: scratch / f"out-{mode}{suffix}" for mode in ("on", "off")}
                times: dict[str, list[float]] = {"on": [], "off": []}
                stats = {}
                for index in range(args.repeats + 1):  # the first round warms up
                    for mode in ("on", "off"):
                        started = time.perf_counter()
                        stats[mode] = apply_file(
                            source, outputs[mode], [kernel], overlap=mode == "on", progress=False
                        )
                        if index:
                            times[mode].append(time.perf_counter() - started)
                same = outputs["on"].read_bytes() == outputs["off"].read_bytes()
                on, off = statistics.median(times["on"]), statistics.median(times["off"])
                rows.append(
                    f"| {suffix} | {kernel} | {stats['on']['bands']} | {on:.3f} | {off:.3f} | "
                    f"**{off / on:.2f}** | {same} |"
                )
    lines = [
        "# Overlapped streaming against one band after another",
        "",
        f"Command: `python benchmarks/streaming_bench.py {' '.join(argv or sys.argv[1:])}`",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} logical CPUs, "
        f"load average at start {load}. {args.size} x {args.size} uint8, one process (numba "
        f"loaded, page cache warm), `apply_file(..., overlap=True/False)` alternating, median of "
        f"{args.repeats} after one warm-up round; `.tif` is deflate-compressed (64-row strips) "
        "in, uncompressed out.",
        "",
        "| file | kernel | bands | overlapped s | one band at a time s | ratio | outputs equal |",
        "|---|---|---:|---:|---:|---:|---|",
        *rows,
    ]
    text = "\n".join(lines)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
