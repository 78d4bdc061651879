"""gpuconv against libvips (pyvips), whole processes: a big file, 200 small PNGs, one PNG.

Issue 15, deliverable 4. libvips is an optional peer: without ``pyvips`` (``pip install
pyvips pyvips-binary``, or ``pip install 'gpuconv[vips]'``) this script says so and exits
with status 1. Every case is a whole process (start-up included) started by
``/usr/bin/time``, which gives its wall time and peak RSS (``%M``: the child's own high-water
mark; Python's ``RUSAGE_CHILDREN`` would also count this script's memory, which a child
inherits at fork). The page cache is warm: each command runs once before timing; the disk
is synced (untimed) before every run, so that no run pays for the writeback of the one before. Then
``--repeats`` rounds run every command of a case in turn (interleaved), and the table gives
the median (and every run).

Cases (``--cases``, default all three):

- ``big``: a ``--size`` x ``--size`` uint8 image (random pixels), ``.npy`` for gpuconv and
  the same pixels as a raw VIPS ``.v`` file for libvips. ``gpuconv apply IN.npy -k K -o
  OUT.npy --border replicate`` against ``Image.new_from_file(IN.v, access="sequential")
  .conv(mask, precision="integer").write_to_file(OUT.v)``, for K = sharpen and small_blur
  (7 x 7 box: integer mask of ones, scale 49). libvips extends the image by copying its edge
  (``replicate``). libvips does not ``fsync`` its output; ``gpuconv apply`` does by default
  (a durable, atomic replacement), so a second gpuconv row runs with ``--no-fsync``, which
  like libvips does not wait for the disk. Its integer path approximates a mask of 1/49 in fixed point in its SIMD
  code, so a second libvips row runs with ``VIPS_NOVECTOR=1`` (its exact C path); the table
  says how many pixels of each libvips output differ from gpuconv's.
- ``batch``: ``--files`` PNGs of 512 x 512 RGB (scikit-image's astronaut, shifted): one
  ``gpuconv apply IN_DIR -k sharpen --out-dir OUT -q`` against a pyvips loop in one process
  (PNG compression 1, as OpenCV's default) and a Python loop of ``cv2.imread`` +
  ``cv2.filter2D`` + ``cv2.imwrite``.
- ``single``: one of those PNGs, the same three ways.

Usage::

    python benchmarks/vips_bench.py [--size 16384] [--files 200] [--repeats 3]
        [--cases big,batch,single] [--output benchmarks/results/vips-2core.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = ("big", "batch", "single")
NO_FSYNC = "gpuconv apply --no-fsync (.npy)"
VIPS = "libvips conv, integer (.v)"
VIPS_FSYNC = "libvips conv, integer, then fsync (.v)"

NO_PYVIPS = (
    "vips_bench: pyvips is not installed, and libvips is the peer this benchmark compares "
    "against; install it with `pip install pyvips pyvips-binary` (or `pip install "
    "'gpuconv[vips]'`) and run again"
)

# libvips, one image: sys.argv = [kernel, input, output, optional "fsync"]. Masks as gpuconv's
# bank has them. With "fsync" the output is flushed to the disk after libvips wrote it, the
# durability `gpuconv apply` gives by default (libvips has no option for it).
_VIPS_ONE = """
import os, sys, pyvips
masks = {
    "sharpen": pyvips.Image.new_from_array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], scale=1),
    "small_blur": pyvips.Image.new_from_array([[1] * 7] * 7, scale=49),
}
image = pyvips.Image.new_from_file(sys.argv[2], access="sequential")
out = image.conv(masks[sys.argv[1]], precision="integer")
if sys.argv[3].endswith(".png"):
    out.write_to_file(sys.argv[3], compression=1)
else:
    out.write_to_file(sys.argv[3])
if sys.argv[4:] == ["fsync"]:
    fd = os.open(sys.argv[3], os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
"""

# libvips, every PNG of a directory in one process: sys.argv = [input dir, output dir].
_VIPS_LOOP = """
import sys, pyvips
from pathlib import Path
mask = pyvips.Image.new_from_array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], scale=1)
out = Path(sys.argv[2])
for path in sorted(Path(sys.argv[1]).iterdir()):
    image = pyvips.Image.new_from_file(str(path), access="sequential")
    image.conv(mask, precision="integer").write_to_file(str(out / path.name), compression=1)
