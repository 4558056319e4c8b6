"""(context ids, continuation ids) -> log P(continuation | context) and whether it is the greedy one; a text's
ids -> its log-likelihood in rolling windows. These are lm-evaluation-harness's two scoring requests,
`loglikelihood` and `loglikelihood_rolling`, as its version 0.4.13 computes them for a causal model
(lm_eval/api/model.py, lm_eval/models/huggingface.py, lm_eval/utils.py), in NumPy.

    loglikelihood   tokens = (context + continuation)[-(n_ctx + 1):]     the harness's left truncation
                    the model reads tokens[:-1]; each continuation token is read at the position before it
                    (a continuation longer than n_ctx, which the harness refuses, is scored on its last n_ctx)
                    ll = sum of log P(token),  greedy = every token is the argmax (the first index among ties)
    rolling         s = [<|endoftext|>] + the text's N ids, cut by `rolling_windows` (the harness's
                    get_rolling_token_windows with context_len 1): every id scored once; ll = the sum

Both reduce to one kind of row, (tokens, k): the model reads tokens[:-1] and the last k tokens are scored.

How the work is shared, none of which changes what is computed: requests with the same context run it once
(its keys and values cached, then all its continuations after it in one batch: HellaSwag's four endings), the
other rows run `batch_size` at a time in order of length, a batch closing before a row a quarter longer than
its first (short rows are never padded to long ones); the last block runs only where something is read
(`states_at`), only the scored positions go through the LM head, `HEAD_ROWS` at a time, and on two or more
cores two batches are in flight at once (`in_streams`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from itertools import islice

import numpy as np
from tqdm import tqdm

from ..blas import blas_threads, set_blas_threads
from ..checks import is_whole
from ..config import ArgumentError
from ..machine import cores
from ..model import KVCache, attention_scores, block, causal_mask, dense, merge_heads, mlp, split_heads, transformer
from ..ops import layer_norm, linear, softmax

HEAD_ROWS = 1024  # scored positions per pass through the LM head: [1024, V] float32 logits, 206 MB for GPT-2


def check_batch_size(batch_size: int) -> None:
    """ArgumentError unless batch_size is a positive integer."""
    if not is_whole(batch_size) or batch_size < 1:
        raise ArgumentError("batch_size", f"must be a positive integer, got {batch_size!r}")


def rolling_windows(n_tokens: int, max_len: int) -> list[tuple[int, int, int]]:
    """The harness's rolling windows over s = [eot] + n_tokens ids: (begin, end, first scored) each, the model
    reading s[begin : end - 1] and scoring positions first .. end - 1 of s.

    The first window reads up to max_len ids from the start; each later one scores the next max_len ids (or the
    rest), reading the max_len ids before each scored one's end: so the last window, shorter, reaches back
    over ids already scored for its context.

    >>> rolling_windows(10, max_len=4)  # s has 11 positions; 1..10 scored once each
    [(0, 5, 1), (4, 9, 5), (6, 11, 9)]
    """
    first_len = min(max_len, n_tokens)
    out = [(0, first_len + 1, 1)] if n_tokens else []
    predicted = first_len
    while predicted < n_tokens:
        end = predicted + min(n_tokens - predicted, max_len)  # the last id scored, in the text's own numbering
        out.append((end - max_len, end + 1, predicted + 1))
        predicted = end
    return out


def harness_row(context: list[int], continuation: list[int], n_ctx: int) -> tuple[list[int], int, bool]:
    """(tokens, k, truncated): the row of one loglikelihood request, left-truncated to n_ctx + 1 tokens as the
    harness truncates it. A continuation longer than n_ctx tokens (the harness refuses it) is scored on its last
    n_ctx tokens, all the model can read; it counts as truncated."""
    tokens = context + continuation
    return tokens[-(n_ctx + 1):], min(len(continuation), n_ctx), len(tokens) > n_ctx + 1


def loglikelihoods(model, requests: list[tuple[list[int], list[int]]], batch_size: int = 8, progress: bool = False,
                   desc: str = "scoring") -> list[tuple[float, bool]]:
    """(sum log P(continuation | context), greedy?) for each (context ids, continuation ids) request."""
    n_ctx = model.config.n_ctx
    for context, continuation in requests:
        if not continuation:
            raise ValueError("a request's continuation is empty: there is nothing to score")
        if not context:
            raise ValueError("a request needs a context of at least one token (<|endoftext|> for none)")
    by_context: dict[tuple[int, ...], list[int]] = {}
    for i, (context, continuation) in enumerate(requests):
        if not harness_row(context, continuation, n_ctx)[2]:  # a truncated row's context is no longer shared
            by_context.setdefault(tuple(context), []).append(i)
    shared = [group for group in by_context.values() if len(group) > 1]
    alone = sorted(set(range(len(requests))) - {i for group in shared for i in group})
    out: list[tuple[float, bool]] = [(0.0, False)] * len(requests)
    with tqdm(total=len(requests), desc=desc, unit="request", disable=not progress, leave=False) as bar:
        def after_context(group: list[int]) -> list[tuple[float, bool]]:
            return score_after_context(model, requests[group[0]][0], [requests[i][1] for i in group])

        def keep(group: list[int], scores: list[tuple[float, bool]]) -> None:
            for i, score in zip(group, scores):
                out[i] = score
            bar.update(len(group))

        in_streams(after_context, shared, keep)
        rows = [harness_row(*requests[i], n_ctx)[:2] for i in alone]
        for i, score in zip(alone, score_rows(model, rows, batch_size, bar)):
            out[i] = score
    return out


def rolling_loglikelihoods(model, texts: list[list[int]], eot_id: int, batch_size: int = 8,
                           progress: bool = False, desc: str = "scoring") -> list[float]:
    """Each text's (its ids') log-likelihood in nats, scored in the harness's rolling windows."""
    rows, owner = [], []
    for t, ids in enumerate(texts):
        s = [eot_id] + list(ids)
        for begin, end, first in rolling_windows(len(ids), model.config.n_ctx):
            rows.append((s[begin:end], end - first))
            owner.append(t)
    totals = [0.0] * len(texts)
    with tqdm(total=len(rows), desc=desc, unit="window", disable=not progress, leave=False) as bar:
        for t, (ll, _) in zip(owner, score_rows(model, rows, batch_size, bar)):
            totals[t] += ll
    return totals


