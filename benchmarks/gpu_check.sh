#!/usr/bin/env bash
# gpu_check.sh: everything a lent GPU should tell us, in one bounded run (< 10 minutes).
#
# Run from the repository root on a machine with an NVIDIA GPU, CuPy and the CUDA tools
# (the device machines' image has them; nothing is installed there, but its image lacks
# imagecodecs, dask and zarr: carry them as wheels, benchmarks/gpu_wheels.sh says how):
#     OUT=/some/dir bash benchmarks/gpu_check.sh
#     STEPS="kernel-times memcheck" OUT=... bash benchmarks/gpu_check.sh   # only these steps
#     OUT=... bash benchmarks/gpu_check.sh --dry-run   # no GPU: CI runs this (tests/test_gpu_check.py)
# --dry-run runs, for every step, what needs no GPU: the Python entry points plan every case
# (their --dry-run), pytest collects, the benchmark parses its arguments, and the output
# layout below is written; the GPU tools are only named.
# Steps, in this order, most wanted first (each time-limited; a failing step does not stop
# the others; BUDGET, default 570 s, caps the whole run: a step gets at most what is left, so
# one lease call of 600 s always returns its logs):
#   nvidia-smi     the device, driver, clocks, and gpuconv.backends()
#   memcheck       compute-sanitizer memcheck over every kernel family (gpu_sanitize_cases.py)
#   racecheck      compute-sanitizer racecheck, one case per family
#   synccheck      compute-sanitizer synccheck, one case per family
#   bench          gpuconv bench --backend cuda: kernel and whole-call times against a device
#                  copy, cupyx.scipy.ndimage.correlate and torch conv2d
#   pytest         the whole test suite with the REAL cuda backend (no emulator)
#   kernel-times   benchmarks/gpu_kernel_times.py: kernel-only times of the model's cases
#                  against a device copy, the shared-memory kernels beside them
#   ncu            hardware counters (instructions, DRAM bytes) of the model's cases
#   variants       benchmarks/gpu_window_variants.py: the window kernels' tuning knobs
#                  (launch bounds, rows loaded together, V), the model's candidates among them
#   fft            benchmarks/gpu_fft_crossover.py: dense float32 kernels of 9 to 63 taps a
#                  side, the loops against overlap-save and whole-image FFTs (issue 11)
# Everything lands in $OUT/gpu_check_logs.tar.gz, beside $OUT/summary.txt (the device tool
# returns at most 8 files).
set -u
DRY_RUN=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY_RUN=1; fi
OUT="${OUT:-$PWD/gpu_check_out}"
mkdir -p "$OUT"
LOGS="$(mktemp -d)"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
unset GPUCONV_CUDA_EMULATOR
PYTHON="${PYTHON:-python3}"
SUMMARY="$OUT/summary.txt"
BUDGET="${BUDGET:-570}"
RESERVE=15 # seconds kept back for the summary and the archive
: >"$SUMMARY"
FAILED=0

want() { [[ -z "${STEPS:-}" || " $STEPS " == *" $1 "* ]]; }

# step NAME LIMIT_SECONDS DRY_COMMAND -- COMMAND...   (log: $LOGS/NAME.log)
# DRY_COMMAND (a bash command line) replaces COMMAND under --dry-run.
step() {
    local name="$1" limit="$2" dry="$3"
    shift 4
    want "$name" || return 0
    local left=$((BUDGET - RESERVE - SECONDS))
    if ((left < 10)); then
        echo "$name: not run, the budget of $BUDGET s is spent" | tee -a "$SUMMARY"
        FAILED=$((FAILED + 1))
        return 0
    fi
    ((limit > left)) && limit=$left
    local started=$SECONDS
    if ((DRY_RUN)); then
        { echo "dry run; on a GPU: $*"; bash -c "$dry"; } >"$LOGS/$name.log" 2>&1
    else
        timeout --kill-after=10 "$limit" "$@" >"$LOGS/$name.log" 2>&1
    fi
    local code=$?
    ((code == 0)) || FAILED=$((FAILED + 1))
    echo "$name: exit $code after $((SECONDS - started)) s (limit $limit s)" | tee -a "$SUMMARY"
}

