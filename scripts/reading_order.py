"""docs/reading.md's table, its line counts taken from the files as they are now.

    python scripts/reading_order.py          # rewrite the table in docs/reading.md
    python scripts/reading_order.py --check  # exit 1 if the table is out of date (tests/test_structure.py)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "reading.md"

# (file, what to read it for); the first read, in the order the data flows
ORDER = [
    ("minigpt2/vocab.py", "OpenAI's two vocabulary files: bytes shown as printable characters, merges in rank order"),
    ("minigpt2/tokenizer.py", "text -> ids and back: the pre-tokenizer, BPE (`bpe_reference` first), special tokens"),
    ("minigpt2/config.py", "the four sizes: n_vocab, n_ctx, n_embd, n_head, n_layer"),
    ("minigpt2/params.py", "the parameters' names and shapes, as OpenAI's checkpoint names them; initialisation"),
    ("minigpt2/ops.py", "one function per equation: GELU, softmax, layer norm, linear, cross-entropy"),
    ("minigpt2/model.py", "ids -> logits: attention, the MLP, the block, the KV cache"),
    ("minigpt2/sample.py", "logits -> the next id: temperature, top-k, top-p and the other processors"),
    ("minigpt2/decoding.py", "the generation loop: prefill, one token at a time through the cache"),
    ("minigpt2/backward.py", "the forward mirrored: the gradient of the loss, block by block"),
    ("minigpt2/optim.py", "AdamW, gradient clipping, the learning-rate schedule"),
    ("minigpt2/gpt2.py", "GPT2, the object a notebook holds: everything above behind a few methods"),
]
START, END = "<!-- reading-order -->", "<!-- /reading-order -->"


def table() -> str:
    rows = ["| # | file | lines | read it for |", "| --- | --- | --- | --- |"]
    total = 0
    for n, (path, what) in enumerate(ORDER, 1):
        lines = len((REPO / path).read_text(encoding="utf-8").splitlines())
        total += lines
        rows.append(f"| {n} | [`{path.removeprefix('minigpt2/')}`](../{path}) | {lines:,} | {what} |")
    rows.append(f"| | | {total:,} | in all |")
    whole = sum(len(f.read_text(encoding="utf-8").splitlines()) for f in (REPO / "minigpt2").rglob("*.py"))
    rows.append(f"| | the whole package | {whole:,} | for comparison |")
    return "\n".join(rows)


def rewritten(page: str) -> str:
    before, rest = page.split(START, 1)
    _, after = rest.split(END, 1)
    return f"{before}{START}\n{table()}\n{END}{after}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true")
    args = p.parse_args(argv)
    page = PAGE.read_text(encoding="utf-8")
    new = rewritten(page)
    if args.check:
        return 0 if new == page else 1
    PAGE.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
