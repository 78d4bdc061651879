"""Mutants of ``make mutation`` accepted as equivalent: no test can kill them, and why.

One entry per mutant, named as ``python benchmarks/mutation.py --list`` prints it: the file
(under ``gpuconv/``), the original line's code (stripped; ``line`` is only a guide, line
numbers drift), the operator, the code replaced and its replacement (as ``ast.unparse``
writes them), and ``occurrence`` when the same change appears more than once on one line
(0 for the first, the default). An entry whose mutant no longer exists is harmless; a
survivor without an entry is reported as unexplained.

Two kinds are accepted. *Equivalent*: the program's behaviour is the same (dead code, a
value nobody reads, a result that does not change). *Boundary of a float tolerance or a
heuristic's scale*: the mutant moves where the planner switches between two choices that
both meet the contract (a float estimate compared with ``>`` instead of ``>=``, or an
error estimate scaled by 2); tests pin the choice on both sides, not the exact constant.
"""

EQUIVALENTS: list[dict] = [
    # --- _borders.py -------------------------------------------------------------------------
    {
        "file": "_borders.py",
        "line": 28,
        "code": "return np.where((positions >= 0) & (positions < size), positions, -1)",
        "operator": "constant",
        "before": "0",
        "after": "-1",
        "why": "equivalent: position -1 is then kept as itself, and -1 is exactly the "
        "'read the constant' marker it would have been mapped to",
    },
    # --- _plan.py: the plan cache ----------------------------------------------------------
    {
        "file": "_plan.py",
        "line": 257,
        "code": "PLAN_CACHE_SIZE = 256",
        "operator": "constant",
        "before": "256",
        "after": "257",
        "why": "boundary of a heuristic's scale: the cache's size is a tuning constant; the tests "
        "pin the behaviour relative to PLAN_CACHE_SIZE (bounded, least recently used dropped)",
    },
    {
        "file": "_plan.py",
        "line": 257,
        "code": "PLAN_CACHE_SIZE = 256",
        "operator": "constant",
        "before": "256",
        "after": "255",
        "why": "boundary of a heuristic's scale: as 256 -> 257",
    },
    {
        "file": "_plan.py",
        "line": 261,
        "code": "_KEYED_KERNEL_TAPS = 4096",
        "operator": "constant",
        "before": "4096",
        "after": "4097",
        "why": "boundary of a heuristic's scale: which kernels are keyed by their bytes is a "
        "tuning constant (hashing a huge kernel costs more than planning it); the tests pin "
        "both sides of _KEYED_KERNEL_TAPS, and a plan is right either way",
    },
    {
        "file": "_plan.py",
        "line": 261,
        "code": "_KEYED_KERNEL_TAPS = 4096",
        "operator": "constant",
        "before": "4096",
        "after": "4095",
        "why": "boundary of a heuristic's scale: as 4096 -> 4097",
    },
    {
        "file": "_plan.py",
        "line": 279,
        "code": "and 0 < kernel.size <= _KEYED_KERNEL_TAPS",
        "operator": "constant",
        "before": "0",
        "after": "-1",
        "why": "equivalent: an empty kernel then gets a key, but planning it raises ValueError "
        "before anything is stored under that key",
    },
    {
        "file": "_plan.py",
        "line": 279,
        "code": "and 0 < kernel.size <= _KEYED_KERNEL_TAPS",
        "operator": "compare",
        "before": "0 < kernel.size <= _KEYED_KERNEL_TAPS",
        "after": "0 <= kernel.size <= _KEYED_KERNEL_TAPS",
        "why": "equivalent: as 0 -> -1 (an empty kernel is keyed, refused, never stored)",
    },
    # --- _registry.py ------------------------------------------------------------------------
    {
        "file": "_registry.py",
        "line": 81,
        "code": "__str__ = __repr__",
        "operator": "delete",
        "before": "__str__ = __repr__",
        "after": "pass",
        "why": "equivalent: object.__str__ calls the class's __repr__, which the class defines "
        "(the dataclass does not replace an explicit __repr__); the line only says so",
    },
    {
        "file": "_registry.py",
        "line": 135,
        "code": "return name",
        "operator": "return",
        "before": "return name",
        "after": "return None",
        "why": "equivalent: every caller of check_name (convolve, resolve, use_backend, the "
        "Dask and out-of-core paths, the benchmark) uses it for its ValueError only, never "
        "its return value",
    },
    {
        "file": "_registry.py",
        "line": 199,
        "code": "return False",
        "operator": "return",
        "before": "return False",
        "after": "return None",
        "why": "equivalent: _module_is_importable's only caller tests it in an `and`, where "
        "None and False are alike",
    },
    {
        "file": "_registry.py",
        "line": 209,
        "code": 'if os.name != "posix" or not isinstance(data, dict):',
        "operator": "compare",
        "before": "os.name != 'posix'",
        "after": "os.name == 'posix'",
        "why": "equivalent on POSIX, where tests run: there both branches read the same "
        "variable of the same environment (os.environ.get, or the bytes os.environ keeps); "
        "the test of os.name matters only on Windows, whose os.environ keys _data by str",
    },
    # --- _strategy.py ------------------------------------------------------------------------
    {
        "file": "_strategy.py",
        "line": 76,
        "code": "divisor = math.gcd(*(int(v) for v in row)) or 1",
        "operator": "constant",
        "before": "1",
        "after": "2",
        "why": "equivalent: the fallback is dead code. integer=True is passed only for "
        "integer kernels (plan.integer_kernel), and the pivot row, the one with the largest "
        "absolute sum of a kernel that is not all zero, holds a non-zero integer, so its gcd "
        "is at least 1",
    },
    {
        "file": "_strategy.py",
        "line": 76,
        "code": "divisor = math.gcd(*(int(v) for v in row)) or 1",
        "operator": "constant",
        "before": "1",
        "after": "0",
        "why": "equivalent: the same dead fallback as the `or 2` mutant",
    },
    {
        "file": "_strategy.py",
        "line": 85,
        "code": "elif np.abs(np.outer(column, row) - kernel).max() > 1e-14 * magnitude:",
        "operator": "compare",
        "before": "np.abs(np.outer(column, row) - kernel).max() > 1e-14 * magnitude",
        "after": "np.abs(np.outer(column, row) - kernel).max() >= 1e-14 * magnitude",
        "why": "boundary of a float tolerance: only a kernel whose rounding error is exactly "
        "1e-14 of its largest tap tells > from >=; both choices stay far inside the "
        "contract's 1e-12 (test_separability_is_judged_relative_to_the_kernels_magnitude "
        "pins the choice on either side)",
    },
    {
        "file": "_strategy.py",
        "line": 115,
        "code": "return np.sqrt(plan.kernel.size) * 2.0**-24 * tap_sum * _largest_magnitude(plan)",
        "operator": "constant",
        "before": "24",
        "after": "25",
        "why": "heuristic's scale: halves the float32 error estimate, which moves the "
        "float32/float64 switch by a factor of 2 in kernel size or pixel range; the estimate "
        "is a typical error, not a bound, and tests pin the choice for the kernels and types "
        "on either side (test_float32_sums_give_way_to_float64_where_they_could_miss_a_level)",
    },
    {
        "file": "_strategy.py",
        "line": 115,
        "code": "return np.sqrt(plan.kernel.size) * 2.0**-24 * tap_sum * _largest_magnitude(plan)",
        "operator": "constant",
        "before": "24",
        "after": "23",
        "why": "heuristic's scale: doubles the float32 error estimate (see the 24 -> 25 mutant)",
    },
    {
        "file": "_strategy.py",
        "line": 142,
        "code": "and _float32_typical_error(plan) >= _FLOAT32_ERROR_LIMIT",
        "operator": "compare",
        "before": "_float32_typical_error(plan) >= _FLOAT32_ERROR_LIMIT",
        "after": "_float32_typical_error(plan) > _FLOAT32_ERROR_LIMIT",
        "why": "boundary of a float estimate: a product of a square root, 2**-24, a kernel's "
        "absolute sum and a pixel range lands exactly on 1e-3 for no practical kernel",
    },
    # --- _backends/numpy.py (the reference) ---------------------------------------------
    {
        "file": "_backends/numpy.py",
        "line": 16,
        "code": "_BAND_BUDGET_BYTES = 48 * 2**20",
        "operator": "constant",
        "before": "48",
        "after": "49",
        "why": "tuning of the band height: the reference's bands hold 2% more rows, so results are identical (test_bands_join_seamlessly_whatever_their_height) and memory stays within the bound test_memory_is_bounded_by_bands checks; the band count stays within test_a_large_image_goes_through_in_a_few_large_bands",
    },
    {
        "file": "_backends/numpy.py",
        "line": 16,
        "code": "_BAND_BUDGET_BYTES = 48 * 2**20",
        "operator": "constant",
        "before": "48",
        "after": "47",
        "why": "tuning of the band height: the reference's bands hold 2% fewer rows, so results are identical (test_bands_join_seamlessly_whatever_their_height) and memory stays within the bound test_memory_is_bounded_by_bands checks; the band count stays within test_a_large_image_goes_through_in_a_few_large_bands",
    },
    {
        "file": "_backends/numpy.py",
        "line": 16,
        "code": "_BAND_BUDGET_BYTES = 48 * 2**20",
        "operator": "constant",
        "before": "20",
        "after": "19",
        "why": "tuning of the band height: the reference's bands hold half as many rows, so results are identical (test_bands_join_seamlessly_whatever_their_height) and memory stays within the bound test_memory_is_bounded_by_bands checks; the band count stays within test_a_large_image_goes_through_in_a_few_large_bands",
    },
    {
        "file": "_backends/numpy.py",
        "line": 69,
        "code": "bytes_per_row = 3 * 8 * (width + kernel_width) * channels",
        "operator": "constant",
        "before": "3",
        "after": "4",
        "why": "tuning of the band height: the reference's bands hold a quarter fewer rows, so results are identical (test_bands_join_seamlessly_whatever_their_height) and memory stays within the bound test_memory_is_bounded_by_bands checks; the band count stays within test_a_large_image_goes_through_in_a_few_large_bands",
    },
    {
        "file": "_backends/numpy.py",
        "line": 69,
        "code": "bytes_per_row = 3 * 8 * (width + kernel_width) * channels",
        "operator": "constant",
        "before": "8",
        "after": "9",
        "why": "tuning of the band height: the reference's bands hold an eighth fewer rows, so results are identical (test_bands_join_seamlessly_whatever_their_height) and memory stays within the bound test_memory_is_bounded_by_bands checks; the band count stays within test_a_large_image_goes_through_in_a_few_large_bands",
    },
    {
        "file": "_backends/numpy.py",
        "line": 69,
        "code": "bytes_per_row = 3 * 8 * (width + kernel_width) * channels",
        "operator": "constant",
        "before": "8",
        "after": "7",
        "why": "tuning of the band height: the reference's bands hold a seventh more rows, so results are identical (test_bands_join_seamlessly_whatever_their_height) and memory stays within the bound test_memory_is_bounded_by_bands checks; the band count stays within test_a_large_image_goes_through_in_a_few_large_bands",
    },
    {
        "file": "_backends/numpy.py",
        "line": 70,
        "code": "band = max(1, _BAND_BUDGET_BYTES // bytes_per_row - kernel_height)",
        "operator": "constant",
        "before": "1",
        "after": "2",
        "why": "equivalent in results: only when the kernel alone is over the budget does the floor apply, and then bands of 2 rows compute what bands of 1 do (one row more memory)",
    },
    {
        "file": "_backends/numpy.py",
        "line": 70,
        "code": "band = max(1, _BAND_BUDGET_BYTES // bytes_per_row - kernel_height)",
        "operator": "arithmetic",
        "before": "_BAND_BUDGET_BYTES // bytes_per_row - kernel_height",
        "after": "_BAND_BUDGET_BYTES // bytes_per_row + kernel_height",
        "why": "tuning of the band height: the reference's bands hold 2 * kernel_height more (a few per 500) rows, so results are identical (test_bands_join_seamlessly_whatever_their_height) and memory stays within the bound test_memory_is_bounded_by_bands checks; the band count stays within test_a_large_image_goes_through_in_a_few_large_bands",
    },
    {
        "file": "_backends/numpy.py",
        "line": 45,
        "code": "block = image3d.take(np.maximum(rows, 0), axis=0).take(np.maximum(cols, 0), axis=1)",
        "operator": "constant",
        "before": "0",
        "after": "-1",
        "why": "equivalent: an index below 0 is the constant border's marker -1, and the pixel read there (the last row instead of the first) is overwritten with the constant on the next lines",
    },
    {
        "file": "_backends/numpy.py",
        "line": 45,
        "code": "block = image3d.take(np.maximum(rows, 0), axis=0).take(np.maximum(cols, 0), axis=1)",
        "operator": "constant",
        "before": "0",
        "after": "-1",
        "occurrence": 2,
        "why": "equivalent: an index below 0 is the constant border's marker -1, and the pixel read there (the last column instead of the first) is overwritten with the constant on the next lines",
    },
]
