"""The ``gpuconv`` command line: ``info``, ``apply``, ``demo`` and ``bench``.

Also ``python -m gpuconv``. Every failure is one line on stderr,
``gpuconv COMMAND: error: ...``, naming the file and the cause (``--debug``
adds the traceback), and one of these exit codes (:data:`EXIT_CODES`):

== =====================================================================================
0  success
1  the input or an option cannot be used: no such file, unreadable, corrupt or truncated
   image or kernel file, wrong shape or dtype, empty image, unknown kernel, border or
   dtype, an output format that cannot hold the result, output = input
2  usage: the command line does not parse (missing or unknown option, bad value,
   ``--value`` without ``--border constant``)
3  the output cannot be written: no such directory, not a directory, no permission,
   read-only file system, no space left, file too large
4  the backend named with ``--backend`` cannot run here
5  some files of a batch (``apply IN... --out-dir DIR``) failed, each named on stderr
   with its reason; the others were written
70 an internal error (a bug): please report it with the ``--debug`` traceback
130, 143, 129  interrupted by SIGINT (Ctrl-C), SIGTERM, SIGHUP
== =====================================================================================

Whatever the failure, the output path keeps what it had: results are written
to a temporary beside it, renamed into place only when complete.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

import numpy as np

from . import __version__, _registry, kernels
from ._atomic import OutputError, sync_directory
from ._convolve import convolve
from ._image_files import (
    FORMATS,
    FormatError,
    ImageFileError,
    check_image,
    read_image,
    write_image,
)
from ._plan import BORDER_NAMES, SUPPORTED_DTYPES, Border, as_kernel_array, make_plan, parse_border

EXIT_OK = 0
EXIT_INPUT = 1
EXIT_USAGE = 2
EXIT_OUTPUT = 3
EXIT_BACKEND = 4
EXIT_SOME_FAILED = 5
EXIT_INTERNAL = 70
EXIT_SIGNAL = 128  # + the signal's number: 130 SIGINT, 143 SIGTERM, 129 SIGHUP

#: Exit code -> what it means (the README and ``--help`` list them).
EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_INPUT: "the input or an option cannot be used (no such file; unreadable, corrupt or "
    "truncated image or kernel; wrong shape or dtype; unknown kernel, border or dtype; an output "
    "format that cannot hold the result; output = input)",
    EXIT_USAGE: "usage: the command line does not parse (also --value without --border constant)",
    EXIT_OUTPUT: "the output cannot be written (no such directory, not a directory, no "
    "permission, read-only file system, no space left, file too large)",
    EXIT_BACKEND: "the backend named with --backend cannot run here",
    EXIT_SOME_FAILED: "some files of a batch (--out-dir) failed, each named on stderr with its "
    "reason; the others were written",
    EXIT_INTERNAL: "internal error (a bug; --debug shows the traceback)",
    EXIT_SIGNAL + signal.SIGINT: "interrupted by SIGINT (Ctrl-C)",
    EXIT_SIGNAL + signal.SIGTERM: "terminated by SIGTERM",
}


class CommandError(Exception):
    """A failure the user can fix; printed as one line, with exit code ``code``."""

    def __init__(self, message: str, code: int = EXIT_INPUT):
        super().__init__(message)
        self.code = code


class _Terminated(BaseException):
    """SIGTERM or SIGHUP, raised where Python was, so that writers clean up."""

    def __init__(self, number: int):
        super().__init__(number)
        self.number = number


def _package_version(name: str) -> str:
    import importlib.metadata  # here, not at the top: 12 ms that only ``info`` needs

    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


# --- info -------------------------------------------------------------------------------


def _run_info(args) -> int:
    print(f"gpuconv {__version__}")
    print(f"python {platform.python_version()} on {platform.machine()} {platform.system()}")
    for package in (
        "numpy",
        "opencv-python-headless",
        "opencv-python",
        "tifffile",
        "imagecodecs",
        "numba",
        "scipy",
    ):
        version = _package_version(package)
        if version != "not installed" or package != "opencv-python":
            print(f"{package} {version}")
    cupy = next(
        (
            f"{name} {_package_version(name)}"
            for name in ("cupy-cuda12x", "cupy-cuda13x", "cupy")
            if _package_version(name) != "not installed"
        ),
        "cupy not installed",
    )
    print(cupy)
    print("backends:")
    for name, state in _registry.backends().items():
        print(f"  {name:6s} {state}")
    if getattr(args, "startup", False):
        print("start-up of a fresh process (seconds, median of 3):")
        for label, (seconds, loaded) in _startup_seconds().items():
            jit = "" if loaded is None else ("numba loaded" if loaded else "numba not loaded")
            print(f"  {label:58s} {seconds:6.3f}  {jit}".rstrip())
    return 0


_STARTUP_SCRIPT = """
import sys, time
start = time.perf_counter()
import numpy as np, gpuconv
imported = time.perf_counter()
image = np.zeros({shape}, np.uint8)
gpuconv.convolve(image, {kernel!r}, backend={backend!r})
print(imported - start, time.perf_counter() - imported, "numba" in sys.modules)
"""


def _startup_seconds() -> dict[str, tuple[float, bool | None]]:
    """What a new Python process pays: ``import gpuconv``, then one first call.

    Returns ``{label: (median seconds, whether the call loaded numba)}``; None for
    ``import gpuconv`` itself.
    """
    import statistics
    import subprocess

    cases = {
        "first call, 512 x 512 RGB, sharpen, auto": ((512, 512, 3), "sharpen", "auto"),
        "first call, 4096 x 4096, sharpen, auto": ((4096, 4096), "sharpen", "auto"),
        "first call, 4096 x 4096, gaussian5, auto": ((4096, 4096), "gaussian5", "auto"),
        "first call, 512 x 512 RGB, sharpen, backend='numba'": ((512, 512, 3), "sharpen", "numba"),
    }
    seconds: dict[str, list[float]] = {"import gpuconv": []}
    loaded: dict[str, bool | None] = {"import gpuconv": None}
    for label, (shape, kernel, backend) in cases.items():
        seconds[label] = []
        for _ in range(3):
            script = _STARTUP_SCRIPT.format(shape=shape, kernel=kernel, backend=backend)
            output = subprocess.run(
                [sys.executable, "-c", script], capture_output=True, text=True, check=True
            ).stdout.split()
            seconds["import gpuconv"].append(float(output[0]))
            seconds[label].append(float(output[1]))
            loaded[label] = output[2] == "True"
    return {label: (statistics.median(seconds[label]), loaded[label]) for label in seconds}


# --- kernels and images -------------------------------------------------------------------

_KERNEL_FILE_SUFFIXES = (".npy", ".txt", ".csv")


def _load_kernel(spec: str) -> tuple[str, np.ndarray]:
    """A bank name, or a .npy / text file holding a 2-D kernel; checked as convolve checks it."""
    if spec in kernels.names():
        return spec, kernels.get(spec)
    path = Path(spec)
    looks_like_a_file = path.suffix.lower() in _KERNEL_FILE_SUFFIXES or "/" in spec
    if not path.exists():
        if looks_like_a_file:
            raise CommandError(f"no such file: {spec} (kernel)")
        try:
            kernels.get(spec)
        except ValueError as error:
            raise CommandError(f"{error} (or give a .npy/.txt/.csv file)") from None
        raise AssertionError("unreachable")
    if path.is_dir() or path.suffix.lower() not in _KERNEL_FILE_SUFFIXES:
        raise CommandError(
            f"cannot read kernel {spec}: a kernel file ends in .npy, .txt or .csv "
            f"(bank kernels: {', '.join(kernels.names())})"
        )
    try:
        if path.suffix.lower() == ".npy":
            values = np.load(path, allow_pickle=False)
        else:
            delimiter = "," if path.suffix.lower() == ".csv" else None
            values = np.loadtxt(path, delimiter=delimiter, ndmin=2)
    except OSError as error:
        raise CommandError(f"cannot read kernel {spec}: {error.strerror or error}") from None
    except (ValueError, EOFError) as error:
        raise CommandError(f"cannot read kernel {spec}: {error}") from None
    try:
        as_kernel_array(values)
    except (ValueError, TypeError) as error:
        raise CommandError(f"kernel {spec}: {error}") from None
    return path.stem, values


def _read_image(path: Path) -> np.ndarray:
    """Any image gpuconv reads and filters (checked), channels last in RGB(A) order."""
    image = read_image(path)
    check_image(path, image.shape, image.dtype)
    return image


def _write_image(path: Path, image: np.ndarray) -> None:
    """Atomically; RGB(A) channel order."""
    write_image(path, image)


# --- apply ---------------------------------------------------------------------------------


def _border_argument(text: str):
    """``--border``: a name, or an OpenCV constant as a number (``4`` = BORDER_REFLECT_101)."""
    stripped = text.strip()
    return int(stripped) if stripped.lstrip("+-").isdigit() else text


def _positive_int(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return number


def _colour_name(shape) -> str:
    if len(shape) == 2:
        return "grey"
    return {1: "grey", 2: "grey+alpha", 3: "RGB", 4: "RGBA"}.get(shape[2], f"{shape[2]} channels")


def _describe_run(target, names, stats, intermediate) -> str:
    """The success line: what was written, how, how fast (readable text, not a dict)."""
    height, width = stats["shape"][:2]
    parts = [
        f"wrote {target}: {width}x{height} {_colour_name(stats['shape'])} {stats['dtype']} "
        f"{stats['format']}",
        f"kernels {' -> '.join(names)}",
    ]
    if len(names) > 1:
        parts.append(f"{intermediate} between kernels")
    if stats["computed_dtype"] != stats["dtype"]:
        parts.append(f"converted from {stats['computed_dtype']} (clipped and rounded)")
    bands = stats["bands"]
    plural = "s" if bands != 1 else ""
    parts.append(f"{bands} band{plural} of up to {stats['rows_per_chunk']} rows")
    parts.append(f"{stats['seconds']:.2f} s ({stats['megapixels_per_second']:g} Mpixel/s)")
    if stats.get("peak_rss_mib") is not None:
        parts.append(f"peak memory {stats['peak_rss_mib']:.0f} MiB")
    return "; ".join(parts)


def _axes_argument(text: str) -> tuple[int, int]:
    try:
        rows, columns = (int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected two axes as ROWS,COLUMNS (e.g. 1,2 or -2,-1), got {text!r}"
        ) from None
    return rows, columns


def _describe_stack_run(target, names, stats) -> str:
    height, width = stats["image_size"]
    return "; ".join(
        [
            f"wrote {target}: stack of shape {stats['shape']} {stats['dtype']} {stats['format']}, "
            f"images {width}x{height} on axes {stats['image_axes']}",
            f"kernels {' -> '.join(names)}",
            f"{stats['seconds']:.2f} s ({stats['megapixels_per_second']:g} Mpixel/s)",
        ]
    )


def _run_apply_stack(args) -> int:
    from ._stacks import apply_stack_file

    if args.band_rows is not None or args.convert:
        raise CommandError(
            "--axes filters a whole stack in memory: --band-rows and --convert do not apply",
            EXIT_USAGE,
        )
    named_kernels = [_load_kernel(spec) for spec in args.kernel]
    intermediate = None if args.intermediate == "input" else args.intermediate
    stats = apply_stack_file(
        args.image[0],
        args.output,
        [kernel for _, kernel in named_kernels],
        axes=args.axes,
        border=args.border,
        value=0.0 if args.value is None else args.value,
        dtype=args.dtype,
        backend=args.backend,
        intermediate_dtype=intermediate,
        durable=not args.no_fsync,
    )
    print(_describe_stack_run(args.output, [name for name, _ in named_kernels], stats))
    return 0


def _run_apply(args) -> int:
    if args.value is not None and parse_border(args.border) != Border.CONSTANT:
        raise CommandError(
            f"--value sets the pixels outside the image for --border constant only; the border "
            f"here is {parse_border(args.border).name.lower()} (add --border constant, or drop "
            "--value)",
            EXIT_USAGE,
        )
    if (args.output is None) == (args.out_dir is None):
        raise CommandError(
            "give either -o/--output (one input) or --out-dir DIR (any number of inputs)",
            EXIT_USAGE,
        )
    if args.output is not None and len(args.image) != 1:
        raise CommandError(
            f"-o/--output names one output but {len(args.image)} inputs were given; use "
            "--out-dir DIR for several",
            EXIT_USAGE,
        )
    if args.axes is not None:
        if args.out_dir is not None:
            raise CommandError(
                "--axes filters one stack file into -o/--output; --out-dir takes single images",
                EXIT_USAGE,
            )
        return _run_apply_stack(args)
    named_kernels = [_load_kernel(spec) for spec in args.kernel]
    names = [name for name, _ in named_kernels]
    options = dict(
        kernels=[kernel for _, kernel in named_kernels],
        border=args.border,
        value=0.0 if args.value is None else args.value,
        anchor=None,
        flip=False,
        dtype=args.dtype,
        backend=args.backend,
        rows_per_chunk=args.band_rows,
        intermediate_dtype=None if args.intermediate == "input" else args.intermediate,
        convert=args.convert,
        durable=not args.no_fsync,
    )
    if args.output is not None:
        from ._outofcore import apply_file

        progress = not args.quiet and sys.stderr.isatty()
        stats = apply_file(args.image[0], args.output, progress=progress, **options)
        print(_describe_run(args.output, names, stats, args.intermediate))
        return 0
    return _apply_batch(args, names, options)


#: What a directory given to ``apply --out-dir`` contributes: files with these suffixes.
_IMAGE_SUFFIXES = frozenset(suffix for image_format in FORMATS for suffix in image_format.suffixes)


def _batch_inputs(arguments: list[str]) -> list[Path]:
    """The files named, a directory standing for the image files directly inside it."""
    files: list[Path] = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir() and path.suffix.lower() != ".zarr":  # a .zarr store is one image
            found = sorted(
                child
                for child in path.iterdir()
                if child.suffix.lower() in _IMAGE_SUFFIXES
                and (child.is_file() or child.suffix.lower() == ".zarr")
            )
            if not found:
                raise CommandError(f"{path}: a directory with no image files gpuconv reads")
            files += found
        else:
            files.append(path)  # a missing file fails alone, with its reason, at its turn
    return files


#: Files filtered at once by ``apply --out-dir``: reading and writing (which release the
#: GIL in OpenCV and tifffile) overlap with filtering another file.
BATCH_WORKERS = 4


def _apply_batch(args, names: list[str], options: dict) -> int:
    """``apply IN... --out-dir DIR``: every file to DIR under its own name, in parallel.

    Each output is atomic; a file that fails does not stop the others, and is named
    at the end with its reason (exit code 5).
    """
    import concurrent.futures

    from ._outofcore import apply_file, calls_expected

    inputs = _batch_inputs(args.image)
    out_dir = Path(args.out_dir)
    targets: dict[Path, Path] = {}
    for source in inputs:
        target = out_dir / source.name
        if target in targets:
            raise CommandError(
                f"{targets[target]} and {source} would both be written to {target}", EXIT_USAGE
            )
        targets[target] = source
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"cannot create --out-dir {out_dir}: {error.strerror or error}") from None
    bar = bar_stream = None
    if not args.quiet and sys.stderr.isatty():
        try:
            from tqdm.auto import tqdm

            # Through its own copy of the terminal's descriptor: while a thread decodes or
            # encodes, descriptor 2 itself points to a temporary that collects the codecs'
            # messages (gpuconv._image_files._QuietStderr), which would swallow the bar.
            sys.stderr.flush()
            bar_stream = open(os.dup(sys.stderr.fileno()), "w", encoding="utf-8")  # noqa: SIM115
            bar = tqdm(total=len(targets), unit="file", file=bar_stream)
        except (ImportError, OSError, ValueError):  # no tqdm, or no descriptor to copy
            pass
    failures: list[tuple[Path, int, str]] = []
    started = time.perf_counter()
    # Each file is flushed and renamed into place on its own (whole or absent);
    # the directory that holds the renames is flushed once, at the end.
    options = dict(options, sync_directory=False)
    workers = max(1, min(BATCH_WORKERS, len(targets)))
    # With backend "auto", numba loads at the first file if the whole batch on the stand-in
    # (the reference, or OpenCV) would cost more than loading it (200 PNGs of 512 x 512 RGB:
    # the reference's 17 ms per file, against OpenCV's 0.5 ms for sharpen).
    with (
        calls_expected(len(targets)),
        concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="gpuconv") as pool,
    ):
        futures = {
            pool.submit(apply_file, source, target, progress=False, **options): source
            for target, source in targets.items()
        }
        try:
            for future in concurrent.futures.as_completed(futures):
                error = future.exception()
                if error is not None:
                    code, message = classify(error)
                    if code == EXIT_INTERNAL or code > EXIT_SIGNAL:
                        raise error
                    failures.append((futures[future], code, _one_line(message)))
                if bar is not None:
                    bar.update(1)
        except BaseException:
            for future in futures:
                future.cancel()  # files not started are left alone; started ones finish
            raise
        finally:
            if bar is not None:
                bar.close()
            if bar_stream is not None:
                bar_stream.close()
    if options["durable"]:
        sync_directory(out_dir)
    seconds = time.perf_counter() - started
    written = len(targets) - len(failures)
    print(
        f"wrote {written} of {len(targets)} files to {out_dir}: kernels {' -> '.join(names)}; "
        f"{seconds:.2f} s ({len(targets) / max(seconds, 1e-9):.1f} files/s)"
    )
    for source, _, message in sorted(failures):
        print(f"gpuconv apply: error: {source}: {message}", file=sys.stderr)
    return EXIT_SOME_FAILED if failures else EXIT_OK


# --- demo ----------------------------------------------------------------------------------


def _sample_photo() -> np.ndarray:
    from skimage import data  # the astronaut ships inside scikit-image's wheel

    return data.astronaut()  # RGB, as gpuconv reads image files


def _labelled(image: np.ndarray, label: str) -> np.ndarray:
    import cv2

    header = np.full((28, image.shape[1]), 255, np.uint8)
    cv2.putText(header, label, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, 0, 1, cv2.LINE_AA)
    return np.vstack([header, image])


def _run_demo(args) -> int:
    import cv2

    colour = _read_image(Path(args.image)) if args.image else _sample_photo()
    if colour.ndim == 3:
        if colour.shape[2] not in (3, 4):
            raise CommandError(f"{args.image}: the demo needs a grey, RGB or RGBA image")
        code = cv2.COLOR_RGBA2GRAY if colour.shape[2] == 4 else cv2.COLOR_RGB2GRAY
        grey = cv2.cvtColor(colour, code)
    else:
        grey = colour
    if grey.dtype != np.uint8:  # the tutorial works on 8-bit grey
        grey = cv2.normalize(grey, None, 0, 255, cv2.NORM_MINMAX, cv2.CV_8U)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    _, plan, _ = make_plan(
        grey, "sharpen", border="reflect101", value=0.0, anchor=None, flip=False, dtype=None
    )
    chosen, _ = _registry.resolve(args.backend, plan, "numpy", stand_ins=False)  # vs OpenCV
    print(f"[INFO] image {grey.shape[1]}x{grey.shape[0]} grey, backend {chosen!r}")
    worst = 0
    for name in kernels.TUTORIAL_BANK:
        kernel = kernels.get(name)
        started = time.perf_counter()
        ours = convolve(grey, kernel, backend=chosen)
        elapsed = time.perf_counter() - started
        theirs = cv2.filter2D(grey, -1, kernel)
        difference = int(np.abs(ours.astype(np.int32) - theirs).max())
        worst = max(worst, difference)
        montage = np.hstack(
            [
                _labelled(grey, "original"),
                _labelled(ours, f"gpuconv ({chosen}) {name}"),
                _labelled(theirs, f"cv2.filter2D  max diff {difference}"),
            ]
        )
        target = out_dir / f"{name}.png"
        _write_image(target, montage)
        print(
            f"[INFO] {name:10s} max |gpuconv - cv2.filter2D| = {difference}  "
            f"({elapsed * 1e3:.1f} ms)  -> {target}"
        )
    if worst > 1:
        print(f"[FAIL] gpuconv and OpenCV differ by up to {worst} grey levels", file=sys.stderr)
        return 1
    print(f"[OK] gpuconv agrees with cv2.filter2D on all {len(kernels.TUTORIAL_BANK)} kernels")
    return 0


# --- parser ------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors on one line (exit code 2), as every other failure."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _exit_code_help() -> str:
    lines = ["exit codes:"]
    lines += [f"  {code:<4d}{meaning}" for code, meaning in EXIT_CODES.items()]
    return "\n".join(lines)


def _add_debug(parser: argparse.ArgumentParser, default) -> None:
    parser.add_argument(
        "--debug",
        action="store_true",
        default=default,
        help="on failure, print the Python traceback before the one-line message",
    )


def _add_convolve_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--border",
        default="reflect101",
        type=_border_argument,
        help=f"one of {', '.join(BORDER_NAMES)} (default reflect101, as cv2.filter2D), scipy's "
        "names (mirror, nearest, grid-wrap ...) or an OpenCV constant: 0 constant, "
        "1 replicate, 2 reflect, 3 wrap, 4 reflect101 (cv2.BORDER_*)",
    )
    parser.add_argument(
        "--value",
        type=float,
        default=None,
        help="pixel value outside the image; only with --border constant (default 0; "
        "anywhere else it is an error)",
    )
    dtypes = ", ".join(str(dtype) for dtype in SUPPORTED_DTYPES)
    parser.add_argument(
        "--dtype", default=None, help=f"output dtype: {dtypes} (default: the image's)"
    )
    parser.add_argument("--backend", default="auto", choices=["auto", *_registry.BACKEND_MODULES])


def _format_help() -> str:
    rows = []
    for image_format in FORMATS:
        channels = (
            "any" if image_format.channels is None else "/".join(map(str, image_format.channels))
        )
        rows.append(
            f"  {' '.join(image_format.suffixes):18s}{'/'.join(image_format.dtypes):42s}"
            f"channels {channels}"
        )
    return "output formats (suffix, dtypes, channels):\n" + "\n".join(rows)


_APPLY_DESCRIPTION = """\
Apply kernels to an image file and write the result to another.

