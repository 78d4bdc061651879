"""Mutation testing of the planner and the reference: do the tests notice a wrong program?

Each *mutant* is the package with one small change to one of the modules below (a flipped
comparison, an integer constant +-1, a swapped arithmetic operator, a negated condition, a
deleted statement, a forced return value). A mutant is *killed* when a fast subset of the
test suite fails on it (or times out); it *survives* when every test still passes. A
survivor is either a hole in the tests or an *equivalent* mutant, one no test can kill
because nothing observable changes; the equivalents are listed, each with the reason, in
``mutation_equivalents.py`` beside this file. The score goes to
``benchmarks/results/mutation.md``.

Mutants never touch the working tree: the package, the tests, ``kernels_cuda/`` and
``pyproject.toml`` are copied to one scratch directory per job, the mutated module is written
into that copy, the tests run there (``PYTHONPATH`` puts the copy first), and the original
text is put back before the next mutant. Bytecode is never written for the copy, so no stale
``.pyc`` can stand in for a mutant; numba's on-disk cache in the copy is kept (its sources are
never mutated).

What is not mutated: docstrings, type annotations, imports, and the text of f-strings
(error messages are checked by their wording, not by the arithmetic inside them).

Usage::

    python benchmarks/mutation.py                        # every module, results file written
    python benchmarks/mutation.py --modules _strategy.py  # one module
    python benchmarks/mutation.py --list                  # print the mutants, run nothing
    python benchmarks/mutation.py --deadline-minutes 60   # stop starting mutants after an hour

``make mutation`` runs the first. Not part of ``make test``: it takes tens of minutes.
"""

from __future__ import annotations

import argparse
import ast
import concurrent.futures
import copy
import dataclasses
import datetime
import os
import platform
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from mutation_equivalents import EQUIVALENTS  # noqa: E402 (beside this script)

#: The modules mutated, and the tests that must kill their mutants, fastest first (pytest
#: stops at the first failure). Every run sets ``GPUCONV_TEST_BACKENDS=numpy``: the contract
#: suite runs once, through the reference; the compiled backends' own tests are left out
#: except numba's for the planner it executes.
SELECTION: dict[str, list[str]] = {
    "gpuconv/_borders.py": ["tests/test_reference.py", "tests/test_contract.py"],
    "gpuconv/_plan.py": [
        "tests/test_plan.py",
        "tests/test_plan_cache.py",
        "tests/test_errors.py",
        "tests/test_registry.py",
        "tests/test_strategy.py",
        "tests/test_reference.py",
        "tests/test_kernels.py",
        "tests/test_contract.py",
    ],
    "gpuconv/_strategy.py": ["tests/test_strategy.py", "tests/test_numba_backend.py"],
    "gpuconv/_registry.py": ["tests/test_registry.py", "tests/test_errors.py"],
    # The large-kernel planner (issue 11): which path runs, and the low-rank factors.
    "gpuconv/_costmodel.py": ["tests/test_large_kernels.py"],
    "gpuconv/_lowrank.py": ["tests/test_large_kernels.py", "tests/test_strategy.py"],
    "gpuconv/_backends/numpy.py": [
        "tests/test_reference.py",
        "tests/test_contract.py",
        "tests/test_errors.py",
        "tests/test_registry.py",
    ],
}

PYTEST_OPTIONS = [
    "-x",
    "-q",
    "-p",
    "no:cacheprovider",
    "-m",
    "not slow",
    "--hypothesis-seed=0",  # the same examples for every mutant
]
COPIED = ("gpuconv", "tests", "kernels_cuda", "pyproject.toml", "README.md")

# --- the mutants ----------------------------------------------------------------------------

