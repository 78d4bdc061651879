"""The ``cuda`` backend: CuPy raw kernels from ``kernels_cuda/``, shared-memory tiled.

The kernels (see the header comment of each ``.cu`` file):

- ``gpuconv_direct``: any kernel; a 32 x 32 output tile plus halo loaded into
  shared memory once per block, border rule applied during that load;
- ``gpuconv_separable``: rank-1 kernels, row pass into shared memory and
  column pass from it in the same kernel;
- ``gpuconv_global``: the fallback when a tile and halo exceed shared memory.

Kernels of rank 2 to a few (a difference of Gaussians) run as one separable launch per
term, summed and rounded once (:mod:`.lowrank`). Large dense float kernels run through
cuFFT (``cupy.fft``) by overlap-save over large tiles (:func:`gpuconv._fft.convolve_fft`,
:func:`gpuconv._fft.gpu_tile_shape`) where :func:`gpuconv._costmodel.gpu_fft_pays` says the
transforms beat the direct kernel (from about 25 x 25 on a 2048 x 2048 image, measured on an
H200); a frame the FFT declines (non-finite pixels, the error bound) runs the loops. Under
the emulator the same choice runs the same code with NumPy and ``scipy.fft``.

:func:`gpuconv._strategy.choose_strategy` decides separable or not and the
accumulator; :func:`gpuconv._backends.cuda.launch.plan_launch` turns that into
a launch. CuPy arrays stay on the device and run on CuPy's current stream
(no synchronisation); NumPy arrays are copied in and out.

With ``GPUCONV_CUDA_EMULATOR=1`` the same kernel source runs on the CPU through
:mod:`gpuconv._emulator` (NumPy arrays only; slow, for tests).
CuPy is imported only when a GPU is used.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import numpy as np

from ... import _costmodel, _fft
from ..._cache import BoundedCache
from ..._plan import ConvolutionPlan
from ..._strategy import choose_strategy
from . import launch as _cuda_launch
from . import lowrank as _cuda_lowrank
from . import source as _cuda_source

EMULATOR_VARIABLE = "GPUCONV_CUDA_EMULATOR"

# A NumPy image goes to the GPU under backend="auto" only when the work hides the two
# PCIe copies: from about 4 Mpixel (2048 x 2048) whatever the kernel, or from 2**28
# pixel-taps (e.g. 1 Mpixel with a 16 x 16 kernel), where the CPU needs tens of ms.
_HOST_PIXELS_THAT_PAY = 2**22
_HOST_PIXEL_TAPS_THAT_PAY = 2**28

# Dynamic shared memory any kernel may use without opting in.
_DEFAULT_SHARED_BYTES = 48 * 1024


def is_emulated() -> bool:
    """True when the CPU emulator stands in for a GPU (``GPUCONV_CUDA_EMULATOR=1``)."""
    return os.environ.get(EMULATOR_VARIABLE, "").strip() not in ("", "0")


def probe() -> str | None:
    """None when the backend can run here, else why not and what to install."""
    if is_emulated():
        from ... import _emulator

        reason = _emulator.available()
        return None if reason is None else f"{EMULATOR_VARIABLE}=1 but {reason}"
    try:
        import cupy
    except ImportError:
        return "cupy is not installed: pip install 'gpuconv[cuda12]' or 'gpuconv[cuda13]'"
    except Exception as error:  # noqa: BLE001 (a broken CUDA install raises anything)
        return f"cupy does not import: {type(error).__name__}: {error}"
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "no CUDA GPU visible: cupy counts 0 devices"
        cupy.cuda.Device().compute_capability  # noqa: B018 - makes the device answer
    except Exception as error:  # noqa: BLE001 (no driver, no device: say why)
        return f"no CUDA GPU visible: {error}"
    return None


def describe() -> str:
    """The GPU's name and compute capability, or that this is the CPU emulator."""
    if is_emulated():
        return "CPU emulator, not a GPU: runs kernels_cuda/ through g++ (slow, for tests)"
    import cupy

    device = cupy.cuda.Device()
    name = cupy.cuda.runtime.getDeviceProperties(device.id)["name"]
    name = name.decode() if isinstance(name, bytes) else name
    capability = device.compute_capability  # "90" for 9.0, "100" for 10.0
    return f"{name}, compute capability {capability[:-1]}.{capability[-1]}, cupy {cupy.__version__}"


