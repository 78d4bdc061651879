"""Predicted H100 times of gpuconv's CUDA kernels, on a machine without a GPU (issue 10).

    python benchmarks/gpu_model.py --json m.json            # today's kernels
    python benchmarks/gpu_model.py --shared --json old.json # the shared-memory kernels
    python benchmarks/gpu_model.py --calibration            # predicted vs ncu instructions
    python benchmarks/gpu_model.py --measured               # predicted vs measured times, the fit
    python benchmarks/gpu_model.py --edges                  # window kernels with their edge warps
    python benchmarks/gpu_model.py --markdown benchmarks/results/GPU-model.md
    python benchmarks/gpu_model.py --images float32:1,float16:1   # float16 halves the bytes

Every figure is a PREDICTION of gpuconv._gpumodel (constants: gpuconv/_gpumodel/machine.py):
warp instructions from the SASS of the NVRTC-compiled CUBIN (needs NVRTC and nvdisasm/
cuobjdump: pip install -e ".[test]"), memory traffic from the CPU emulator's counters.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GPUCONV_CUDA_EMULATOR", "1")

from gpuconv._gpumodel import machine, model  # noqa: E402

MEASURED_TIMES = ROOT / "benchmarks/results/gpu-window-h100-2026-11-25/kernel_times.log"
MEASURED_BASELINE = ROOT / "benchmarks/results/gpu-baseline-h100-2026-11-25/kernel_times.log"
_TIME_LINE = re.compile(r"^(\w+) (\w+) C=(\d+): ([\d.]+) ms, copy ([\d.]+) ms$")


def measured_times(path: Path) -> dict:
    """(kernel, dtype, channels) -> (kernel ms, copy ms), from a kernel_times.log."""
    found = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            match = _TIME_LINE.match(line.strip())
            if match:
                kernel, dtype, channels, ms, copy = match.groups()
                found[(kernel, dtype, int(channels))] = (float(ms), float(copy))
    return found


def table(rows: list[dict]) -> str:
    lines = [
        "| case | path | warp inst/px | DRAM / ideal | sectors/req (ld, st) | "
        "predicted ms | copy ms | of copy | bound | regs | occupancy |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | `{r['path']}` | {r['warp_instructions_per_pixel']:.3f} | "
            f"{r['dram_bytes'] / r['ideal_dram_bytes']:.2f} | "
            f"{r['sectors_per_request']:.2f}, {r['store_sectors_per_request']:.2f} | "
            f"{r['predicted_ms']:.3f} | {r['copy_ms']:.3f} | {r['fraction_of_copy']:.0%} | "
            f"{r['bound']} | {r['registers']} | {r['occupancy']:.0%} |"
        )
    return "\n".join(lines)


def side_by_side(today: list[dict], shared: list[dict]) -> str:
    now, before = measured_times(MEASURED_TIMES), measured_times(MEASURED_BASELINE)
    lines = [
        "| case | today: predicted of copy | today: measured of copy | shared-memory kernels: "
        "predicted of copy | shared-memory kernels: measured of copy |",
        "|---|---:|---:|---:|---:|",
    ]
    for new, old in zip(today, shared):
        key = (new["kernel"], new["dtype"], new["channels"])

        def measured(times, key=key, kernel=""):
            if key not in times:
                return "-"
            ms, copy = times[key]
            return f"{kernel}{copy / ms:.0%} ({ms:.3f} ms)"

        # the newest kernels have not run on a GPU: what was measured is the kernel they replaced
        replaced = new["path"].startswith(NEWEST_KERNELS)
        today_measured = measured(now, kernel="not yet; the kernel before: " if replaced else "")
        lines.append(
            f"| {new['name']} | {new['fraction_of_copy']:.0%} ({new['predicted_ms']:.3f} ms) | "
            f"{today_measured} | {old['fraction_of_copy']:.0%} ({old['predicted_ms']:.3f} ms) | "
            f"{measured(before)} |"
        )
    return "\n".join(lines)


#: Kernels added after the last GPU run (2026-11-26), each replacing one that ran there.
NEWEST_KERNELS = ("gpuconv_window_dp4a", "gpuconv_box_packed", "gpuconv_box_float")


def dp4a_table(rows: list[dict], replaced: list[dict]) -> str:
    """gpuconv_window_dp4a, gpuconv_box_packed and gpuconv_box_float beside the kernels
    they replaced."""
    lines = [
        "| case | kernel | warp inst/px | regs | occupancy | predicted ms | of copy | bound |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for new, old in zip(rows, replaced):
        for r in (old, new):
            lines.append(
                f"| {r['name']} | `{r['path']}` | {r['warp_instructions_per_pixel']:.3f} | "
                f"{r['registers']} | {r['occupancy']:.0%} | {r['predicted_ms']:.3f} | "
                f"{r['fraction_of_copy']:.0%} | {r['bound']} |"
            )
    return "\n".join(lines)


def edges_table(rows: list[dict]) -> str:
    """The window kernels' edge warps: the issue's count (the interior path) beside the
    whole launch's, whose first and last column of blocks also run the border rule."""
    lines = [
        "| case | path | warp inst/px, interior | + edge warps | of copy, interior | "
        "of copy, with edge warps |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | `{r['path']}` | {r['warp_instructions_per_pixel']:.3f} | "
            f"{r['edge_instructions_per_pixel']:.3f} | {r['fraction_of_copy']:.0%} | "
            f"{r['fraction_of_copy_with_edges']:.0%} |"
        )
    return "\n".join(lines)