"""

# OpenCV, every image of a directory (or one file) in one process: sys.argv = [input, output].
_CV2_LOOP = """
import sys, cv2, numpy as np
from pathlib import Path
kernel = np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], np.float32)
source, target = Path(sys.argv[1]), Path(sys.argv[2])
pairs = ([(p, target / p.name) for p in sorted(source.iterdir())] if source.is_dir()
         else [(source, target)])
for path, out in pairs:
    image = cv2.imread(str(path))
    cv2.imwrite(str(out), cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REFLECT_101))
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vips_bench", description=__doc__.splitlines()[0], epilog="needs pyvips"
    )
    parser.add_argument("--size", type=int, default=16384, help="side of the big image")
    parser.add_argument("--files", type=int, default=200, help="PNGs in the batch")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (median)")
    parser.add_argument(
        "--cases",
        type=_cases,
        default=list(CASES),
        help=f"comma-separated, of {', '.join(CASES)} (default all)",
    )
    parser.add_argument("--output", help="write the Markdown results here")
    parser.add_argument("--scratch", help="directory for the files (default: a temporary one)")
    return parser


def _cases(text: str) -> list[str]:
    chosen = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [case for case in chosen if case not in CASES]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(
            f"unknown case(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(CASES)}"
        )
    return chosen


def _have_pyvips() -> bool:
    try:
        import pyvips  # noqa: F401
    except (ImportError, OSError):  # OSError: pyvips without a loadable libvips
        return False
    return True