_COMPARISONS: dict[type, tuple[type, ...]] = {
    ast.Lt: (ast.LtE, ast.GtE),
    ast.LtE: (ast.Lt, ast.Gt),
    ast.Gt: (ast.GtE, ast.LtE),
    ast.GtE: (ast.Gt, ast.Lt),
    ast.Eq: (ast.NotEq,),
    ast.NotEq: (ast.Eq,),
    ast.In: (ast.NotIn,),
    ast.NotIn: (ast.In,),
    ast.Is: (ast.IsNot,),
    ast.IsNot: (ast.Is,),
}
_ARITHMETIC: dict[type, type] = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Div,
    ast.Div: ast.Mult,
    ast.FloorDiv: ast.Div,
    ast.Mod: ast.FloorDiv,
    ast.Pow: ast.Mult,
    ast.BitAnd: ast.BitOr,
    ast.BitOr: ast.BitAnd,
    ast.BitXor: ast.BitAnd,
    ast.LShift: ast.RShift,
    ast.RShift: ast.LShift,
}
_DELETABLE = (
    ast.Assign,
    ast.AugAssign,
    ast.AnnAssign,
    ast.Expr,
    ast.Raise,
    ast.Assert,
    ast.Delete,
    ast.Continue,
    ast.Break,
)
OPERATORS = ("compare", "constant", "arithmetic", "negate", "delete", "return")


@dataclasses.dataclass(frozen=True)
class Mutant:
    module: str  # path relative to the repository root
    index: int  # its place in the module's enumeration (what --only takes)
    line: int
    operator: str
    before: str  # the code replaced, as ast.unparse writes it
    after: str  # what replaces it
    code: str  # the original source line, stripped
    occurrence: int  # among mutants with the same (code, operator, before, after)

    @property
    def key(self) -> tuple:
        """What an entry of mutation_equivalents.py names (line numbers drift, code does not)."""
        name = self.module.removeprefix("gpuconv/")
        return (name, self.code, self.operator, self.before, self.after, self.occurrence)

    def label(self) -> str:
        return f"{self.module}:{self.line} [{self.operator}] `{self.before}` -> `{self.after}`"

    def markdown(self) -> str:
        return f"`{self.module}:{self.line}` {self.operator}: ``{self.before}`` -> ``{self.after}``"


def _short(node: ast.AST) -> str:
    text = ast.unparse(node).splitlines()[0]
    return text if len(text) <= 90 else text[:87] + "..."


def _is_docstring(body: list, index: int) -> bool:
    statement = body[index]
    return (
        index == 0
        and isinstance(statement, ast.Expr)
        and isinstance(statement.value, ast.Constant)
        and isinstance(statement.value.value, str)
    )


def _looks_boolean(node: ast.AST) -> bool:
    if isinstance(node, (ast.Compare, ast.BoolOp)):
        return True
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return True
    if isinstance(node, ast.Constant) and isinstance(node.value, bool):
        return True
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "bool"


