"""Does the test suite catch these one-line bugs? Apply each, run the suite, restore the file.

    python scripts/check_mutants.py            # every mutant, the whole suite after each (stops at a failure)
    python scripts/check_mutants.py -k 3 7     # only mutants 3 and 7

Each mutant is a change a real edit could make, and each causes visible wrong behaviour. A mutant that the
suite lets pass ("SURVIVED") names a behaviour no test pins down. Run it from a checkout whose package is
the one Python imports (an editable install of this checkout), with nothing else editing the files.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# (what it breaks, file, the exact original text, the mutated text)
MUTANTS = [
    ("top_p = 1.0 rejected", "minigpt2/sample.py",
     "if top_p is not None and not 0 < top_p <= 1:", "if top_p is not None and not 0 < top_p < 1:"),
    ("stream runs on after every sample ended", "minigpt2/generate.py",
     "if done.all() or step == max_new_tokens - 1:", "if step == max_new_tokens - 1:"),
    ("every sample penalised with sample 0's history", "minigpt2/generate.py",
     "for row, ctx in zip(logits, context)]", "for row, ctx in zip(logits, [context[0]] * len(context))]"),
    ("BPE training decrements pair counts by 1", "minigpt2/tokenizer.py",
     "                counts[p] -= f\n", "                counts[p] -= 1\n"),
    ("a short 206 is taken as complete", "minigpt2/download.py",
     "    return size == total\n", "    return size <= total\n"),
    ("an untied Hugging Face lm_head is accepted", "minigpt2/load.py",
     'if head is not None and "wte" in flat and not np.array_equal(head, flat["wte"]):', "if False:"),
    ("bfloat16 widened by the wrong shift", "minigpt2/safetensors.py", "<< 16", "<< 8"),
    ("355M with 12 layers", "minigpt2/config.py",
     '"355M": GPT2Config(n_embd=1024, n_head=16, n_layer=24)', '"355M": GPT2Config(n_embd=1024, n_head=16, n_layer=12)'),
]


def run_suite() -> bool:
    """True if the suite passes."""
    r = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider"], cwd=REPO,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return r.returncode == 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-k", type=int, nargs="*", help="numbers of the mutants to run (default all)")
    args = p.parse_args(argv)
    chosen = args.k or range(1, len(MUTANTS) + 1)
    survived = 0
    for n in chosen:
        what, rel, old, new = MUTANTS[n - 1]
        path = REPO / rel
        original = path.read_text(encoding="utf-8")
        if original.count(old) != 1:
            print(f"{n}. {what}: the original text is not in {rel} exactly once; update this script")
            return 2
        start = time.perf_counter()
        try:
            path.write_text(original.replace(old, new), encoding="utf-8")
            passed = run_suite()
        finally:
            path.write_text(original, encoding="utf-8")
        survived += passed
        print(f"{n}. {what:50} {'SURVIVED' if passed else 'killed':9} ({time.perf_counter() - start:.0f} s)",
              flush=True)
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
