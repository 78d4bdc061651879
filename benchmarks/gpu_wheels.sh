#!/usr/bin/env bash
# gpu_wheels.sh: the wheels the lent GPU machines lack, downloaded here into .whl/ to carry.
#
# The device image (Python 3.12, cupy-cuda13x, numba, opencv, scipy, scikit-image, pytest,
# hypothesis, torch) has no imagecodecs, dask or zarr, which gpuconv's file layer and its
# tests need (without them the .tif and Dask tests fail there), nor ducc0 (the CPU FFT of
# the numba extra; without it scipy.fft runs and the ducc0 test skips). Run here, once per session:
#     bash benchmarks/gpu_wheels.sh            # writes .whl/ (git-ignored through .git/info/exclude)
# then name ".whl" in the device call's carry and start its command with
#     python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#         --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit;
# (about 51 MB, ducc0 15 of them: the working tree that travels, some 6 MB, and the carried
# paths may hold 64 MiB together).
set -euo pipefail
cd "$(dirname "$0")/.."
EXCLUDE="$(git rev-parse --git-common-dir)/info/exclude"
grep -qx '/.whl/' "$EXCLUDE" 2>/dev/null || echo '/.whl/' >>"$EXCLUDE"
# The versions the suite passed with on an H200 (2026-11-26, benchmarks/results/GPU.md).
WHEELS=(imagecodecs==2026.3.6 dask==2026.8.0 partd==1.4.2 locket==1.0.0 zarr==3.1.6
    numcodecs==0.16.6 donfig==0.8.1.post1 google-crc32c==1.9.0 ducc0==0.42.0)
PLATFORMS=()
for tag in manylinux_2_17 manylinux2014 manylinux_2_24 manylinux_2_27 manylinux_2_28 \
    manylinux_2_31 manylinux_2_34 manylinux1; do
    PLATFORMS+=(--platform "${tag}_x86_64")
done
rm -rf .whl
"${PYTHON:-python3}" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${PLATFORMS[@]}" -d .whl "${WHEELS[@]}"
ls -l .whl
