"""The backend registry: backends(), use_backend, GPUCONV_BACKEND, auto, lazy imports."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest

import gpuconv
from gpuconv import _registry
from gpuconv._backends import numpy as reference_module
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


def test_auto_on_this_machine_picks_an_available_backend_in_preference_order(monkeypatch):
    # What auto picks here follows from backends() alone: cuda on a real GPU that pays
    # for the transfer, else numba when it is installed (and loaded: a process's first
    # small calls run the reference instead, see the numba tests), else numpy.
    monkeypatch.delenv("GPUCONV_BACKEND", raising=False)
    plan = _plan()
    report = gpuconv.backends()
    if report["numba"]:
        gpuconv.convolve(IMAGE, "sharpen", backend="numba")  # numba's loops are loaded
    cuda = report["cuda"]
    if cuda and not cuda.emulated and _registry._module("cuda").pays_off_for_host_image(plan):
        expected = "cuda"
    else:
        expected = "numba" if report["numba"] else "numpy"
    assert _registry.resolve("auto", plan, "numpy")[0] == expected


# --- the dispatcher against stand-in backends (no GPU, numba or not) -------------------------


class FakeBackend(types.SimpleNamespace):
    """A backend module as the registry sees one; ``calls`` records what it ran."""

    def convolve(self, image3d, plan, library="numpy"):
        self.calls.append(library)
        return reference_module.convolve(np.asarray(image3d), plan, library)


def _fake_registry(monkeypatch, **backends):
    """Replace the registry's view of each backend: name=dict(available, emulated, cupy, pays)."""
    modules, states = {}, {}
    for name in _registry.BACKEND_MODULES:
        options = backends.get(name, {"available": False})
        module = FakeBackend(calls=[])
        if name != "numpy" or "cupy" in options:
            takes_cupy = options.get("cupy", False)
            module.accepts_library = lambda library, cupy=takes_cupy: (
                library == "numpy" or (cupy and library == "cupy")
            )
        if "pays" in options:
            module.pays_off_for_host_image = lambda plan, pays=options["pays"]: pays
        modules[name] = module
        states[name] = _registry.BackendStatus(
            name,
            options["available"],
            "available (fake)" if options["available"] else f"{name} is not installed (fake)",
            options.get("emulated", False),
        )
    monkeypatch.setattr(_registry, "_module", modules.__getitem__)
    monkeypatch.setattr(_registry, "status", states.__getitem__)
    monkeypatch.delenv("GPUCONV_BACKEND", raising=False)
    return modules


AVAILABLE = {"available": True}
GPU = {"available": True, "cupy": True, "pays": True}


def _renting_numba(modules, worth_loading: bool) -> list:
    """Give the fake numba a ski rental that answers ``worth_loading``; returns what it saw:
    the stand-in's predicted seconds at each question (None: the reference stands in)."""
    seen = []

    def rental(plan, stand_in_seconds=None):
        seen.append(None if stand_in_seconds is None else stand_in_seconds())
        return worth_loading

    modules["numba"].worth_loading = rental
    return seen


@pytest.mark.parametrize(
    "kernel, stand_ins, expected",
    [
        ("sharpen", True, "opencv"),  # integer kernel, uint8: OpenCV gives the same bits
        ("gaussian5", True, "numpy"),  # float kernel: only the reference is exact
        ("sharpen", False, "numpy"),  # the demo, which compares against OpenCV, asks for none
    ],
)
def test_a_jit_not_worth_loading_yet_leaves_the_call_to_a_stand_in(
    monkeypatch, kernel, stand_ins, expected
):
    from gpuconv._backends import opencv

    modules = _fake_registry(monkeypatch, numba=AVAILABLE, numpy=AVAILABLE)
    seen = _renting_numba(modules, worth_loading=False)
    plan = make_plan(
        IMAGE, kernel, border="reflect101", value=0.0, anchor=None, flip=False, dtype=None
    )[1]
    choice = {} if stand_ins else {"stand_ins": False}  # stand-ins are the default
    name, module = _registry.resolve("auto", plan, "numpy", **choice)
    assert name == expected
    assert module is (opencv if expected == "opencv" else modules["numpy"])
    # The rental is charged what the stand-in will cost: OpenCV's prediction, or the
    # reference's (None: numba's own estimate).
    assert seen == [opencv.seconds(plan) if expected == "opencv" else None]
    assert _registry.resolve("numpy", plan, "numpy") == ("numpy", modules["numpy"])


