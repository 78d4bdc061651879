#!/usr/bin/env bash
# gpu_check.sh: everything issue 4 asks of a real GPU, in one bounded run (well under 10 min).
#
# Run from the repository root on a machine with an NVIDIA GPU, CuPy and nvcc's tools
# (the device machines' image has them):
#     OUT=/some/dir bash benchmarks/gpu_check.sh
# Writes under $OUT (default ./gpu_check_out):
#   nvidia-smi.txt    the device and driver
#   pytest.log        the whole test suite with the REAL cuda backend (no emulator)
#   memcheck.log      compute-sanitizer memcheck over every kernel path, small images
#   racecheck.log     compute-sanitizer racecheck over the same
#   bench.log         python -m gpuconv bench --backend cuda on 8192 x 8192 uint8 and float32
#   bench.cuda.json   the benchmark's measurements
#   summary.txt       one line per step: its exit code
# Each step has its own time limit; a failing step does not stop the others.
set -u
OUT="${OUT:-$PWD/gpu_check_out}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
unset GPUCONV_CUDA_EMULATOR
PYTHON="${PYTHON:-python3}"
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"

step() {  # step NAME LIMIT_SECONDS LOG COMMAND...
    local name="$1" limit="$2" log="$3"
    shift 3
    local started=$SECONDS
    timeout --kill-after=10 "$limit" "$@" >"$log" 2>&1
    local code=$?
    echo "$name: exit $code after $((SECONDS - started)) s (limit $limit s), log $(basename "$log")" | tee -a "$SUMMARY"
}

step nvidia-smi 30 "$OUT/nvidia-smi.txt" nvidia-smi
"$PYTHON" -c "import gpuconv; print(gpuconv.backends())" >>"$OUT/nvidia-smi.txt" 2>&1

# The whole suite, the cuda backend on the GPU (pytest-xdist spreads it when installed).
PARALLEL=()
if "$PYTHON" -c "import xdist" 2>/dev/null; then PARALLEL=(-n 8); fi
step pytest 200 "$OUT/pytest.log" "$PYTHON" -m pytest tests -q -ra -p no:cacheprovider "${PARALLEL[@]}"

# Every kernel path once, small images: direct (compile-time and run-time sizes),
# separable (both), the global-memory fallback, colour, every border, CuPy in and out.
SANITIZE="$(mktemp -d)/sanitize_paths.py"  # not under $OUT: the device tool returns 8 files
cat >"$SANITIZE" <<'PY'
import cupy
import numpy as np

import gpuconv
from gpuconv._backends.cuda import backend as _cuda
from gpuconv._backends.cuda import launch as _cuda_launch
from gpuconv._plan import make_plan
from gpuconv._strategy import choose_strategy

rng = np.random.default_rng(4)
cases = [
    (np.uint8, "laplacian"),                      # direct, 3x3 compile-time
    (np.float32, rng.normal(size=(4, 6))),        # direct, run-time size
    (np.uint8, "large_blur"),                     # separable, 21x21 compile-time
    (np.float64, np.ones((11, 11)) / 121),        # separable, run-time size
    (np.float64, rng.normal(size=(91, 91))),      # global-memory fallback
    (np.uint16, rng.normal(size=(15, 10))),       # float64 sums for an integer image
]
for dtype, kernel in cases:
    for border in ("reflect101", "reflect", "replicate", "constant", "wrap"):
        for shape in ((37, 45), (9, 13, 3)):
            image = (rng.random(shape) * 200).astype(dtype)
            result = gpuconv.convolve(cupy.asarray(image), kernel, backend="cuda", border=border)
            expected = gpuconv.convolve(image, kernel, backend="numpy", border=border)
            difference = np.abs(result.get().astype(np.float64) - expected).max()
            assert difference <= 1.0, (dtype, border, shape, difference)
    _, plan, _ = make_plan(image, kernel, border="wrap", value=0.0, anchor=None, flip=False,
                           dtype=None)
    print("ok", _cuda_launch.plan_launch(plan, choose_strategy(plan)).name_expression)
cupy.cuda.Device().synchronize()
PY
if command -v compute-sanitizer >/dev/null; then
    step memcheck 70 "$OUT/memcheck.log" compute-sanitizer --tool memcheck --error-exitcode 9 "$PYTHON" "$SANITIZE"
    step racecheck 80 "$OUT/racecheck.log" compute-sanitizer --tool racecheck --error-exitcode 9 "$PYTHON" "$SANITIZE"
else
    echo "compute-sanitizer: not found, memcheck and racecheck not run" | tee -a "$SUMMARY"
fi

# Kernel-only times (events around back-to-back launches of a prepared launch) and copy.
step kernel-times 100 "$OUT/kernel_times.log" "$PYTHON" benchmarks/gpu_kernel_times.py \
    --size 8192 --json "$OUT/kernel_times.json"

# The benchmark: device-resident, CUDA events; host peers left out (they take minutes at 8192).
step bench 90 "$OUT/bench.log" "$PYTHON" -m gpuconv bench --backend cuda --sizes 8192 \
    --dtypes uint8,float32 --repeats 10 --warmup 2 --no-peers --no-compile-times \
    --json "$OUT/bench.json"
rm -f "$OUT/bench.json"  # host part, empty with --no-peers; bench.cuda.json holds the GPU figures

# Hardware counters of a few launches (the model's quantities), where ncu works.
if command -v ncu >/dev/null; then
    step ncu 60 "$OUT/ncu.log" ncu --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,smsp__inst_executed.sum,l1tex__data_bank_conflicts_pipe_lsu_mem_shared.sum \
        -k regex:gpuconv --launch-skip 1 --launch-count 16 "$PYTHON" benchmarks/gpu_kernel_times.py --size 8192 --launches 1 --rounds 1
fi

echo "--- summary"
cat "$SUMMARY"
tail -n 40 "$OUT/bench.log"
cat "$OUT/kernel_times.log" | tail -n 25
# The device tool returns at most 8 files: everything in one archive beside the summary.
(cd "$OUT" && tar czf gpu_check_logs.tar.gz --exclude=gpu_check_logs.tar.gz --exclude=summary.txt . \
    && find . -type f ! -name gpu_check_logs.tar.gz ! -name summary.txt -delete)
