"""prompt ids -> the most likely continuations: beam search, by transformers' rules, token for token.

Greedy decoding keeps one continuation; beam search keeps the `num_beams` best partial ones, scored by
their summed log-probability, and moves them one token forward together (one batch, one KV cache):

    each step, for every running beam b and token w:
        score(b, w) = score(b) + processed(log_softmax(logits_b))[w]    the processors act on log-probabilities
    take the 2 * num_beams best (b, w) of all beams together, best first
    a pair that ends its text (w = <|endoftext|>, or the last allowed token) is a finished hypothesis; those among
        the first num_beams pairs compete for the num_beams places of the finished list, ranked by
        score / new_tokens ** length_penalty          (new tokens counted with the end token)
    the num_beams best pairs that did not end are the next step's beams; the cache is reordered to them
    stop when no running beam can beat the worst finished one (early_stopping=False: judged at the present
        length; "never": at the longest length when length_penalty > 0), when every place of the finished
        list is taken (early_stopping=True), or at max_new_tokens

length_penalty > 0 favours longer hypotheses (scores are negative: dividing by a larger length raises them),
< 0 shorter ones. The processors (repetition penalty, no_repeat_ngram_size, min_new_tokens) run on the
log-probabilities and nothing is renormalised after them, as in transformers. Beam search is deterministic:
there is no sampling in it (transformers' sampled beams, do_sample with num_beams, are not built here).
"""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

from .model import KVCache, gpt2
from .ops import log_softmax
from .sample import process_logits

NEVER = -1.0e9  # the score transformers gives what must not be chosen (a float32, as its scores are)


def best_first(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest scores, largest first (as torch.topk)."""
    top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    return top[np.argsort(-scores[top], kind="stable")]


def beam_search(model, prompt: np.ndarray, max_new_tokens: int, num_beams: int, *, length_penalty: float = 1.0,
                early_stopping: bool | str = False, num_return_sequences: int = 1, eot_id: int | None = None,
                repetition_penalty: float | None = None, no_repeat_ngram_size: int | None = None,
                min_new_tokens: int = 0, progress: bool = False) -> list[tuple[list[int], float]]:
    """The best `num_return_sequences` finished hypotheses, best first: (new ids, ending with eot_id if the
    hypothesis ended there; its score). prompt [T] with T + max_new_tokens <= n_ctx (checked by the caller)."""
    if max_new_tokens == 0:
        return [([], 0.0)] * num_return_sequences
    T, V, B = len(prompt), model.config.n_vocab, num_beams
    K = 2 * B  # candidates kept each step: enough that B of them can still run when some end
    running = np.repeat(prompt[None, :], B, axis=0)  # [B, T + step]: each beam's ids
    running_scores = np.full(B, NEVER, dtype=np.float32)  # [B]: summed log-probabilities
    running_scores[0] = 0.0  # the beams start equal: only the first may pick the first token
    finished: list[np.ndarray | None] = [None] * B  # the finished list's places (prompt and new ids)
    finished_scores = np.full(B, NEVER, dtype=np.float32)  # [B]: length-penalised scores
    taken = np.zeros(B, dtype=bool)  # [B]: which places hold a finished hypothesis
    improvable = True  # can a running beam still beat the worst finished one?
    one, logits = prefill_one(model, prompt)
    cache = one.select(np.zeros(B, dtype=np.int64))  # [B] rows, each the prompt's
    logits = np.repeat(logits, B, axis=0)  # [B, V]
    for step in tqdm(range(max_new_tokens), desc="beam search", unit="tok", disable=not progress, leave=False):
        logp = process_logits(log_softmax(logits.astype(np.float32)), running, temperature=0,
                              repetition_penalty=repetition_penalty, no_repeat_ngram_size=no_repeat_ngram_size,
                              min_new_tokens=min_new_tokens, new_tokens=step, eot_id=eot_id)  # [B, V]
        total = (logp + running_scores[:, None]).reshape(-1)  # [B * V]
        top = best_first(total, K)  # [K]
        beam, token, scores = top // V, top % V, total[top]  # [K] each
        candidates = np.concatenate([running[beam], token[:, None]], axis=1)  # [K, T + step + 1]
        ends = token == eot_id if eot_id is not None else np.zeros(K, dtype=bool)  # [K]
        ends |= step + 1 == max_new_tokens  # the last allowed token ends every candidate
        # the next beams: the best candidates that did not end
        still = scores + ends * np.float32(NEVER)  # [K]: an ended candidate cannot run on
        next_ = best_first(still, B)  # [B]
        running, running_scores, source = candidates[next_], still[next_], beam[next_]
        # the finished list: its places and the candidates that just ended, the best B of them
        just_ended = ends & (np.arange(K) < B)  # [K]: only the first B candidates may enter the list
        penalised = scores / float(step + 1) ** length_penalty  # [K]
        if early_stopping is True and taken.all():
            penalised += np.float32(NEVER)  # the list is full and early_stopping=True: it stays as it is
        if not improvable:
            penalised += np.float32(NEVER)
        penalised += np.float32(NEVER) * ~just_ended  # a running candidate is not finished
        merged = np.concatenate([finished_scores, penalised])  # [B + K]
        keep = best_first(merged, B)
        finished = [finished[i] if i < B else candidates[i - B] for i in keep]
        taken = np.concatenate([taken, just_ended])[keep]
        finished_scores = merged[keep]
        # may the search stop?
        length = max_new_tokens if early_stopping == "never" and length_penalty > 0 else step + 1
        best_possible = running_scores[0] / float(length) ** length_penalty
        worst = np.where(taken, finished_scores.min(), np.float32(NEVER))  # [B]
        improvable = improvable and bool((best_possible > worst).any())
        if not improvable or (early_stopping is True and taken.all()) or ends.all():
            break
        cache.reorder(source)
        logits = gpt2(running[:, -1:], model.params, model.config, cache)[:, -1]  # [B, 1] -> [B, V]
    return [(finished[i][T:].tolist(), float(finished_scores[i])) for i in range(num_return_sequences)]


def prefill_one(model, prompt: np.ndarray) -> tuple[KVCache, np.ndarray]:
    """The prompt [T] through the model once, into a cache of one row: (the cache, the last logits [1, V])."""
    cache = KVCache(model.config, batch_size=1)
    return cache, gpt2(prompt[None, :], model.params, model.config, cache, last_only=True)[:, -1]
