# The README's two quick-start commands. Each builds .venv from the project's
# own files (pyproject.toml) on first use, then does its job.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test mutation cuda-mutation compile-check

# Sets up and runs the tutorial on scikit-image's bundled astronaut photo:
# six montages original | gpuconv | cv2.filter2D under demo_out/.
demo: $(VENV)/.installed-demo
	$(BIN)/gpuconv demo --out demo_out

# Sets up, lints (ruff) and runs the whole suite. The CUDA kernels run through the CPU
# emulator (GPUCONV_CUDA_EMULATOR=1), so this needs no GPU. TEST_JOBS pytest-xdist workers,
# each taking whole test files (numba compiles, most of a cold run, use one core each):
# 9.7 min on 2 cores from a cold cache against 17.5 min on one worker.
TEST_JOBS ?= 2
test: $(VENV)/.installed-test
	$(BIN)/ruff check gpuconv tests benchmarks
	$(BIN)/ruff format --check gpuconv tests benchmarks
	GPUCONV_CUDA_EMULATOR=1 $(BIN)/python -m pytest -n $(TEST_JOBS) --dist loadfile

# Every CUDA compile check, including the two that repeat what `make test` covers (NVRTC's
# PTX for sm_80, nvcc for sm_90; about 75 s): results in benchmarks/results/compile-check.log.
compile-check: $(VENV)/.installed-test
	GPUCONV_FULL_COMPILE_CHECK=1 $(BIN)/python -m pytest -p no:cacheprovider -rA -q \
		tests/test_cuda_compile.py | tee benchmarks/results/compile-check.log

# Mutation testing (benchmarks/mutation.py) of the planner, the registry, the border rule and
# the reference: each mutant on a scratch copy, scored in benchmarks/results/mutation.md.
# Not part of `make test` (about an hour on 2 cores). MUTATION_ARGS="--modules _plan.py"
# runs one module; "--jobs 2" runs two mutants at once.
MUTATION_ARGS ?=
mutation: $(VENV)/.installed-test
	$(BIN)/python benchmarks/mutation.py $(MUTATION_ARGS)

# Hand mutations of the three newest CUDA kernels (gpuconv_window_dp4a, gpuconv_box_packed,
# gpuconv_box_float), run through the emulator (about 10 minutes; rewrites
# kernels_cuda/convolve_window.cu while it runs, then restores it): results in
# benchmarks/results/mutation-cuda-dp4a-box.md.
cuda-mutation: $(VENV)/.installed-test
	$(BIN)/python benchmarks/cuda_kernel_mutations.py

$(VENV)/.installed-demo: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[numba]"
	touch $@

$(VENV)/.installed-test: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@
