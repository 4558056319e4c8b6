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

A task file (`.jsonl`, see tasks.py) is scored per example instead (`score_task_file`):

    prompt + completion rows   nll = the mean NLL per scored token (tasks.py's rule: the completion and the
                               final <|endoftext|>), perplexity = exp(nll), exact_match = the share of
                               examples whose greedy continuation of at most len(completion ids) + 1 tokens,
                               cut at <|endoftext|>, decodes to exactly the completion
    prompt + choices + answer  accuracy = the share whose answer has the largest sum log P(choice | prompt);
                               accuracy_norm = the same with that sum divided by the choice's UTF-8 bytes
                               (lm-evaluation-harness's acc and acc_norm)

`log_likelihood(model, tokenizer, prompt, continuation)` is sum log P(continuation | prompt) alone, with no
end-of-text (lm-evaluation-harness's loglikelihood); an empty prompt is <|endoftext|>. A prompt longer than
the model's context keeps its last tokens; a continuation longer than the context itself is scored on its last
n_ctx tokens (loglikelihood.harness_row).

GPT-2's zero-shot benchmarks, `zero_shot(model, tokenizer, "lambada" | "wikitext2" | "hellaswag")`, are scored
as lm-evaluation-harness scores them: zeroshot.py (the protocols), datasets.py (the files and where they come
from), loglikelihood.py (the harness's two requests, batched).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from ..backward import lm_head_and_loss
from ..checks import is_whole
from ..config import ArgumentError
from ..decoding import greedy_continuations
from ..files import read_utf8
from ..model import transformer
from ..tasks import (
    TaskFileError,
    TaskRow,
    completion_nll,
    encode_examples,
    eot_id_of,
    read_task_file,
)
from ..tokenizer import Tokenizer
from ..vocab import ENDOFTEXT, EOT_ID
from .loglikelihood import check_batch_size, loglikelihoods
from .zeroshot import BENCHMARKS, Result, zero_shot  # noqa: F401  (the package's interface)


@dataclass(frozen=True)
class Score:
    """What `evaluate` measured."""

    nll: float  # total negative log-likelihood of the scored tokens, in nats
    tokens: int  # tokens scored (every token of the text)
    bytes: int | None = None  # UTF-8 bytes of the text, when the text is known
    chars: int | None = None  # characters of the text, when the text is known

    @property
    def nll_per_token(self) -> float:
        return self.nll / self.tokens

    @property
    def perplexity(self) -> float:
        return math.exp(self.nll_per_token)

    @property
    def bits_per_byte(self) -> float | None:
        return None if not self.bytes else self.nll / math.log(2) / self.bytes

    @property
    def bits_per_char(self) -> float | None:
        """Bits per character: comparable between vocabularies (as perplexity per token is not), and the figure
        for Chinese, whose characters are three UTF-8 bytes each."""
        return None if not self.chars else self.nll / math.log(2) / self.chars


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
        if not isinstance(text, str) or not text:
            raise ValueError(f"evaluate(text=...) needs a non-empty string to score, got {text!r}")
        ids = tokenizer.encode(text)
        eot_id = tokenizer.special_tokens.get(ENDOFTEXT, eot_id)
    if ids is None:
        raise ValueError("evaluate needs ids, or text and a tokenizer")
    eot_id = eot_id if eot_id is not None else EOT_ID
    context, stride = check_windows(context, stride, config.n_ctx)
    check_batch_size(batch_size)
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
    return Score(nll=total, tokens=n, bytes=len(text.encode("utf-8")) if text is not None else None,
                 chars=len(text) if text is not None else None)


def check_windows(context: int | None, stride: int | None, n_ctx: int) -> tuple[int, int]:
    """(context, stride) with their defaults filled in (n_ctx, context // 2); ArgumentError if out of range."""
    context = n_ctx if context is None else context
    if not is_whole(context) or not 1 <= context <= n_ctx:
        raise ArgumentError("context", f"{context!r} must be in [1, the model's n_ctx = {n_ctx}]")
    stride = context // 2 if stride is None else stride
    if not is_whole(stride) or not 1 <= stride <= context:
        raise ArgumentError("stride", f"{stride!r} must be in [1, context = {context}]")
    return context, stride


def score_windows(s: np.ndarray, spans: list[tuple[int, int, int]], model) -> float:
    """Total NLL of the scored positions of windows of one length, as one batch."""
    inputs = np.stack([s[begin : end - 1] for begin, end, _ in spans])  # [B, T]: all but each window's last token
    targets = np.stack([s[begin + 1 : end] for begin, end, _ in spans])  # [B, T]: the next token at each position
    scored = np.stack([np.arange(begin + 1, end) >= first for begin, end, first in spans])  # [B, T]
    targets[~scored] = -1  # positions an earlier window scored: no loss here (as in training)
    h = transformer(inputs, model.params, model.config)  # [B, T, C]
    mean = lm_head_and_loss(h, model.params["wte"], targets, with_grads=False)[0]  # only scored rows get logits
    return mean * int(scored.sum())


# --- task files: log-likelihoods of continuations, choices, exact match ------------------------------


def continuation_logprobs(model, requests: list[tuple[list[int], list[list[int]]]], batch_size: int = 8,
                          progress: bool = False, desc: str = "scoring") -> list[list[float]]:
    """sum log P(continuation | context) for each context and each of its continuations (loglikelihood.py's
    batching: a context runs once for all its continuations; a row longer than the context window keeps its
    last n_ctx + 1 tokens)."""
    flat = [(context, c) for context, continuations in requests for c in continuations]
    scores = iter(loglikelihoods(model, flat, batch_size, progress, desc))
    return [[next(scores)[0] for _ in continuations] for _, continuations in requests]


def context_ids(tokenizer: Tokenizer, prompt: str) -> list[int]:
    """The prompt's ids, or [<|endoftext|>] for an empty prompt (something to condition on)."""
    return tokenizer.encode_ordinary(prompt) or [eot_id_of(tokenizer)]


def log_likelihood(model, tokenizer: Tokenizer, prompt: str, continuation: str) -> float:
    """sum log P(encode(continuation) | encode(prompt)) in nats, with no end-of-text.

    >>> from minigpt2 import GPT2, GPT2Config, Tokenizer
    >>> tok = Tokenizer.train("ab ba", 258, progress=False)
    >>> model = GPT2.init(GPT2Config(n_vocab=258, n_ctx=8, n_embd=8, n_head=2, n_layer=1))
    >>> round(log_likelihood(model, tok, "a", "b") / -math.log(258), 2)  # a new model: about uniform
    1.0
    """
    continuation_ids = tokenizer.encode_ordinary(continuation)
    if not continuation_ids:
        raise ValueError("the continuation is empty: there is nothing to score")
    return continuation_logprobs(model, [(context_ids(tokenizer, prompt), [continuation_ids])])[0][0]


def score_task_file(model, tokenizer: Tokenizer, path_or_rows, batch_size: int = 8, progress: bool = False,
                    ) -> dict:
    """Score a task file (a path, or its rows from tasks.read_task_file) by the module's rules.

    prompt + completion rows -> {"examples", "tokens", "nll", "perplexity", "exact_match"};
    prompt + choices + answer rows -> {"examples", "accuracy", "accuracy_norm"}.
    """
    rows: list[TaskRow] = read_task_file(path_or_rows) if not isinstance(path_or_rows, list) else path_or_rows
    if rows[0].completion is not None:
        examples = encode_examples(rows, tokenizer, progress)
        too_long = [e for e in examples if len(e.tokens) > model.config.n_ctx + 1]
        if too_long:
            e = too_long[0]
            raise TaskFileError(f"line {e.line}: the example is {len(e.tokens)} tokens, more than the model's context "
                                f"+ 1 ({model.config.n_ctx + 1})")
        total, count = completion_nll(examples, model.params, model.config, batch_size, progress, desc="scoring")
        eot = eot_id_of(tokenizer)
        made = greedy_continuations(model, [e.tokens[: e.n_prompt].tolist() for e in examples],
                                    [e.n_scored for e in examples], eot, batch_size, progress)
        exact = sum(tokenizer.decode(ids) == r.completion for ids, r in zip(made, rows))
        return {"examples": len(rows), "tokens": count, "nll": total / count, "perplexity": math.exp(total / count),
                "exact_match": exact / len(rows)}
    requests = [(context_ids(tokenizer, r.prompt), [tokenizer.encode_ordinary(c) for c in r.choices]) for r in rows]
    sums = continuation_logprobs(model, requests, batch_size, progress)
    right = right_norm = 0
    for r, lp in zip(rows, sums):
        right += int(np.argmax(lp)) == r.answer
        right_norm += int(np.argmax([x / len(c.encode("utf-8")) for x, c in zip(lp, r.choices)])) == r.answer
    return {"examples": len(rows), "accuracy": right / len(rows), "accuracy_norm": right_norm / len(rows)}


def read_text(path: str) -> str:
    """A UTF-8 text file with something to score; errors name the file (and the bad byte)."""
    text = read_utf8(path)
    if not text:
        raise ValueError(f"{path} is empty: there is nothing to score")
    return text
