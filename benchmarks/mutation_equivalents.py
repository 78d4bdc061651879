"""Mutants of ``make mutation`` accepted as equivalent: no test can kill them, and why.

One entry per mutant, named by what ``benchmarks/mutation.py --list`` prints: the file (under
``gpuconv/``), the original line's code (stripped; line numbers are only a guide, they drift),
the operator, the code replaced and its replacement (as ``ast.unparse`` writes them), and
``occurrence`` when the same change appears more than once on one line (0 for the first).
"""

EQUIVALENTS: list[dict] = []
