"""prompt ids -> new ids, one at a time: the generation loop (model -> sample -> feed back), and the CLI

    python -m minigpt2.generate "Alan Turing theorized that computers would" --max-new-tokens 40

Each step runs only the newest token through the model, reading the earlier positions' keys and values
from the KV cache, and computes logits for that position alone.

Context overflow: GPT-2 has learned positions 0 .. n_ctx-1 only. A prompt longer than n_ctx keeps its last
n_ctx tokens. When prompt + new tokens fill the window, it slides: the last n_ctx // 2 tokens are encoded
again from position 0 into a fresh cache and generation goes on from there. Positions are never reused or
shifted inside a cache; the model simply forgets what slid out of the window.
"""

from __future__ import annotations

import argparse
import os
import sys
from types import SimpleNamespace
from typing import Iterator

import numpy as np
from tqdm import tqdm

from .download import DownloadError
from .load import load_model
from .model import KVCache, check_ids, gpt2
from .sample import apply_repetition_penalty, check_sampling_args, sample
from .tf_checkpoint import CheckpointError
from .tokenizer import Tokenizer
from .vocab import ENDOFTEXT

EOT_ID = 50256  # GPT-2's <|endoftext|>


def default_eot_id(model) -> int | None:
    """GPT-2's <|endoftext|> id if the model's vocabulary has room for it; a model trained on another
    vocabulary is given its own (`Tokenizer.eot_id`) by the caller."""
    return EOT_ID if model.config.n_vocab > EOT_ID else None


def stream(model, ids, max_new_tokens: int, *, temperature: float = 1.0, top_k: int | None = None,
           top_p: float | None = None, repetition_penalty: float | None = None, seed: int | None = None,
           stop_at_eot: bool = True, num_samples: int | None = None, eot_id: int | None = None,
           ) -> Iterator[np.ndarray]:
    """Yield new ids as they are made: an int array [] (one sample) or [num_samples] per step.

    `model` is a GPT2 (anything with .config and .params). Stops after `max_new_tokens` steps, or when every
    sample has produced the end-of-text id `eot_id` (default GPT-2's 50256) if `stop_at_eot`; a sample that
    has finished keeps yielding it.
    """
    # every check happens here, so that bad arguments fail at the call rather than at the first step
    check_sampling_args(temperature, top_k, top_p, repetition_penalty)
    if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be a non-negative integer, got {max_new_tokens!r}")
    prompt = np.asarray(ids)
    if prompt.ndim != 1 or prompt.size == 0:
        raise ValueError(f"the prompt must be a non-empty 1-D sequence of ids, got shape {prompt.shape}")
    if num_samples is not None and (not isinstance(num_samples, (int, np.integer)) or num_samples < 1):
        raise ValueError(f"num_samples must be a positive integer or None, got {num_samples!r}")
    check_ids(prompt[-model.config.n_ctx:], model.config, None)
    outside = (prompt < 0) | (prompt >= model.config.n_vocab)  # every id, also those a long prompt drops
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise ValueError(f"token id {prompt[i]} at prompt position {i} is outside the vocabulary "
                         f"[0, {model.config.n_vocab})")
    eot_id = default_eot_id(model) if eot_id is None else eot_id
    if eot_id is not None and not 0 <= eot_id < model.config.n_vocab:
        raise ValueError(f"eot_id {eot_id} is outside the vocabulary [0, {model.config.n_vocab})")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
        raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
    return _steps(model, prompt, max_new_tokens, temperature, top_k, top_p, repetition_penalty,
                  np.random.default_rng(seed), stop_at_eot and eot_id is not None, num_samples,
                  -1 if eot_id is None else eot_id)


