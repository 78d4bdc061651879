"""Benchmark: a 32768 x 32768 uint8 image (1 GiB) filtered from disk.

Three ways, each in a fresh Python process so that its peak memory is its own:

- ``cli``: ``gpuconv apply in.npy -k KERNEL -o out.npy`` (the out-of-core band
  pipeline, :func:`gpuconv._outofcore.apply_file`);
- ``dask-file``: the Python API on Dask arrays of row bands,
  ``write_dask(gpuconv.convolve(read_dask(path), kernel), out)``;
- ``dask-memmap``: the Python API on ``da.from_array(np.load(path,
  mmap_mode="r"))`` stored into an ``open_memmap`` with ``da.store`` (Dask's
  ``from_array`` copies the whole memory map into memory: shown as the
  pitfall ``read_dask`` avoids);
- ``in-memory``: ``np.load`` the whole image, ``gpuconv.convolve``, ``np.save``.

Each process reports its wall time (reading, filtering and writing included),
its peak resident memory (``VmHWM``: file pages mapped into the process
count too) and its peak anonymous memory (``RssAnon`` sampled every 20 ms from
``/proc/self/status``: the memory the run really needs, page cache excluded).
The three outputs are compared byte for byte. Usage::

    python benchmarks/outofcore_bench.py [--size 32768] [--kernels sharpen small_blur]
        [--workdir /tmp] [--output benchmarks/results/outofcore-cpu.md]

The image and outputs (3 GiB at the default size) live in a temporary
directory under ``--workdir`` that is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPOSITORY = Path(__file__).resolve().parent.parent
MODES = ("in-memory", "cli", "dask-file", "dask-memmap")

# The child process: run one mode, print one JSON line of measurements.
_CHILD = r"""
import json, os, sys, threading, time
import numpy as np

mode, source, target, kernel, rows = sys.argv[1:6]
peak_anonymous = [0]
stop = threading.Event()

def sample():
    while not stop.is_set():
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    peak_anonymous[0] = max(peak_anonymous[0], int(line.split()[1]))
        stop.wait(0.02)

sampler = threading.Thread(target=sample, daemon=True)
sampler.start()
import gpuconv
gpuconv.convolve(np.zeros((64, 64), np.uint8), kernel)  # compile outside the timing
backend = next(name for name, state in gpuconv.backends().items() if state)
# Imports outside the timing: each path is timed from a warm interpreter.
import dask.array as da
from gpuconv.cli import main
from gpuconv._dask import read_dask, write_dask
started = time.perf_counter()
if mode == "cli":
    code = main(["apply", source, "-k", kernel, "-o", target, "--quiet"])
    assert code == 0, code
elif mode == "dask-file":
    write_dask(gpuconv.convolve(read_dask(source, rows_per_chunk=int(rows)), kernel), target)
elif mode == "dask-memmap":
    image = np.load(source, mmap_mode="r")
    lazy = gpuconv.convolve(da.from_array(image, chunks=(int(rows), image.shape[1])), kernel)
    output = np.lib.format.open_memmap(target, mode="w+", dtype=lazy.dtype, shape=lazy.shape)
    da.store(lazy, output, lock=False)
    output.flush()
    del output
elif mode == "baseline":
    pass  # the interpreter, gpuconv, numba and dask alone
elif mode == "in-memory":
    image = np.load(source)
    np.save(target, gpuconv.convolve(image, kernel))
else:
    raise SystemExit(f"unknown mode {mode}")