def accepts_library(library: str) -> bool:
    """NumPy arrays always; CuPy arrays on a real GPU (the emulator has no device memory)."""
    return library == "numpy" or (library == "cupy" and not is_emulated())


def pays_off_for_host_image(plan: ConvolutionPlan) -> bool:
    """Whether ``backend="auto"`` should copy a NumPy image to the GPU (see the rule above)."""
    if is_emulated():
        return False
    height, width, channels = plan.shape
    pixels = plan.frames * height * width * channels
    return pixels >= _HOST_PIXELS_THAT_PAY or pixels * plan.kernel.size >= _HOST_PIXEL_TAPS_THAT_PAY


@functools.cache
def _device_limits(device_id: int) -> _cuda_launch.DeviceLimits:
    import cupy

    runtime = cupy.cuda.runtime
    # The opt-in limit (227 KiB on an H100, 163 KiB on an A100): tiles of large kernels
    # stay in shared memory instead of falling back to the global-memory kernel.
    optin = runtime.deviceGetAttribute(runtime.cudaDevAttrMaxSharedMemoryPerBlockOptin, device_id)
    return _cuda_launch.DeviceLimits(shared_bytes_per_block=max(int(optin), 48 * 1024))


@functools.lru_cache(maxsize=64)
def _device_weights(weights: bytes, dtype: str, device_id: int):
    """The weights on the device, uploaded once per kernel and device.

    An upload from pageable host memory waits for the stream; caching keeps repeated
    calls (the usual case: one kernel over many images) free of that wait.
    """
    import cupy

    with cupy.cuda.Device(device_id):
        uploaded = cupy.asarray(np.frombuffer(weights, dtype=dtype))
        # Complete once, so that launches on any other stream may read it later.
        cupy.cuda.get_current_stream().synchronize()
        return uploaded


@dataclasses.dataclass(frozen=True)
class PreparedLaunch:
    """Everything a repeated call needs: the launch, the compiled kernel, device weights."""

    launch: _cuda_launch.Launch
    function: object  # cupy.RawKernel (or a stand-in)
    weights: object  # device array

    def __call__(self, device_image, output) -> None:
        launch = self.launch
        self.function(
            launch.grid,
            launch.block,
            launch.arguments(device_image, output, self.weights),
            shared_mem=launch.shared_bytes,
        )


def plan_key(plan: ConvolutionPlan) -> tuple:
    """What a launch depends on in a plan (the kernel's taps by value)."""
    kernel = plan.kernel
    return (
        kernel.tobytes(),
        kernel.shape,
        plan.anchor_y,
        plan.anchor_x,
        int(plan.border),
        plan.border_value,
        plan.input_dtype.str,
        plan.output_dtype.str,
        plan.shape,
        plan.frames,
        plan.integer_kernel,
    )


#: Prepared launches kept (least recently used dropped first).
LAUNCH_CACHE_SIZE = 256
_LAUNCHES = BoundedCache(LAUNCH_CACHE_SIZE)


def prepared_launch(plan: ConvolutionPlan, device_id: int) -> PreparedLaunch:
    """The prepared launch of ``plan`` on ``device_id``, planned and uploaded once.

    Repeated calls with the same shape, dtypes, kernel, border, value and anchor on the
    same device skip the strategy, the launch arithmetic, the weight upload and the
    kernel lookup. Thread-safe; bounded (:data:`LAUNCH_CACHE_SIZE`).
    """

    def prepare() -> PreparedLaunch:
        launch = _cuda_launch.plan_launch(plan, choose_strategy(plan), _device_limits(device_id))
        return PreparedLaunch(launch, *_prepare(launch, device_id))

    return _LAUNCHES.get((plan_key(plan), device_id), prepare)


def _prepare(launch: _cuda_launch.Launch, device_id: int):
    """The compiled function and the device weights of one launch."""
    weights = _device_weights(launch.weights.tobytes(), launch.weights.dtype.str, device_id)
    function = _cuda_source.cupy_function(launch.source_file, launch.name_expression)
    if launch.shared_bytes > _DEFAULT_SHARED_BYTES and (
        function.max_dynamic_shared_size_bytes < launch.shared_bytes
    ):
        # Beyond 48 KiB a kernel must opt in (cudaFuncSetAttribute), once per function.
        function.max_dynamic_shared_size_bytes = launch.shared_bytes
    return function, weights


