"""notebooks/compare_backends.ipynb: it runs to the end, and says what the issue promises.

The notebook is executed with nbclient on tiny images (its parameters come from
``GPUCONV_NB_*`` environment variables), failing on any cell error. A cell
appended to the executed copy dumps the notebook's own results as JSON, so the
checks below read what the notebook computed rather than scraping its prose:
the difference table covers every backend and kernel and meets the contract,
every timing went through ``gpuconv.bench``, and the conclusion's
recommendation is the one its measurements support. The stored copy (with the
outputs of a full run) is checked without executing it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import gpuconv
from gpuconv import kernels

nbformat = pytest.importorskip("nbformat", reason="nbformat is needed to read the notebook")

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "compare_backends.ipynb"
SMALL_PARAMETERS = {
    "GPUCONV_NB_SIZES": "64,128",
    "GPUCONV_NB_BAR_SIZE": "96",
    "GPUCONV_NB_REPEATS": "2",
    "GPUCONV_NB_WARMUP": "1",
    "GPUCONV_NB_MAX_SECONDS_PER_CALL": "30",
    "GPUCONV_NB_DTYPES": "uint8,float32",
}
# Appended to the executed notebook: its results, machine-readable.
DUMP_RESULTS = """
import dataclasses, json
print("RESULTS" + json.dumps({
    "differences": DIFFERENCES,
    "bar": [dataclasses.asdict(row) for row in BAR_RESULTS],
    "sweep": [dataclasses.asdict(row) for row in SWEEP_RESULTS],
    "host": list(HOST_IMPLEMENTATIONS),
    "gpu": list(GPU_IMPLEMENTATIONS),
    "gallery_backends": GALLERY_BACKENDS,
    "have_gpu": HAVE_GPU,
    "gpu_skip_reason": GPU_SKIP_REASON,
    "conclusion": CONCLUSION,
}))
"""


def _stream_text(cell) -> str:
    return "".join(
        output.get("text", "") for output in cell.outputs if output.output_type == "stream"
    )


def _has_png(cell) -> bool:
    return any("image/png" in output.get("data", {}) for output in cell.outputs)


def _code_cells(notebook):
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


@pytest.fixture(scope="module")
def executed():
    """The notebook run with small parameters, plus the results it computed."""
    nbclient = pytest.importorskip("nbclient", reason="nbclient executes the notebook in CI")
    pytest.importorskip("ipykernel", reason="the notebook needs an IPython kernel")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(DUMP_RESULTS))
    environment = dict(SMALL_PARAMETERS)
    # The kernel is a child process: let it import this checkout's gpuconv.
    repository = str(NOTEBOOK.parent.parent)
    environment["PYTHONPATH"] = os.pathsep.join(
        filter(None, [repository, os.environ.get("PYTHONPATH")])
    )
    saved = {name: os.environ.get(name) for name in environment}
    os.environ.update(environment)
    try:
        client = nbclient.NotebookClient(
            notebook,
            timeout=600,
            kernel_name="python3",
            resources={"metadata": {"path": str(NOTEBOOK.parent)}},
        )
        client.execute()  # raises CellExecutionError on the first failing cell
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    dump = _stream_text(notebook.cells[-1])
    assert dump.startswith("RESULTS"), dump[:500]
    return notebook, json.loads(dump[len("RESULTS") :])


@pytest.mark.slow
def test_difference_table_covers_every_backend_and_kernel(executed):
    notebook, results = executed
    available = [name for name, state in gpuconv.backends().items() if state]
    expected_backends = [name for name in available if name != "cuda" or results["have_gpu"]]
    assert results["gallery_backends"] == expected_backends
    rows = {(row["backend"], row["kernel"]): row for row in results["differences"]}
    assert set(rows) == {
        (backend, kernel) for backend in expected_backends for kernel in kernels.TUTORIAL_BANK
    }
    broken = [key for key, row in rows.items() if not row["meets_contract"]]
    assert not broken, f"differences from cv2.filter2D beyond the contract: {broken}"
    # The printed table shows every row.
    table = next(
        _stream_text(cell) for cell in _code_cells(notebook) if "max |diff|" in _stream_text(cell)
    )
    assert table.count("\n") >= len(rows) + 1
    assert "BROKEN" not in table


@pytest.mark.slow
def test_every_implementation_is_timed_on_every_kernel_and_size(executed):
    _, results = executed
    assert {"gpuconv:numpy", "cv2.filter2D", "scipy.ndimage.correlate"} <= set(results["host"])
    if results["have_gpu"]:
        assert set(results["gpu"]) == {"gpuconv:cuda", "cupyx.scipy.ndimage.correlate"}
    else:
        assert results["gpu"] == []
    everything = results["host"] + results["gpu"]
    timed = {(row["implementation"], row["kernel"]) for row in results["bar"]}
    assert timed == {(name, kernel) for name in everything for kernel in kernels.TUTORIAL_BANK}
    for row in results["bar"] + results["sweep"]:
        assert row["median_ms"] > 0 and row["mpixels_per_s"] > 0, row
    sides = {row["shape"][0] for row in results["sweep"]}
    expected = {int(side) for side in SMALL_PARAMETERS["GPUCONV_NB_SIZES"].split(",")}
    assert sides == expected
    assert {row["dtype"] for row in results["sweep"]} == {"uint8", "float32"}


@pytest.mark.slow
def test_conclusion_recommends_what_the_measurements_show(executed):
    notebook, results = executed
    # Recompute the CPU recommendation from the dumped measurements.
    bar = results["bar"]
    ours = [name for name in results["host"] if name.startswith("gpuconv:")]
    wins = dict.fromkeys(ours, 0)
    for kernel in kernels.TUTORIAL_BANK:
        times = {row["implementation"]: row["median_ms"] for row in bar if row["kernel"] == kernel}
        wins[min(ours, key=times.__getitem__)] += 1
    best = max(wins, key=wins.__getitem__).split(":")[1]
    conclusion = "\n".join(results["conclusion"])
    assert f'backend="{best}"' in conclusion
    assert f"on {max(wins.values())} of {len(kernels.TUTORIAL_BANK)} kernels" in conclusion
    if not results["have_gpu"]:
        assert results["gpu_skip_reason"] in conclusion
    # Every size and dtype the sweep measured: its line names the fastest per kernel.
    cells = {}
    for row in results["sweep"]:
        cells.setdefault((row["shape"][0], row["dtype"]), {}).setdefault(row["kernel"], []).append(
            row
        )
    for (side, dtype), by_kernel in cells.items():
        (line,) = [
            text for text in results["conclusion"] if text.startswith(f"- {side} x {side} {dtype}:")
        ]
        for kernel, rows in by_kernel.items():
            fastest = min(rows, key=lambda row: row["median_ms"])["implementation"]
            assert f"{kernel}: {fastest}" in line, (line, kernel, fastest)
        assert f"{best} vs cv2:" in line
    # The conclusion is displayed as Markdown, not only kept in a variable.
    shown = [
        output["data"]["text/markdown"]
        for cell in _code_cells(notebook)
        for output in cell.outputs
        if "text/markdown" in output.get("data", {})
    ]
    assert any(f'backend="{best}"' in text for text in shown)


@pytest.mark.slow
def test_gpu_cells_say_why_they_are_skipped(executed):
    notebook, results = executed
    if results["have_gpu"]:
        pytest.skip("this machine has a GPU, so the GPU cells ran instead of being skipped")
    text = "".join(_stream_text(cell) for cell in _code_cells(notebook))
    assert text.count(results["gpu_skip_reason"]) >= 3  # gallery, bar timings, sweep


@pytest.mark.slow
def test_figures_are_drawn(executed):
    notebook, _ = executed
    with_figures = [cell for cell in _code_cells(notebook) if _has_png(cell)]
    assert len(with_figures) == 3  # gallery, bars per kernel, throughput against size


def test_stored_notebook_carries_the_outputs_of_a_full_run():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = _code_cells(notebook)
    assert all(cell.execution_count is not None for cell in code), "commit the executed notebook"
    errors = [o for cell in code for o in cell.outputs if o.output_type == "error"]
    assert not errors, errors
    assert sum(_has_png(cell) for cell in code) == 3
    # The first cell says where and when the stored outputs were produced.
    assert "stored outputs" in notebook.cells[0].source
    assert "not executed yet" not in notebook.cells[0].source
    assert NOTEBOOK.stat().st_size < 3 * 2**20