def _timed(command: list[str], env: dict | None = None) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one whole process, through /usr/bin/time.

    The disk is synced first, untimed: a run that leaves its output dirty in the page cache
    (libvips, ``--no-fsync``) would otherwise hand its writeback to whichever run comes next.
    """
    os.sync()
    with tempfile.NamedTemporaryFile("r", suffix=".time") as report:
        wrapped = ["/usr/bin/time", "-o", report.name, "-f", "%e %M", *command]
        started = time.perf_counter()
        subprocess.run(wrapped, check=True, capture_output=True, env=env)
        seconds = time.perf_counter() - started
        kib = float(report.read().split()[-1])
    return seconds, kib / 1024


def _race(commands: dict[str, tuple[list[str], dict | None]], repeats: int) -> dict:
    """Each command once (warm-up), then ``repeats`` interleaved rounds: name -> runs."""
    for command, env in commands.values():
        _timed(command, env)
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    for _ in range(repeats):
        for name, (command, env) in commands.items():
            runs[name].append(_timed(command, env))
    return runs


def _rows(runs: dict, notes: dict | None = None) -> list[str]:
    notes = notes or {}
    lines = ["| | median s | peak RSS MiB (max) | runs (s) | output |", "|---|---:|---:|---|---|"]
    for name, values in runs.items():
        seconds = [s for s, _ in values]
        lines.append(
            f"| {name} | {statistics.median(seconds):.2f} | {max(r for _, r in values):.0f} | "
            f"{', '.join(f'{s:.2f}' for s in seconds)} | {notes.get(name, '')} |"
        )
    return lines


def _vips_pixels(path: Path):
    import numpy as np
    import pyvips

    image = pyvips.Image.new_from_file(str(path))
    return np.ndarray(
        buffer=image.write_to_memory(),
        dtype=np.uint8,
        shape=(image.height, image.width, image.bands),
    ).squeeze()


def _difference(ours, theirs) -> str:
    import numpy as np

    differ = int(np.count_nonzero(ours != theirs))
    if differ == 0:
        return "identical to gpuconv"
    largest = int(np.abs(ours.astype(np.int16) - theirs).max())
    return f"{100 * differ / ours.size:.2f}% of pixels differ from gpuconv's, by up to {largest}"


def _big_case(scratch: Path, size: int, repeats: int) -> list[str]:
    import numpy as np

    source_npy, source_v = scratch / "big.npy", scratch / "big.v"
    # Written by a child, so that this process never holds the image (its RSS is not measured,
    # but keeping it small keeps the machine's memory for the runs).
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, numpy as np, pyvips\n"
            "n = int(sys.argv[1])\n"
            "a = np.random.default_rng(15).integers(0, 256, (n, n), dtype=np.uint8)\n"
            "np.save(sys.argv[2], a)\n"
            "pyvips.Image.new_from_memory(a.data, n, n, 1, 'uchar').write_to_file(sys.argv[3])\n",
            str(size),
            str(source_npy),
            str(source_v),
        ],
        check=True,
    )
    exact = dict(os.environ, VIPS_NOVECTOR="1")
    lines = []
    for kernel in ("sharpen", "small_blur"):
        ours, ours_unsynced, theirs, theirs_synced, exact_out = (
            scratch / f"gpuconv-{kernel}.npy",
            scratch / f"gpuconv-no-fsync-{kernel}.npy",
            scratch / f"vips-{kernel}.v",
            scratch / f"vips-fsync-{kernel}.v",
            scratch / f"vips-novector-{kernel}.v",
        )
        gpuconv = [sys.executable, "-m", "gpuconv", "apply", str(source_npy), "-k", kernel]
        gpuconv += ["--border", "replicate", "-q"]
        vips = [sys.executable, "-c", _VIPS_ONE, kernel, str(source_v)]
        commands = {
            "gpuconv apply (.npy)": ([*gpuconv, "-o", str(ours)], None),
            # libvips writes without fsync; so does gpuconv when told to.
            NO_FSYNC: ([*gpuconv, "-o", str(ours_unsynced), "--no-fsync"], None),
            VIPS: ([*vips, str(theirs)], None),
            # ... and gpuconv's durable default against libvips made as durable.
            VIPS_FSYNC: ([*vips, str(theirs_synced), "fsync"], None),
            "libvips conv, integer, VIPS_NOVECTOR=1 (.v)": ([*vips, str(exact_out)], exact),
        }
        runs = _race(commands, repeats)
        result = np.load(ours)
        notes = {
            "gpuconv apply (.npy)": "reference",
            NO_FSYNC: _difference(result, np.load(ours_unsynced)),
            VIPS: _difference(result, _vips_pixels(theirs)),
            VIPS_FSYNC: _difference(result, _vips_pixels(theirs_synced)),
            "libvips conv, integer, VIPS_NOVECTOR=1 (.v)": _difference(
                result, _vips_pixels(exact_out)
            ),
        }
        del result

        median = {name: statistics.median(s for s, _ in values) for name, values in runs.items()}
        lines += [
            f"### {size} x {size} uint8, {kernel}, end to end",
            "",
            *_rows(runs, notes),
            "",
            "libvips / gpuconv time (above 1: gpuconv faster), like for like: without "
            f"fsync (gpuconv --no-fsync against libvips) **{median[VIPS] / median[NO_FSYNC]:.2f}**; "
            f"durable (gpuconv's default against libvips then fsync) "
            f"**{median[VIPS_FSYNC] / median['gpuconv apply (.npy)']:.2f}**. gpuconv's durable "
            f"default against libvips without fsync: "
            f"{median[VIPS] / median['gpuconv apply (.npy)']:.2f}.",
            "",
        ]
        for path in (ours, ours_unsynced, theirs, theirs_synced, exact_out):
            path.unlink()
    source_npy.unlink()
    source_v.unlink()
    return lines


def _small_inputs(directory: Path, count: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from batch_bench import _make_inputs

    _make_inputs(directory, count)


def _png_notes(reference: Path, others: dict[str, Path]) -> dict[str, str]:
    """How each tool's PNGs differ from cv2's (the border: libvips replicates the edge)."""
    import cv2
    import numpy as np

    notes = {}
    for name, directory in others.items():
        differ = total = 0
        for path in sorted(reference.iterdir()):
            ours = cv2.imread(str(directory / path.name))
            expected = cv2.imread(str(path))
            differ += int(np.count_nonzero(ours != expected))
            total += ours.size
        notes[name] = (
            "identical to the cv2 loop"
            if differ == 0
            else f"{100 * differ / total:.2f}% of values differ from cv2's"
        )
    return notes


def _batch_case(scratch: Path, files: int, repeats: int) -> list[str]:
    inputs = scratch / "pngs"
    outs = {name: scratch / f"out-{name}" for name in ("gpuconv", "vips", "cv2")}
    for directory in (inputs, *outs.values()):
        directory.mkdir()
    _small_inputs(inputs, files)
    gpuconv = [sys.executable, "-m", "gpuconv", "apply", str(inputs), "-k", "sharpen"]
    gpuconv += ["--out-dir", str(outs["gpuconv"]), "-q"]
    commands = {
        "gpuconv apply --out-dir (one process)": (gpuconv, None),
        "pyvips loop (one process)": (
            [sys.executable, "-c", _VIPS_LOOP, str(inputs), str(outs["vips"])],
            None,
        ),
        "cv2 loop: imread + filter2D + imwrite": (
            [sys.executable, "-c", _CV2_LOOP, str(inputs), str(outs["cv2"])],
            None,
        ),
    }
    runs = _race(commands, repeats)
    notes = _png_notes(
        outs["cv2"],
        {
            "gpuconv apply --out-dir (one process)": outs["gpuconv"],
            "pyvips loop (one process)": outs["vips"],
        },
    )
    medians = {name: statistics.median(s for s, _ in values) for name, values in runs.items()}
    first = "gpuconv apply --out-dir (one process)"
    return [
        f"### {files} PNGs of 512 x 512 RGB, sharpen, end to end",
        "",
        *_rows(runs, notes),
        "",
        f"pyvips loop / gpuconv = **{medians['pyvips loop (one process)'] / medians[first]:.2f}**"
        f", cv2 loop / gpuconv = "
        f"**{medians['cv2 loop: imread + filter2D + imwrite'] / medians[first]:.2f}** "
        "(above 1: gpuconv faster).",
        "",
    ]


def _single_case(scratch: Path, repeats: int) -> list[str]:
    directory = scratch / "one"
    directory.mkdir()
    _small_inputs(directory, 1)
    source = next(directory.iterdir())
    gpuconv = [sys.executable, "-m", "gpuconv", "apply", str(source), "-k", "sharpen"]
    gpuconv += ["-o", str(scratch / "one-gpuconv.png"), "-q"]
    commands = {
        "gpuconv apply": (gpuconv, None),
        "pyvips": (
            [sys.executable, "-c", _VIPS_ONE, "sharpen", str(source), str(scratch / "one-v.png")],
            None,
        ),
        "cv2: imread + filter2D + imwrite": (
            [sys.executable, "-c", _CV2_LOOP, str(source), str(scratch / "one-cv2.png")],
            None,
        ),
    }
    runs = _race(commands, repeats)
    return ["### One 512 x 512 RGB PNG, sharpen, end to end", "", *_rows(runs), ""]


def _machine() -> str:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    import pyvips

    return (
        f"{platform.machine()}, {os.cpu_count()} logical CPUs, Python "
        f"{platform.python_version()}, libvips {pyvips.version(0)}.{pyvips.version(1)}."
        f"{pyvips.version(2)} (pyvips {pyvips.__version__}); load average at start {load}"
    )


def _compile_bytecode() -> None:
    """Write gpuconv's ``.pyc`` files first, as ``pip install`` does for an installed copy.

    Why: an editable install in a shell with ``PYTHONDONTWRITEBYTECODE=1`` (this
    workplace's) compiles every gpuconv module from source in every process, 60-80 ms
    of a one-PNG run that no installed copy pays.
    """
    import compileall

    import gpuconv

    compileall.compile_dir(Path(gpuconv.__file__).parent, quiet=1)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not _have_pyvips():
        print(NO_PYVIPS, file=sys.stderr)
        return 1
    if not Path("/usr/bin/time").exists():
        print("vips_bench: needs /usr/bin/time (GNU time) for peak RSS", file=sys.stderr)
        return 1
    command = "python benchmarks/vips_bench.py " + " ".join(argv or sys.argv[1:])
    _compile_bytecode()
    lines = [
        "# gpuconv against libvips, whole processes",
        "",
        f"Command: `{command.strip()}`",
        "",
        f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Machine: {_machine()}.",
        "",
        f"Median of {args.repeats} interleaved rounds after one warm-up run each (page cache "
        "warm); wall time of the whole process and its peak RSS from `/usr/bin/time`.",
        "",
    ]
    scratch_owner = None
    if args.scratch:
        scratch = Path(args.scratch)
        scratch.mkdir(parents=True, exist_ok=True)
    else:
        scratch_owner = tempfile.TemporaryDirectory(prefix="vips-bench-")
        scratch = Path(scratch_owner.name)
    try:
        for case in args.cases:
            if case == "big":
                lines += _big_case(scratch, args.size, args.repeats)
            elif case == "batch":
                lines += _batch_case(scratch, args.files, args.repeats)
            else:
                lines += _single_case(scratch, args.repeats)
    finally:
        if scratch_owner is not None:
            scratch_owner.cleanup()
        elif args.scratch:
            for child in ("pngs", "out-gpuconv", "out-vips", "out-cv2", "one"):
                shutil.rmtree(scratch / child, ignore_errors=True)
    print("\n".join(lines))
    if args.output:
        Path(args.output).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