Reads .npy, .tif/.tiff (tifffile: any compression, strips or tiles), .zarr and
every format OpenCV decodes (PNG, JPEG, BMP, WebP ...); colour stays colour
(RGB order in .npy/.zarr), 16 bits stay 16 bits. The output's suffix picks its
format, independent of the input's; a format that cannot hold the result's
dtype or channels (float32 in a PNG) is an error that names the formats that
can, unless --convert asks for clipping and rounding. .npy, .tif and .zarr are
read and written band by band (memory bounded by a band, not the image).

Chains (-k a -k b ...): between kernels the values stay in float64 (see
--intermediate), so the result is rounded once, at the end, to --dtype
(integer types: half to even, saturated). --intermediate input rounds to
the image's type after every kernel instead (as repeated cv2.filter2D calls),
which clips a first Sobel's negative half on an 8-bit image.

Nothing is written until the input, the kernels and the options have been
checked; the result goes to a temporary file beside the output, flushed to
the disk and renamed into place only when complete, so a failure, Ctrl-C or
a full disk leaves the output path as it was. The output may not be the
input, also through a hard or symbolic link.
"""


def build_parser(*, with_bench: bool = True) -> argparse.ArgumentParser:
    """The whole command line; ``with_bench=False`` lists ``bench`` without importing it.

    Why: :mod:`gpuconv.bench` costs 17 ms of imports, a fifteenth of a one-image
    ``apply`` in a fresh process, and only ``bench`` needs its arguments.
    """
    parser = _Parser(
        prog="gpuconv",
        description="Fast 2-D image convolution.",
        epilog=_exit_code_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"gpuconv {__version__}")
    _add_debug(parser, False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = commands.add_parser(
        "info", help="versions, backends and why each is or is not available"
    )
    info.add_argument(
        "--startup",
        action="store_true",
        help="also measure, in fresh processes, what start-up costs: import gpuconv, then a "
        "first call on a small and on a large image",
    )
    _add_debug(info, argparse.SUPPRESS)
    info.set_defaults(run=_run_info)

    apply = commands.add_parser(
        "apply",
        help="apply kernels to an image file",
        description=_APPLY_DESCRIPTION,
        epilog=f"{_format_help()}\n\n{_exit_code_help()}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    apply.add_argument(
        "image",
        nargs="+",
        metavar="IMAGE",
        help="input image: .npy, .tif/.tiff, .zarr, or any image OpenCV reads; with --out-dir, "
        "any number of them, or directories (their image files)",
    )
    apply.add_argument(
        "-k",
        "--kernel",
        action="append",
        required=True,
        metavar="NAME",
        help=f"bank kernel ({', '.join(kernels.names())}) or a .npy/.txt/.csv file; repeat to "
        "chain (float64 between kernels, rounded once at the end)",
    )
    apply.add_argument("-o", "--output", help="output file; its suffix picks the format")
    apply.add_argument(
        "--out-dir",
        metavar="DIR",
        help="write each input to DIR under its own name (created if missing): many files in "
        "one process, several at once, each atomic; a file that fails is reported at the end "
        "and the others still complete (exit code 5)",
    )
    apply.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bar (shown only on a terminal)"
    )
    _add_convolve_options(apply)
    apply.add_argument(
        "--convert",
        action="store_true",
        help="if the output format cannot hold --dtype (float32 in a PNG), clip and round to a "
        "type it holds (the image's, else the format's widest) instead of failing",
    )
    apply.add_argument(
        "--no-fsync",
        action="store_true",
        help="do not wait for the output to reach the disk (as cp, cv2.imwrite and libvips "
        "do not): faster by the disk's write time; other programs still see the old file or "
        "the whole new one, but a power failure soon after may leave it incomplete",
    )
    apply.add_argument(
        "--intermediate",
        default="float64",
        choices=["float64", "float32", "input"],
        help="type of the values between chained kernels: float64 (default; one rounding, at "
        "the end), float32, or input: the image's type, rounded and saturated after every "
        "kernel as repeated cv2.filter2D(img, -1, k) calls are",
    )
    apply.add_argument(
        "--band-rows",
        type=_positive_int,
        default=None,
        metavar="N",
        help="output rows per band for .npy/.tif/.zarr (default: about 4 MiB of input rows, at least 8 times the kernels' halo; three bands are in flight)",
    )
    apply.add_argument(
        "--axes",
        type=_axes_argument,
        default=None,
        metavar="ROWS,COLUMNS",
        help="the image axes of a stack in a .npy or multi-page .tif (e.g. 1,2 for frames "
        "(N, H, W) or (N, H, W, C); --axes=-2,-1 for channels-first (C, H, W)); every other "
        "axis is filtered independently. The stack is held in memory and written whole, in its layout",
    )
    _add_debug(apply, argparse.SUPPRESS)
    apply.set_defaults(run=_run_apply)

    demo = commands.add_parser(
        "demo", help="the tutorial, headless: montages of gpuconv vs cv2.filter2D"
    )
    demo.add_argument("image", nargs="?", help="an image file (default: scikit-image's astronaut)")
    demo.add_argument(
        "--out", default="demo_out", help="directory for the PNG montages (default demo_out)"
    )
    demo.add_argument("--backend", default="auto", choices=["auto", *_registry.BACKEND_MODULES])
    _add_debug(demo, argparse.SUPPRESS)
    demo.set_defaults(run=_run_demo)

    bench_help = "time backends against cv2, scipy (and GPU peers)"
    if not with_bench:
        commands.add_parser("bench", help=bench_help, add_help=False)
        return parser
    try:
        from . import bench
    except ImportError:
        bench = None
    if bench is not None:
        bench_parser = commands.add_parser("bench", help=bench_help)
        bench.add_arguments(bench_parser)
        _add_debug(bench_parser, argparse.SUPPRESS)
        bench_parser.set_defaults(run=bench.run)
    return parser


#: Commands whose arguments do not need :mod:`gpuconv.bench` imported.
_LIGHT_COMMANDS = frozenset({"info", "apply", "demo"})


# --- failures ------------------------------------------------------------------------------


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def classify(error: BaseException) -> tuple[int, str]:
    """The exit code and the one-line message for an exception that ended a command."""
    if isinstance(error, KeyboardInterrupt):
        return EXIT_SIGNAL + signal.SIGINT, "interrupted (SIGINT); no output was left half-written"
    if isinstance(error, _Terminated):
        name = _signal_name(error.number)
        return EXIT_SIGNAL + error.number, f"terminated ({name}); no output was left half-written"
    if isinstance(error, CommandError):
        return error.code, str(error)
    if isinstance(error, OutputError):
        return EXIT_OUTPUT, str(error)
    if isinstance(error, _registry.BackendUnavailableError):
        return EXIT_BACKEND, str(error)
    if isinstance(error, (ImageFileError, FormatError, ValueError, TypeError)):
        return EXIT_INPUT, str(error)
    if isinstance(error, FileNotFoundError):
        message = str(error) if not error.filename else f"no such file: {error.filename}"
        return EXIT_INPUT, message
    if isinstance(error, OSError):
        where = f": {error.filename}" if error.filename else ""
        return EXIT_INPUT, f"{error.strerror or error}{where}"
    if isinstance(error, MemoryError):
        return EXIT_INPUT, (
            "out of memory (PNG, JPEG and the other OpenCV formats are held whole in memory; "
            ".npy, .tif and .zarr on both sides stream band by band)"
        )
    return EXIT_INTERNAL, (
        f"internal error: {type(error).__name__}: {error} (a bug; run again with --debug for "
        "the traceback and report it)"
    )


@contextlib.contextmanager
def _signals_raise():
    """SIGTERM and SIGHUP raise in Python (so temporaries are removed); SIGXFSZ is ignored.

    With SIGXFSZ ignored, a write past the file-size limit (``ulimit -f``,
    RLIMIT_FSIZE) fails with EFBIG, reported like a full disk, instead of
    killing the process. The previous handlers come back at the end.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(number, frame):
        raise _Terminated(number)

    wanted = {signal.SIGTERM: terminate}
    if hasattr(signal, "SIGHUP"):  # POSIX
        wanted[signal.SIGHUP] = terminate
    if hasattr(signal, "SIGXFSZ"):
        wanted[signal.SIGXFSZ] = signal.SIG_IGN
    previous = {number: signal.signal(number, handler) for number, handler in wanted.items()}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``gpuconv`` console script; returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    light = bool(argv) and argv[0] in _LIGHT_COMMANDS
    args = build_parser(with_bench=not light).parse_args(argv)
    try:
        with _signals_raise():
            return args.run(args)
    except SystemExit:
        raise
    except BaseException as error:
        code, message = classify(error)
        if args.debug:
            traceback.print_exc()
        print(f"gpuconv {args.command}: error: {_one_line(message)}", file=sys.stderr)
        return code


def console_main() -> None:
    """The ``gpuconv`` console script and ``python -m gpuconv``: :func:`main`, then exit.

    Why: once numba is loaded, the interpreter's own finalization (tearing down some 750
    modules and numba's LLVM objects) adds 0.2-0.3 s to every process on 2 cores, a
    sixth of a 16384 x 16384 ``apply``. When :func:`main` returns, every output is
    complete, flushed and renamed (or removed), so the process then runs the ``atexit``
    handlers, flushes stdout and stderr and ends at once (``os._exit``). Without numba
    loaded it exits as usual.
    """
    import atexit

    code = main()
    if "numba" not in sys.modules:
        raise SystemExit(code)
    run_exit_handlers = getattr(atexit, "_run_exitfuncs", None)
    if run_exit_handlers is not None:
        run_exit_handlers()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed pipe: nothing more to say
            stream.flush()
    os._exit(code)