seconds = time.perf_counter() - started
stop.set(); sampler.join()
with open("/proc/self/status") as status:  # VmHWM restarts at exec, unlike ru_maxrss
    peak_rss = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(json.dumps({
    "seconds": seconds,
    "peak_rss_mib": peak_rss / 1024,
    "peak_anonymous_mib": peak_anonymous[0] / 1024,
    "backend": backend,
}))
"""


def make_image(path: Path, size: int) -> None:
    """Write a size x size uint8 .npy of noise plus structure, band by band."""
    image = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(size, size))
    rng = np.random.default_rng(6)
    band = 1024
    columns = (np.arange(size) % 256).astype(np.uint8)
    for top in range(0, size, band):
        rows = min(band, size - top)
        noise = rng.integers(0, 64, (rows, size), dtype=np.uint8)
        image[top : top + rows] = noise + columns[None, :] // 2
    image.flush()
    del image


def run_child(mode: str, source: Path, target: Path, kernel: str, rows: int) -> dict:
    environment = dict(os.environ, PYTHONPATH=str(REPOSITORY))
    completed = subprocess.run(
        [sys.executable, "-c", _CHILD, mode, str(source), str(target), kernel, str(rows)],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"{mode} failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def same_bytes(first: Path, second: Path, band: int = 2**26) -> bool:
    """Compare two .npy files in bands, never holding either whole."""
    a, b = np.load(first, mmap_mode="r"), np.load(second, mmap_mode="r")
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    flat_a, flat_b = a.reshape(-1), b.reshape(-1)
    return all(
        np.array_equal(flat_a[start : start + band], flat_b[start : start + band])
        for start in range(0, flat_a.size, band)
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32768)
    parser.add_argument("--kernels", nargs="+", default=["sharpen", "small_blur"])
    parser.add_argument("--dask-rows", type=int, default=1024, help="rows per Dask chunk")
    parser.add_argument("--workdir", default=tempfile.gettempdir())
    parser.add_argument("--output", help="write the Markdown table here too")
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per path: best time, largest memory"
    )
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="gpuconv-outofcore-", dir=args.workdir))
    lines = []
    try:
        source = workdir / "image.npy"
        started = time.perf_counter()
        make_image(source, args.size)
        image_mib = source.stat().st_size / 2**20
        print(
            f"made {source} ({image_mib:.0f} MiB) in {time.perf_counter() - started:.1f} s",
            file=sys.stderr,
        )
        baseline = run_child("baseline", source, workdir / "unused.npy", "sharpen", 1)
        command = "python benchmarks/outofcore_bench.py " + " ".join(argv or sys.argv[1:])
        lines += [
            f"# Out-of-core benchmark: {args.size} x {args.size} uint8 ({image_mib:.0f} MiB) from disk",
            "",
            f"Command: `{command.strip()}`",
            "",
            (
                f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, "
                f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM, "
                f"Python {platform.python_version()}, numpy {np.__version__}; load average "
                f"{os.getloadavg()[0]:.1f} when the run began. The file sits in the page cache "
                "(warm), so the times are compute plus memory copies, not disk speed."
            ),
            "",
            (
                "Time includes reading the input and writing the output. Peak RSS is `VmHWM` "
                "(file pages mapped into the process count); peak anonymous is the largest "
                "`RssAnon` sampled every 20 ms (the memory the run itself needs)."
            ),
            "",
            (
                "An idle interpreter with gpuconv, numba and dask imported and warm peaks at "
                f"{baseline['peak_rss_mib']:.0f} MiB RSS ({baseline['peak_anonymous_mib']:.0f} "
                "MiB anonymous): the rest of each figure is what the path itself uses. Best of "
                f"{args.repeat} runs for time, largest of them for memory."
            ),
            "",
            "| kernel | path | backend | seconds | MiB/s | Mpixel/s | peak RSS MiB | peak anonymous MiB | output equal to in-memory |",
            "|---|---|---|---:|---:|---:|---:|---:|---|",
        ]
        for kernel in args.kernels:
            outputs = {}
            results = {}
            for mode in MODES:
                target = workdir / f"out-{mode}.npy"
                runs = []
                for _ in range(args.repeat):
                    runs.append(run_child(mode, source, target, kernel, args.dask_rows))
                    print(kernel, mode, runs[-1], file=sys.stderr)
                # The best time is the least disturbed by other work on the
                # machine; memory is reported at its largest.
                results[mode] = {
                    "seconds": min(run["seconds"] for run in runs),
                    "peak_rss_mib": max(run["peak_rss_mib"] for run in runs),
                    "peak_anonymous_mib": max(run["peak_anonymous_mib"] for run in runs),
                    "backend": runs[0]["backend"],
                }
                outputs[mode] = target
            for mode in MODES[1:] + MODES[:1]:
                result = results[mode]
                equal = (
                    "reference"
                    if mode == "in-memory"
                    else str(same_bytes(outputs[mode], outputs["in-memory"]))
                )
                path = {
                    "cli": "`gpuconv apply` (apply_file, bands)",
                    "dask-file": "Python API, read_dask + write_dask",
                    "dask-memmap": "Python API, da.from_array(np.load memmap)",
                    "in-memory": "np.load + convolve + np.save",
                }[mode]
                lines.append(
                    f"| {kernel} | {path} | {result['backend']} | {result['seconds']:.2f} | "
                    f"{image_mib / result['seconds']:.0f} | "
                    f"{args.size**2 / 1e6 / result['seconds']:.0f} | "
                    f"{result['peak_rss_mib']:.0f} | {result['peak_anonymous_mib']:.0f} | {equal} |"
                )
            for target in outputs.values():
                target.unlink()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output:
        Path(args.output).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
