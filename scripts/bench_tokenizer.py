"""Tokenizer throughput: minigpt2 (pure Python) vs tiktoken (Rust) vs transformers' GPT2Tokenizer.

    python scripts/bench_tokenizer.py [--corpus FILE] [--mb 4] [--reps 3] [--json]
    python scripts/bench_tokenizer.py --train zh/news-train.txt --val zh/news-val.txt [--vocab-size 8000]

The second form times vocabulary training instead: minigpt2's Tokenizer.train against Hugging Face tokenizers'
byte-level BPE trainer (Rust) on the same text, each in a fresh process one after the other, and compares the
tokens per character each vocabulary spends on the held-out text (the target: within 3x of its time, within
5% of its tokens per character).

The corpus is English prose + Python source (by default built from the Python standard library that is
installed, so it runs offline anywhere). Every minigpt2 run uses a fresh tokenizer: no cache warmed by an
earlier run over the same text. Repetitions alternate between the implementations; medians are reported.
Needs the reference extra: pip install -e ".[reference]".
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from minigpt2 import Tokenizer  # noqa: E402

TIKTOKEN_GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""


def default_corpus(megabytes: float) -> str:
    """English (the Python docs' topic texts and module docstrings) + Python source, about half each."""
    import ast
    import pydoc_data.topics

    english = list(pydoc_data.topics.topics.values())
    code = []
    stdlib = Path(os.__file__).parent
    for path in sorted(stdlib.glob("*.py")) + sorted(stdlib.glob("*/*.py")):
        source = path.read_text(encoding="utf-8", errors="replace")
        code.append(source)
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        english += [ast.get_docstring(n) or "" for n in ast.walk(tree)
                    if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef))]
        if sum(map(len, code)) > megabytes * 1e6 / 2 and sum(map(len, english)) > megabytes * 1e6 / 2:
            break
    half = int(megabytes * 1e6 / 2)
    return "\n\n".join(english)[:half] + "\n\n" + "".join(code)[:half]


def find_vocab_dir(given: str | None) -> Path:
    if given:
        return Path(given)
    shared = REPO.parent / "shared" / "data"
    if (shared / "encoder.json").is_file():
        return shared
    from minigpt2.download import VOCAB_FILES, download_openai_files

    return download_openai_files("124M", VOCAB_FILES)


def encoders(vocab_dir: Path) -> dict:
    """name -> function () -> (function text -> ids), for every implementation installed.

    The outer call happens before the clock starts: minigpt2 gets a new Tokenizer (an empty cache) every run.
    """
    out = {"minigpt2": lambda: Tokenizer.from_dir(vocab_dir).encode}
    try:
        import tiktoken
        from tiktoken.load import data_gym_to_mergeable_bpe_ranks

        ranks = data_gym_to_mergeable_bpe_ranks(str(vocab_dir / "vocab.bpe"), str(vocab_dir / "encoder.json"))
        enc = tiktoken.Encoding(name="gpt2", pat_str=TIKTOKEN_GPT2_PATTERN, mergeable_ranks=ranks,
                                special_tokens={"<|endoftext|>": 50256})
        out["tiktoken"] = lambda: enc.encode_ordinary
    except ImportError:
        print("tiktoken not installed (pip install -e '.[reference]'): skipped", file=sys.stderr)
    try:
        import transformers

        transformers.logging.set_verbosity_error()  # no "sequence longer than 1024" warning
        vocab = json.loads((vocab_dir / "encoder.json").read_text(encoding="utf-8"))
        lines = (vocab_dir / "vocab.bpe").read_text(encoding="utf-8").split("\n")[1:]
        hf = transformers.GPT2Tokenizer(vocab=vocab, merges=[tuple(m.split(" ")) for m in lines if m])
        assert len(hf.get_vocab()) == 50257, "transformers built an incomplete vocabulary"
        out["transformers"] = lambda: hf.encode
    except ImportError:
        print("transformers not installed (pip install -e '.[reference]'): skipped", file=sys.stderr)
    return out


def measure(text: str, vocab_dir: Path, reps: int = 3) -> dict:
    """MB/s per implementation (median of `reps` alternating runs) and a check that all give the same ids."""
    fns = encoders(vocab_dir)
    mb = len(text.encode("utf-8")) / 1e6
    times: dict[str, list[float]] = {name: [] for name in fns}
    ids = {}
    for _ in range(reps):
        for name, make in fns.items():
            fn = make()
            t0 = time.perf_counter()
            ids[name] = fn(text)
            times[name].append(time.perf_counter() - t0)
    agree = all(v == ids["minigpt2"] for v in ids.values())
    return {
        "corpus_mb": round(mb, 3),
        "same_ids": agree,
        "mb_per_s": {n: round(mb / statistics.median(t), 2) for n, t in times.items()},
        "mb_per_s_range": {n: [round(mb / max(t), 2), round(mb / min(t), 2)] for n, t in times.items()},
    }