def prepared_lowrank(plan: ConvolutionPlan, device_id: int):
    """``(prepared launches, accumulator)`` of the low-rank path, or None; cached."""

    def prepare():
        found = _cuda_lowrank.lowrank_launches(plan, _device_limits(device_id))
        if found is None:
            return None
        launches, accumulator = found
        prepared = [PreparedLaunch(launch, *_prepare(launch, device_id)) for launch in launches]
        return prepared, accumulator

    return _LAUNCHES.get(("lowrank", plan_key(plan), device_id), prepare)


def run_lowrank(frame, plan: ConvolutionPlan, lowrank, cupy):
    """One ``(H, W, C)`` device frame through :func:`prepared_lowrank`'s launches: every
    term, their sum, the one store. Returns the frame's output (a new device array)."""
    prepared_terms, accumulator = lowrank
    return _cuda_lowrank.run_terms(
        frame,
        plan,
        prepared_terms,
        accumulator,
        lambda prepared, partial: prepared(frame, partial),
        cupy,
    )


def _fft_modules():
    """``(xp, fft)``: CuPy and ``cupy.fft`` on a GPU, NumPy and ``scipy.fft`` under the
    emulator."""
    if is_emulated():
        import scipy.fft

        return np, scipy.fft
    import cupy

    return cupy, cupy.fft


def _gpu_tile(plan: ConvolutionPlan) -> tuple[int, int]:
    return _LAUNCHES.get(("fft tile", plan_key(plan)), lambda: _fft.gpu_tile_shape(plan))


def takes_fft(plan: ConvolutionPlan) -> bool:
    """Whether ``plan`` tries the FFT first (float16 plans keep their direct kernels);
    decided once per plan and kept with the prepared launches (every call asks). An
    integer image to an integer output is costed in the precision its transforms will run
    in, known from the kernel's spectrum (computed here once, cached for the FFT)."""
    if plan.kernel.size < _costmodel.GPU_FFT_MIN_TAPS:
        return False  # the small kernels' answer, without hashing the plan

    def decide() -> bool:
        if np.dtype(np.float16) in (plan.input_dtype, plan.output_dtype):
            return False
        strategy = choose_strategy(plan)
        if plan.input_dtype.kind not in "ui" or plan.output_dtype.kind not in "ui":
            return _costmodel.gpu_fft_pays(plan, strategy)
        if _costmodel.gpu_fft_pays(plan, strategy, np.float64):
            return True  # pays in either precision
        if not _costmodel.gpu_fft_pays(plan, strategy, np.float32):
            return False  # pays in neither: no spectrum needed
        tile = _gpu_tile(plan)
        return _fft.first_transform_dtype(plan, tile, *_fft_modules()) == np.float32

    return _LAUNCHES.get(("fft", plan_key(plan)), decide)


def run_fft(frame, plan: ConvolutionPlan, xp, fft):
    """One ``(H, W, C)`` frame through overlap-save FFTs over the GPU's tiles (``xp``:
    CuPy, or NumPy under the emulator), or None where the FFT declines the frame."""
    return _fft.convolve_fft(frame, plan, xp=xp, fft=fft, tile=_gpu_tile(plan))


def _fft_frames(stack, output_stack, plan: ConvolutionPlan, xp, fft, run_loops) -> None:
    """Every frame through :func:`run_fft` into ``output_stack``; a frame the FFT declines
    (non-finite pixels, the error bound) through ``run_loops(frame)``."""
    for frame in range(stack.shape[0]):
        found = run_fft(stack[frame], plan, xp, fft)
        if found is None:
            run_loops(frame)
        else:
            output_stack[frame] = found


def clear_launch_cache() -> None:
    """Forget every prepared launch (tests; a device reset)."""
    _LAUNCHES.clear()


