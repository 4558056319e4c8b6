"""logits [..., V] -> next ids [...]: greedy, temperature, top-k, top-p, min-p, typical, repetition penalty,
n-gram blocking, a minimum length.

Order as in OpenAI's sample.py: repetition penalty -> temperature -> top-k -> top-p -> draw. Filters set the
logits of excluded tokens to -inf, so the draw's softmax gives them probability 0. All randomness comes from
an explicit `np.random.Generator` (`np.random.default_rng(seed)`).
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np

from .checks import is_whole, is_real
from .config import ArgumentError
from .ops import log_softmax, softmax


def greedy(logits: np.ndarray) -> np.ndarray:
    """The most likely id: logits [..., V] -> [...]."""
    return logits.argmax(axis=-1)


def apply_temperature(logits: np.ndarray, temperature: float) -> np.ndarray:
    """(logits - max) / T: T < 1 sharpens the distribution, T > 1 flattens it.

    subtle: shifted by each row's max first (softmax does not change), so the largest logit becomes 0 and
    nothing can overflow to +inf, however small T is: as T -> 0 every other logit goes to -inf and the
    distribution becomes greedy (ties share the mass), its limit, never NaN.
    """
    with np.errstate(over="ignore"):  # a tiny T sends the others to -inf: probability 0, as it should
        shifted = logits - logits.max(axis=-1, keepdims=True)  # [..., V], <= 0
        # float64: a T as small as 5e-324 is 0 in float32, and 0 / 0 would be NaN
        return (shifted / np.float64(temperature)).astype(logits.dtype)


def top_k_filter(logits: np.ndarray, k: int) -> np.ndarray:
    """Keep the k largest logits of each row (and any tied with the k-th, as OpenAI's sample.py does)."""
    if k >= logits.shape[-1]:
        return logits
    kth = np.partition(logits, -k, axis=-1)[..., [-k]]  # [..., 1]: the k-th largest value
    return np.where(logits < kth, -np.inf, logits)


def top_p_filter(logits: np.ndarray, p: float) -> np.ndarray:
    """Nucleus filter: keep the smallest set of most likely tokens whose probability adds up to >= p.

    subtle: the token whose probability crosses p is kept (Holtzman et al. 2019; Hugging Face's rule).
    OpenAI's sample.py drops it, keeping only tokens with cumulative probability <= p.
    """
    order = np.argsort(-logits, axis=-1, kind="stable")  # [..., V]: most likely first
    probs = np.take_along_axis(softmax(logits.astype(np.float64)), order, axis=-1)  # [..., V] sorted
    before = np.cumsum(probs, axis=-1) - probs  # probability mass of the tokens ranked above each one
    keep_sorted = before < p  # a token is in the nucleus if the tokens above it did not yet reach p
    keep = np.empty_like(keep_sorted)
    np.put_along_axis(keep, order, keep_sorted, axis=-1)  # back to vocabulary order
    return np.where(keep, logits, -np.inf)


def min_p_filter(logits: np.ndarray, min_p: float) -> np.ndarray:
    """Min-p: keep the tokens at least `min_p` times as likely as the most likely one (Nguyen et al. 2024;
    transformers' MinPLogitsWarper). The threshold scales with the model's confidence: a sure step keeps few
    tokens, an open one many. logits [..., V] -> [..., V], the others -inf; the most likely token always stays."""
    probs = softmax(logits)  # [..., V], in the logits' dtype
    return np.where(probs < min_p * probs.max(axis=-1, keepdims=True), -np.inf, logits)


def typical_filter(logits: np.ndarray, mass: float) -> np.ndarray:
    """Locally typical sampling (Meister et al. 2022; transformers' TypicalLogitsWarper): rank tokens by how far
    their surprise -log p is from the distribution's entropy H (the expected surprise), closest first, and keep
    the fewest of them whose probability adds up to at least `mass` (the one that crosses it too). Tokens far
    more predictable than usual go as well as implausible ones. logits [..., V] -> [..., V]."""
    logp = log_softmax(logits)  # [..., V]
    p = np.exp(logp)
    with np.errstate(invalid="ignore"):  # 0 * -inf at tokens already filtered: NaN, which nansum leaves out
        entropy = -np.nansum(logp * p, axis=-1, keepdims=True)  # [..., 1]
    distance = np.abs(-logp - entropy)  # [..., V]
    order = np.argsort(distance, axis=-1, kind="stable")  # [..., V]: most typical first
    cumulative = np.cumsum(np.take_along_axis(p, order, axis=-1), axis=-1)  # [..., V]
    last = np.minimum((cumulative < mass).sum(axis=-1, keepdims=True), logits.shape[-1] - 1)  # [..., 1]
    limit = np.take_along_axis(np.take_along_axis(distance, order, axis=-1), last, axis=-1)  # [..., 1]
    keep = distance <= limit
    np.put_along_axis(keep, order[..., :1], True, axis=-1)  # the most typical token always stays
    return np.where(keep, logits, -np.inf)


def no_repeat_ngram_filter(logits: np.ndarray, previous: np.ndarray, n: int) -> np.ndarray:
    """Forbid any token that would repeat an n-gram already in the row (transformers'
    NoRepeatNGramLogitsProcessor): with the last n - 1 ids as a prefix, every token that followed that prefix
    earlier is set to -inf. logits [B, V], previous [B, t] (prompt and new ids so far) -> [B, V]."""
    out = logits.copy()
    if n < 1 or previous.shape[-1] + 1 < n:
        return out
    for b, row in enumerate(previous.tolist()):
        prefix = tuple(row[len(row) - n + 1 :]) if n > 1 else ()
        banned = {row[i + n - 1] for i in range(len(row) - n + 1) if tuple(row[i : i + n - 1]) == prefix}
        out[b, list(banned)] = -np.inf
    return out


def min_new_tokens_filter(logits: np.ndarray, new_tokens: int, min_new_tokens: int, eot_id: int | None,
                          ) -> np.ndarray:
    """No end of text before `min_new_tokens` new tokens (transformers' MinNewTokensLengthLogitsProcessor):
    the <|endoftext|> logit is -inf while fewer have been made. logits [..., V] -> [..., V]."""
    if eot_id is None or new_tokens >= min_new_tokens:
        return logits
    out = logits.copy()
    out[..., eot_id] = -np.inf
    return out


def apply_repetition_penalty(logits: np.ndarray, previous: Iterable[int], penalty: float) -> np.ndarray:
    """CTRL's penalty on one row of logits [V]: for tokens already present, divide positive logits by
    `penalty` and multiply negative ones (both make the token less likely for penalty > 1)."""
    ids = np.unique(np.fromiter(previous, dtype=np.int64))
    if ids.size == 0:
        return logits
    out = logits.copy()
    seen = out[ids].astype(np.float64)
    with np.errstate(over="ignore"):  # an extreme penalty: +-inf, capped below to the largest finite value
        out[ids] = np.where(seen > 0, seen / penalty, seen * penalty)
    np.minimum(out, np.finfo(out.dtype).max, out=out)  # +inf would make the softmax NaN; the largest still wins
    return out


def draw(logits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sample one id per row from softmax(logits): [..., V] -> [...]."""
    probs = softmax(logits.astype(np.float64))  # float64: exact enough for the inverse-CDF draw
    cdf = np.cumsum(probs, axis=-1)  # [..., V]
    u = rng.random(size=logits.shape[:-1] + (1,)) * cdf[..., -1:]  # [..., 1], uniform below the total mass
    return np.minimum((cdf <= u).sum(axis=-1), logits.shape[-1] - 1)  # first index where cdf > u


def sample(logits: np.ndarray, rng: np.random.Generator, temperature: float = 1.0, top_k: int | None = None,
           top_p: float | None = None, min_p: float | None = None, typical_p: float | None = None) -> np.ndarray:
    """Next ids from logits [..., V] -> [...]: temperature, top-k, top-p, min-p, typical, then a draw
    (`process_logits`'s warpers, with the temperature shifted first so that a tiny one cannot overflow; the
    filters depend only on the probabilities, so they keep the same tokens). temperature=0 means greedy."""
    check_sampling_args(temperature, top_k, top_p, min_p=min_p, typical_p=typical_p)
    if temperature == 0:
        return greedy(logits)
    return draw(truncate(apply_temperature(logits, temperature), top_k, top_p, min_p, typical_p), rng)


def truncate(logits: np.ndarray, top_k: int | None = None, top_p: float | None = None, min_p: float | None = None,
             typical_p: float | None = None) -> np.ndarray:
    """The filters that cut the tail after the temperature, in transformers' order: top-k, top-p, min-p,
    typical (each off when not given). logits [..., V] -> [..., V], what they exclude -inf."""
    if top_k:
        logits = top_k_filter(logits, top_k)
    if top_p is not None and top_p < 1.0:
        logits = top_p_filter(logits, top_p)
    if min_p:
        logits = min_p_filter(logits, min_p)
    if typical_p is not None and typical_p < 1.0:
        logits = typical_filter(logits, typical_p)
    return logits


def process_logits(logits: np.ndarray, previous: np.ndarray, *, repetition_penalty: float | None = None,
                   no_repeat_ngram_size: int | None = None, min_new_tokens: int = 0, new_tokens: int = 0,
                   eot_id: int | None = None, temperature: float = 1.0, top_k: int | None = None,
                   top_p: float | None = None, min_p: float | None = None, typical_p: float | None = None,
                   ) -> np.ndarray:
    """Every setting applied to the next token's logits [B, V], given the ids so far [B, t], in transformers'
    order: repetition penalty, n-gram block, minimum new tokens (the processors), then temperature, top-k,
    top-p, min-p, typical (the warpers). A filter sets what it excludes to -inf; nothing is renormalised (the
    draw's softmax does that). temperature=0 skips the warpers: greedy takes the argmax of what is left.

    subtle: the temperature here divides the logits as transformers does, with no shift by the maximum, so
    that the processed logits equal its processors'; `apply_temperature` (used by `sample`) shifts first."""
    out = logits
    if repetition_penalty not in (None, 1.0):
        out = np.stack([apply_repetition_penalty(row, ids, repetition_penalty) for row, ids in zip(out, previous)])
    if no_repeat_ngram_size:
        out = no_repeat_ngram_filter(out, previous, no_repeat_ngram_size)
    out = min_new_tokens_filter(out, new_tokens, min_new_tokens, eot_id)
    if temperature == 0:
        return out
    if temperature != 1.0:
        out = (out / np.float32(temperature)).astype(logits.dtype)
    return truncate(out, top_k, top_p, min_p, typical_p)


def check_sampling_args(temperature: float, top_k: int | None, top_p: float | None,
                        repetition_penalty: float | None = None, min_p: float | None = None,
                        typical_p: float | None = None) -> None:
    """Raise ArgumentError (a ValueError) naming the argument that is out of range or not a number."""
    for name, v in (("temperature", temperature), ("top_p", top_p), ("repetition_penalty", repetition_penalty),
                    ("min_p", min_p), ("typical_p", typical_p)):
        if v is not None and (not is_real(v)):
            raise ArgumentError(name, f"must be a number, got {v!r}")
    if not 0 <= temperature < math.inf:  # also catches NaN
        raise ArgumentError("temperature", f"must be a finite number >= 0 (0 = greedy; large values approach "
                                           f"uniform sampling), got {temperature}")
    if top_k is not None and (not is_whole(top_k) or top_k < 1):
        raise ArgumentError("top_k", f"must be a positive integer or None, got {top_k!r}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ArgumentError("top_p", f"must be in (0, 1], got {top_p}")
    if min_p is not None and not 0 <= min_p <= 1:
        raise ArgumentError("min_p", f"must be in [0, 1] (a share of the most likely token's probability), got {min_p}")
    if typical_p is not None and not 0 < typical_p <= 1:
        raise ArgumentError("typical_p", f"must be in (0, 1], got {typical_p}")
    if repetition_penalty is not None and not 0 < repetition_penalty < math.inf:
        raise ArgumentError("repetition_penalty", f"must be a finite number > 0 (1 = none), got {repetition_penalty}")
