"""Every ``__syncthreads()`` in kernels_cuda/ is necessary: deleting any one changes a result.

A barrier mutation check (issue 18). For each barrier, one mutant source is built with that
barrier deleted and run through the CPU emulator on a small fixed set of cases, under every
thread schedule the emulator offers (forward, reverse, shuffled), with a grid small enough
that every block loops over several tiles and channels (``DeviceLimits(max_grid_y=1,
max_grid_z=1)``): the reuse of shared memory between tiles is exercised too. A mutant is
killed when a result differs from the NumPy reference or the emulator reports an error. Every
mutant must be killed; ``ACCEPTED_SURVIVORS`` lists barriers kept although no case needs them,
each with the reason (empty today).

The same cases also run on the unmutated kernels with the small grid, under every schedule,
which is the contract check "blocks that loop over several tiles and channels" asks for.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from support import reference

import gpuconv
from gpuconv import _emulator
from gpuconv._backends.cuda import launch as _cuda_launch
from gpuconv._backends.cuda import source as _cuda_source
from gpuconv._plan import make_plan
from gpuconv._strategy import choose_strategy

pytestmark = pytest.mark.skipif(
    _emulator.available() is not None,
    reason=f"the CUDA emulator cannot run here: {_emulator.available()}",
)

SCHEDULES = ("forward", "reverse", "shuffle:1", "shuffle:2")
#: Grid limits that make every block loop over tile rows and channels.
SMALL_GRID = _cuda_launch.DeviceLimits(max_grid_y=1, max_grid_z=1)
BARRIER = re.compile(r"__syncthreads\(\)\s*;")
#: (file, line) of barriers kept although no mutant case needs them, with the reason.
ACCEPTED_SURVIVORS: dict[tuple[str, int], str] = {}


def _cases():
    """(label, image, kernel, options) covering every template that has a barrier."""
    rng = np.random.default_rng(18)
    colour = rng.integers(0, 256, (45, 37, 3)).astype(np.uint8)
    grey = rng.normal(size=(70, 33)).astype(np.float32)
    return [
        ("direct 3x3, compile-time", colour, "sharpen", {}),
        ("direct run-time size", grey, rng.normal(size=(4, 6)), {"border": "wrap"}),
        ("separable 7x7, compile-time", colour, "small_blur", {"border": "reflect"}),
        ("separable run-time size", grey, np.outer(rng.normal(size=11), rng.normal(size=3)), {}),
    ]


def _launch(image, kernel, options):
    settings = dict(border="reflect101", value=0.0, anchor=None, flip=False, dtype=None)
    settings.update(options)
    image3d, plan, _ = make_plan(image, kernel, **settings)
    launch = _cuda_launch.plan_launch(plan, choose_strategy(plan), SMALL_GRID, window=False)
    return image3d, plan, launch


def _run(function, image3d, plan, launch):
    output = np.empty(plan.shape, plan.output_dtype)
    arguments = launch.arguments(np.ascontiguousarray(image3d), output, launch.weights)
    function(launch.grid, launch.block, arguments, shared_mem=launch.shared_bytes)
    return output


def _matches(output, image, kernel, options) -> bool:
    expected = reference(image, kernel, **options).reshape(output.shape)
    if output.dtype.kind == "f":
        scale = float(np.abs(expected).max()) or 1.0
        return bool(np.abs(output.astype(np.float64) - expected).max() <= 1e-5 * scale)
    return bool(np.abs(output.astype(np.int64) - expected.astype(np.int64)).max() <= 1)


def _barriers():
    """(file, line, offset in the inlined source) of every barrier in kernels_cuda/*.cu."""
    found = []
    for file_name in sorted(set(_cuda_launch.SOURCE_FILES.values())):
        text = _cuda_source.source(file_name)
        for match in BARRIER.finditer(text):
            line = _original_line(text, match.start())
            found.append((file_name, line, match.start(), match.end()))
    return found


def _original_line(text: str, offset: int) -> int:
    """The line in the original file (the inlined source carries #line directives)."""
    before = text[:offset].split("\n")
    for back, line in enumerate(reversed(before[:-1])):
        directive = re.match(r'#line (\d+) "([^"]+)"', line)
        if directive:
            return int(directive.group(1)) + back
    return len(before)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_blocks_that_loop_over_tiles_and_channels_match_the_reference(schedule, monkeypatch):
    monkeypatch.setenv("GPUCONV_EMULATOR_SCHEDULE", schedule)
    for label, image, kernel, options in _cases():
        image3d, plan, launch = _launch(image, kernel, options)
        assert launch.grid[1] == launch.grid[2] == 1, label  # the blocks must loop
        function = _cuda_source.emulated_function(launch.source_file, launch.name_expression)
        assert _matches(_run(function, image3d, plan, launch), image, kernel, options), label


def test_window_kernels_with_a_small_grid_match_the_reference(monkeypatch):
    rng = np.random.default_rng(3)
    for image, kernel in (
        (rng.integers(0, 256, (50, 64, 3)).astype(np.uint8), "sharpen"),
        (rng.integers(0, 256, (80, 64)).astype(np.uint8), "small_blur"),
        (rng.normal(size=(80, 48)).astype(np.float32), "sobel_x"),
    ):
        settings = dict(border="reflect101", value=0.0, anchor=None, flip=False, dtype=None)
        image3d, plan, _ = make_plan(image, kernel, **settings)
        launch = _cuda_launch.plan_launch(plan, choose_strategy(plan), SMALL_GRID)
        assert (
            launch.template
            in (
                "gpuconv_window",
                "gpuconv_window_dp4a",
                "gpuconv_box",
                "gpuconv_box_packed",
            )
            and launch.grid[1] == 1
        )
        function = _cuda_source.emulated_function(launch.source_file, launch.name_expression)
        assert _matches(_run(function, image3d, plan, launch), image, kernel, {})


@pytest.mark.slow
def test_deleting_any_barrier_changes_a_result():
    barriers = _barriers()
    assert barriers, "no __syncthreads() found in kernels_cuda/"
    cases = [
        (label, image, kernel, options, *_launch(image, kernel, options))
        for label, image, kernel, options in _cases()
    ]
    survivors = []
    for file_name, line, start, end in barriers:
        text = _cuda_source.source(file_name)
        mutant = text[:start] + "/* barrier removed by tests/test_barriers.py */" + text[end:]
        relevant = [case for case in cases if case[-1].source_file == file_name]
        assert relevant, f"no case runs {file_name}"
        module = _emulator.EmulatedModule(
            mutant,
            name_expressions=sorted({case[-1].name_expression for case in relevant}),
            options=_cuda_source.COMPILE_OPTIONS,
            include_dirs=[str(_cuda_source.kernels_directory())],
            debug=True,
        )
        killed = False
        for schedule in SCHEDULES:
            with pytest.MonkeyPatch.context() as patch:
                patch.setenv("GPUCONV_EMULATOR_SCHEDULE", schedule)
                for _, image, kernel, options, image3d, plan, launch in relevant:
                    function = module.get_function(launch.name_expression)
                    try:
                        output = _run(function, image3d, plan, launch)
                    except _emulator.EmulatorError:
                        killed = True
                        break
                    if not _matches(output, image, kernel, options):
                        killed = True
                        break
            if killed:
                break
        if not killed and (file_name, line) not in ACCEPTED_SURVIVORS:
            survivors.append(f"{file_name}:{line}")
    print(f"\n{len(barriers)} barriers mutated, {len(barriers) - len(survivors)} mutants killed")
    assert not survivors, f"barriers no case needs (delete them, or explain): {survivors}"


def test_the_mutation_check_finds_every_barrier():
    found = {(file_name, line) for file_name, line, _, _ in _barriers()}
    expected = set()
    for file_name in set(_cuda_launch.SOURCE_FILES.values()):
        lines = (_cuda_source.kernels_directory() / file_name).read_text().splitlines()
        expected |= {(file_name, n) for n, text in enumerate(lines, 1) if BARRIER.search(text)}
    assert found == expected
    assert gpuconv is not None
