"""`python -m minigpt2.evaluate FILE ... --model M`: the command line of evaluation (each text file's
perplexity, each task file's scores, the zero-shot benchmarks); the library is this package.

    python -m minigpt2.evaluate notes.txt --model my-run           perplexity, bits per byte
    python -m minigpt2.evaluate lambada --model 124M                a benchmark, its data downloaded once
    python -m minigpt2.evaluate test.jsonl --task lambada --limit 100 --log-samples out.jsonl
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ..adapter import adapter_base
from ..cli import Parser, adapted_model, command, fail, parse_in_one_process
from ..download import DownloadError
from ..files import write_atomically
from ..tasks import TaskFileError, is_task_file, read_task_file
from ..tf_checkpoint import CheckpointError
from ..tokenizer import Tokenizer
from ..evaluate import check_batch_size, check_windows, evaluate, read_text, score_task_file
from .datasets import fetch
from .zeroshot import BENCHMARKS, read_benchmark, score_benchmark

UNITS = {"lambada": "passages", "wikitext2": "articles", "hellaswag": "items"}


def parser() -> Parser:
    p = Parser(prog="minigpt2-evaluate", description="Perplexity and bits per byte of text files, the scores "
               "of .jsonl task files (NLL, exact match; accuracy for multiple choice), or GPT-2's zero-shot "
               "benchmarks (lambada, wikitext2, hellaswag) scored as lm-evaluation-harness scores them.")
    p.add_argument("files", nargs="+", metavar="FILE", help="UTF-8 text files, .jsonl task files, or a benchmark's "
                   f"name ({', '.join(BENCHMARKS)}: its published data, downloaded once)")
    p.add_argument("--task", default=None, metavar="|".join(BENCHMARKS), help="score each FILE as this benchmark's "
                   "data (LAMBADA's JSON lines; a WikiText file; HellaSwag's JSON lines or llama.cpp's layout)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="a benchmark's first N documents only")
    p.add_argument("--log-samples", default=None, metavar="OUT.jsonl", help="write one line per benchmark document: "
                   "task, doc_id, each continuation's loglikelihood, tokens and is_greedy, the gold answer")
    p.add_argument("--model", default=None, help="124M, ..., tiny, or a model directory (default 124M)")
    p.add_argument("--adapter", default=None, metavar="DIR", help="a LoRA adapter on --model (default: the base "
                   "its adapter_config.json names)")
    p.add_argument("--context", type=int, default=None, help="tokens the model reads per window (default n_ctx)")
    p.add_argument("--stride", type=int, default=None, help="tokens between window starts (default context // 2)")
    p.add_argument("--batch-size", type=int, default=8, help="rows per forward pass (default 8)")
    p.add_argument("--json", action="store_true", help="one JSON object per file: file, tokens, nll (per token), "
                   "total_nll, perplexity, bits_per_byte, bytes, bits_per_char, chars; for a task file: file, "
                   "examples, tokens, nll, perplexity, exact_match, or file, examples, accuracy, accuracy_norm; for "
                   "a benchmark: task, file and its figures (acc, perplexity, ..., n)")
    return p


def read_inputs(args) -> list[tuple[str, str, object]]:
    """(kind, path, what was read) per FILE, all read before any model is loaded: ("benchmark", path, (task,
    docs)), ("task file", path, rows) or ("text", path, text)."""
    if args.task is not None and args.task not in BENCHMARKS:
        raise ValueError(f"--task {args.task!r} is not a benchmark: the known ones are {', '.join(BENCHMARKS)}")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be a positive number of documents, got {args.limit}")
    out = []
    for f in args.files:
        task = args.task or (f if f in BENCHMARKS and not os.path.exists(f) else None)
        if task is not None:
            path = fetch(task) if args.task is None else f
            out.append(("benchmark", os.fspath(path), (task, read_benchmark(task, path, args.limit))))
        elif not os.path.exists(f) and os.sep not in f and "." not in f:
            raise ValueError(f"{f} is neither a file nor a benchmark (the benchmarks: {', '.join(BENCHMARKS)})")
        elif is_task_file(f):
            out.append(("task file", f, read_task_file(f)))
        else:
            out.append(("text", f, read_text(f)))
    kinds = {kind for kind, _, _ in out}
    if "benchmark" not in kinds and (args.limit is not None or args.log_samples is not None):
        raise ValueError(f"--{'limit' if args.limit is not None else 'log-samples'} applies to benchmarks (lambada, "
                         "wikitext2, hellaswag, or a FILE with --task)")
    return out


@command
def evaluate_main(argv: list[str] | None = None) -> int:
    """`python -m minigpt2.evaluate FILE ... --model M`: each text file's tokens, NLL per token, perplexity,
    bits/byte; each .jsonl task file's scores (score_task_file); each benchmark's figures (zeroshot.py)."""
    args = parse_in_one_process(parser(), argv)
    try:
        inputs = read_inputs(args)  # all good first
        check_batch_size(args.batch_size)
        name = adapter_base(args.model, args.adapter) or "124M"
        model = adapted_model(name, args.adapter)
        context, stride = check_windows(args.context, args.stride, model.config.n_ctx)  # before any scoring
        tok = Tokenizer.from_pretrained(name)
        check_samples_path(args.log_samples)
    except (OSError, ValueError, CheckpointError, DownloadError) as e:
        return fail("minigpt2-evaluate", e)
    samples: list[str] = []  # --log-samples lines, written at the end, atomically
    for kind, path, read in inputs:
        if kind == "benchmark":
            report_benchmark(model, tok, path, *read, args, samples)
        elif kind == "task file":
            try:
                scores = score_task_file(model, tok, read, args.batch_size, progress=True)
            except (TaskFileError, ValueError) as e:
                print(f"minigpt2-evaluate: error: {path} {e}", file=sys.stderr)
                return 2
            report_task_file(path, scores, args.json)
        else:
            score = evaluate(model, text=read, tokenizer=tok, context=context, stride=stride,
                             batch_size=args.batch_size, progress=True)
            report_text(path, score, args.json)
    if args.log_samples is not None:
        data = "".join(samples).encode("utf-8")
        write_atomically(Path(args.log_samples), lambda f: f.write(data))
    return 0


def check_samples_path(path: str | None) -> None:
    """--log-samples names a file that can be written (checked before any scoring)."""
    if path is None:
        return
    if os.path.isdir(path):
        raise IsADirectoryError(f"--log-samples {path} is a directory, not a file")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        raise OSError(f"--log-samples {path}: cannot write there ({parent} is not a writable directory)")


def report_benchmark(model, tok, path: str, task: str, docs: list, args, samples) -> None:
    result = score_benchmark(model, tok, task, docs, args.batch_size, progress=True)
    truncated = result.figures.get("truncated", 0)
    if truncated:
        print(f"minigpt2-evaluate: {task}: {truncated} of {len(docs)} {UNITS[task]} are longer than the model's "
              f"context ({model.config.n_ctx} tokens) and were scored left-truncated, as the harness does",
              file=sys.stderr)
    samples.extend(json.dumps({"task": task, **s}, ensure_ascii=False) + "\n" for s in result.samples)
    if args.json:
        print(json.dumps({"task": task, "file": path, **result.figures}), flush=True)
        return
    shown = ", ".join(f"{k} {v:.4f}" for k, v in result.figures.items() if k not in ("n", "truncated"))
    print(f"{task}: {result.figures['n']} {UNITS[task]}, {shown}", flush=True)


def report_task_file(path: str, scores: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"file": path, **scores}), flush=True)
    elif "accuracy" in scores:
        print(f"{path}: {scores['examples']} examples, accuracy {scores['accuracy']:.4f}, accuracy_norm "
              f"{scores['accuracy_norm']:.4f}", flush=True)
    else:
        print(f"{path}: {scores['examples']} examples, {scores['tokens']} scored tokens, NLL "
              f"{scores['nll']:.4f} nats/token, perplexity {scores['perplexity']:.3f}, exact match "
              f"{scores['exact_match']:.4f}", flush=True)


def report_text(path: str, score, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"file": path, "tokens": score.tokens, "nll": score.nll_per_token, "total_nll": score.nll,
                          "perplexity": score.perplexity, "bits_per_byte": score.bits_per_byte,
                          "bytes": score.bytes, "bits_per_char": score.bits_per_char, "chars": score.chars}),
              flush=True)
    else:
        print(f"{path}: {score.tokens} tokens, NLL {score.nll_per_token:.4f} nats/token, perplexity "
              f"{score.perplexity:.3f}, {score.bits_per_byte:.4f} bits/byte, {score.bits_per_char:.4f} bits/char",
              flush=True)


if __name__ == "__main__":
    sys.exit(evaluate_main())