TRAIN_ONE = {
    "minigpt2": """
import sys, time
from minigpt2 import Tokenizer
text, val, size = open(sys.argv[1], encoding="utf-8").read(), open(sys.argv[2], encoding="utf-8").read(), int(sys.argv[3])
t0 = time.perf_counter(); tok = Tokenizer.train(text, size, progress=False); t = time.perf_counter() - t0
print(t, len(tok.encode(val)) / len(val), tok.n_vocab)
""",
    "tokenizers": """
import sys, time
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
text, val, size = open(sys.argv[1], encoding="utf-8").read(), open(sys.argv[2], encoding="utf-8").read(), int(sys.argv[3])
tok = Tokenizer(models.BPE()); tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()
trainer = trainers.BpeTrainer(vocab_size=size, special_tokens=["<|endoftext|>"], show_progress=False,
                              initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
t0 = time.perf_counter(); tok.train_from_iterator([text], trainer); t = time.perf_counter() - t0
print(t, len(tok.encode(val).ids) / len(val), tok.get_vocab_size())
""",
}


def measure_training(train: str, val: str, vocab_size: int, reps: int) -> dict:
    """Seconds (median) and tokens per character of each trainer, each run in a fresh process, alternating."""
    import subprocess

    seconds: dict[str, list[float]] = {name: [] for name in TRAIN_ONE}
    per_char, sizes = {}, {}
    for _ in range(reps):
        for name, code in TRAIN_ONE.items():
            out = subprocess.run([sys.executable, "-c", code, train, val, str(vocab_size)], capture_output=True,
                                 text=True, check=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
            t, c, n = out.stdout.split()
            seconds[name].append(float(t))
            per_char[name], sizes[name] = float(c), int(n)
    return {"vocab_size": vocab_size, "seconds": {n: round(statistics.median(t), 2) for n, t in seconds.items()},
            "seconds_range": {n: [round(min(t), 2), round(max(t), 2)] for n, t in seconds.items()},
            "tokens_per_char": {n: round(c, 4) for n, c in per_char.items()}, "ids": sizes}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--corpus", help="a UTF-8 text file (default: English + code from the Python stdlib)")
    p.add_argument("--mb", type=float, default=4.0, help="size of the default corpus in MB (default 4)")
    p.add_argument("--reps", type=int, default=3, help="alternating repetitions (default 3)")
    p.add_argument("--vocab", help="directory with encoder.json + vocab.bpe (default: ../shared/data or cache)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--train", help="time vocabulary training on this UTF-8 file instead (with --val)")
    p.add_argument("--val", help="held-out text for --train's tokens per character")
    p.add_argument("--vocab-size", type=int, default=8000, help="--train's vocabulary size (default 8000)")
    args = p.parse_args()
    if args.train:
        r = measure_training(args.train, args.val or args.train, args.vocab_size, args.reps)
        if args.json:
            print(json.dumps(r, indent=2))
            return 0
        secs, chars = r["seconds"], r["tokens_per_char"]
        print(f"vocabulary training at {args.vocab_size:,} ids on {args.train}; tokens per character on {args.val}")
        print(f"{'trainer':<12}{'seconds':>10}{'min-max':>16}{'tokens/char':>13}")
        for name in secs:
            lo, hi = r["seconds_range"][name]
            print(f"{name:<12}{secs[name]:>10.1f}{f'{lo:.1f}-{hi:.1f}':>16}{chars[name]:>13.3f}")
        ratio, fewer = secs["minigpt2"] / secs["tokenizers"], chars["minigpt2"] / chars["tokenizers"] - 1
        print(f"minigpt2 takes {ratio:.2f}x the time (target <= 3x) and {fewer:+.1%} tokens per character (target "
              "within 5%)")
        return 0 if ratio <= 3 and abs(fewer) <= 0.05 else 1
    text = Path(args.corpus).read_text(encoding="utf-8") if args.corpus else default_corpus(args.mb)
    r = measure(text, find_vocab_dir(args.vocab), args.reps)
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    speeds = r["mb_per_s"]
    print(f"corpus: {r['corpus_mb']} MB, identical ids from all implementations: {r['same_ids']}")
    print(f"{'tokenizer':<14}{'MB/s (median)':>14}{'min-max':>16}{'minigpt2 / this':>18}")
    for name, s in speeds.items():
        lo, hi = r["mb_per_s_range"][name]
        print(f"{name:<14}{s:>14.2f}{f'{lo:.2f}-{hi:.2f}':>16}{speeds['minigpt2'] / s:>17.2f}x")
    return 0 if r["same_ids"] else 1


if __name__ == "__main__":
    sys.exit(main())
