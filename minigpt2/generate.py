"""`python -m minigpt2.generate "prompt"`: continue a prompt from the command line.

    python -m minigpt2.generate "Alan Turing theorized that computers would" --max-new-tokens 40

This file is the command: flags in, text out. The decoding loop itself is decoding.py (GPT2.generate and
GPT2.stream from Python).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from .adapter import adapter_base
from .cli import Parser, command, fail, model_tokenizer, parse_in_one_process, read_prompt, some_model
from .config import ArgumentError
from .decoding import StopStrings, check_generation_args, generate, stream
from .download import DownloadError
from .tf_checkpoint import CheckpointError
from .tokenizer import Tokenizer
from .vocab import ENDOFTEXT


def generate_parser() -> argparse.ArgumentParser:
    p = Parser(prog="minigpt2-generate", description="Continue a prompt with GPT-2 (NumPy).")
    p.add_argument("prompt", help="text to continue; '-' reads it from standard input; '' samples unconditionally")
    p.add_argument("--model", default=None, help="124M, 355M, 774M, 1558M (or gpt2, gpt2-medium, ...), "
                   "downloaded once; tiny, the small model bundled with minigpt2; or a directory with OpenAI, Hugging "
                   "Face or minigpt2 files (default 124M, or tiny, saying so, when 124M is neither cached nor "
                   "downloadable)")
    p.add_argument("--adapter", default=None, metavar="DIR", help="a LoRA adapter (minigpt2's run directory or "
                   "PEFT's) on --model, by default the base its adapter_config.json names")
    p.add_argument("--max-new-tokens", type=int, default=100, help="tokens to generate (default 100)")
    p.add_argument("--temperature", type=float, default=None, help="softmax temperature; 0 = greedy (default 1, "
                   "and 0 with --num-beams)")
    p.add_argument("--top-k", type=int, default=None, help="sample from the k most likely tokens; 0 = all "
                   "(default 40)")
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling: the smallest set with mass >= p, "
                   "in (0, 1] (default: off)")
    p.add_argument("--repetition-penalty", type=float, default=None, help="> 1 discourages repeating tokens")
    p.add_argument("--min-p", type=float, default=None, help="keep tokens at least this share of the most likely "
                   "one's probability, in [0, 1] (default: off)")
    p.add_argument("--typical-p", type=float, default=None, help="locally typical sampling: the mass of the most "
                   "typical tokens kept, in (0, 1] (default: off)")
    p.add_argument("--no-repeat-ngram-size", type=int, default=None, help="never repeat an n-gram of this size "
                   "(prompt included) (default: off)")
    p.add_argument("--min-new-tokens", type=int, default=0, help="no <|endoftext|> before this many new tokens "
                   "(default 0)")
    p.add_argument("--stop", action="append", default=None, metavar="TEXT", help="end the text where it comes to "
                   "contain TEXT (printed up to and including it); may be given several times")
    p.add_argument("--num-beams", type=int, default=1, help="beam search with this many beams (deterministic; "
                   "default 1: none)")
    p.add_argument("--length-penalty", type=float, default=1.0, help="beam search: rank finished texts by score / "
                   "length ** this; > 0 favours longer ones (default 1)")
    p.add_argument("--early-stopping", choices=["false", "true", "never"], default="false", help="beam search: "
                   "stop when num-beams texts have ended (true), when no beam can still beat them (false, the "
                   "default), or judged at the longest length (never)")
    p.add_argument("--num-return-sequences", type=int, default=None, help="beam search: print this many of the "
                   "best texts, best first (default 1)")
    p.add_argument("--seed", type=int, default=None, help="random seed, for reproducible samples")
    p.add_argument("--num-samples", type=int, default=None, help="independent continuations (default 1)")
    p.add_argument("--no-stream", action="store_true", help="print when done instead of token by token")
    p.add_argument("--no-stop", action="store_true", help="keep going after <|endoftext|>")
    return p


@command
def generate_main(argv: list[str] | None = None) -> int:
    """`python -m minigpt2.generate "prompt"`: print GPT-2's continuation as it is produced."""
    parser = generate_parser()
    args = parse_in_one_process(parser, argv)
    try:  # the library's own checks, before the model loads (its tokenizer, which --stop needs, comes later)
        options = decoding_options(args)
        check_generation_args(args.max_new_tokens, **{k: v for k, v in options.items() if k != "stop_at_eot"},
                              tokenizer=Tokenizer)
    except ArgumentError as e:
        return fail("minigpt2-generate", e)
    # never a UnicodeEncodeError on a console that is not UTF-8: unprintable characters become "?"
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="replace")
    try:
        prompt = read_prompt(args.prompt)
        model, name = some_model("minigpt2-generate", adapter_base(args.model, args.adapter), args.adapter)
        tok = model_tokenizer("minigpt2-generate", name, model.config.n_vocab)
        eot_id = tok.special_tokens.get(ENDOFTEXT)
        if not prompt and eot_id is None:
            raise ValueError("an empty prompt starts after <|endoftext|>, which this vocabulary does not have")
        ids = tok.encode(prompt) if prompt else [eot_id]  # no prompt: start after <|endoftext|>, as OpenAI does
    except (OSError, ValueError, CheckpointError, DownloadError) as e:
        return fail("minigpt2-generate", e)
    options.update(eot_id=eot_id, tokenizer=tok if args.stop else None)
    try:
        print_continuations(model, tok, ids, args, options)
    except ArgumentError as e:  # checks that need the model (the memory a batch of samples takes)
        return fail("minigpt2-generate", e)
    except BrokenPipeError:  # the reader went away (e.g. `| head`): nothing more to say
        # subtle: point stdout at /dev/null, or Python's final flush at exit fails again and prints an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 0