class _Mutator(ast.NodeTransformer):
    """Walks a module in a fixed order, offering every mutation it knows.

    With ``target=None`` it records what it offers (``found``); with an index it applies
    that one mutation and leaves everything else alone.
    """

    def __init__(self, target: int | None = None):
        self.target = target
        self.count = 0
        self.found: list[tuple[int, str, str, str]] = []  # (line, operator, before, after)

    def _offer(self, node: ast.AST, operator: str, make) -> ast.AST | None:
        index = self.count
        self.count += 1
        if self.target is None:
            replacement = make()
            after = "pass" if isinstance(replacement, ast.Pass) else _short(replacement)
            self.found.append((node.lineno, operator, _short(node), after))
            return None
        if index == self.target:
            return ast.copy_location(make(), node)
        return None

    # What is never mutated.
    def visit_Import(self, node):
        return node

    visit_ImportFrom = visit_Import

    def visit_JoinedStr(self, node):
        return node

    def visit_FunctionDef(self, node):
        node.decorator_list = [self.visit(d) for d in node.decorator_list]
        node.args.defaults = [self.visit(d) for d in node.args.defaults]
        node.args.kw_defaults = [
            None if d is None else self.visit(d) for d in node.args.kw_defaults
        ]
        node.body = self._visit_body(node.body)
        return node

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node):
        node.decorator_list = [self.visit(d) for d in node.decorator_list]
        node.body = self._visit_body(node.body)
        return node

    def visit_Module(self, node):
        node.body = self._visit_body(node.body)
        return node

    def visit_AnnAssign(self, node):
        if node.value is not None:
            node.value = self.visit(node.value)
            replacement = self._offer(node, "delete", ast.Pass)
            if replacement is not None:
                return replacement
        return node

    def _visit_body(self, body: list) -> list:
        result = []
        for index, statement in enumerate(body):
            if _is_docstring(body, index):
                result.append(statement)
                continue
            visited = self.visit(statement)
            result.append(visited)
        return result

    def generic_visit(self, node):
        # Bodies of if/for/while/with/try go through _visit_body (docstrings aside, the same).
        node = super().generic_visit(node)
        if isinstance(node, _DELETABLE) and not isinstance(node, ast.AnnAssign):
            replacement = self._offer(node, "delete", ast.Pass)
            if replacement is not None:
                return replacement
        return node

    def visit_Compare(self, node):
        node = self.generic_visit(node)
        for position, operation in enumerate(node.ops):
            for swapped in _COMPARISONS.get(type(operation), ()):

                def make(position=position, swapped=swapped):
                    mutated = copy.deepcopy(node)
                    mutated.ops[position] = swapped()
                    return mutated

                replacement = self._offer(node, "compare", make)
                if replacement is not None:
                    return replacement
        return node

    def visit_Constant(self, node):
        value = node.value
        if isinstance(value, int) and not isinstance(value, bool):
            for delta in (1, -1):
                replacement = self._offer(
                    node, "constant", lambda delta=delta: ast.Constant(value + delta)
                )
                if replacement is not None:
                    return replacement
        elif isinstance(value, bool):
            replacement = self._offer(node, "negate", lambda: ast.Constant(not value))
            if replacement is not None:
                return replacement
        return node

    def _swap_operator(self, node):
        swapped = _ARITHMETIC.get(type(node.op))
        if swapped is None:
            return None

        def make():
            mutated = copy.deepcopy(node)
            mutated.op = swapped()
            return mutated

        return self._offer(node, "arithmetic", make)

    def visit_BinOp(self, node):
        node = self.generic_visit(node)
        return self._swap_operator(node) or node

    def visit_AugAssign(self, node):
        node = self.generic_visit(node)  # offers the deletion
        if not isinstance(node, ast.AugAssign):
            return node
        return self._swap_operator(node) or node

    def visit_UnaryOp(self, node):
        node = self.generic_visit(node)
        if isinstance(node.op, ast.Not):
            return self._offer(node, "negate", lambda: copy.deepcopy(node.operand)) or node
        if isinstance(node.op, ast.USub):
            return self._offer(node, "arithmetic", lambda: copy.deepcopy(node.operand)) or node
        return node

    def visit_BoolOp(self, node):
        node = self.generic_visit(node)

        def make():
            mutated = copy.deepcopy(node)
            mutated.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
            return mutated

        return self._offer(node, "negate", make) or node

    def _negate_test(self, node):
        test = node.test
        if isinstance(test, ast.Compare) and len(test.ops) == 1:
            return None  # the comparison's own negation is the same mutant
        if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
            return None  # dropping the `not` is the same mutant

        def make():
            mutated = copy.deepcopy(node)
            mutated.test = ast.UnaryOp(ast.Not(), copy.deepcopy(test))
            return mutated

        return self._offer_test(node, make)

    def _offer_test(self, node, make):
        index = self.count
        self.count += 1
        if self.target is None:
            self.found.append(
                (node.lineno, "negate", _short(node.test), f"not ({_short(node.test)})")
            )
            return None
        if index == self.target:
            return ast.copy_location(make(), node)
        return None

    def visit_If(self, node):
        node.test = self.visit(node.test)
        node.body = self._visit_body(node.body)
        node.orelse = self._visit_body(node.orelse)
        return self._negate_test(node) or node

    visit_While = visit_If

    def visit_IfExp(self, node):
        node = super().generic_visit(node)
        return self._negate_test(node) or node

    def visit_Return(self, node):
        node = super().generic_visit(node)
        value = node.value
        if value is None or (isinstance(value, ast.Constant) and value.value is None):
            return node
        forced = [None]
        if _looks_boolean(value):
            forced += [
                flag
                for flag in (True, False)
                if not (isinstance(value, ast.Constant) and value.value is flag)
            ]
        for constant in forced:
            replacement = self._offer(
                node, "return", lambda constant=constant: ast.Return(ast.Constant(constant))
            )
            if replacement is not None:
                return replacement
        return node


