"""scripts/check_mutants.py runs as shipped: every mutant still names code that exists, and a quick subset of
them is caught by the tests named beside it (in a copy of the repository; the checkout is never touched)."""

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import check_mutants  # noqa: E402


@pytest.mark.parametrize("n", range(1, len(check_mutants.MUTANTS) + 1))
def test_every_mutant_names_code_that_is_there_exactly_once(n):
    what, rel, old, new, tests = check_mutants.MUTANTS[n - 1]
    assert (REPO / rel).read_text(encoding="utf-8").count(old) == 1, f"mutant {n} ({what}) must be re-aimed"
    assert old != new and all((REPO / t).is_file() for t in tests.split())


@pytest.mark.slow
def test_a_quick_subset_of_the_mutants_is_killed(capsys):
    quick = [n for n, m in enumerate(check_mutants.MUTANTS, 1) if m[0] in QUICK]
    assert len(quick) == len(QUICK)
    assert check_mutants.run_mutants(quick) == 0, capsys.readouterr().out


QUICK = {"every sample penalised with sample 0's history", "bfloat16 widened by the wrong shift",
         "LAMBADA's target without its space"}  # the quickest to catch, about 30 s in all