def _steps(model, prompt: np.ndarray, max_new_tokens: int, temperature: float, top_k: int | None,
           top_p: float | None, repetition_penalty: float | None, rng: np.random.Generator, stop_at_eot: bool,
           num_samples: int | None, eot_id: int) -> Iterator[np.ndarray]:
    """The loop itself (see `stream`)."""
    n_ctx = model.config.n_ctx
    batch = num_samples or 1
    context = np.repeat(prompt[None, -n_ctx:], batch, axis=0)  # [B, T]: every sample's tokens so far
    done = np.zeros(batch, dtype=bool)
    cache, logits = prefill(model, context)  # logits [B, V]
    for step in range(max_new_tokens):
        if repetition_penalty not in (None, 1.0):
            logits = np.stack([apply_repetition_penalty(row, ctx, repetition_penalty)
                               for row, ctx in zip(logits, context)])
        next_ids = sample(logits, rng, temperature, top_k, top_p)  # [B]
        next_ids = np.where(done, eot_id, next_ids)
        done |= stop_at_eot & (next_ids == eot_id)
        yield next_ids if num_samples else next_ids[0]
        if done.all() or step == max_new_tokens - 1:
            return
        context = np.concatenate([context, next_ids[:, None]], axis=1)  # [B, T+1]
        if cache.length == n_ctx:  # the window is full: slide it
            cache, logits = prefill(model, context[:, -(n_ctx // 2):])
        else:
            logits = gpt2(next_ids[:, None], model.params, model.config, cache)[:, -1]  # [B, 1] -> [B, V]


def prefill(model, context: np.ndarray) -> tuple[KVCache, np.ndarray]:
    """Run the prompt [B, T] (T <= n_ctx) into a fresh cache; return it and the last position's logits [B, V]."""
    cache = KVCache(model.config, batch_size=context.shape[0])
    logits = gpt2(context, model.params, model.config, cache, last_only=True)  # [B, 1, V]
    return cache, logits[:, -1]


def generate(model, ids, max_new_tokens: int, *, num_samples: int | None = None, progress: bool = False,
             eot_id: int | None = None, **kwargs) -> list[int] | list[list[int]]:
    """The new ids (without the prompt, and without the final <|endoftext|>): a list, or one per sample."""
    steps = stream(model, ids, max_new_tokens, num_samples=num_samples, eot_id=eot_id, **kwargs)
    rows = [np.atleast_1d(s) for s in tqdm(steps, total=max_new_tokens, desc="generating", unit="tok",
                                           disable=not progress, leave=False)]
    out = np.stack(rows, axis=1).tolist() if rows else [[] for _ in range(num_samples or 1)]  # [B, steps]
    eot_id = default_eot_id(model) if eot_id is None else eot_id
    if kwargs.get("stop_at_eot", True) and eot_id is not None:
        out = [row[: row.index(eot_id)] if eot_id in row else row for row in out]
    return out if num_samples else out[0]


# --- the command line -----------------------------------------------------------------------------


class Parser(argparse.ArgumentParser):
    """argparse for minigpt2's command lines: a bad flag is one line and exit code 2, not usage + message."""

    def error(self, message: str):
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="minigpt2-generate", description="Continue a prompt with GPT-2 (NumPy).")
    p.add_argument("prompt", help="text to continue; '-' reads it from standard input; '' samples unconditionally")
    p.add_argument("--model", default="124M", help="124M, 355M, 774M, 1558M (or gpt2, gpt2-medium, ...), "
                   "downloaded once; or a directory with OpenAI, Hugging Face or converted files (default 124M)")
    p.add_argument("--max-new-tokens", type=int, default=100, help="tokens to generate (default 100)")
    p.add_argument("--temperature", type=float, default=1.0, help="softmax temperature; 0 = greedy (default 1)")
    p.add_argument("--top-k", type=int, default=40, help="sample from the k most likely tokens; 0 = all (default 40)")
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling: the smallest set with mass >= p, "
                   "in (0, 1] (default: off)")
    p.add_argument("--repetition-penalty", type=float, default=None, help="> 1 discourages repeating tokens")
    p.add_argument("--seed", type=int, default=None, help="random seed, for reproducible samples")
    p.add_argument("--num-samples", type=int, default=1, help="independent continuations (default 1)")
    p.add_argument("--no-stream", action="store_true", help="print when done instead of token by token")
    p.add_argument("--no-stop", action="store_true", help="keep going after <|endoftext|>")
    return p


def main(argv: list[str] | None = None) -> int:
    """`python -m minigpt2.generate "prompt"`: print GPT-2's continuation as it is produced."""
    args = build_parser().parse_args(argv)
    err = sys.stderr
    try:
        check_sampling_args(args.temperature, args.top_k or None, args.top_p, args.repetition_penalty)
        if args.max_new_tokens < 0 or args.num_samples < 1:
            raise ValueError("--max-new-tokens must be >= 0 and --num-samples >= 1")
        if args.seed is not None and args.seed < 0:
            raise ValueError(f"--seed must be a non-negative integer, got {args.seed}")
    except ValueError as e:
        print(f"minigpt2-generate: error: {str(e).replace('top_p', '--top-p').replace('top_k', '--top-k')}", file=err)
        return 2
    # never a UnicodeEncodeError on a console that is not UTF-8: unprintable characters become "?"
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="replace")
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    try:
        config, params = load_model(args.model)
        model = SimpleNamespace(config=config, params=params)  # what the loop reads of a GPT2
        tok = model_tokenizer(args.model, config.n_vocab)
        eot_id = tok.special_tokens.get(ENDOFTEXT)
        if not prompt and eot_id is None:
            raise ValueError("an empty prompt starts after <|endoftext|>, which this vocabulary does not have")
        ids = tok.encode(prompt) if prompt else [eot_id]  # no prompt: start after <|endoftext|>, as OpenAI does
    except (OSError, ValueError, CheckpointError, DownloadError) as e:
        print(f"minigpt2-generate: error: {e}", file=err)
        return 2
    options = dict(temperature=args.temperature, top_k=args.top_k or None, top_p=args.top_p,
                   repetition_penalty=args.repetition_penalty, seed=args.seed, stop_at_eot=not args.no_stop,
                   eot_id=eot_id)
    try:
        print_continuations(model, tok, ids, args, options)
    except KeyboardInterrupt:  # Ctrl-C: stop quietly, as a shell tool does
        print(file=err)
        return 130
    except BrokenPipeError:  # the reader went away (e.g. `| head`): nothing more to say
        # subtle: point stdout at /dev/null, or Python's final flush at exit fails again and prints an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 0