def edge_rows(cases: list) -> list[dict]:
    """:func:`model.predict` with the edge warps, for the cases a window kernel runs."""
    rows = [model.predict(case, edges=True) for case in cases]
    return [row for row in rows if "edge_instructions_per_pixel" in row]


def calibration_table(rows: list[dict]) -> str:
    lines = [
        "| path (as measured) | options | case | predicted | measured (ncu) | ratio |",
        "|---|---|---|---:|---:|---:|",
    ]
    for r in rows:
        options = " ".join(r["options"]) or "-"
        lines.append(
            f"| `{r['path']}` | {options} | {r['kernel']} {r['dtype']} C={r['channels']} | "
            f"{r['predicted']:,} | {r['measured']:,} | {r['ratio']:.3f} |"
        )
    return "\n".join(lines)


def measured_table(rows: list[dict], device: str) -> str:
    lines = [
        f"| case | path | measured ms ({device}) | predicted ms | predicted / measured | "
        "bound | resident warps / SM |",
        "|---|---|---:|---:|---:|---|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | `{r['path']}` | {r['measured_ms']:.3f} | {r['predicted_ms']:.3f} | "
            f"{r['ratio']:.2f} | {r['bound']} | {r['resident_warps_per_sm']:g} |"
        )
    return "\n".join(lines)


def fit_summary(rows: list[dict], device: str) -> str:
    ratios = [r["ratio"] for r in rows]
    spread = math.exp(sum(abs(math.log(x)) for x in ratios) / len(ratios))
    return (
        f"{device}: {len(rows)} measured cases; fitted cycles per warp instruction "
        f"{model.fit_cycles_per_instruction(rows)} (in use: "
        f"{machine.CYCLES_PER_WARP_INSTRUCTION}); predicted / measured "
        f"{min(ratios):.2f} to {max(ratios):.2f}, typical error {spread - 1:.0%}"
    )


#: Low-rank cases: of the sizes with a compile-time separable specialisation (the SASS
#: interpreter does not run the run-time-size separable kernel: its loop exits use BREAK),
#: 21 x 21 is the one the GPU takes the low-rank path for (gpuconv._costmodel's rule).
LOWRANK_SIZES = (21,)


def lowrank_rows(size: int) -> list[dict]:
    from gpuconv.bench._inputs import difference_of_gaussians

    rows = []
    for side in LOWRANK_SIZES:
        for dtype in ("float32", "uint8"):
            row = model.predict_lowrank(difference_of_gaussians(side), dtype, size)
            if row is not None:
                rows.append({"kernel": f"dog{side}", **row})
    return rows