def test_a_backend_module_that_fails_to_import_is_passed_over_by_auto(monkeypatch):
    """A backend whose own module raises on import (a broken install) is never asked
    whether it is worth loading; ``auto`` goes on to the next."""
    modules = _fake_registry(monkeypatch, numba=AVAILABLE, numpy=AVAILABLE)
    _renting_numba(modules, worth_loading=True)

    def module(name):
        if name == "numba":
            raise ImportError("numba's module is broken (fake)")
        return modules[name]

    monkeypatch.setattr(_registry, "_module", module)
    monkeypatch.setattr(
        _registry,
        "status",
        lambda name: _registry.BackendStatus(name, name == "numpy", "fake"),
    )
    assert _registry.resolve("auto", _plan(), "numpy") == ("numpy", modules["numpy"])


def test_a_jit_worth_loading_runs_where_opencv_could_stand_in(monkeypatch):
    modules = _fake_registry(monkeypatch, numba=AVAILABLE, numpy=AVAILABLE)
    _renting_numba(modules, worth_loading=True)
    assert _registry.resolve("auto", _plan(), "numpy") == ("numba", modules["numba"])


def test_without_numba_auto_runs_the_reference_never_the_stand_in(monkeypatch):
    """The contract's order: numba, else numpy; OpenCV only ever stands in while a
    numba that is there is not worth loading yet."""
    modules = _fake_registry(monkeypatch, numpy=AVAILABLE)
    assert _registry.resolve("auto", _plan(), "numpy") == ("numpy", modules["numpy"])


@pytest.mark.parametrize(
    "backends, expected",
    [
        ({"cuda": GPU, "numba": AVAILABLE, "numpy": AVAILABLE}, "cuda"),
        ({"cuda": {**GPU, "pays": False}, "numba": AVAILABLE, "numpy": AVAILABLE}, "numba"),
        ({"cuda": {**GPU, "pays": False}, "numpy": AVAILABLE}, "numpy"),
        ({"cuda": {**GPU, "emulated": True}, "numba": AVAILABLE, "numpy": AVAILABLE}, "numba"),
        ({"cuda": {**GPU, "emulated": True}, "numpy": AVAILABLE}, "numpy"),
        ({"numba": AVAILABLE, "numpy": AVAILABLE}, "numba"),
        ({"numpy": AVAILABLE}, "numpy"),
    ],
)
def test_auto_prefers_gpu_then_numba_then_numpy_and_never_the_emulator(
    monkeypatch, backends, expected
):
    modules = _fake_registry(monkeypatch, **backends)
    assert _registry.resolve("auto", _plan(), "numpy") == (expected, modules[expected])
    out = gpuconv.convolve(IMAGE, "sharpen")
    assert [name for name, module in modules.items() if module.calls] == [expected]
    np.testing.assert_array_equal(out, gpuconv.convolve(IMAGE, "sharpen", backend="numpy"))


class CupyLikeArray:
    """Looks like a CuPy array to gpuconv (its class lives in a module called cupy)."""

    __module__ = "cupy"

    def __init__(self, array):
        self._array = np.asarray(array)
        self.dtype, self.shape, self.ndim = self._array.dtype, self._array.shape, self._array.ndim
        self.size = self._array.size

    def __getitem__(self, index):
        return self._array[index]

    def __array__(self, dtype=None, copy=None):
        return self._array


