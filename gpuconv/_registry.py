"""The backend registry and the dispatcher's choice of backend.

A backend is a module in ``gpuconv/_backends/`` (``numpy.py``, or the ``backend.py``
of a subpackage such as ``cuda/``) named in :data:`BACKEND_MODULES`.
It is imported only when first needed (so ``import gpuconv`` pulls in neither
numba nor cupy) and provides:

``probe() -> str | None``
    ``None`` when the backend can run here, else a sentence saying why not and
    what to install. Called once per process (cached).
``convolve(image3d, plan, library) -> array``
    Executes a :class:`~gpuconv._plan.ConvolutionPlan` on a ``(H, W, C)`` image
    of array library ``library`` (``"numpy"`` or ``"cupy"``) and returns a new
    ``(H, W, C)`` array of ``plan.output_dtype`` in the same library.
``describe() -> str`` (optional)
    A few words for ``backends()`` and ``gpuconv info`` when available.
``pays_off_for_host_image(plan) -> bool`` (optional)
    Whether ``backend="auto"`` should send a NumPy image here (a GPU only where
    the transfer pays). Absent means yes.
``accepts_library(library) -> bool`` (optional)
    Which array libraries the backend takes; absent means NumPy only.
``worth_loading(plan, stand_in_seconds) -> bool`` (optional)
    Asked by ``backend="auto"`` before the probe, for a NumPy image: False while
    loading the backend in this process (importing and loading a JIT) would cost
    more than the stand-in takes: the reference, or OpenCV where it gives the
    same bits. ``stand_in_seconds()`` returns OpenCV's predicted seconds in that
    case, else None (a call, so that a loaded JIT never pays for the question).
    Absent means yes.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
import os
from dataclasses import dataclass

from ._backends import opencv as _opencv  # cv2 itself is imported only when it stands in

#: Backends in order of preference for ``backend="auto"`` on NumPy images.
BACKEND_MODULES: dict[str, str] = {
    "cuda": "gpuconv._backends.cuda.backend",
    "numba": "gpuconv._backends.numba.backend",
    "numpy": "gpuconv._backends.numpy",
}

ENVIRONMENT_VARIABLE = "GPUCONV_BACKEND"
_VALID_NAMES = ("auto", *BACKEND_MODULES)

_default_backend: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "gpuconv_default_backend", default=None
)


class BackendUnavailableError(RuntimeError):
    """A backend was asked for by name but cannot run here; the message says why."""


@dataclass(frozen=True)
class BackendStatus:
    """Whether a backend can run here and, either way, why.

    ``bool(status)`` is ``status.available``. ``emulated`` is True when the
    backend runs on a stand-in (the cuda backend on the CPU emulator): correct,
    but not fast, and never chosen by ``backend="auto"``.
    """

    name: str
    available: bool
    reason: str
    emulated: bool = False

    def __bool__(self) -> bool:
        return self.available

    def __repr__(self) -> str:
        return self.reason if self.available else f"unavailable: {self.reason}"

    __str__ = __repr__


def _module(name: str):
    module = _MODULES.get(name)
    if module is None:  # the import machinery costs a microsecond even for a loaded module
        module = _MODULES[name] = importlib.import_module(BACKEND_MODULES[name])
    return module


_MODULES: dict = {}


@functools.cache
def status(name: str) -> BackendStatus:
    """Probe one backend (cached per process)."""
    try:
        reason = _module(name).probe()
    except Exception as error:  # a probe must never take the dispatcher down
        reason = f"probe failed: {type(error).__name__}: {error}"
    if reason is not None:
        return BackendStatus(name, False, reason)
    module = _module(name)
    describe = getattr(module, "describe", None)
    emulated = bool(getattr(module, "is_emulated", lambda: False)())
    return BackendStatus(
        name, True, "available" + (f" ({describe()})" if describe else ""), emulated
    )


def backends() -> dict[str, BackendStatus]:
    """Report, for each backend, whether it is available here and, if not, why.

    Returns
    -------
    dict of str to BackendStatus
        Keyed ``"cuda"``, ``"numba"``, ``"numpy"``. Each value is truthy when
        the backend can run, and its repr says why or why not, e.g.
        ``unavailable: numba is not installed: pip install 'gpuconv[numba]'``.

    Examples
    --------
    >>> import gpuconv
    >>> bool(gpuconv.backends()["numpy"])
    True
    """
    return {name: status(name) for name in BACKEND_MODULES}


def check_name(name) -> str:
    if name not in _VALID_NAMES:
        raise ValueError(
            f"unknown backend {name!r}; valid backends are {', '.join(map(repr, _VALID_NAMES))}"
        )
    return name


@contextlib.contextmanager
def use_backend(name: str):
    """Make ``name`` the default backend inside a ``with`` block.

    Calls that pass ``backend="auto"`` (the default) use ``name`` instead.
    Nests, and is local to the thread or asyncio task.

    Parameters
    ----------
    name : {"auto", "cuda", "numba", "numpy"}

    Raises
    ------
    ValueError
        If ``name`` is not a backend name.
    BackendUnavailableError
        If the backend cannot run here.

    Examples
    --------
    >>> import numpy as np, gpuconv
    >>> with gpuconv.use_backend("numpy"):
    ...     gpuconv.convolve(np.eye(3), "identity").tolist()
    [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    """
    check_name(name)
    if name != "auto":
        _require(name)
    token = _default_backend.set(name)
    try:
        yield name
    finally:
        _default_backend.reset(token)


def _require(name: str):
    state = status(name)
    if not state.available:
        raise BackendUnavailableError(f"backend {name!r} is unavailable: {state.reason}")
    return _module(name)


def _hook(module, name: str):
    """The backend's optional function ``name``, or None.

    Looked up in the module's namespace: a ``getattr`` that misses raises and catches an
    AttributeError, half a microsecond that every ``backend="auto"`` call paid three times.
    """
    return vars(module).get(name)


def _accepts(module, library: str) -> bool:
    accepts = _hook(module, "accepts_library")
    return library == "numpy" if accepts is None else accepts(library)


def _module_is_importable(name: str) -> bool:
    """Whether the backend's own module imports (it does without its library)."""
    try:
        _module(name)
    except Exception:  # noqa: BLE001 (status() reports why, when asked)
        return False
    return True


_ENVIRONMENT_KEY = os.fsencode(ENVIRONMENT_VARIABLE)


def _environment_backend() -> str | None:
    """``os.environ.get(ENVIRONMENT_VARIABLE)``, read at every call (tests and users may set
    it at run time) but without the KeyError that ``os.environ.get`` raises and catches
    inside when the variable is unset (0.7 us a call): POSIX's ``os.environ`` keeps its
    bytes in ``_data``."""
    data = getattr(os.environ, "_data", None)
    if os.name != "posix" or not isinstance(data, dict):
        return os.environ.get(ENVIRONMENT_VARIABLE)
    value = data.get(_ENVIRONMENT_KEY)
    return None if value is None else os.fsdecode(value)


def resolve(requested: str, plan, library: str, *, stand_ins: bool = True):
    """Return ``(name, module)`` of the backend that will run ``plan``.

    ``backend="auto"`` on a NumPy image, where it passes numba over for now (not
    worth loading yet: its ski rental) and would run the NumPy reference instead,
    runs OpenCV where OpenCV's answer is the reference's, bit for bit
    (:mod:`gpuconv._backends.opencv`); the name is then ``"opencv"``.
    ``stand_ins=False`` leaves that out (the demo, which compares against OpenCV).
    """
    check_name(requested)
    if requested == "auto":
        requested = _default_backend.get() or _environment_backend() or "auto"
        if requested not in _VALID_NAMES:
            raise ValueError(
                f"{ENVIRONMENT_VARIABLE}={requested!r} is not a backend; valid values are "
                f"{', '.join(map(repr, _VALID_NAMES))}"
            )
    if requested != "auto":
        module = _require(requested)
        if not _accepts(module, library):
            raise ValueError(
                f"backend {requested!r} cannot take a {library} array without a copy between "
                "host and device; use backend='cuda' for CuPy arrays, or convert the image"
            )
        return requested, module
    # Asked only while numba is not worth loading; a loaded JIT never calls it.
    stand_in_seconds = (
        functools.partial(_opencv.seconds_if_exact, plan)
        if stand_ins and plan is not None
        else None
    )
    renting = False  # a JIT passed over for now: its stand-in runs
    for name in BACKEND_MODULES:
        if library == "numpy" and plan is not None and _module_is_importable(name):
            worth_loading = _hook(_module(name), "worth_loading")
            if worth_loading is not None and not worth_loading(plan, stand_in_seconds):
                renting = True
                continue  # a small first call: the stand-in finishes before the JIT loads
        if not status(name).available:
            continue
        module = _module(name)
        if not _accepts(module, library):
            continue
        if status(name).emulated:
            continue  # correct but slow: only on request
        if library == "numpy":
            pays_off = _hook(module, "pays_off_for_host_image")
            if pays_off is not None and not pays_off(plan):
                continue
        if renting and name == "numpy" and stand_in_seconds is not None and _opencv.accepts(plan):
            return _opencv.NAME, _opencv
        return name, module
    raise BackendUnavailableError(f"no available backend accepts a {library} array")