def model_tokenizer(model: str, n_vocab: int) -> Tokenizer:
    """The model's own vocabulary; for a directory without one, GPT-2's if the sizes fit (saying so)."""
    try:
        return Tokenizer.from_pretrained(model)
    except FileNotFoundError:
        if not os.path.isdir(model) or n_vocab != EOT_ID + 1:
            raise
    print(f"minigpt2-generate: {model} holds no vocabulary; using GPT-2's (save the model with its tokenizer, "
          "model.save(dir, tokenizer), to keep its own)", file=sys.stderr)
    return Tokenizer.from_pretrained("124M")


def print_continuations(model, tok: Tokenizer, ids: list[int], args: argparse.Namespace, options: dict) -> None:
    """Stream one continuation to stdout as it is made, or print several when they are done."""
    if args.num_samples == 1 and not args.no_stream:
        decoder = tok.stream_decoder()
        for i in stream(model, ids, args.max_new_tokens, **options):
            if i == options["eot_id"] and options["stop_at_eot"]:
                break  # the end of the text is not part of it (as generate() leaves it out)
            sys.stdout.write(decoder.push(int(i)))
            sys.stdout.flush()
        sys.stdout.write(decoder.flush() + "\n")
        sys.stdout.flush()  # inside the caller's try: a closed pipe shows up here, not at exit
        return
    samples = generate(model, ids, args.max_new_tokens, num_samples=args.num_samples, progress=True, **options)
    for n, new in enumerate(samples, start=1):
        if args.num_samples > 1:
            print(f"{'=' * 30} sample {n} {'=' * 30}")
        print(tok.decode(new), flush=True)


if __name__ == "__main__":
    sys.exit(main())
