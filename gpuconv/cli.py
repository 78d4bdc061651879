"""The ``gpuconv`` command line: ``info``, ``apply``, ``demo`` and ``bench``.

Also ``python -m gpuconv``. Exit codes: 0 success, 1 a failure the message
explains (missing file, unreadable image, unknown kernel, disagreement in the
demo), 2 a usage error (argparse).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import platform
import sys
import time
from pathlib import Path

import numpy as np

from . import __version__, _registry, kernels
from ._convolve import convolve
from ._plan import BORDER_NAMES, make_plan


class CommandError(Exception):
    """A failure the user can fix; printed as one line, exit code 1."""


def _package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


# --- info -------------------------------------------------------------------------------


def _run_info(args) -> int:
    print(f"gpuconv {__version__}")
    print(f"python {platform.python_version()} on {platform.machine()} {platform.system()}")
    for package in ("numpy", "opencv-python-headless", "opencv-python", "numba", "scipy"):
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
    return 0


# --- kernels and images -------------------------------------------------------------------


def _load_kernel(spec: str) -> tuple[str, np.ndarray]:
    """A bank name, or a .npy / text file holding a 2-D kernel."""
    path = Path(spec)
    if spec in kernels.names():
        return spec, kernels.get(spec)
    if path.suffix in (".npy", ".txt", ".csv") and path.exists():
        values = (
            np.load(path)
            if path.suffix == ".npy"
            else np.loadtxt(path, delimiter=None if path.suffix == ".txt" else ",", ndmin=2)
        )
        return path.stem, values
    try:
        kernels.get(spec)
    except ValueError as error:
        raise CommandError(f"{error} (or give a .npy/.txt/.csv file)") from None
    raise AssertionError("unreachable")


def _read_image(path: Path) -> np.ndarray:
    import cv2

    if not path.exists():
        raise CommandError(f"no such file: {path}")
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)  # keeps colour, alpha, 16 bits
    if image is None:
        raise CommandError(f"cannot read {path} as an image (OpenCV does not recognise it)")
    return image


def _write_image(path: Path, image: np.ndarray) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        written = cv2.imwrite(str(path), image)
    except cv2.error as error:
        raise CommandError(
            f"cannot write {path}: {error.msg if hasattr(error, 'msg') else error}"
        ) from None
    if not written:
        raise CommandError(
            f"cannot write {path} as {image.dtype}: choose a format that holds it "
            "(.png for uint8/uint16, .tiff for float32)"
        )


# --- apply ---------------------------------------------------------------------------------


def _convolve_options(args) -> dict:
    return dict(border=args.border, value=args.value, dtype=args.dtype, backend=args.backend)


def _run_apply(args) -> int:
    named_kernels = [_load_kernel(spec) for spec in args.kernel]
    source, target = Path(args.image), Path(args.output)
    options = _convolve_options(args)
    try:
        from ._outofcore import is_out_of_core_path
    except ImportError:  # the dask/tifffile extra is optional
        is_out_of_core_path = None
    if is_out_of_core_path is not None and is_out_of_core_path(source):
        if not source.exists():
            raise CommandError(f"no such file: {source}")
        from ._outofcore import apply_file

        stats = apply_file(
            source,
            target,
            [kernel for _, kernel in named_kernels],
            anchor=None,
            flip=False,
            progress=not args.quiet,
            **options,
        )
        print(f"wrote {target} ({stats})")
        return 0
    image = _read_image(source)
    started = time.perf_counter()
    for index, (_, kernel) in enumerate(named_kernels):
        # Intermediate results keep the image's type; --dtype applies to the last kernel only.
        last = index == len(named_kernels) - 1
        image = convolve(image, kernel, **{**options, "dtype": options["dtype"] if last else None})
    elapsed = time.perf_counter() - started
    _write_image(target, image)
    names = ", ".join(name for name, _ in named_kernels)
    print(
        f"wrote {target}: {image.shape[1]}x{image.shape[0]} {image.dtype}, {names} in {elapsed * 1e3:.1f} ms"
    )
    return 0


# --- demo ----------------------------------------------------------------------------------


def _sample_photo() -> np.ndarray:
    from skimage import data  # the astronaut ships inside scikit-image's wheel

    return data.astronaut()[:, :, ::-1].copy()  # RGB -> OpenCV's BGR


def _labelled(image: np.ndarray, label: str) -> np.ndarray:
    import cv2

    header = np.full((28, image.shape[1]), 255, np.uint8)
    cv2.putText(header, label, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, 0, 1, cv2.LINE_AA)
    return np.vstack([header, image])


def _run_demo(args) -> int:
    import cv2

    colour = _read_image(Path(args.image)) if args.image else _sample_photo()
    if colour.ndim == 3:
        code = cv2.COLOR_BGRA2GRAY if colour.shape[2] == 4 else cv2.COLOR_BGR2GRAY
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
    chosen, _ = _registry.resolve(args.backend, plan, "numpy")
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


def _add_convolve_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--border",
        default="reflect101",
        help=f"one of {', '.join(BORDER_NAMES)} (default reflect101, as cv2.filter2D)",
    )
    parser.add_argument(
        "--value",
        type=float,
        default=0.0,
        help="pixel value outside the image for --border constant",
    )
    parser.add_argument("--dtype", default=None, help="output dtype (default: the image's)")
    parser.add_argument("--backend", default="auto", choices=["auto", *_registry.BACKEND_MODULES])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpuconv", description="Fast 2-D image convolution.")
    parser.add_argument("--version", action="version", version=f"gpuconv {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = commands.add_parser(
        "info", help="versions, backends and why each is or is not available"
    )
    info.set_defaults(run=_run_info)

    apply = commands.add_parser("apply", help="apply kernels to an image file")
    apply.add_argument(
        "image", help="any image OpenCV reads (colour kept), or .npy/.tif/.zarr out of core"
    )
    apply.add_argument(
        "-k",
        "--kernel",
        action="append",
        required=True,
        metavar="NAME",
        help=f"bank kernel ({', '.join(kernels.names())}) or a .npy/.txt/.csv file; repeat to chain",
    )
    apply.add_argument("-o", "--output", required=True, help="output file")
    apply.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_convolve_options(apply)
    apply.set_defaults(run=_run_apply)

    demo = commands.add_parser(
        "demo", help="the tutorial, headless: montages of gpuconv vs cv2.filter2D"
    )
    demo.add_argument("image", nargs="?", help="an image file (default: scikit-image's astronaut)")
    demo.add_argument(
        "--out", default="demo_out", help="directory for the PNG montages (default demo_out)"
    )
    demo.add_argument("--backend", default="auto", choices=["auto", *_registry.BACKEND_MODULES])
    demo.set_defaults(run=_run_demo)

    try:
        from . import bench
    except ImportError:
        bench = None
    if bench is not None:
        bench_parser = commands.add_parser(
            "bench", help="time backends against cv2, scipy (and GPU peers)"
        )
        bench.add_arguments(bench_parser)
        bench_parser.set_defaults(run=bench.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``gpuconv`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (CommandError, ValueError, TypeError, _registry.BackendUnavailableError) as error:
        print(f"gpuconv {args.command}: error: {error}", file=sys.stderr)
        return 1