@pytest.fixture
def cupy_like(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", types.ModuleType("cupy"))
    image = CupyLikeArray(IMAGE)
    assert make_plan(
        image, "sharpen", border="reflect101", value=0.0, anchor=None, flip=False, dtype=None
    )[2] == ("cupy")
    return image


@pytest.mark.parametrize("name", ["numba", "numpy"])
def test_cpu_backends_refuse_cupy_arrays(monkeypatch, cupy_like, name):
    modules = _fake_registry(monkeypatch, cuda=GPU, numba=AVAILABLE, numpy=AVAILABLE)
    with pytest.raises(ValueError, match=f"backend '{name}' cannot take a cupy array"):
        _registry.resolve(name, _plan(), "cupy")
    with pytest.raises(ValueError, match="cannot take a cupy array"):
        gpuconv.convolve(cupy_like, "sharpen", backend=name)
    assert not any(module.calls for module in modules.values())


def test_auto_sends_cupy_arrays_to_cuda_even_where_a_host_image_would_not_pay(
    monkeypatch, cupy_like
):
    modules = _fake_registry(
        monkeypatch, cuda={**GPU, "pays": False}, numba=AVAILABLE, numpy=AVAILABLE
    )
    assert _registry.resolve("auto", _plan(), "cupy") == ("cuda", modules["cuda"])
    gpuconv.convolve(cupy_like, "sharpen")
    assert modules["cuda"].calls == ["cupy"]
    assert not modules["numba"].calls and not modules["numpy"].calls


@pytest.mark.parametrize(
    "cuda",
    [{"available": False}, {**GPU, "cupy": False}, {**GPU, "emulated": True}],
    ids=["no-gpu", "cuda-refuses-cupy", "emulator"],
)
def test_auto_never_sends_cupy_arrays_to_a_cpu_backend(monkeypatch, cupy_like, cuda):
    modules = _fake_registry(monkeypatch, cuda=cuda, numba=AVAILABLE, numpy=AVAILABLE)
    with pytest.raises(gpuconv.BackendUnavailableError, match="no available backend accepts"):
        _registry.resolve("auto", _plan(), "cupy")
    with pytest.raises(gpuconv.BackendUnavailableError):
        gpuconv.convolve(cupy_like, "sharpen")
    assert not any(module.calls for module in modules.values())


def test_use_backend_refuses_an_unavailable_backend_on_entry(monkeypatch):
    _fake_registry(monkeypatch, numpy=AVAILABLE)
    for name in ("numba", "cuda"):
        with pytest.raises(gpuconv.BackendUnavailableError, match=f"backend '{name}' is unavail"):
            with gpuconv.use_backend(name):
                pytest.fail("the block must not run")


def test_use_backend_numba_without_numba_raises_backend_unavailable():
    result = _python(
        BLOCK_OPTIONAL + "import gpuconv\n"
        "try:\n"
        "    with gpuconv.use_backend('numba'):\n"
        "        print('entered')\n"
        "except gpuconv.BackendUnavailableError as error:\n"
        "    print('raised:', error)\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("raised: backend 'numba' is unavailable")
    assert "pip install" in result.stdout


def test_use_backend_auto_restores_automatic_choice(monkeypatch):
    modules = _fake_registry(monkeypatch, numba=AVAILABLE, numpy=AVAILABLE)
    with gpuconv.use_backend("numpy"):
        with gpuconv.use_backend("auto") as name:
            assert name == "auto"
            assert _registry.resolve("auto", _plan(), "numpy") == ("numba", modules["numba"])
        assert _registry.resolve("auto", _plan(), "numpy")[0] == "numpy"


def test_the_environment_variable_is_read_at_every_call(monkeypatch):
    modules = _fake_registry(monkeypatch, numba=AVAILABLE, numpy=AVAILABLE)
    monkeypatch.delenv("GPUCONV_BACKEND", raising=False)
    assert _registry.resolve("auto", _plan(), "numpy")[0] == "numba"
    monkeypatch.setenv("GPUCONV_BACKEND", "numpy")
    assert _registry.resolve("auto", _plan(), "numpy") == ("numpy", modules["numpy"])
    monkeypatch.setenv("GPUCONV_BACKEND", "numba")
    assert _registry.resolve("auto", _plan(), "numpy")[0] == "numba"
    monkeypatch.delenv("GPUCONV_BACKEND")
    assert _registry.resolve("auto", _plan(), "numpy")[0] == "numba"


def test_an_environment_without_posix_bytes_is_read_through_its_mapping(monkeypatch):
    """Where ``os.environ`` keeps no ``_data`` dict (another platform, a replaced mapping)
    the variable is read with ``os.environ.get``."""
    monkeypatch.setattr(_registry.os, "environ", {"GPUCONV_BACKEND": "numpy"})
    assert _registry._environment_backend() == "numpy"
    monkeypatch.setattr(_registry.os, "environ", {})
    assert _registry._environment_backend() is None


def test_explicit_backend_beats_the_environment_variable(monkeypatch):
    modules = _fake_registry(monkeypatch, numba=AVAILABLE, numpy=AVAILABLE)
    for variable, explicit in (("numba", "numpy"), ("numpy", "numba"), ("cuda", "numpy")):
        monkeypatch.setenv("GPUCONV_BACKEND", variable)
        assert _registry.resolve(explicit, _plan(), "numpy") == (explicit, modules[explicit])
    monkeypatch.setenv("GPUCONV_BACKEND", "numba")
    gpuconv.convolve(IMAGE, "sharpen", backend="numpy")
    assert modules["numpy"].calls and not modules["numba"].calls


def test_use_backend_beats_a_non_auto_environment_variable(monkeypatch):
    modules = _fake_registry(monkeypatch, numba=AVAILABLE, numpy=AVAILABLE)
    for variable in ("numba", "cuda"):  # cuda: unavailable, and never consulted
        monkeypatch.setenv("GPUCONV_BACKEND", variable)
        with gpuconv.use_backend("numpy"):
            assert _registry.resolve("auto", _plan(), "numpy") == ("numpy", modules["numpy"])
            gpuconv.convolve(IMAGE, "sharpen")
    assert len(modules["numpy"].calls) == 2 and not modules["numba"].calls
    monkeypatch.setenv("GPUCONV_BACKEND", "numpy")
    with gpuconv.use_backend("numba"):
        assert _registry.resolve("auto", _plan(), "numpy")[0] == "numba"


def test_unavailable_backends_are_not_reported_as_emulated():
    result = _python(
        BLOCK_OPTIONAL + "import json, gpuconv\n"
        "print(json.dumps({k: [v.available, v.emulated] for k, v in gpuconv.backends().items()}))"
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report == {"cuda": [False, False], "numba": [False, False], "numpy": [True, False]}


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


def test_backend_status_is_immutable():
    # backends() hands every caller the same cached objects: nobody may change them.
    state = gpuconv.backends()["numpy"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        state.available = False
    assert gpuconv.backends()["numpy"].available


def test_a_probe_that_raises_makes_its_backend_unavailable_with_the_error(monkeypatch):
    def probe():
        raise RuntimeError("driver exploded")

    monkeypatch.setattr(_registry, "_module", lambda name: types.SimpleNamespace(probe=probe))
    state = _registry.status.__wrapped__("cuda")  # the uncached probe
    assert not state.available and not state.emulated
    assert state.reason == "probe failed: RuntimeError: driver exploded"


@pytest.mark.parametrize("name", ["fpga", "", "CUDA"])
def test_resolve_rejects_unknown_names_before_looking_for_a_backend(name):
    with pytest.raises(ValueError, match="unknown backend .*'auto', 'cuda', 'numba', 'numpy'"):
        _registry.resolve(name, _plan(), "numpy")
