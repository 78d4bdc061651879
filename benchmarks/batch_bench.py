"""Many small files: ``gpuconv apply DIR --out-dir`` against a Python loop of OpenCV calls.

Issue 15's batch case: N colour PNGs of 512 x 512 (scikit-image's astronaut, shifted so
that no two files are equal), sharpened. Both sides are timed as whole processes (start-up
included, page cache warm: the inputs are read once before timing), alternating, median of
``--rounds``:

- ``gpuconv``: ``python -m gpuconv apply IN_DIR -k sharpen --out-dir OUT -q``;
- ``cv2 loop``: one Python process running ``cv2.imread``, ``cv2.filter2D``, ``cv2.imwrite``
  per file (BORDER_REFLECT_101, the same result).

Usage: ``python benchmarks/batch_bench.py [--files 200] [--rounds 3] [--table PATH]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from skimage import data, transform

_CV2_LOOP = """
import sys, cv2, numpy as np
from pathlib import Path
kernel = np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], np.float32)
out = Path(sys.argv[2])
for path in sorted(Path(sys.argv[1]).iterdir()):
    image = cv2.imread(str(path))
    cv2.imwrite(str(out / path.name), cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REFLECT_101))
"""


def _make_inputs(directory: Path, count: int) -> None:
    photo = (transform.resize(data.astronaut(), (512, 512)) * 255).astype(np.uint8)[:, :, ::-1]
    for index in range(count):
        cv2.imwrite(str(directory / f"img{index:04d}.png"), np.roll(photo, index, axis=1))


def _timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--table", help="write the Markdown result here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        inputs, out_a, out_b = (Path(scratch) / name for name in ("in", "gpuconv", "cv2"))
        for directory in (inputs, out_a, out_b):
            directory.mkdir()
        _make_inputs(inputs, args.files)
        gpuconv = [sys.executable, "-m", "gpuconv", "apply", str(inputs), "-k", "sharpen"]
        gpuconv += ["--out-dir", str(out_a), "-q"]
        loop = [sys.executable, "-c", _CV2_LOOP, str(inputs), str(out_b)]
        _timed(loop)  # warm the page cache and numba's on-disk cache
        _timed(gpuconv)
        times: dict[str, list[float]] = {"gpuconv apply --out-dir": [], "cv2 loop": []}
        for _ in range(args.rounds):
            times["gpuconv apply --out-dir"].append(_timed(gpuconv))
            times["cv2 loop"].append(_timed(loop))
        for path in sorted(inputs.iterdir()):  # the same pixels, or the race means nothing
            np.testing.assert_array_equal(
                cv2.imread(str(out_a / path.name)), cv2.imread(str(out_b / path.name))
            )
    medians = {name: statistics.median(values) for name, values in times.items()}
    ratio = medians["cv2 loop"] / medians["gpuconv apply --out-dir"]
    lines = [
        f"Command: `python benchmarks/batch_bench.py --files {args.files} --rounds {args.rounds}`",
        f"({os.cpu_count()} logical CPUs, load average "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})",
        "",
        f"{args.files} PNGs of 512 x 512 RGB, sharpen, whole processes, median of {args.rounds}:",
        "",
        "| | seconds | runs |",
        "|---|---|---|",
        *(
            f"| {name} | {medians[name]:.2f} | {', '.join(f'{v:.2f}' for v in times[name])} |"
            for name in times
        ),
        "",
        f"cv2 loop / gpuconv = **{ratio:.2f}** (above 1: gpuconv faster); outputs identical.",
    ]
    text = "\n".join(lines)
    print(text)
    if args.table:
        Path(args.table).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
