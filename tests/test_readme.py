"""The README's commands are the ones that run: its demo is executed line for line and its figures checked."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")


def block_after(marker: str) -> str:
    """The fenced code block that follows `<!-- marker ... -->` in README.md."""
    m = re.search(rf"<!-- {re.escape(marker)}\b.*?-->\s*```\w*\n(.*?)```", README, re.S)
    assert m, f"README.md has no block marked {marker}"
    return m[1]


def python_on_path(tmp_path: Path) -> dict:
    """An environment in which `python` is this interpreter (with minigpt2 importable)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # subtle: a script, not a symlink: a symlinked interpreter outside its virtual environment leaves the venv
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (bin_dir / "python").chmod(0o755)
    return dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", PYTHONPATH=str(REPO))


@pytest.mark.slow
def test_the_sort_demo_runs_as_written_and_gives_the_figures_it_shows(tmp_path):
    script = block_after("sort-demo")
    printed = re.search(r"^# (sort-val\.jsonl: .*)$", script, re.M)[1]  # the line the README says evaluate prints
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, capture_output=True,
                       env=python_on_path(tmp_path))
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    got = r.stdout.decode().strip().splitlines()[-1]

    def figures(line):
        m = re.fullmatch(r"sort-val\.jsonl: 200 examples, (\d+) scored tokens, NLL ([\d.]+) nats/token, perplexity "
                         r"([\d.]+), exact match ([\d.]+)", line)
        assert m, line
        return int(m[1]), float(m[2]), float(m[3]), float(m[4])

    shown, measured = figures(printed), figures(got)
    assert shown[0] == measured[0], "the same examples, the same scored tokens"
    # float32 sums differ in their last bits between CPUs (and BLAS builds): the figures agree to their precision
    assert abs(shown[1] - measured[1]) <= 0.005 and abs(shown[3] - measured[3]) <= 0.02, (printed, got)
    assert measured[3] >= 0.95
    prose = re.search(r"exact match ([\d.]+) on the 200 held-out examples", README)
    assert prose and abs(float(prose[1]) - shown[3]) < 1e-9, "the prose quotes the figure the demo prints"


def test_the_readme_stays_short_and_its_first_commands_are_there():
    assert len(README.encode("utf-8")) < 12_000, "detail belongs in docs/"
    assert 'pip install . && python -m minigpt2.generate "' in README
    assert re.search(r"<!-- test-command -->\s*```bash\npip install -e \".\[test,reference\]\" && python -m pytest\n```",
                     README)