def decoding_options(args: argparse.Namespace) -> dict:
    """The flags as `generate`'s keyword arguments. Sampling: --temperature 1 and --top-k 40 unless given.
    Beam search (--num-beams > 1): temperature 0 unless given, and the sampling flags only if given, so that
    the library names any that does not apply."""
    beams = args.num_beams != 1
    options = dict(temperature=(0.0 if beams else 1.0) if args.temperature is None else args.temperature,
                   repetition_penalty=args.repetition_penalty, no_repeat_ngram_size=args.no_repeat_ngram_size,
                   min_new_tokens=args.min_new_tokens, stop_at_eot=not args.no_stop, stop=args.stop,
                   num_beams=args.num_beams, length_penalty=args.length_penalty,
                   early_stopping={"false": False, "true": True, "never": "never"}[args.early_stopping],
                   num_return_sequences=args.num_return_sequences)
    sampling = dict(top_k=(None if beams else 40) if args.top_k is None else args.top_k or None, top_p=args.top_p,
                    min_p=args.min_p, typical_p=args.typical_p, seed=args.seed, num_samples=args.num_samples)
    return {**options, **({k: v for k, v in sampling.items() if v is not None} if beams else sampling)}


def print_continuations(model, tok: Tokenizer, ids: list[int], args: argparse.Namespace, options: dict) -> None:
    """Stream one continuation to stdout as it is made, or print several when they are done; with --stop,
    up to and including the stop string, never past it."""
    stops = StopStrings(args.stop, tok, 1, np.asarray(ids)) if args.stop else None
    if not options.get("num_samples") and options["num_beams"] == 1 and not args.no_stream:
        decoder = tok.stream_decoder()
        for i in stream(model, ids, args.max_new_tokens, **{k: v for k, v in options.items()
                                                           if k not in ("num_beams", "length_penalty",
                                                                        "early_stopping", "num_return_sequences")}):
            if i == options["eot_id"] and options["stop_at_eot"]:
                break  # the end of the text is not part of it (as generate() leaves it out)
            end = stops.push(0, int(i)) if stops else None
            sys.stdout.write(decoder.push(int(i)) if end is None else decoder.push_bytes(tok.token_bytes(int(i))[:end]))
            sys.stdout.flush()
            if end is not None:
                break
        sys.stdout.write(decoder.flush() + "\n")
        sys.stdout.flush()  # inside the caller's try: a closed pipe shows up here, not at exit
        return
    texts = generate(model, ids, args.max_new_tokens, progress=True, **options)
    several = options.get("num_samples") or options.get("num_return_sequences")
    what = "beam" if options["num_beams"] > 1 else "sample"
    for n, new in enumerate(texts if several else [texts], start=1):
        if several and several > 1:
            print(f"{'=' * 30} {what} {n} {'=' * 30}")
        text = tok.decode(new) if not stops else StopStrings(args.stop, tok, 1, np.asarray(ids)).through_stop(new)
        print(text if isinstance(text, str) else text.decode("utf-8", "replace"), flush=True)


if __name__ == "__main__":
    sys.exit(generate_main())