def lowrank_table(rows: list[dict]) -> str:
    lines = [
        "| kernel | image | terms | accumulator | warp inst/px | DRAM bytes/px | "
        "predicted ms | copy ms | of copy |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        pixels = row["size"] ** 2
        lines.append(
            f"| {row['kernel']} | {row['size']}x{row['size']} {row['dtype']} | {row['terms']} | "
            f"{row['accumulator']} | {row['warp_instructions'] / pixels:.3f} | "
            f"{row['dram_bytes'] / pixels:.1f} | {row['predicted_ms']:.3f} | "
            f"{row['copy_ms']:.3f} | {row['fraction_of_copy']:.0%} |"
        )
    return "\n".join(lines)


def _images_argument(text: str) -> tuple:
    pairs = []
    for item in text.split(","):
        dtype, _, channels = item.partition(":")
        pairs.append((dtype.strip(), int(channels or 1)))
    return tuple(pairs)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the cases as JSON here")
    parser.add_argument("--size", type=int, default=model.SIZE)
    parser.add_argument(
        "--shared",
        action="store_true",
        help="the shared-memory kernels (plan_launch(window=False))",
    )
    parser.add_argument("--calibration", action="store_true", help="predicted vs ncu instructions")
    parser.add_argument(
        "--measured",
        action="store_true",
        help="predicted vs the kernel times measured on the H100 and H200, and the fit of "
        "CYCLES_PER_WARP_INSTRUCTION",
    )
    parser.add_argument(
        "--lowrank",
        action="store_true",
        help="the low-rank path (issue 11): a 21x21 difference of Gaussians, "
        "one separable launch per term plus the summing passes",
    )
    parser.add_argument(
        "--images",
        type=_images_argument,
        default=model.IMAGES,
        help="dtype:channels pairs, comma-separated (default uint8:1,float32:1,uint8:3; "
        "float16 too)",
    )
    parser.add_argument(
        "--edges",
        action="store_true",
        help="the window kernels with their edge warps (the first and last column of blocks)",
    )
    parser.add_argument("--markdown", help="write GPU-model.md (both families, calibration) here")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    if args.markdown:
        today_cases = model.cases(True, args.size)
        today = [model.predict(c) for c in today_cases]
        shared = [model.predict(c) for c in model.cases(False, args.size)]
        dp4a = [
            (
                row,
                model.predict(
                    dataclasses.replace(case, dp4a=False, packed_box=False, float_box=False)
                ),
            )
            for case, row in zip(today_cases, today)
            if row["path"].startswith(NEWEST_KERNELS)
        ]
        calibrated = [model.calibrate(e) for e in model.calibration()["cases"]]
        measured = {device: model.against_measured(device) for device in ("H100", "H200")}
        edges = edge_rows(today_cases)
        Path(args.markdown).write_text(markdown(today, shared, calibrated, measured, dp4a, edges))
        print(f"wrote {args.markdown} in {time.perf_counter() - started:.0f} s")
        return 0
    if args.lowrank:
        rows = lowrank_rows(args.size)
        print(lowrank_table(rows))
        if args.json:
            Path(args.json).write_text(json.dumps({"lowrank": rows}, indent=1) + "\n")
        return 0
    if args.measured:
        for device in model.MEASURED_KERNEL_TIMES:
            rows = model.against_measured(device)
            print(measured_table(rows, device) + "\n\n" + fit_summary(rows, device) + "\n")
        return 0
    if args.calibration:
        print(calibration_table([model.calibrate(e) for e in model.calibration()["cases"]]))
        return 0
    if args.edges:
        print("PREDICTED (gpuconv._gpumodel, H100 SXM model; no GPU was used)")
        print(edges_table(edge_rows(model.cases(True, args.size, args.images))))
        return 0
    rows = [model.predict(c) for c in model.cases(not args.shared, args.size, args.images)]
    if args.json:
        Path(args.json).write_text(json.dumps({"cases": rows}, indent=1) + "\n")
    print("PREDICTED (gpuconv._gpumodel, H100 SXM model; no GPU was used)")
    print(table(rows))
    print(f"({time.perf_counter() - started:.0f} s)")
    return 0


def markdown(
    today: list[dict],
    shared: list[dict],
    calibrated: list[dict],
    measured: dict[str, list],
    dp4a: list[tuple[dict, dict]],
    edges: list[dict],
) -> str:
    constants = (
        f"DRAM {machine.DRAM_BYTES_PER_SECOND / 1e12:.1f} TB/s; issue {machine.SMS} SMs x "
        f"{machine.CLOCK_HZ / 1e9:.2f} GHz x min({machine.ISSUE_PER_CLOCK} x "
        f"{machine.ISSUE_EFFICIENCY}, resident warps / "
        f"{machine.CYCLES_PER_WARP_INSTRUCTION}) per clock (at most "
        f"{machine.issue_rate() / 1e12:.3f}e12 warp instructions/s)"
    )
    template = (ROOT / "benchmarks/results/gpu-model/GPU-model.template.md").read_text()
    return template.format(
        constants=constants,
        today=table(today),
        shared=table(shared),
        side_by_side=side_by_side(today, shared),
        dp4a=dp4a_table([new for new, _ in dp4a], [old for _, old in dp4a]),
        edges=edges_table(edges),
        calibration=calibration_table(calibrated),
        measured_h100=measured_table(measured["H100"], "H100"),
        fit_h100=fit_summary(measured["H100"], "H100"),
        measured_h200=measured_table(measured["H200"], "H200"),
        fit_h200=fit_summary(measured["H200"], "H200"),
    )


if __name__ == "__main__":
    sys.exit(main())
