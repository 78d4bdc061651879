"""benchmarks/mutation.py (``make mutation``) cannot rot: its mutants compile, each changes
exactly what it says, and every accepted equivalent still names a mutant that exists.

The mutation run itself takes an hour; these checks take a second.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def mutation():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        yield _load("mutation")
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
        sys.modules.pop("mutation", None)


@pytest.fixture(scope="module")
def all_mutants(mutation):
    return {module: mutation.mutants_of(module) for module in mutation.SELECTION}


def test_every_selected_test_file_exists(mutation):
    for module, tests in mutation.SELECTION.items():
        assert (ROOT / module).is_file(), module
        for test in tests:
            assert (ROOT / test).is_file(), test


def test_every_operator_is_used_on_every_module(mutation, all_mutants):
    used = {mutant.operator for mutants in all_mutants.values() for mutant in mutants}
    assert used == set(mutation.OPERATORS)
    for module, mutants in all_mutants.items():
        assert len(mutants) > 20, module


def test_each_mutant_compiles_and_differs_from_the_original_in_one_place(mutation, all_mutants):
    for module, mutants in all_mutants.items():
        original = ast.dump(ast.parse((ROOT / module).read_text()))
        seen = set()
        for mutant in mutants:
            source = mutation.mutated_source(module, mutant.index)
            compile(source, module, "exec")
            dumped = ast.dump(ast.parse(source))
            assert dumped != original, mutant.label()
            seen.add(dumped)
            assert mutant.code == (ROOT / module).read_text().splitlines()[mutant.line - 1].strip()
        # Distinct mutants make distinct programs (a few coincide: `not x` dropped and `x`
        # negated are the same tree), never many.
        assert len(seen) >= 0.95 * len(mutants), module


def test_docstrings_annotations_imports_and_messages_are_not_mutated(mutation):
    source = '''"""Docstring 1."""
from __future__ import annotations
import os


def f(x: int = 3) -> int:
    """Docstring 2."""
    raise ValueError(f"bad {x + 1}")
'''
    mutator = mutation._Mutator()
    mutator.visit(ast.parse(source))
    found = [(operator, before, after) for _, operator, before, after in mutator.found]
    assert ("constant", "3", "4") in found and ("constant", "3", "2") in found  # the default
    assert ("delete", "raise ValueError(f'bad {x + 1}')", "pass") in found
    assert len(found) == 3  # nothing in the docstrings, the annotation, the import or f-string


def test_every_accepted_equivalent_names_an_existing_mutant(mutation, all_mutants):
    keys = {mutant.key for mutants in all_mutants.values() for mutant in mutants}
    equivalents = _load("mutation_equivalents").EQUIVALENTS
    for entry in equivalents:
        key = (
            entry["file"],
            entry["code"],
            entry["operator"],
            entry["before"],
            entry["after"],
            entry.get("occurrence", 0),
        )
        assert key in keys, f"stale entry in benchmarks/mutation_equivalents.py: {entry}"
        assert entry["why"].strip() and entry["why"] != "..."
