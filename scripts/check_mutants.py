"""Does the test suite catch these one-line bugs? Each mutant is applied to a temporary copy of the
repository (the checkout itself is never touched), and the tests that pin the behaviour down run there.

    python scripts/check_mutants.py                 # every mutant against the tests named beside it
    python scripts/check_mutants.py -k 3 7          # only mutants 3 and 7
    python scripts/check_mutants.py --whole-suite   # every mutant against the whole suite (an hour or more)

Each mutant is a change a real edit could make, and each causes visible wrong behaviour. A mutant that the
tests let pass ("SURVIVED") names a behaviour no test pins down. Exit code 0: every mutant killed; 1: some
survived; 2: a mutant's original text is no longer in its file exactly once (the code moved: re-aim it).
tests/test_mutants.py runs a quick subset in the suite.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# (what it breaks, file, the exact original text, the mutated text, the tests that must catch it)
MUTANTS = [
    ('top_p = 1.0 rejected', 'minigpt2/sample.py',
     'if top_p is not None and not 0 < top_p <= 1:',
     'if top_p is not None and not 0 < top_p < 1:',
     'tests/test_generate.py'),
    ('stream runs on after every sample ended', 'minigpt2/decoding.py',
     'if done.all() or step == max_new_tokens - 1:',
     'if step == max_new_tokens - 1:',
     'tests/test_generate.py'),
    ("every sample penalised with sample 0's history", 'minigpt2/sample.py',
     'for row, ids in zip(out, previous)])',
     'for row, ids in zip(out, [previous[0]] * len(previous))])',
     'tests/test_logits_processors.py'),
    ('BPE training decrements pair counts by 1', 'minigpt2/bpe_train.py',
     "# key(x, a), key(x, c), written out: this loop is the trainer's time\n                counts[old] -= f\n",
     "# key(x, a), key(x, c), written out: this loop is the trainer's time\n                counts[old] -= 1\n",
     'tests/test_tokenizer.py'),
    ('a short 206 is taken as complete', 'minigpt2/download.py',
     '    return size == total\n',
     '    return size <= total\n',
     'tests/test_download.py'),
    ('an untied Hugging Face lm_head is accepted', 'minigpt2/load.py',
     'if head is not None and "wte" in flat and not np.array_equal(head, flat["wte"]):',
     'if False:',
     'tests/test_load.py'),
    ('bfloat16 widened by the wrong shift', 'minigpt2/safetensors.py',
     '<< 16',
     '<< 8',
     'tests/test_load.py'),
    ('355M with 12 layers', 'minigpt2/config.py',
     '"355M": GPT2Config(n_embd=1024, n_head=16, n_layer=24)',
     '"355M": GPT2Config(n_embd=1024, n_head=16, n_layer=12)',
     'tests/test_model.py'),
    ("LAMBADA's target without its space", 'minigpt2/evaluate/zeroshot.py',
     'return " ".join(words[:-1]), " " + words[-1]',
     'return " ".join(words[:-1]), words[-1]',
     'tests/test_zeroshot.py'),
    ("the harness's context spaces left in the context", 'minigpt2/evaluate/zeroshot.py',
     '    if spaces:\n        context, continuation',
     '    if False:\n        context, continuation',
     'tests/test_zeroshot.py'),
    ('WikiText words counted after detokenizing', 'minigpt2/evaluate/zeroshot.py',
     'words = [len(re.split(r"\\s+", a)) for a in articles]',
     'words = [len(re.split(r"\\s+", wikitext_detokenize(a))) for a in articles]',
     'tests/test_zeroshot.py'),
    ("rolling windows without the last one's context", 'minigpt2/evaluate/loglikelihood.py',
     'out.append((end - max_len, end + 1, predicted + 1))',
     'out.append((predicted, end + 1, predicted + 1))',
     'tests/test_zeroshot.py'),
]


def copy_of_repository(dest: Path) -> Path:
    """The package, its tests, scripts and docs copied under `dest` (the copy imports its own minigpt2: a
    directory on sys.path before the installed one), with ../shared beside it as beside the checkout."""
    root = dest / "repo"
    if (REPO.parent / "shared").is_dir():
        (dest / "shared").symlink_to(REPO.parent / "shared", target_is_directory=True)
    for part in ("minigpt2", "tests", "scripts", "docs", "notebooks", "README.md", "pyproject.toml"):
        src = REPO / part
        if src.is_dir():
            shutil.copytree(src, root / part, ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"))
        elif src.exists():
            shutil.copy2(src, root / part)
    return root


def tests_pass(root: Path, tests: list[str]) -> bool:
    """True if the tests pass in the copy at `root` (its own package imported, skips not counted as passes)."""
    env = dict(os.environ, PYTHONPATH=str(root), PYTHONDONTWRITEBYTECODE="1")
    r = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests], cwd=root,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    return r.returncode == 0


def run_mutants(chosen, whole_suite: bool = False) -> int:
    """Apply each chosen mutant (1-based numbers) in a copy of the repository and run its tests; the exit code."""
    survived = 0
    with tempfile.TemporaryDirectory(prefix="minigpt2-mutants-") as tmp:
        root = copy_of_repository(Path(tmp))
        for n in chosen:
            what, rel, old, new, tests = MUTANTS[n - 1]
            path = root / rel
            original = path.read_text(encoding="utf-8")
            if original.count(old) != 1:
                print(f"{n}. {what}: the original text is not in {rel} exactly once; re-aim this mutant")
                return 2
            start = time.perf_counter()
            try:
                path.write_text(original.replace(old, new), encoding="utf-8")
                passed = tests_pass(root, [] if whole_suite else tests.split())
            finally:
                path.write_text(original, encoding="utf-8")
            survived += passed
            print(f"{n}. {what:50} {'SURVIVED' if passed else 'killed':9} ({time.perf_counter() - start:.0f} s)",
                  flush=True)
    return 1 if survived else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-k", type=int, nargs="*", help="numbers of the mutants to run (default all)")
    p.add_argument("--whole-suite", action="store_true", help="run the whole suite against each mutant")
    args = p.parse_args(argv)
    return run_mutants(args.k or range(1, len(MUTANTS) + 1), args.whole_suite)


if __name__ == "__main__":
    sys.exit(main())
