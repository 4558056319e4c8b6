"""The bundled `tiny` model's zero-shot figures on the three benchmarks, whole, written to
docs/figures/zeroshot_tiny.json (which docs/results.md quotes; tests/test_figures.py checks the quotes).

    python scripts/zeroshot_tiny.py [--data ../shared/data/eval] [--out docs/figures/zeroshot_tiny.json]

The data: LAMBADA's lambada_test.jsonl, WikiText-2's test file and HellaSwag's validation items, from --data
(the layout of ../shared/data/eval), else downloaded into the cache as `python -m minigpt2.evaluate` does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from minigpt2 import GPT2, Tokenizer  # noqa: E402
from minigpt2.evaluate.zeroshot import BENCHMARKS, zero_shot  # noqa: E402

FILES = {"lambada": "lambada_test.jsonl", "wikitext2": "wikitext-2/test.txt", "hellaswag": "hellaswag_val_full.txt.bz2"}


def machine() -> str:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    return "unknown CPU"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "eval"))
    p.add_argument("--out", default=str(REPO / "docs" / "figures" / "zeroshot_tiny.json"))
    args = p.parse_args()
    model, tok = GPT2.from_pretrained("tiny"), Tokenizer.from_pretrained("tiny")
    out = {"model": "tiny", "machine": machine(), "date": date.today().isoformat(), "results": {}}
    for task in BENCHMARKS:
        path = Path(args.data) / FILES[task]
        t0 = time.perf_counter()
        result = zero_shot(model, tok, task, path if path.exists() else None, progress=True)
        out["results"][task] = {"file": FILES[task] if path.exists() else "downloaded", **result.figures,
                                "seconds": round(time.perf_counter() - t0, 1)}
        print(task, out["results"][task], flush=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