# --- the two ways rows run -------------------------------------------------------------------------


def length_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Row indices in batches: in order of length, at most batch_size a batch, a batch closing before a row
    longer than its first by more than a quarter (and 8 tokens).

    >>> length_batches([10, 3, 11, 100, 4, 60], batch_size=2)
    [[1, 4], [0, 2], [5], [3]]
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    for i in order:
        first = lengths[batches[-1][0]] if batches else 0
        if batches and len(batches[-1]) < batch_size and lengths[i] - first <= max(8, first // 4):
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def score_rows(model, rows: list[tuple[list[int], int]], batch_size: int, bar=None) -> list[tuple[float, bool]]:
    """(ll, greedy) of each row (tokens, k): the model reads tokens[:-1], the last k tokens are scored. Rows run
    in length batches, right-padded (causal attention: padding after a row never reaches it)."""
    out: list[tuple[float, bool]] = [(0.0, False)] * len(rows)

    def score_batch(batch: list[int]) -> list[tuple[float, bool]]:
        T = max(len(rows[i][0]) for i in batch) - 1
        ids = np.zeros((len(batch), T), dtype=np.int64)  # [B, T], right-padded
        for b, i in enumerate(batch):
            tokens = rows[i][0]
            ids[b, : len(tokens) - 1] = tokens[:-1]
        where = [(b, len(rows[i][0]) - 1 - rows[i][1] + j) for b, i in enumerate(batch) for j in range(rows[i][1])]
        targets = np.concatenate([rows[i][0][-rows[i][1]:] for i in batch])  # [N]
        logp, top = token_logprobs(states_at(model, ids, np.array(where)), model.params["wte"], targets)  # [N]
        scores, start = [], 0
        for i in batch:
            k = rows[i][1]
            scores.append((float(logp[start : start + k].sum()), bool(top[start : start + k].all())))
            start += k
        return scores

    def keep(batch: list[int], scores: list[tuple[float, bool]]) -> None:
        for i, score in zip(batch, scores):
            out[i] = score
        if bar is not None:
            bar.update(len(batch))

    in_streams(score_batch, length_batches([len(tokens) for tokens, _ in rows], batch_size), keep)
    return out


STREAMS = 2  # batches in flight at once, on two or more cores


def in_streams(fn: Callable, items: list, done: Callable) -> None:
    """done(item, fn(item)) for each item in order, `done` always on the calling thread. On two or more cores,
    STREAMS items run at once on as many threads, the cores' BLAS threads shared between them: NumPy's
    element-wise work (GELU, layer norms, softmax) runs on one core, so while one batch does it another keeps
    the other core multiplying (LAMBADA at 124M's shape: 1.24x on two cores). The cost: that many batches'
    activations in memory at once. Where the BLAS cannot be told its thread count, one batch at a time."""
    before, n = blas_threads(), cores()
    if n < 2 or len(items) < 2 or before is None or not set_blas_threads(max(1, n // STREAMS)):
        for item in items:
            done(item, fn(item))
        return
    try:
        with ThreadPoolExecutor(STREAMS) as pool:  # at most STREAMS submitted: Ctrl-C waits for those alone
            ahead = iter(items)
            running = deque((item, pool.submit(fn, item)) for item in islice(ahead, STREAMS))
            while running:
                item, future = running.popleft()
                result = future.result()
                running.extend((nxt, pool.submit(fn, nxt)) for nxt in islice(ahead, 1))
                done(item, result)
    finally:
        set_blas_threads(before)


def states_at(model, ids: np.ndarray, where: np.ndarray) -> np.ndarray:
    """The final layer norm's output at the positions `where` [N, 2] (row, position) of ids [B, T] -> [N, C].

    When few positions are read (LAMBADA reads one to three of a passage's hundred), the last block runs only
    at them: a position's output there depends on the other positions through their keys and values alone, so
    every block before it runs over all positions, the last one its layer norm and c_attn (keys and values)
    everywhere and the rest (attention, projection, MLP, layer norms) only where it is read. Exact: the same equations,
    fewer rows (tested against the whole forward)."""
    params, config = model.params, model.config
    B, T = ids.shape
    if len(where) * 2 > B * T:  # most positions are read (rolling windows): the whole forward is as cheap
        return transformer(ids, params, config)[tuple(where.T)]  # [N, C]
    *first, last = params["blocks"]
    x = params["wte"][ids] + params["wpe"][:T]  # [B, T, C]
    mask = causal_mask(T, T)  # [T, T]
    for layer, p in enumerate(first):
        x = block(x, p, config, layer, None, mask)  # [B, T, C]
    eps, C, H = config.layer_norm_epsilon, config.n_embd, config.n_head
    rows, positions = where[:, 0], where[:, 1]  # [N], [N]
    qkv = dense(layer_norm(x, **last["ln_1"], eps=eps), last["attn"]["c_attn"])  # [B, T, 3C]
    q, k, v = (split_heads(qkv[..., i * C : (i + 1) * C], H) for i in range(3))  # 3 x [B, H, T, D]
    q = q[rows, :, positions][:, :, None]  # [N, H, 1, D]: the read positions' queries
    k, v = k[rows], v[rows]  # [N, H, T, D]: the keys and values of each one's row
    x = x[rows, positions][:, None]  # [N, 1, C]: the read positions' residual stream
    seen = (np.arange(T) <= positions[:, None])[:, None, None, :]  # [N, 1, 1, T]: its own causal mask
    z = softmax(attention_scores(q, k, seen)) @ v  # [N, H, 1, D]
    x = x + dense(merge_heads(z), last["attn"]["c_proj"])  # [N, 1, C]
    x = x + mlp(layer_norm(x, **last["ln_2"], eps=eps), last["mlp"], len(first))  # [N, 1, C]
    return layer_norm(x[:, 0], **params["ln_f"], eps=eps)  # [N, C]


def score_after_context(model, context: list[int], continuations: list[list[int]]) -> list[tuple[float, bool]]:
    """(ll, greedy) of each continuation after one shared context: the context runs once into a KV cache, then
    every continuation (all but its last token) runs after it, one row each, in one batch."""
    config, N = model.config, len(continuations)
    longest = max(len(c) for c in continuations)
    # a cache just long enough (the model's own would hold n_ctx positions per row)
    cache = KVCache(replace(config, n_ctx=len(context) + longest - 1), batch_size=1)
    h_context = transformer(np.array([context], dtype=np.int64), model.params, config, cache)  # [1, Tc, C]
    vectors = [np.broadcast_to(h_context[0, -1], (N, config.n_embd))]  # [N, C]: each continuation's first token
    if longest > 1:
        ids = np.zeros((N, longest - 1), dtype=np.int64)  # [N, longest - 1], right-padded
        for j, c in enumerate(continuations):
            ids[j, : len(c) - 1] = c[:-1]
        h = transformer(ids, model.params, config, cache.select([0] * N))  # [N, longest - 1, C]
        vectors.append(h[[j for j, c in enumerate(continuations) for _ in c[1:]],
                         [i for c in continuations for i in range(len(c) - 1)]])  # [M, C]
    # rows: every continuation's first token, then the rest continuation by continuation
    targets = np.array([c[0] for c in continuations] + [t for c in continuations for t in c[1:]])  # [N + M]
    logp, top = token_logprobs(np.concatenate(vectors), model.params["wte"], targets)  # [N + M]
    out, start = [], N
    for j, c in enumerate(continuations):
        rest = slice(start, start + len(c) - 1)
        out.append((float(logp[j] + logp[rest].sum()), bool(top[j] and top[rest].all())))
        start += len(c) - 1
    return out


def token_logprobs(x: np.ndarray, wte: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x [N, C] (final layer norm's output), targets [N] -> (log P(target) [N] float64, target is the argmax [N]).
    The head's logits are made HEAD_ROWS rows at a time: log P = logit - logsumexp(logits), in float32."""
    logp, top = np.empty(len(x)), np.empty(len(x), dtype=bool)
    for i in range(0, len(x), HEAD_ROWS):
        logits = linear(np.ascontiguousarray(x[i : i + HEAD_ROWS]), wte)  # [n, C] -> [n, V]
        t = targets[i : i + HEAD_ROWS]  # [n]
        peak = logits.max(axis=-1, keepdims=True)  # [n, 1]
        log_z = peak[:, 0] + np.log(np.exp(logits - peak).sum(axis=-1))  # [n]
        logp[i : i + HEAD_ROWS] = logits[np.arange(len(t)), t] - log_z
        top[i : i + HEAD_ROWS] = logits.argmax(axis=-1) == t
    return logp, top