def mutants_of(module: str) -> list[Mutant]:
    source = (ROOT / module).read_text()
    lines = source.splitlines()
    mutator = _Mutator()
    mutator.visit(ast.parse(source))
    seen: dict[tuple, int] = {}
    mutants = []
    for index, (line, operator, before, after) in enumerate(mutator.found):
        code = lines[line - 1].strip()
        identity = (code, operator, before, after)
        seen[identity] = seen.get(identity, -1) + 1
        mutants.append(Mutant(module, index, line, operator, before, after, code, seen[identity]))
    return mutants


def mutated_source(module: str, index: int) -> str:
    tree = ast.parse((ROOT / module).read_text())
    mutator = _Mutator(target=index)
    tree = mutator.visit(tree)
    ast.fix_missing_locations(tree)
    return ast.unparse(tree) + "\n"


# --- running them ---------------------------------------------------------------------------


@dataclasses.dataclass
class Outcome:
    mutant: Mutant | None
    status: str  # "killed", "timeout", "survived", "error"
    seconds: float
    detail: str = ""


def _prepare_copy(directory: Path) -> None:
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(
                source, directory / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
            )
        elif source.exists():
            shutil.copy2(source, directory / name)


def _environment(directory: Path) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("GPUCONV_")}
    environment.update(
        PYTHONPATH=str(directory),
        PYTHONDONTWRITEBYTECODE="1",
        GPUCONV_TEST_BACKENDS="numpy",
        NUMBA_NUM_THREADS="1",
        OMP_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
    )
    return environment


