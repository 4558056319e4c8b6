"""text -> negative log-likelihood, perplexity, bits per byte: how well a model predicts a text, and
`python -m minigpt2.evaluate FILE --model M`.

The rule (the numbers people compare depend on every part of it):

    s = [<|endoftext|>] + the text's N tokens          positions 0..N; positions 1..N are scored, each once
    window k = s[begin : end], begin = k * stride, end = min(begin + context + 1, N + 1)
        the model reads the window's first `context` tokens (or all but the last, at the end of s) and scores
        positions max(previous window's end, begin + 1) .. end - 1, each conditioned on the window's tokens
        before it; windows are taken until one reaches the end of s.

So the first token is conditioned on <|endoftext|> alone (as lm-evaluation-harness's rolling log-likelihood
does for GPT-2); `stride == context` gives disjoint inputs (lm-evaluation-harness's windows), a smaller stride
gives every scored token at least context - stride tokens of context; a text of exactly `context` tokens is
one window. Defaults: context = the model's n_ctx, stride = context // 2.

    NLL per token = total NLL / N,   perplexity = exp(NLL per token),   bits per byte = total NLL / ln 2 / bytes

where bytes counts the text's UTF-8 bytes. Windows run batched; only the scored positions' logits are made.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
from tqdm import tqdm

from .backward import lm_head_and_loss
from .checkpoint import CheckpointError
from .download import DownloadError
from .generate import EOT_ID, Parser
from .load import load_model
from .model import transformer
from .tokenizer import Tokenizer
from .vocab import ENDOFTEXT

@dataclass(frozen=True)
class Score:
    """What `evaluate` measured."""

    nll: float  # total negative log-likelihood of the scored tokens, in nats
    tokens: int  # tokens scored (every token of the text)
    bytes: int | None = None  # UTF-8 bytes of the text, when the text is known

    @property
    def nll_per_token(self) -> float:
        return self.nll / self.tokens

    @property
    def perplexity(self) -> float:
        return math.exp(self.nll_per_token)

    @property
    def bits_per_byte(self) -> float | None:
        return None if not self.bytes else self.nll / math.log(2) / self.bytes


def windows(n_tokens: int, context: int, stride: int) -> list[tuple[int, int, int]]:
    """The rule's windows over s = [eot] + n_tokens ids: (begin, end, first scored position) each.

    >>> windows(6, context=4, stride=2)  # s has 7 positions; 1..6 are scored once each
    [(0, 5, 1), (2, 7, 5)]
    """
    out, prev_end, begin = [], 0, 0
    while prev_end < n_tokens + 1:
        end = min(begin + context + 1, n_tokens + 1)
        out.append((begin, end, max(prev_end, begin + 1)))
        prev_end, begin = end, begin + stride
    return out


def evaluate(model, ids=None, *, text: str | None = None, tokenizer: Tokenizer | None = None,
             context: int | None = None, stride: int | None = None, batch_size: int = 8, eot_id: int | None = None,
             progress: bool = False) -> Score:
    """Score a text's tokens under `model` (a GPT2: anything with .config and .params) by the module's rule.

    Give `ids`, or `text` and a `tokenizer` (then bits per byte is known too). The end-of-text id comes from
    the tokenizer, else `eot_id`, else GPT-2's 50256.
    """
    config = model.config
    if text is not None:
        if tokenizer is None:
            raise ValueError("evaluate(text=...) needs the tokenizer that goes with the model")
        ids = tokenizer.encode(text)
        eot_id = tokenizer.special_tokens.get(ENDOFTEXT, eot_id)
    if ids is None:
        raise ValueError("evaluate needs ids, or text and a tokenizer")
    eot_id = eot_id if eot_id is not None else EOT_ID
    context = config.n_ctx if context is None else context
    stride = context // 2 if stride is None else stride
    if isinstance(context, bool) or not isinstance(context, int) or not 1 <= context <= config.n_ctx:
        raise ValueError(f"context must be an integer in [1, n_ctx = {config.n_ctx}], got {context!r}")
    if isinstance(stride, bool) or not isinstance(stride, int) or not 1 <= stride <= context:
        raise ValueError(f"stride must be an integer in [1, context = {context}], got {stride!r}")
    ids = np.asarray(ids)
    if ids.ndim != 1 or ids.size == 0 or ids.dtype == bool or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"ids must be a non-empty 1-D sequence of integers, got shape {ids.shape} of {ids.dtype}")
    s = np.concatenate([[eot_id], ids.astype(np.int64)])  # [N + 1]
    outside = (s < 0) | (s >= config.n_vocab)
    if outside.any():
        raise ValueError(f"token id {s[outside][0]} is outside the vocabulary [0, {config.n_vocab})"
                         + (" (the end-of-text id; pass the model's tokenizer or eot_id)" if outside[0] else ""))
    spans = windows(len(s) - 1, context, stride)
    total = 0.0
    with tqdm(total=len(spans), desc="evaluating", unit="window", disable=not progress, leave=False) as bar:
        # windows of one length run together; only the last window of s can be shorter
        for i in range(0, len(spans), batch_size):
            group = spans[i : i + batch_size]
            for length in sorted({end - begin for begin, end, _ in group}):
                same = [w for w in group if w[1] - w[0] == length]
                total += score_windows(s, same, model)
            bar.update(len(group))
    n = len(s) - 1
    return Score(nll=total, tokens=n, bytes=len(text.encode("utf-8")) if text is not None else None)


def score_windows(s: np.ndarray, spans: list[tuple[int, int, int]], model) -> float:
    """Total NLL of the scored positions of windows of one length, as one batch."""
    inputs = np.stack([s[begin : end - 1] for begin, end, _ in spans])  # [B, T]: all but each window's last token
    targets = np.stack([s[begin + 1 : end] for begin, end, _ in spans])  # [B, T]: the next token at each position
    scored = np.stack([np.arange(begin + 1, end) >= first for begin, end, first in spans])  # [B, T]
    targets[~scored] = -1  # positions an earlier window scored: no loss here (as in training)
    h = transformer(inputs, model.params, model.config)  # [B, T, C]
    mean, _, _ = lm_head_and_loss(h, model.params["wte"], targets, backward=False)  # only scored rows get logits
    return mean * int(scored.sum())


# --- the command line -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """`python -m minigpt2.evaluate FILE ... --model M`: each file's tokens, NLL per token, perplexity, bits/byte."""
    p = Parser(prog="minigpt2-evaluate", description="Perplexity and bits per byte of text files under GPT-2.")
    p.add_argument("files", nargs="+", metavar="FILE", help="UTF-8 text files")
    p.add_argument("--model", default="124M", help="124M, ..., or a model directory (default 124M)")
    p.add_argument("--context", type=int, default=None, help="tokens the model reads per window (default n_ctx)")
    p.add_argument("--stride", type=int, default=None, help="tokens between window starts (default context // 2)")
    p.add_argument("--batch-size", type=int, default=8, help="windows per forward pass (default 8)")
    p.add_argument("--json", action="store_true", help="one JSON object per file: file, tokens, nll (per token), "
                   "total_nll, perplexity, bits_per_byte, bytes")
    args = p.parse_args(argv)
    err = sys.stderr
    try:
        texts = [read_text(f) for f in args.files]
        if args.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
        config, params = load_model(args.model)
        model = SimpleNamespace(config=config, params=params)  # what evaluate reads of a GPT2
        context = config.n_ctx if args.context is None else args.context
        if not 1 <= context <= config.n_ctx:
            raise ValueError(f"--context {context} must be in [1, the model's n_ctx = {config.n_ctx}]")
        stride = context // 2 if args.stride is None else args.stride
        if not 1 <= stride <= context:
            raise ValueError(f"--stride {stride} must be in [1, --context = {context}]")
        tok = Tokenizer.from_pretrained(args.model)
    except (OSError, ValueError, CheckpointError, DownloadError) as e:
        print(f"minigpt2-evaluate: error: {e}", file=err)
        return 2
    for path, text in zip(args.files, texts):
        score = evaluate(model, text=text, tokenizer=tok, context=context, stride=stride, batch_size=args.batch_size,
                         progress=True)
        if args.json:
            print(json.dumps({"file": path, "tokens": score.tokens, "nll": score.nll_per_token, "total_nll": score.nll,
                              "perplexity": score.perplexity, "bits_per_byte": score.bits_per_byte,
                              "bytes": score.bytes}), flush=True)
        else:
            print(f"{path}: {score.tokens} tokens, NLL {score.nll_per_token:.4f} nats/token, perplexity "
                  f"{score.perplexity:.3f}, {score.bits_per_byte:.4f} bits/byte", flush=True)
    return 0


def read_text(path: str) -> str:
    """A UTF-8 text file with something to score; errors name the file (and the bad byte)."""
    try:
        raw = open(path, "rb").read()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist") from None
    except IsADirectoryError:
        raise IsADirectoryError(f"{path} is a directory, not a text file") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text: byte 0x{raw[e.start]:02x} at byte offset {e.start} is "
                         "invalid") from None
    if not text:
        raise ValueError(f"{path} is empty: there is nothing to score")
    return text


if __name__ == "__main__":
    sys.exit(main())
