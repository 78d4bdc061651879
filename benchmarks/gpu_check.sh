#!/usr/bin/env bash
# gpu_check.sh: everything a lent GPU should tell us, in one bounded run (< 10 minutes).
#
# Run from the repository root on a machine with an NVIDIA GPU, CuPy and the CUDA tools
# (the device machines' image has them; nothing is installed):
#     OUT=/some/dir bash benchmarks/gpu_check.sh
#     STEPS="kernel-times memcheck" OUT=... bash benchmarks/gpu_check.sh   # only these steps
# Steps, in this order (each time-limited; a failing step does not stop the others):
#   nvidia-smi     the device, driver, clocks, and gpuconv.backends()
#   kernel-times   benchmarks/gpu_kernel_times.py: kernel-only times of the model's cases
#                  against a device copy, the shared-memory kernels beside them
#   memcheck       compute-sanitizer memcheck over every kernel family (gpu_sanitize_cases.py)
#   racecheck      compute-sanitizer racecheck, one case per family
#   synccheck      compute-sanitizer synccheck, one case per family
#   pytest         the whole test suite with the REAL cuda backend (no emulator)
#   bench          gpuconv bench --backend cuda: whole calls against cupyx and torch
#   ncu            hardware counters (instructions, DRAM bytes) of the model's cases
# Everything lands in $OUT/gpu_check_logs.tar.gz, beside $OUT/summary.txt (the device tool
# returns at most 8 files).
set -u
OUT="${OUT:-$PWD/gpu_check_out}"
mkdir -p "$OUT"
LOGS="$(mktemp -d)"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
unset GPUCONV_CUDA_EMULATOR
PYTHON="${PYTHON:-python3}"
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"

want() { [[ -z "${STEPS:-}" || " $STEPS " == *" $1 "* ]]; }

step() {  # step NAME LIMIT_SECONDS COMMAND...  (log: $LOGS/NAME.log)
    local name="$1" limit="$2"
    shift 2
    want "$name" || return 0
    local started=$SECONDS
    timeout --kill-after=10 "$limit" "$@" >"$LOGS/$name.log" 2>&1
    local code=$?
    echo "$name: exit $code after $((SECONDS - started)) s (limit $limit s)" | tee -a "$SUMMARY"
}

step nvidia-smi 60 bash -c 'nvidia-smi; nvidia-smi --format=csv \
    --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem; \
    "$0" -c "import gpuconv; print(gpuconv.backends())"' "$PYTHON"

step kernel-times 200 "$PYTHON" benchmarks/gpu_kernel_times.py --size 8192 --legacy --json "$LOGS/kernel_times.json"

SANITIZE=benchmarks/gpu_sanitize_cases.py
if command -v compute-sanitizer >/dev/null; then
    step memcheck 90 compute-sanitizer --tool memcheck --error-exitcode 9 "$PYTHON" "$SANITIZE"
    step racecheck 60 compute-sanitizer --tool racecheck --error-exitcode 9 "$PYTHON" "$SANITIZE" --quick
    step synccheck 60 compute-sanitizer --tool synccheck --error-exitcode 9 "$PYTHON" "$SANITIZE" --quick
else
    echo "compute-sanitizer: not found, memcheck/racecheck/synccheck not run" | tee -a "$SUMMARY"
fi

PARALLEL=()
if "$PYTHON" -c "import xdist" 2>/dev/null; then PARALLEL=(-n 16); fi
# -p no:benchmark: the image's pytest-benchmark warns under xdist, an error with our filters.
step pytest 240 "$PYTHON" -m pytest tests -v -ra -p no:cacheprovider -p no:benchmark "${PARALLEL[@]}"

step bench 60 "$PYTHON" -m gpuconv bench --backend cuda --sizes 8192 --dtypes uint8,float32 \
    --repeats 10 --warmup 2 --no-peers --no-compile-times --json "$LOGS/bench.json"

if command -v ncu >/dev/null; then
    step ncu 45 ncu --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,smsp__inst_executed.sum,l1tex__t_sectors_pipe_lsu_mem_global_op_ld.sum,l1tex__t_requests_pipe_lsu_mem_global_op_ld.sum,sm__warps_active.avg.pct_of_peak_sustained_active \
        -k regex:gpuconv --launch-skip 0 --launch-count 40 \
        "$PYTHON" benchmarks/gpu_kernel_times.py --size 8192 --launches 1 --rounds 1
fi

echo "--- summary"
cat "$SUMMARY"
for name in kernel-times memcheck racecheck synccheck pytest bench; do
    [[ -f "$LOGS/$name.log" ]] && { echo "--- $name (tail)"; tail -n 30 "$LOGS/$name.log"; }
done
tar czf "$OUT/gpu_check_logs.tar.gz" -C "$LOGS" .