def run_tests(directory: Path, module: str, timeout: float) -> tuple[str, float, str]:
    shutil.rmtree(directory / ".hypothesis", ignore_errors=True)  # no replay across mutants
    tests = [name for name in SELECTION[module] if (directory / name).exists()]
    command = [sys.executable, "-m", "pytest", *PYTEST_OPTIONS, *tests]
    start = time.perf_counter()
    try:
        result = subprocess.run(
            command,
            cwd=directory,
            env=_environment(directory),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return "timeout", time.perf_counter() - start, ""
    seconds = time.perf_counter() - start
    tail = (result.stdout + result.stderr).strip().splitlines()
    summary = tail[-1] if tail else ""
    if result.returncode == 0:
        return "survived", seconds, summary
    if result.returncode == 5:  # no tests ran: the selection is wrong, not the mutant
        return "error", seconds, f"pytest exit 5: {summary}"
    # 1: tests failed; 2: collection failed; 3, 4: the package (imported by conftest.py)
    # did not import. The unmutated copy passed with the same command, so the mutant did it.
    failed = [line for line in tail if line.startswith(("FAILED", "ERROR", "E "))]
    return "killed", seconds, (failed[0] if failed else summary)


def run_mutant(directory: Path, mutant: Mutant, timeout: float) -> Outcome:
    target = directory / mutant.module
    original = target.read_text()
    try:
        target.write_text(mutated_source(mutant.module, mutant.index))
        status, seconds, detail = run_tests(directory, mutant.module, timeout)
    finally:
        target.write_text(original)
    return Outcome(mutant, status, seconds, detail)


def _equivalent_reasons() -> dict[tuple, str]:
    reasons = {}
    for entry in EQUIVALENTS:
        key = (
            entry["file"],
            entry["code"],
            entry["operator"],
            entry["before"],
            entry["after"],
            entry.get("occurrence", 0),
        )
        reasons[key] = entry["why"]
    return reasons


def entry_for(mutant: Mutant) -> str:
    """The mutation_equivalents.py entry that would accept ``mutant`` (the reason to fill in)."""
    fields = {
        "file": mutant.module.removeprefix("gpuconv/"),
        "line": mutant.line,
        "code": mutant.code,
        "operator": mutant.operator,
        "before": mutant.before,
        "after": mutant.after,
    }
    if mutant.occurrence:
        fields["occurrence"] = mutant.occurrence
    lines = [f"        {name!r}: {value!r}," for name, value in fields.items()]
    return "\n".join(["    {", *lines, '        "why": "...",', "    },"])


# --- the report -----------------------------------------------------------------------------


def write_report(
    path: Path,
    modules: list[str],
    totals: dict[str, int],
    outcomes: list[Outcome],
    started: float,
    note: str,
    jobs: int = 1,
) -> tuple[int, int]:
    reasons = _equivalent_reasons()
    by_module: dict[str, list[Outcome]] = {module: [] for module in modules}
    for outcome in outcomes:
        by_module[outcome.mutant.module].append(outcome)
    rows, details = [], []
    unexplained_total = 0
    for module in modules:
        done = by_module[module]
        killed = sum(o.status in ("killed", "timeout") for o in done)
        timeouts = sum(o.status == "timeout" for o in done)
        survivors = [o for o in done if o.status == "survived"]
        errors = [o for o in done if o.status == "error"]
        explained = [o for o in survivors if o.mutant.key in reasons]
        unexplained = [o for o in survivors if o.mutant.key not in reasons]
        unexplained_total += len(unexplained) + len(errors)
        score = killed / max(1, len(done) - len(explained))
        rows.append(
            f"| `{module}` | {totals[module]} | {len(done)} | {killed} ({timeouts} by timeout) "
            f"| {len(explained)} | {len(unexplained)} | {len(errors)} | {score:.1%} |"
        )
        for outcome in explained:
            details.append(
                f"- {outcome.mutant.markdown()}: equivalent: {reasons[outcome.mutant.key]}"
            )
        for outcome in unexplained:
            details.append(
                f"- **unexplained** {outcome.mutant.markdown()} in ``{outcome.mutant.code}``"
            )
        for outcome in errors:
            details.append(f"- **error** {outcome.mutant.markdown()}: {outcome.detail}")
    # Entries that name no mutant any more (the code changed): to be updated or removed.
    existing = {o.mutant.key for o in outcomes}
    names = {module.removeprefix("gpuconv/") for module in modules}
    stale = [key for key in reasons if key[0] in names and key not in existing]
    if len(outcomes) == sum(totals.values()):
        details += [
            f"- **stale entry** in mutation_equivalents.py: `{key[0]}` ``{key[1]}``"
            for key in stale
        ]
    minutes = (time.time() - started) / 60
    text = [
        "# Mutation score",
        "",
        f"`make mutation` (`python benchmarks/mutation.py`), {datetime.date.today()}, "
        f"{minutes:.0f} min on {os.cpu_count()} CPUs, {jobs} mutant(s) at a time "
        f"(Python {platform.python_version()}).",
        "Operators: " + ", ".join(OPERATORS) + ". A mutant is killed when its module's tests "
        "(below) fail or time out; score = killed / (run - accepted equivalents).",
        "",
    ]
    if note:
        text += [note, ""]
    text += [
        "| module | mutants | run | killed | equivalent (listed) | unexplained survivors "
        "| errors | score |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Tests run per module (`pytest " + " ".join(PYTEST_OPTIONS) + "`, "
        "`GPUCONV_TEST_BACKENDS=numpy`), stopping at the first failure:",
        "",
        *[f"- `{module}`: " + ", ".join(f"`{t}`" for t in SELECTION[module]) for module in modules],
        "",
        "## Survivors",
        "",
        "Each accepted equivalent is listed, with the reason, in "
        "`benchmarks/mutation_equivalents.py`.",
        "",
        *(details or ["None."]),
        "",
    ]
    # A "## History" section (earlier scores, written by hand) survives a rerun.
    previous = path.read_text() if path.exists() else ""
    history = (
        previous[previous.find("\n## History\n") + 1 :] if "\n## History\n" in previous else ""
    )
    path.write_text("\n".join(text) + ("\n" + history if history else ""))
    return len(outcomes), unexplained_total


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", nargs="+", help="file names, e.g. _plan.py (default: all)")
    parser.add_argument("--jobs", type=int, default=1, help="mutants run at once (default 1)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per mutant")
    parser.add_argument("--deadline-minutes", type=float, default=None)
    parser.add_argument("--only", type=int, nargs="+", help="mutant indices (one module)")
    parser.add_argument("--list", action="store_true", help="print the mutants and stop")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks/results/mutation.md")
    parser.add_argument("--note", default="", help="a sentence for the results file")
    args = parser.parse_args(argv)

    modules = list(SELECTION)
    if args.modules:
        wanted = set(args.modules)
        modules = [m for m in modules if Path(m).name in wanted or m in wanted]
        if len(modules) != len(wanted):
            parser.error(f"modules are {', '.join(Path(m).name for m in SELECTION)}")
    mutants = {module: mutants_of(module) for module in modules}
    if args.only:
        if len(modules) != 1:
            parser.error("--only needs exactly one module")
        mutants[modules[0]] = [m for m in mutants[modules[0]] if m.index in args.only]
    if args.list:
        for module in modules:
            for mutant in mutants[module]:
                print(f"{mutant.index:4d} {mutant.label()}")
        return 0
    totals = {module: len(mutants[module]) for module in modules}
    started = time.time()
    deadline = None if args.deadline_minutes is None else started + 60 * args.deadline_minutes

    with tempfile.TemporaryDirectory(prefix="gpuconv-mutation-") as scratch:
        directories = []
        for job in range(max(1, args.jobs)):
            directory = Path(scratch) / f"job{job}"
            directory.mkdir()
            _prepare_copy(directory)
            directories.append(directory)
        # The unmutated copy must pass, and sets the timeout (numba compiles into the copy).
        timeouts = {}
        for module in modules:
            slowest = 0.0
            for directory in directories:
                status, seconds, detail = run_tests(directory, module, 1800)
                if status != "survived":
                    print(f"the tests fail without a mutant ({module}): {detail}", file=sys.stderr)
                    return 2
                slowest = max(slowest, seconds)
            timeouts[module] = args.timeout or max(60.0, 5 * slowest)
            print(f"baseline {module}: {slowest:.1f} s, timeout {timeouts[module]:.0f} s")

        pending: queue.Queue = queue.Queue()
        for directory in directories:
            pending.put(directory)
        outcomes: list[Outcome] = []
        lock = threading.Lock()
        order = [mutant for module in modules for mutant in mutants[module]]

        def work(mutant: Mutant) -> Outcome | None:
            if deadline is not None and time.time() > deadline:
                return None
            directory = pending.get()
            try:
                outcome = run_mutant(directory, mutant, timeouts[mutant.module])
            finally:
                pending.put(directory)
            with lock:
                outcomes.append(outcome)
                print(
                    f"[{len(outcomes)}/{len(order)}] {outcome.status:8s} {outcome.seconds:5.1f}s "
                    f"{mutant.label()}",
                    flush=True,
                )
            return outcome

        with concurrent.futures.ThreadPoolExecutor(len(directories)) as pool:
            list(pool.map(work, order))

    outcomes.sort(key=lambda o: (modules.index(o.mutant.module), o.mutant.index))
    note = args.note
    if len(outcomes) < len(order):
        note = (
            f"Partial run: the deadline stopped it after {len(outcomes)} of {len(order)} "
            f"mutants. {note}"
        ).strip()
    run, unexplained = write_report(
        args.output, modules, totals, outcomes, started, note, max(1, args.jobs)
    )
    reasons = _equivalent_reasons()
    for outcome in outcomes:
        if outcome.status == "survived" and outcome.mutant.key not in reasons:
            print("unexplained survivor; if it is equivalent, its entry would be:")
            print(entry_for(outcome.mutant))
    print(f"{run} mutants run, {unexplained} unexplained survivors or errors; see {args.output}")
    return 0 if unexplained == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
