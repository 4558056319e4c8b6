"""`python -m minigpt2.evaluate FILE ... --model M`: the command line of evaluation (each text file's
perplexity, each task file's scores); the library is this package."""

from __future__ import annotations

import json
import sys

from ..adapter import adapter_base
from ..cli import Parser, adapted_model, command, fail, parse_in_one_process
from ..download import DownloadError
from ..tasks import TaskFileError, is_task_file, read_task_file
from ..tf_checkpoint import CheckpointError
from ..tokenizer import Tokenizer
from ..evaluate import check_batch_size, check_windows, evaluate, read_text, score_task_file


@command
def evaluate_main(argv: list[str] | None = None) -> int:
    """`python -m minigpt2.evaluate FILE ... --model M`: each text file's tokens, NLL per token, perplexity,
    bits/byte; each .jsonl task file's scores (score_task_file)."""
    p = Parser(prog="minigpt2-evaluate", description="Perplexity and bits per byte of text files, or the scores "
               "of .jsonl task files (NLL, exact match; accuracy for multiple choice), under GPT-2.")
    p.add_argument("files", nargs="+", metavar="FILE", help="UTF-8 text files, or .jsonl task files")
    p.add_argument("--model", default=None, help="124M, ..., or a model directory (default 124M)")
    p.add_argument("--adapter", default=None, metavar="DIR", help="a LoRA adapter on --model (default: the base "
                   "its adapter_config.json names)")
    p.add_argument("--context", type=int, default=None, help="tokens the model reads per window (default n_ctx)")
    p.add_argument("--stride", type=int, default=None, help="tokens between window starts (default context // 2)")
    p.add_argument("--batch-size", type=int, default=8, help="windows per forward pass (default 8)")
    p.add_argument("--json", action="store_true", help="one JSON object per file: file, tokens, nll (per token), "
                   "total_nll, perplexity, bits_per_byte, bytes, bits_per_char, chars; for a task file: file, "
                   "examples, tokens, nll, perplexity, exact_match, or file, examples, accuracy, accuracy_norm")
    args = parse_in_one_process(p, argv)
    err = sys.stderr
    try:
        texts = [read_task_file(f) if is_task_file(f) else read_text(f) for f in args.files]  # all good first
        check_batch_size(args.batch_size)
        name = adapter_base(args.model, args.adapter) or "124M"
        model = adapted_model(name, args.adapter)
        context, stride = check_windows(args.context, args.stride, model.config.n_ctx)  # before any scoring
        tok = Tokenizer.from_pretrained(name)
    except (OSError, ValueError, CheckpointError, DownloadError) as e:
        return fail("minigpt2-evaluate", e)
    for path, text in zip(args.files, texts):
        if isinstance(text, list):  # a task file's rows
            try:
                scores = score_task_file(model, tok, text, args.batch_size, progress=True)
            except (TaskFileError, ValueError) as e:
                print(f"minigpt2-evaluate: error: {path} {e}", file=err)
                return 2
            if args.json:
                print(json.dumps({"file": path, **scores}), flush=True)
            elif "accuracy" in scores:
                print(f"{path}: {scores['examples']} examples, accuracy {scores['accuracy']:.4f}, accuracy_norm "
                      f"{scores['accuracy_norm']:.4f}", flush=True)
            else:
                print(f"{path}: {scores['examples']} examples, {scores['tokens']} scored tokens, NLL "
                      f"{scores['nll']:.4f} nats/token, perplexity {scores['perplexity']:.3f}, exact match "
                      f"{scores['exact_match']:.4f}", flush=True)
            continue
        score = evaluate(model, text=text, tokenizer=tok, context=context, stride=stride, batch_size=args.batch_size,
                         progress=True)
        if args.json:
            print(json.dumps({"file": path, "tokens": score.tokens, "nll": score.nll_per_token, "total_nll": score.nll,
                              "perplexity": score.perplexity, "bits_per_byte": score.bits_per_byte,
                              "bytes": score.bytes, "bits_per_char": score.bits_per_char, "chars": score.chars}),
                  flush=True)
        else:
            print(f"{path}: {score.tokens} tokens, NLL {score.nll_per_token:.4f} nats/token, perplexity "
                  f"{score.perplexity:.3f}, {score.bits_per_byte:.4f} bits/byte, {score.bits_per_char:.4f} bits/char",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(evaluate_main())
