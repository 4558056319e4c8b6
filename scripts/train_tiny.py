"""Train the bundled model `tiny` (minigpt2/tiny/) from English that ships with every Python, offline.

    python scripts/train_tiny.py                     # writes minigpt2/tiny/ (about 12 minutes on two cores)
    python scripts/train_tiny.py --out /tmp/tiny     # somewhere else

The text: Python's reference manual as `help()` shows it (pydoc_data.topics) and the docstrings of the
standard library's modules, classes and functions (tests left out), whitespace folded, one document each.
Both are Python's own documentation, under the PSF License Agreement, which allows redistributing derived
works with its notice (given in the model card this script writes).

The model: 4 blocks, 4 heads, 128 wide, a 128-token context and a 1,024-token byte-level BPE vocabulary
trained on the same text: under a million parameters, under 4 MB of float32. It writes English that reads
like Python's manual and knows little else; it is there so that every command and notebook works on a
machine without GPT-2's weights, not to be a good language model.
"""

from __future__ import annotations

import argparse
import ast
import json
import platform
import re
import shutil
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from minigpt2 import GPT2, Tokenizer
from minigpt2.train import TrainConfig, train

REPO = Path(__file__).resolve().parents[1]
VOCAB_SIZE = 1024
SHAPE = dict(n_layer=4, n_head=4, n_embd=128, block_size=128)
RECIPE = dict(batch_size=16, steps=3000, lr=2e-3, warmup_steps=60, eval_every=250, eval_batches=16,
              save_every=500, seed=0, dropout=0.0)

# headings' underlines and tables' borders (----, ====, +---+): noise to a language model
RULES = re.compile(r"^[-=*~^+| \t]*[-=*~^]{3,}[-=*~^+| \t]*$", re.MULTILINE)


def fold(text: str) -> str:
    return " ".join(RULES.sub("", text).split())


def manual_topics() -> list[str]:
    """The reference manual's topics behind help() (pydoc_data), one document each."""
    from pydoc_data.topics import topics

    return [fold(topics[k]) for k in sorted(topics)]


def stdlib_docstrings() -> list[str]:
    """Every docstring of the standard library's own modules (tests and site-packages left out), one document
    per module: its docstrings in the order they appear."""
    root = Path(sysconfig.get_paths()["stdlib"])
    docs = []
    for path in sorted(root.rglob("*.py")):
        if {"test", "tests", "idle_test", "site-packages"} & set(path.relative_to(root).parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        strings = [ast.get_docstring(node) for node in ast.walk(tree)
                   if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
        text = "\n".join(fold(s) for s in strings if s and len(s.split()) >= 4)
        if text:
            docs.append(text)
    return docs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(REPO / "minigpt2" / "tiny"), help="where to write the model (default: "
                   "the package's minigpt2/tiny/)")
    p.add_argument("--steps", type=int, default=RECIPE["steps"], help=f"optimizer steps (default {RECIPE['steps']})")
    args = p.parse_args(argv)
    out = Path(args.out)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="minigpt2-tiny-") as work:
        work = Path(work)
        docs = manual_topics() + stdlib_docstrings()
        (work / "data").mkdir()
        for i, d in enumerate(docs):  # one .txt per document: the run joins them with <|endoftext|>
            (work / "data" / f"{i:05d}.txt").write_text(d, encoding="utf-8")
        chars = sum(len(d) for d in docs)
        print(f"{len(docs)} documents, {chars:,} characters", file=sys.stderr)
        tok = Tokenizer.train("\n".join(docs), VOCAB_SIZE)
        tok.save(work / "vocab")
        cfg = TrainConfig(data=str(work / "data"), out=str(work / "run"), init="scratch", tokenizer=str(work / "vocab"),
                          **SHAPE, **{**RECIPE, "steps": args.steps, "warmup_steps": min(RECIPE["warmup_steps"], args.steps)})
        model = train(cfg)
        log = [json.loads(line) for line in (work / "run" / "log.jsonl").read_text().splitlines()]
        val = [r["val_loss"] for r in log if "val_loss" in r]
        best = GPT2.from_pretrained(work / "run" / "best")  # the step with the lowest validation loss
        staged = work / "tiny"
        best.save(staged, tok)
        minutes = (time.perf_counter() - began) / 60
        (staged / "MODEL.md").write_text(model_card(best, tok, cfg, val, chars, len(docs), minutes), encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(staged, out)
    print(f"wrote {out}: {model}, validation loss {min(val):.3f}, {minutes:.1f} min", file=sys.stderr)
    return 0


def model_card(model: GPT2, tok: Tokenizer, cfg: TrainConfig, val: list[float], chars: int, docs: int,
               minutes: float) -> str:
    c = model.config
    return f"""# tiny: the model that ships with minigpt2

`GPT2.from_pretrained("tiny")`, `Tokenizer.from_pretrained("tiny")`, `--model tiny` / `--init tiny` /
`--tokenizer tiny`. A small GPT-2 ({c.n_layer} blocks, {c.n_head} heads, {c.n_embd} wide, a {c.n_ctx}-token context,
a {c.n_vocab}-token vocabulary; {model.num_params:,} parameters) so that minigpt2 works on a machine without GPT-2's
weights. It writes English that reads like Python's manual and knows little else.

- Data: Python {platform.python_version()}'s own documentation, {docs:,} documents, {chars:,} characters: the
  reference manual's topics behind `help()` (`pydoc_data.topics`) and the standard library's docstrings
  (tests left out), whitespace folded.
- Vocabulary: `Tokenizer.train` on the same text, {tok.n_vocab} ids (GPT-2's pre-tokenizer; `<|endoftext|>` last).
- Training: `scripts/train_tiny.py`, from scratch: {cfg.steps} steps of {cfg.batch_size} x {cfg.block_size} tokens,
  AdamW at {cfg.lr:g} with warmup and cosine decay, seed {cfg.seed}; the model kept is the one with the lowest
  validation loss ({min(val):.3f} nats per token on the last 10% of the tokens). {minutes:.0f} minutes on two cores.
- Licence: the training text is Python's documentation, Copyright (c) 2001 Python Software Foundation; All
  Rights Reserved, used under the PSF License Agreement (https://docs.python.org/3/license.html), which allows
  derived works. The weights are released with minigpt2 under the MIT licence.
"""


if __name__ == "__main__":
    sys.exit(main())
