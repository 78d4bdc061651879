"""The model's cases: a tutorial-bank kernel on an image, predicted as the issue asks.

:func:`predict` plans the launch gpuconv really makes
(``plan_launch(plan, choose_strategy(plan), DeviceLimits(227 * 1024))``, or the
shared-memory kernels with ``window=False``), counts its warp instructions from the SASS
(:mod:`.instructions`) and its memory traffic in the emulator (:mod:`.memory`), and turns
both into a time on an H100 SXM (:mod:`.machine`). Results are cached per launch.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._backends.cuda import launch as _cuda_launch
from .._backends.cuda.launch_base import Launch
from .._plan import make_plan
from .._strategy import choose_strategy
from ..kernels import TUTORIAL_BANK
from . import instructions, machine, memory

#: The opt-in shared memory of an H100 (what the backend asks the device for).
H100_LIMITS = _cuda_launch.DeviceLimits(227 * 1024)
#: (dtype, channels) of the issue's cases.
IMAGES = (("uint8", 1), ("float32", 1), ("uint8", 3))
SIZE = 8192


@dataclass(frozen=True)
class Case:
    kernel: str
    dtype: str
    channels: int
    size: int = SIZE
    window: bool = True  # False: the shared-memory kernels (plan_launch(window=False))
    dp4a: bool = True  # False: gpuconv_window where gpuconv_window_dp4a runs (as measured)
    packed_box: bool = True  # False: gpuconv_box where gpuconv_box_packed runs (as measured)
    float_box: bool = True  # False: the separable kernels where gpuconv_box_float runs

    @property
    def name(self) -> str:
        colour = (
            "rgb" if self.channels == 3 else f"c{self.channels}" if self.channels > 1 else "grey"
        )
        family = "" if self.window else "-shared"
        return f"{self.kernel}-{self.dtype}-{colour}{family}"


def cases(window: bool = True, size: int = SIZE, images=IMAGES) -> list[Case]:
    """The tutorial bank on 8192 x 8192 uint8 grey, float32 grey and uint8 RGB (or
    ``images``: ``(dtype, channels)`` pairs, e.g. ``(("float16", 1),)``)."""
    return [
        Case(kernel, dtype, channels, size, window)
        for dtype, channels in images
        for kernel in TUTORIAL_BANK
    ]


def plan_and_launch(case: Case, overrides: dict | None = None):
    """The plan and the launch gpuconv makes for ``case`` (``overrides`` replace fields of
    the launch: ``name_expression``, ``grid``, ``rows_per_strip``, for calibration data
    measured on an older configuration)."""
    shape = (case.size, case.size, case.channels) if case.channels > 1 else (case.size,) * 2
    image = np.lib.stride_tricks.as_strided(np.zeros(1, case.dtype), shape, (0,) * len(shape))
    _, plan, _ = make_plan(
        image, case.kernel, border="reflect101", value=0.0, anchor=None, flip=False, dtype=None
    )
    strategy = choose_strategy(plan)
    launch = _cuda_launch.plan_launch(
        plan,
        strategy,
        H100_LIMITS,
        window=case.window,
        dp4a=case.dp4a,
        packed_box=case.packed_box,
        float_box=case.float_box,
    )
    overrides = dict(overrides or {})
    template = overrides.get("name_expression", launch.name_expression).split("<")[0]
    if template != launch.template and template in instructions.WINDOW_TEMPLATES:
        launch = _window_launch(plan, strategy, template)
    elif template != launch.template and template in instructions.TILED_TEMPLATES:
        # measured on a shared-memory kernel where a window kernel runs today (large_blur
        # uint8 since gpuconv_box_packed): that kernel's launch, shared memory included
        launch = _cuda_launch.plan_launch(plan, strategy, H100_LIMITS, window=False)
    if "rows_per_strip" in overrides:
        rows = overrides.pop("rows_per_strip")
        if rows is not None:
            overrides["scalars"] = (*launch.scalars[:-1], np.int32(rows))
    if "name_expression" in overrides:
        template = overrides["name_expression"].split("<")[0]
        overrides["template"] = template
        overrides["source_file"] = _cuda_launch.SOURCE_FILES[template]
    if "grid" in overrides:
        overrides["grid"] = tuple(overrides["grid"])
    return plan, dataclasses.replace(launch, **overrides) if overrides else launch


def _window_launch(plan, strategy, template: str) -> Launch:
    """A window or box launch for a plan that today runs another kernel (calibration data
    measured when it ran this one): ``window.window_launch``'s argument layout, with the
    grid, rows and instantiation that the caller overrides."""
    height, width, _ = plan.shape
    accumulator = np.dtype(strategy.accumulator)
    border = np.int32(int(plan.border))
    if template == "gpuconv_box":
        weights = np.array([plan.kernel.flat[0]], dtype=accumulator)
        scalars = (
            np.int32(height),
            np.int32(width),
            np.int32(plan.kernel.shape[0]),
            np.int32(plan.anchor_y),
            border,
            np.int32(0),
            np.int32(0),
        )
    else:
        if strategy.separable:
            weights = np.concatenate([strategy.column, strategy.row]).astype(accumulator)
        else:
            weights = plan.kernel.ravel().astype(accumulator)
        value = accumulator.type(plan.border_value)
        scalars = (np.int32(height), np.int32(width), np.int32(plan.anchor_y), border, value)
        scalars += (np.int32(0),)
    return Launch(
        template=template,
        name_expression=template,
        source_file=_cuda_launch.SOURCE_FILES[template],
        grid=(1, 1, 1),
        block=(32, 4, 1),
        shared_bytes=0,
        weights=weights,
        scalars=scalars,
        vector_pitch_aligned=True,
    )


_INSTRUCTIONS: dict = {}
_MEMORY: dict = {}


def _key(launch: Launch, *more) -> tuple:
    """A hashable identity of a launch (its weights are an array)."""
    return (
        launch.source_file,
        launch.name_expression,
        launch.grid,
        launch.block,
        launch.shared_bytes,
        tuple(s.item() for s in launch.scalars),
        launch.weights.tobytes(),
        launch.vector_pitch_aligned,
        *more,
    )


def count_instructions(plan, launch: Launch, options: tuple[str, ...] = ()):
    """(compiled kernel, :class:`~.instructions.LaunchCount`), cached per launch."""
    kernel = instructions.compiled(launch.source_file, launch.name_expression, tuple(options))
    key = _key(launch, tuple(options), plan.shape, plan.input_dtype)
    if key not in _INSTRUCTIONS:
        _INSTRUCTIONS[key] = instructions.launch_instructions(
            kernel, launch, plan.shape, plan.input_dtype
        )
    return kernel, _INSTRUCTIONS[key]


def count_memory(plan, launch: Launch) -> memory.MemoryCount:
    """:class:`~.memory.MemoryCount`, cached per launch."""
    key = _key(launch, plan.shape, plan.input_dtype, plan.output_dtype)
    if key not in _MEMORY:
        _MEMORY[key] = memory.launch_memory(launch, plan.shape, plan.input_dtype, plan.output_dtype)
    return _MEMORY[key]


def predict(case: Case, options: tuple[str, ...] = (), edges: bool = False) -> dict:
    """One row of ``gpu_model.py --json``: the issue's fields, then a few more. ``options``:
    extra compile options (the code as it was measured: :data:`AS_MEASURED`). ``edges``:
    also the window kernels' edge warps (:func:`.instructions.edge_instructions`; the
    issue's count is the interior path's): ``edge_instructions_per_pixel`` and
    ``fraction_of_copy_with_edges``."""
    plan, launch = plan_and_launch(case)
    kernel, count = count_instructions(plan, launch, options)
    traffic = count_memory(plan, launch)
    threads = launch.block[0] * launch.block[1] * launch.block[2]
    occupancy = machine.occupancy(kernel.registers, threads, launch.shared_bytes)
    resident = machine.resident_warps(occupancy, count.warps)
    seconds = machine.predicted_seconds(traffic.dram_bytes, count.warp_instructions, resident)
    copy = machine.copy_seconds(traffic.ideal_dram_bytes)
    more = {}
    if edges and launch.template in instructions.WINDOW_TEMPLATES:
        key = ("edges", *_key(launch, tuple(options), plan.shape, plan.input_dtype))
        if key not in _INSTRUCTIONS:
            _INSTRUCTIONS[key] = instructions.edge_instructions(
                kernel, launch, plan.shape, plan.input_dtype, count
            )
        extra = _INSTRUCTIONS[key]
        with_edges = machine.predicted_seconds(
            traffic.dram_bytes, count.warp_instructions + extra, resident
        )
        more = {
            "edge_instructions_per_pixel": round(extra / count.pixels, 4),
            "predicted_ms_with_edges": round(with_edges * 1e3, 4),
            "fraction_of_copy_with_edges": round(copy / with_edges, 4),
        }
    return {
        "name": case.name,
        "kernel": case.kernel,
        "dtype": case.dtype,
        "channels": case.channels,
        "size": case.size,
        "path": launch.name_expression,
        "warp_instructions_per_pixel": round(count.per_pixel, 4),
        "dram_bytes": int(traffic.dram_bytes),
        "ideal_dram_bytes": traffic.ideal_dram_bytes,
        "sectors_per_request": round(traffic.sectors_per_request, 3),
        "predicted_ms": round(seconds * 1e3, 4),
        "copy_ms": round(copy * 1e3, 4),
        "fraction_of_copy": round(copy / seconds, 4),
        # beyond the issue's fields
        "warp_instructions": int(count.warp_instructions),
        "bound": machine.bound(traffic.dram_bytes, count.warp_instructions, resident),
        "resident_warps_per_sm": round(resident, 2),
        "store_sectors_per_request": round(traffic.global_store.sectors_per_request, 3),
        "shared_wavefronts_per_request": round(
            (traffic.shared_load.wavefronts + traffic.shared_store.wavefronts)
            / max(1, traffic.shared_load.requests + traffic.shared_store.requests),
            3,
        ),
        "registers": kernel.registers,
        "occupancy": round(occupancy, 3),
        "grid": list(launch.grid),
        "block": list(launch.block),
        **more,
    }


def predict_lowrank(kernel, dtype: str = "float32", size: int = SIZE) -> dict | None:
    """The CUDA low-rank path (:mod:`gpuconv._backends.cuda.lowrank`) on a grey image.

    One separable launch per term, each counted as :func:`predict` counts a launch (warp
    instructions from the SASS, DRAM bytes from the emulator, writing the accumulator's
    dtype), plus the element-wise passes that add the terms and store the total
    (``r - 1`` additions reading two images and writing one, and one read and one store
    of the output), which are DRAM-bound. None when the plan does not take the path.
    """
    from .._backends.cuda import lowrank

    image = np.lib.stride_tricks.as_strided(np.zeros(1, dtype), (size, size), (0, 0))
    _, plan, _ = make_plan(
        image, kernel, border="reflect101", value=0.0, anchor=None, flip=False, dtype=None
    )
    found = lowrank.term_plans_and_launches(plan, H100_LIMITS)
    if found is None:
        return None
    terms, accumulator = found
    pixels = size * size
    seconds = 0.0
    warp_instructions = 0
    dram = 0
    for term_plan, launch in terms:
        kernel, count = count_instructions(term_plan, launch)
        traffic = count_memory(term_plan, launch)
        threads = launch.block[0] * launch.block[1] * launch.block[2]
        occupancy = machine.occupancy(kernel.registers, threads, launch.shared_bytes)
        resident = machine.resident_warps(occupancy, count.warps)
        seconds += machine.predicted_seconds(traffic.dram_bytes, count.warp_instructions, resident)
        warp_instructions += count.warp_instructions
        dram += traffic.dram_bytes
    item = np.dtype(accumulator).itemsize
    elementwise = (len(terms) - 1) * 3 * pixels * item
    elementwise += pixels * (item + np.dtype(plan.output_dtype).itemsize)
    seconds += elementwise / machine.DRAM_BYTES_PER_SECOND
    ideal = pixels * (np.dtype(dtype).itemsize + np.dtype(plan.output_dtype).itemsize)
    copy = machine.copy_seconds(ideal)
    return {
        "kernel_shape": list(plan.kernel.shape),
        "dtype": dtype,
        "size": size,
        "path": " + ".join(launch.name_expression for _, launch in terms) + " + sum",
        "terms": len(terms),
        "accumulator": str(np.dtype(accumulator)),
        "warp_instructions": int(warp_instructions),
        "dram_bytes": int(dram + elementwise),
        "predicted_ms": round(seconds * 1e3, 4),
        "copy_ms": round(copy * 1e3, 4),
        "fraction_of_copy": round(copy / seconds, 4),
    }


# ------------------------------------------------------------------ ncu calibration

#: Compile options that give the kernels as every GPU measurement so far ran them: the
#: register-window kernels' interior loop (GPUCONV_WINDOW_INTERIOR) came after the last
#: measurement (2026-11-26), so the model checks itself against the code without it.
#: (gpuconv_window_dp4a, gpuconv_box_packed and gpuconv_box_float, later still, are left
#: out by choosing the kernels they replaced: Case(dp4a=False, packed_box=False,
#: float_box=False).)
AS_MEASURED = ("-DGPUCONV_WINDOW_INTERIOR=0",)

CALIBRATION = (
    Path(__file__).resolve().parents[2]
    / "benchmarks"
    / "results"
    / "gpu-model"
    / "ncu-h100-2026-11-25.json"
)


def calibration(path: Path = CALIBRATION) -> dict:
    """The measured H100 instruction counts (``smsp__inst_executed.sum``) the model checks."""
    return json.loads(Path(path).read_text())


def calibrate(entry: dict) -> dict:
    """Predicted against measured warp instructions for one calibration entry."""
    case = Case(entry["kernel"], entry["dtype"], entry["channels"], SIZE, entry["window"])
    plan, launch = plan_and_launch(
        case,
        {
            "name_expression": entry["name_expression"],
            "grid": entry["grid"],
            **(
                {"rows_per_strip": entry["rows_per_strip"]}
                if entry["rows_per_strip"] is not None
                else {}
            ),
        },
    )
    _, count = count_instructions(plan, launch, (*entry["options"], *AS_MEASURED))
    return {
        "path": entry["name_expression"],
        "options": entry["options"],
        "kernel": entry["kernel"],
        "dtype": entry["dtype"],
        "channels": entry["channels"],
        "predicted": int(count.warp_instructions),
        "measured": entry["measured"],
        "ratio": count.warp_instructions / entry["measured"],
    }


# ------------------------------------------------------------------ measured kernel times

_RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
#: Kernel-only times measured on GPUs (``gpu_kernel_times.py --json``), by device: what
#: CYCLES_PER_WARP_INSTRUCTION is fitted to (the H100, the model's device) and checked on.
MEASURED_KERNEL_TIMES = {
    "H100": (
        _RESULTS / "gpu-window-h100-2026-11-25" / "kernel_times.json",
        _RESULTS / "gpu-baseline-h100-2026-11-25" / "kernel_times.json",
    ),
    "H200": (
        _RESULTS / "gpu-retune-h200-2026-11-26" / "call3" / "kernel_times.json",
        _RESULTS / "gpu-retune-h200-2026-11-26" / "call2" / "kernel_times.json",
        _RESULTS / "gpu-check-h200-2026-11-26" / "kernel_times.json",
    ),
}
#: Kernels whose launch bounds or row grouping changed after a device's measurements
#: (convolve_window.cu's tuning, retuned on the H200): same name, another configuration,
#: so those older times are left out. The H200's newest file (listed first) measured them
#: as they are now.
RETUNED_SINCE = {
    "H100": (
        "gpuconv_window<unsigned char, unsigned char, int, 3, 3, 1, 8, false>",
        "gpuconv_window<unsigned char, unsigned char, int, 3, 3, 1, 8, true>",
        "gpuconv_window<unsigned char, unsigned char, int, 3, 3, 3, 8, false>",
        "gpuconv_window<unsigned short, unsigned short, int, 3, 3, 1, 8, false>",
    ),
}


def measured_kernel_times(device: str = "H100") -> list[dict]:
    """``{kernel, dtype, channels, path, kernel_ms}`` of every measured tutorial-bank case
    (a ``legacy`` variant is the same case's shared-memory kernel); the first file wins
    where two measured the same path; paths in :data:`RETUNED_SINCE` are left out."""
    found: dict[tuple, dict] = {}
    for path in MEASURED_KERNEL_TIMES[device]:
        for case in json.loads(path.read_text())["cases"]:
            if case["kernel"] not in TUTORIAL_BANK or case.get("size", SIZE) != SIZE:
                continue
            runs = [(case["path"], case["kernel_ms"])]
            runs += [(v["path"], v["kernel_ms"]) for v in case.get("variants", {}).values()]
            for launched, ms in runs:
                if launched in RETUNED_SINCE.get(device, ()):
                    continue
                key = (case["kernel"], case["dtype"], case["channels"], launched)
                found.setdefault(key, dict(zip(("kernel", "dtype", "channels", "path"), key)))
                found[key].setdefault("kernel_ms", ms)
    return list(found.values())


def against_measured(device: str = "H100") -> list[dict]:
    """The model beside each measured time whose kernel is the one gpuconv launches today
    (the window family or the shared-memory one); cases measured on another configuration
    are left out. Each row carries what the fit of CYCLES_PER_WARP_INSTRUCTION needs."""
    rows = []
    for entry in measured_kernel_times(device):
        for window, newest in ((True, True), (True, False), (False, True)):
            # newest=False: gpuconv_window, gpuconv_box and the separable kernels where
            # gpuconv_window_dp4a, gpuconv_box_packed and gpuconv_box_float run now
            # (measured before them)
            case = Case(
                entry["kernel"],
                entry["dtype"],
                entry["channels"],
                SIZE,
                window,
                newest,
                newest,
                newest,
            )
            _, launch = plan_and_launch(case)
            if launch.name_expression != entry["path"]:
                continue
            row = predict(case, AS_MEASURED)
            seconds_per_cycle = row["warp_instructions"] / (
                machine.SMS * row["resident_warps_per_sm"] * machine.CLOCK_HZ
            )
            other_limits = max(
                row["dram_bytes"] / machine.DRAM_BYTES_PER_SECOND,
                row["warp_instructions"] / machine.issue_rate(),
            )
            rows.append(
                {
                    **row,
                    "measured_ms": entry["kernel_ms"],
                    "ratio": row["predicted_ms"] / entry["kernel_ms"],
                    "seconds_per_cycle": seconds_per_cycle,
                    "other_limits_s": other_limits,
                }
            )
            break
    return rows


def fit_cycles_per_instruction(rows: list[dict]) -> float:
    """The CYCLES_PER_WARP_INSTRUCTION (to 0.1) that minimises the squared relative error of
    ``max(other limits, instructions x cycles / (resident warps x clock))`` against the
    measured times of ``rows`` (:func:`against_measured`)."""
    measured = np.array([row["measured_ms"] * 1e-3 for row in rows])
    per_cycle = np.array([row["seconds_per_cycle"] for row in rows])
    floor = np.array([row["other_limits_s"] for row in rows])
    candidates = np.arange(1.0, 40.0, 0.1)
    errors = [
        float(np.sum((np.maximum(floor, per_cycle * c) / measured - 1.0) ** 2)) for c in candidates
    ]
    return round(float(candidates[int(np.argmin(errors))]), 1)
