"""The backend registry: backends(), use_backend, GPUCONV_BACKEND, auto, lazy imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import gpuconv
from gpuconv import _registry
from gpuconv._plan import make_plan

IMAGE = np.arange(36, dtype=np.uint8).reshape(6, 6)


def _python(code: str, **environment) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUCONV_")}
    env.update(environment)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )


def _plan(image=IMAGE):
    return make_plan(
        image, "sharpen", border="reflect101", value=0.0, anchor=None, flip=False, dtype=None
    )[1]


def test_backends_reports_every_backend_with_a_reason():
    report = gpuconv.backends()
    assert list(report) == ["cuda", "numba", "numpy"]
    assert report["numpy"].available and bool(report["numpy"])
    for name, state in report.items():
        assert state.name == name
        assert state.reason  # a sentence either way
        assert repr(state).startswith("available" if state.available else "unavailable: ")


def test_import_loads_neither_numba_nor_cupy():
    result = _python(
        "import sys, numpy as np, gpuconv\n"
        "gpuconv.convolve(np.eye(4, dtype=np.uint8), 'sharpen', backend='numpy')\n"
        "print(sorted(m for m in ('numba', 'cupy', 'scipy', 'dask') if m in sys.modules))"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


BLOCK_OPTIONAL = "import sys; sys.modules['numba'] = None; sys.modules['cupy'] = None\n"


def test_missing_optional_backends_say_what_to_install():
    result = _python(
        BLOCK_OPTIONAL + "import json, gpuconv\n"
        "print(json.dumps({k: [v.available, v.reason] for k, v in gpuconv.backends().items()}))"
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["numpy"][0] is True
    assert report["numba"] == [False, report["numba"][1]] and "pip install" in report["numba"][1]
    assert report["cuda"][0] is False and "pip install" in report["cuda"][1]


def test_asking_for_a_missing_backend_raises_backend_unavailable():
    result = _python(
        BLOCK_OPTIONAL + "import numpy as np, gpuconv\n"
        "try:\n"
        "    gpuconv.convolve(np.eye(4), 'sharpen', backend='numba')\n"
        "except gpuconv.BackendUnavailableError as error:\n"
        "    print('raised:', error)\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("raised: backend 'numba' is unavailable")
    assert "pip install" in result.stdout


def test_auto_never_fails_for_lack_of_optional_backends():
    result = _python(
        BLOCK_OPTIONAL + "import numpy as np, gpuconv\n"
        "print(gpuconv.convolve(np.array([[1, 2, 3, 4]], np.uint8), [[0.5]]).tolist())"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[[0, 1, 2, 2]]"


def test_environment_variable_sets_the_default():
    result = _python(
        "import numpy as np, gpuconv\n"
        "from gpuconv import _registry\n"
        "print(_registry.resolve('auto', None, 'numpy')[0])",
        GPUCONV_BACKEND="numpy",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "numpy"


def test_bad_environment_variable_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("GPUCONV_BACKEND", "tpu")
    with pytest.raises(ValueError, match="GPUCONV_BACKEND='tpu'"):
        gpuconv.convolve(IMAGE, "sharpen")


def test_use_backend_sets_and_restores_the_default(monkeypatch):
    monkeypatch.delenv("GPUCONV_BACKEND", raising=False)
    outside = _registry.resolve("auto", _plan(), "numpy")[0]
    with gpuconv.use_backend("numpy"):
        assert _registry.resolve("auto", _plan(), "numpy")[0] == "numpy"
        # an explicit backend argument still wins over the context
        explicit = next(n for n, s in gpuconv.backends().items() if s and n != "cuda")
        assert _registry.resolve(explicit, _plan(), "numpy")[0] == explicit
    assert _registry.resolve("auto", _plan(), "numpy")[0] == outside


def test_use_backend_context_beats_environment(monkeypatch):
    monkeypatch.setenv("GPUCONV_BACKEND", "auto")
    with gpuconv.use_backend("numpy"):
        assert _registry.resolve("auto", _plan(), "numpy")[0] == "numpy"


def test_use_backend_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown backend"):
        with gpuconv.use_backend("fpga"):
            pass


def test_use_backend_routes_calls(monkeypatch):
    from gpuconv._backends import numpy as _numpy

    calls = []
    original = _numpy.convolve
    monkeypatch.setattr(_numpy, "convolve", lambda *a: calls.append(1) or original(*a))
    with gpuconv.use_backend("numpy"):
        out = gpuconv.convolve(IMAGE, "sharpen")
    assert calls == [1]
    np.testing.assert_array_equal(out, original(IMAGE[:, :, None], _plan(), "numpy")[:, :, 0])


def test_auto_prefers_a_compiled_cpu_backend_and_never_the_emulator(monkeypatch):
    monkeypatch.delenv("GPUCONV_BACKEND", raising=False)
    chosen = _registry.resolve("auto", _plan(), "numpy")[0]
    report = gpuconv.backends()
    assert report[chosen].available
    if report["cuda"].emulated:
        assert chosen != "cuda", "auto must not send work to the CPU emulator"
    if report["numba"] and chosen != "cuda":
        assert chosen == "numba"


def test_backend_status_reason_is_printable():
    text = str(gpuconv.backends()["numpy"])
    assert text.startswith("available (numpy")


def test_the_emulator_is_reported_as_emulated_and_never_auto():
    result = _python(
        "import numpy as np, gpuconv\n"
        "from gpuconv import _registry\n"
        "state = gpuconv.backends()['cuda']\n"
        "print(state.available, state.emulated, state.reason.startswith('available (CPU emulator'))\n"
        "print(_registry.resolve('auto', None, 'numpy')[0])\n"
        "print(gpuconv.convolve(np.array([[1, 2, 3, 4]], np.uint8), [[0.5]], backend='cuda').tolist())",
        GPUCONV_CUDA_EMULATOR="1",
    )
    assert result.returncode == 0, result.stderr
    available, chosen, output = result.stdout.strip().splitlines()
    if available.startswith("False"):
        pytest.skip(f"the CPU emulator cannot run here: {result.stdout}")
    assert available == "True True True"
    assert chosen != "cuda"
    assert output == "[[0, 1, 2, 2]]"