BACKENDS="\"$PYTHON\" -c 'import gpuconv; print(gpuconv.backends())'"
step nvidia-smi 60 "$BACKENDS" -- bash -c 'nvidia-smi; nvidia-smi --format=csv \
    --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem; \
    "$0" -c "import gpuconv; print(gpuconv.backends())"' "$PYTHON"

SANITIZE=benchmarks/gpu_sanitize_cases.py
SANITIZER=(compute-sanitizer --error-exitcode 9 --tool)
if command -v compute-sanitizer >/dev/null || ((DRY_RUN)); then
    step memcheck 90 "\"$PYTHON\" $SANITIZE --dry-run" -- \
        "${SANITIZER[@]}" memcheck "$PYTHON" "$SANITIZE"
    step racecheck 60 "\"$PYTHON\" $SANITIZE --quick --dry-run" -- \
        "${SANITIZER[@]}" racecheck "$PYTHON" "$SANITIZE" --quick
    step synccheck 60 "\"$PYTHON\" $SANITIZE --quick --dry-run" -- \
        "${SANITIZER[@]}" synccheck "$PYTHON" "$SANITIZE" --quick
else
    echo "compute-sanitizer: not found, memcheck/racecheck/synccheck not run" | tee -a "$SUMMARY"
fi

BENCH=(-m gpuconv bench --backend cuda --sizes 8192 --dtypes uint8,float32 --repeats 5
    --warmup 2 --no-peers --kernels small_blur,large_blur,sharpen,laplacian,sobel_x,sobel_y,random9,random21,dog25
    --no-compile-times --json "$LOGS/bench.json" --table "$LOGS/bench.md")
step bench 150 "\"$PYTHON\" ${BENCH[*]} --help" -- "$PYTHON" "${BENCH[@]}"

PARALLEL=()
if "$PYTHON" -c "import xdist" 2>/dev/null; then PARALLEL=(-n 16); fi
# -p no:benchmark: the image's pytest-benchmark warns under xdist, an error with our filters.
PYTEST=(-m pytest tests -v -ra --durations=20 -p no:cacheprovider -p no:benchmark)
step pytest 330 "\"$PYTHON\" ${PYTEST[*]} --collect-only -q" -- \
    "$PYTHON" "${PYTEST[@]}" "${PARALLEL[@]}"

TIMES=(benchmarks/gpu_kernel_times.py --size 8192 --legacy --json "$LOGS/kernel_times.json")
step kernel-times 120 "\"$PYTHON\" ${TIMES[*]} --dry-run" -- "$PYTHON" "${TIMES[@]}"

if command -v ncu >/dev/null || ((DRY_RUN)); then
    NCU_TIMES=(benchmarks/gpu_kernel_times.py --size 8192 --launches 1 --rounds 1)
    step ncu 45 "\"$PYTHON\" ${NCU_TIMES[*]} --dry-run" -- \
        ncu --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,smsp__inst_executed.sum,l1tex__t_sectors_pipe_lsu_mem_global_op_ld.sum,l1tex__t_requests_pipe_lsu_mem_global_op_ld.sum,sm__warps_active.avg.pct_of_peak_sustained_active \
        -k regex:gpuconv --launch-skip 0 --launch-count 40 "$PYTHON" "${NCU_TIMES[@]}"
fi

VARIANTS=(benchmarks/gpu_window_variants.py --size 8192)
step variants 150 "\"$PYTHON\" ${VARIANTS[*]} --help" -- "$PYTHON" "${VARIANTS[@]}"

FFT=(benchmarks/gpu_fft_crossover.py --sizes 2048,8192 --json "$LOGS/fft_crossover.json")
step fft 120 "\"$PYTHON\" ${FFT[*]} --dry-run --sizes 256" -- "$PYTHON" "${FFT[@]}"

echo "--- summary"
cat "$SUMMARY"
for name in kernel-times memcheck racecheck synccheck pytest bench ncu variants fft; do
    [[ -f "$LOGS/$name.log" ]] && { echo "--- $name (tail)"; tail -n 30 "$LOGS/$name.log"; }
done
tar czf "$OUT/gpu_check_logs.tar.gz" -C "$LOGS" .
echo "$FAILED step(s) failed" | tee -a "$SUMMARY"
((FAILED == 0))
