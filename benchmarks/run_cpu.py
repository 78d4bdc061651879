"""Regenerate the committed CPU benchmark: ``benchmarks/results/cpu-<N>core.{md,json}``.

Same options as ``gpuconv bench`` (this script only chooses where the table and
the JSON go, from the number of logical CPUs). Example, the committed run::

    python benchmarks/run_cpu.py --backend numba

All timing is done by :mod:`gpuconv.bench`; nothing is timed here.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from gpuconv import bench

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    bench.add_arguments(parser)
    args = parser.parse_args(argv)
    stem = f"cpu-{os.cpu_count()}core"
    RESULTS.mkdir(exist_ok=True)
    args.json = args.json or str(RESULTS / f"{stem}.json")
    args.table = args.table or str(RESULTS / f"{stem}.md")
    return bench.run(args)


if __name__ == "__main__":
    sys.exit(main())