def convolve(image, plan: ConvolutionPlan, library: str = "numpy", output=None):
    """Run ``plan`` on an ``(H, W, C)`` image or ``(N, H, W, C)`` stack.

    Returns a new array in the image's library, or writes ``output`` (C-contiguous, the
    image's shape, same library) and returns it. The window and box kernels cover a
    stack in one launch; other kernels, and the low-rank path, run frame by frame.
    """
    stack = image if image.ndim == 4 else image[None]
    device_plan = _cuda_launch.device_plan(plan)
    # The low-rank terms are float32/float64 launches summed on the host's rules; float16
    # plans take the direct kernels (which load and store __half) instead.
    half = np.dtype(np.float16) in (plan.input_dtype, plan.output_dtype)
    if is_emulated():
        if output is None:
            output = np.empty(stack.shape, dtype=plan.output_dtype)
            result = output if image.ndim == 4 else output[0]
        else:
            result = output
        output_stack = output if output.ndim == 4 else output[None]
        lowrank = None if half else _cuda_lowrank.lowrank_launches(plan)
        if lowrank is not None:
            for frame in range(stack.shape[0]):
                frame_image = np.ascontiguousarray(stack[frame])
                output_stack[frame] = _cuda_lowrank.run_terms(
                    frame_image,
                    plan,
                    *lowrank,
                    lambda launch, out, im=frame_image: _emulated_launch(im, launch, out),
                    np,
                )
            return result
        launch = _cuda_launch.plan_launch(device_plan, choose_strategy(device_plan))
        if takes_fft(plan):

            def run_loops(frame):
                output_stack[frame] = _run_emulated(stack[frame], plan, launch)

            _fft_frames(stack, output_stack, plan, *_fft_modules(), run_loops)
        elif launch.frames == stack.shape[0]:  # the whole stack in one launch
            output_stack[...] = _run_emulated(stack, plan, launch)
        else:
            for frame in range(stack.shape[0]):
                output_stack[frame] = _run_emulated(stack[frame], plan, launch)
        return result
    import cupy

    device_id = cupy.cuda.runtime.getDevice()
    # asarray copies a NumPy image in; ascontiguousarray copies a CuPy view only
    # when it is not C-contiguous. Neither writes to the caller's array.
    device_stack = cupy.ascontiguousarray(cupy.asarray(stack))
    lowrank = None if half else prepared_lowrank(plan, device_id)
    if lowrank is not None:
        device_output = cupy.empty(stack.shape, dtype=plan.output_dtype)
        for frame in range(stack.shape[0]):
            device_output[frame] = run_lowrank(device_stack[frame], plan, lowrank, cupy)
    elif takes_fft(plan):
        device_output = cupy.empty(stack.shape, dtype=plan.output_dtype)

        def run_loops(frame):
            prepared_launch(device_plan, device_id)(device_stack[frame], device_output[frame])

        _fft_frames(device_stack, device_output, plan, cupy, cupy.fft, run_loops)
    else:
        prepared = prepared_launch(device_plan, device_id)
        if device_stack.dtype != device_plan.input_dtype:
            device_stack = device_stack.astype(device_plan.input_dtype)
        device_output = cupy.empty(stack.shape, dtype=device_plan.output_dtype)
        if prepared.launch.frames == stack.shape[0]:  # the whole stack in one launch
            prepared(device_stack, device_output)
        else:
            for frame in range(stack.shape[0]):
                prepared(device_stack[frame], device_output[frame])
        if device_output.dtype != plan.output_dtype:
            device_output = device_output.astype(plan.output_dtype)
    if output is not None:
        target = output if output.ndim == 4 else output[None]
        if library == "cupy":
            target[...] = device_output
        else:
            target[...] = cupy.asnumpy(device_output)
        return output
    if image.ndim == 3:
        device_output = device_output[0]
    return device_output if library == "cupy" else cupy.asnumpy(device_output)


def _run_emulated(image3d, plan: ConvolutionPlan, launch: _cuda_launch.Launch) -> np.ndarray:
    """One ``(H, W, C)`` frame, or the ``(N, H, W, C)`` stack one launch covers, through the
    emulator; float16 goes in and out as float32."""
    device_plan = _cuda_launch.device_plan(plan)
    image = np.ascontiguousarray(image3d, dtype=device_plan.input_dtype)
    output = np.empty(image.shape, dtype=device_plan.output_dtype)
    _emulated_launch(image, launch, output)
    # float32 sums to a float16 output: the one rounding, to nearest.
    return output if plan.output_dtype == output.dtype else output.astype(plan.output_dtype)


def _emulated_launch(image: np.ndarray, launch: _cuda_launch.Launch, output: np.ndarray) -> None:
    """One launch through the emulator, writing ``output``."""
    kernel = _cuda_source.emulated_function(launch.source_file, launch.name_expression)
    kernel(
        launch.grid,
        launch.block,
        launch.arguments(image, output, launch.weights),
        shared_mem=launch.shared_bytes,
    )
