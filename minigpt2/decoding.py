"""prompt ids -> new ids, one at a time: the decoding loop (model -> sample -> feed back).

    model.generate(ids, 40, top_k=40, seed=0)      # GPT2.generate and GPT2.stream call this module

Each step runs only the newest token through the model, reading the earlier positions' keys and values
from the KV cache, and computes logits for that position alone.

Context overflow: GPT-2 has learned positions 0 .. n_ctx-1 only. A prompt longer than n_ctx keeps its last
n_ctx tokens. When prompt + new tokens fill the window, it slides: the last n_ctx // 2 tokens are encoded
again from position 0 into a fresh cache and generation goes on from there. Positions are never reused or
shifted inside a cache; the model simply forgets what slid out of the window.
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np
from tqdm import tqdm

from .beam import beam_search
from .checks import is_real, is_whole
from .config import ArgumentError
from .machine import physical_memory
from .model import KVCache, check_ids, gpt2
from .sample import check_sampling_args, process_logits, sample
from .vocab import EOT_ID

MAX_NEW_TOKENS = 1_000_000  # a request beyond this is a typo, not a plan: refused


def default_eot_id(model) -> int | None:
    """GPT-2's <|endoftext|> id if the model's vocabulary has room for it; a model trained on another
    vocabulary is given its own (`Tokenizer.eot_id`) by the caller."""
    return EOT_ID if model.config.n_vocab > EOT_ID else None


def stream(model, ids, max_new_tokens: int, *, temperature: float = 1.0, top_k: int | None = None,
           top_p: float | None = None, repetition_penalty: float | None = None, seed: int | None = None,
           stop_at_eot: bool = True, num_samples: int | None = None, eot_id: int | None = None,
           min_p: float | None = None, typical_p: float | None = None, no_repeat_ngram_size: int | None = None,
           min_new_tokens: int = 0, stop: list[str] | None = None, tokenizer=None) -> Iterator[np.ndarray]:
    """Yield new ids as they are made: an int array [] (one sample) or [num_samples] per step.

    `model` is a GPT2 (anything with .config and .params). Stops after `max_new_tokens` steps, or when every
    sample has produced the end-of-text id `eot_id` (default GPT-2's 50256) if `stop_at_eot`; a sample that
    has finished keeps yielding it. The settings act in transformers' order (sample.process_logits):
    repetition penalty, `no_repeat_ngram_size` (no n-gram of the prompt and the new ids twice),
    `min_new_tokens` (no end of text before that many), temperature, top-k, top-p, `min_p`, `typical_p`.
    `stop` (strings, with the `tokenizer` that spells the ids) ends a sample whose text comes to contain one
    (`StopStrings`); it then yields eot_id as an ended sample does.
    """
    # every check happens here, so that bad arguments fail at the call rather than at the first step
    check_generation_args(max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                          repetition_penalty=repetition_penalty, seed=seed, num_samples=num_samples, min_p=min_p,
                          typical_p=typical_p, no_repeat_ngram_size=no_repeat_ngram_size,
                          min_new_tokens=min_new_tokens, stop=stop, tokenizer=tokenizer)
    prompt, eot_id = check_prompt(model, ids, eot_id, max_new_tokens)
    check_memory(model.config, num_samples or 1, min(prompt.size + max_new_tokens, model.config.n_ctx))
    settings = dict(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, typical_p=typical_p,
                    repetition_penalty=repetition_penalty, no_repeat_ngram_size=no_repeat_ngram_size,
                    min_new_tokens=min_new_tokens)
    stops = StopStrings(stop, tokenizer, num_samples or 1, prompt) if stop else None
    return _steps(model, prompt, max_new_tokens, settings, np.random.default_rng(seed),
                  stop_at_eot and eot_id is not None, num_samples, -1 if eot_id is None else eot_id, stops)


def check_prompt(model, ids, eot_id: int | None, max_new_tokens: int) -> tuple[np.ndarray, int | None]:
    """(the prompt as an int array [T], the end-of-text id), or a ValueError naming what is wrong."""
    if isinstance(ids, (str, bytes)):
        raise TypeError(f"generate() takes token ids, not text; encode the text first: "
                        f"model.generate(tok.encode({ids!r}), {max_new_tokens})")
    prompt = np.asarray(ids)
    if prompt.ndim != 1 or prompt.size == 0:
        raise ValueError(f"the prompt must be a non-empty 1-D sequence of ids, got shape {prompt.shape}")
    check_ids(prompt[-model.config.n_ctx:], model.config, None)
    outside = (prompt < 0) | (prompt >= model.config.n_vocab)  # every id, also those a long prompt drops
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise ValueError(f"token id {prompt[i]} at prompt position {i} is outside the vocabulary "
                         f"[0, {model.config.n_vocab})")
    eot_id = default_eot_id(model) if eot_id is None else eot_id
    if eot_id is not None and not 0 <= eot_id < model.config.n_vocab:
        raise ValueError(f"eot_id {eot_id} is outside the vocabulary [0, {model.config.n_vocab})")
    return prompt, eot_id


def check_generation_args(max_new_tokens: int, *, temperature: float = 1.0, top_k: int | None = None,
                          top_p: float | None = None, repetition_penalty: float | None = None,
                          seed: int | None = None, num_samples: int | None = None, min_p: float | None = None,
                          typical_p: float | None = None, no_repeat_ngram_size: int | None = None,
                          min_new_tokens: int = 0, stop: list[str] | None = None, tokenizer=None,
                          num_beams: int = 1, length_penalty: float = 1.0, early_stopping: bool | str = False,
                          num_return_sequences: int | None = None) -> None:
    """Raise ArgumentError (a ValueError) naming the first argument of `generate` that is out of range."""
    check_sampling_args(temperature, top_k, top_p, repetition_penalty, min_p=min_p, typical_p=typical_p)
    check_beam_args(num_beams, length_penalty, early_stopping, num_return_sequences, temperature, num_samples,
                    stop)
    if stop is not None:
        if isinstance(stop, str) or not isinstance(stop, (list, tuple)) or \
                not all(isinstance(x, str) for x in stop):
            raise ArgumentError("stop", f"must be a list of strings, got {stop!r}")
        if any(x == "" for x in stop):
            raise ArgumentError("stop", "holds an empty string, which every text contains")
        if stop and not hasattr(tokenizer, "token_bytes"):
            raise ArgumentError("stop", "needs the tokenizer that spells the ids: generate(..., stop=[...], "
                                        "tokenizer=tok)")
    for name, v in (("no_repeat_ngram_size", no_repeat_ngram_size or 0), ("min_new_tokens", min_new_tokens)):
        if not is_whole(v) or v < 0:
            raise ArgumentError(name, f"must be a whole number >= 0, got {v!r}")
    if not is_whole(max_new_tokens) or max_new_tokens < 0:
        raise ArgumentError("max_new_tokens", f"must be >= 0 (a whole number), got {max_new_tokens!r}")
    if max_new_tokens > MAX_NEW_TOKENS:
        raise ArgumentError("max_new_tokens", f"must be at most {MAX_NEW_TOKENS:,} (days of decoding for GPT-2 "
                                              f"124M on a CPU), got {max_new_tokens:,}")
    if num_samples is not None and (not isinstance(num_samples, (int, np.integer)) or num_samples < 1):
        raise ArgumentError("num_samples", f"must be a positive integer or None, got {num_samples!r}")
    if seed is not None and (not is_whole(seed) or seed < 0):
        raise ArgumentError("seed", f"must be a non-negative integer or None, got {seed!r}")


def generation_bytes(config, batch: int, length: int) -> int:
    """About the bytes a batch of `batch` sequences of `length` tokens needs: the KV cache (preallocated to
    n_ctx), the prompt's forward pass (one layer's attention scores and MLP at a time) and the sampler's
    float64 work on a row of logits."""
    C, V, T = config.n_embd, config.n_vocab, length
    cache = 2 * config.n_layer * config.n_ctx * C * 4  # k and v, float32
    prefill = T * (3 * C + 4 * C + 2 * V) * 4 + 2 * config.n_head * T * T * 4  # qkv, MLP, logits, scores
    sampler = 6 * V * 8  # softmax, cumsum, argsort, ... in float64 / int64
    return batch * (cache + prefill + sampler)


def check_memory(config, batch: int, length: int) -> None:
    """ArgumentError naming num_samples (or max_new_tokens) before anything is allocated, when the batch
    cannot fit in this machine's memory."""
    total = physical_memory()
    need = generation_bytes(config, batch, length)
    if total is not None and need > total:
        per = generation_bytes(config, 1, length)
        raise ArgumentError("num_samples", f"{batch:,} samples need about {need / 1e9:,.1f} GB ({per / 1e6:,.0f} MB "
                                           f"each, mostly the KV cache), more than this machine's {total / 1e9:.1f} "
                                           f"GB; at most {max(1, total // per):,} fit")


def _steps(model, prompt: np.ndarray, max_new_tokens: int, settings: dict, rng: np.random.Generator,
           stop_at_eot: bool, num_samples: int | None, eot_id: int,
           stops: StopStrings | None = None) -> Iterator[np.ndarray]:
    """The loop itself (see `stream`)."""
    n_ctx = model.config.n_ctx
    batch = num_samples or 1
    context = np.repeat(prompt[None, -n_ctx:], batch, axis=0)  # [B, T]: every sample's tokens so far
    done = np.zeros(batch, dtype=bool)
    cache, logits = prefill(model, context)  # logits [B, V]
    for step in range(max_new_tokens):
        logits = process_logits(logits, context, repetition_penalty=settings["repetition_penalty"],
                                no_repeat_ngram_size=settings["no_repeat_ngram_size"],
                                min_new_tokens=settings["min_new_tokens"], new_tokens=step,
                                eot_id=eot_id if eot_id >= 0 else None,
                                temperature=0)  # the processors; `sample` applies the warpers and draws
        next_ids = sample(logits, rng, settings["temperature"], settings["top_k"], settings["top_p"],
                          settings["min_p"], settings["typical_p"])  # [B]
        next_ids = np.where(done, eot_id, next_ids)
        ended = done.copy()
        done |= stop_at_eot & (next_ids == eot_id)
        if stops is not None:  # a stop string completed by this token ends the sample too
            done |= [not e and stops.push(b, int(i)) is not None for b, (e, i) in enumerate(zip(ended, next_ids))]
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


def greedy_continuations(model, prompts: list[list[int]], max_new: list[int], eot_id: int, batch_size: int = 8,
                         progress: bool = False) -> list[list[int]]:
    """Each prompt's greedy continuation (argmax at every step), at most max_new[i] ids, cut at eot_id.

    The loop of `stream` for prompts of different lengths (exact match of task files scores with it): prompts
    run `batch_size` at a time, in order of length, through one KV cache; the batch is prefilled to its
    shortest prompt, then every row advances one position per step, reading its own prompt token where it has
    one left (teacher forcing) and its greedy choice after that. A row stops at the context's end.
    """
    n_ctx = model.config.n_ctx
    out: list[list[int]] = [[] for _ in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    for batch in tqdm(batches, desc="generating", unit="batch", disable=not progress, leave=False):
        rows = [prompts[i][-n_ctx:] for i in batch]
        first = min(len(r) for r in rows)
        cache, logits = prefill(model, np.array([r[:first] for r in rows], dtype=np.int64))  # [B, first] -> [B, V]
        done = [False] * len(batch)
        for pos in range(first, n_ctx + 1):  # the token at position `pos` is chosen (or forced) now
            nxt = logits.argmax(axis=-1)  # [B]
            feed = np.empty(len(batch), dtype=np.int64)  # [B]
            for b, i in enumerate(batch):
                if pos < len(rows[b]):
                    feed[b] = rows[b][pos]  # still inside this row's prompt
                    continue
                feed[b] = nxt[b]
                if not done[b]:
                    if nxt[b] == eot_id:
                        done[b] = True
                    else:
                        out[i].append(int(nxt[b]))
                        done[b] = len(out[i]) >= max_new[i]
            if all(done) or pos == n_ctx:
                break
            logits = gpt2(feed[:, None], model.params, model.config, cache)[:, -1]  # [B, 1] -> [B, V]
    return out


def generate(model, ids, max_new_tokens: int, *, num_samples: int | None = None, progress: bool = False,
             eot_id: int | None = None, num_beams: int = 1, length_penalty: float = 1.0,
             early_stopping: bool | str = False, num_return_sequences: int | None = None,
             **kwargs) -> list[int] | list[list[int]]:
    """The new ids (without the prompt, and without the final <|endoftext|>): a list, or one per sample.

    With `stop` (and `tokenizer`), a sample's ids run through the token that completes a stop string, as
    transformers returns them. With num_beams > 1 (and temperature=0): beam search (beam.py), the best
    hypothesis, or the best `num_return_sequences` of them, best first.
    """
    if num_beams != 1:
        return generate_beams(model, ids, max_new_tokens, num_beams=num_beams, length_penalty=length_penalty,
                              early_stopping=early_stopping, num_return_sequences=num_return_sequences,
                              progress=progress, eot_id=eot_id, num_samples=num_samples, **kwargs)
    # beam settings without beams (stream checks the rest)
    check_beam_args(num_beams, length_penalty, early_stopping, num_return_sequences, 1.0, num_samples, None)
    steps = stream(model, ids, max_new_tokens, num_samples=num_samples, eot_id=eot_id, **kwargs)
    rows = [np.atleast_1d(s) for s in tqdm(steps, total=max_new_tokens, desc="generating", unit="tok",
                                           disable=not progress, leave=False)]
    out = np.stack(rows, axis=1).tolist() if rows else [[] for _ in range(num_samples or 1)]  # [B, steps]
    eot_id = default_eot_id(model) if eot_id is None else eot_id
    if kwargs.get("stop"):  # through the token that completed a stop string, if one did
        prompt = np.asarray(ids)
        out = [row[: StopStrings(kwargs["stop"], kwargs.get("tokenizer"), 1, prompt).first_stop(row) + 1]
               for row in out]
    if kwargs.get("stop_at_eot", True) and eot_id is not None:
        out = [row[: row.index(eot_id)] if eot_id in row else row for row in out]
    return out if num_samples else out[0]


def generate_beams(model, ids, max_new_tokens: int, *, num_beams: int, length_penalty: float = 1.0,
                   early_stopping: bool | str = False, num_return_sequences: int | None = None,
                   progress: bool = False, eot_id: int | None = None, temperature: float = 1.0,
                   stop_at_eot: bool = True, repetition_penalty: float | None = None,
                   no_repeat_ngram_size: int | None = None, min_new_tokens: int = 0, stop: list[str] | None = None,
                   tokenizer=None, num_samples: int | None = None, **others):
    """`generate` with num_beams > 1: the checks, then beam.beam_search; the ends of text left out."""
    given = sorted(k for k, v in others.items() if v not in (None, 0))
    if given and given != ["seed"]:  # a seed changes nothing in a deterministic search: allowed
        raise ArgumentError(given[0], f"has no effect in beam search (num_beams={num_beams}), which keeps the "
                                      "most likely continuations; leave it out, or sample with num_beams=1")
    check_generation_args(max_new_tokens, temperature=temperature, repetition_penalty=repetition_penalty,
                          no_repeat_ngram_size=no_repeat_ngram_size, min_new_tokens=min_new_tokens,
                          num_beams=num_beams, length_penalty=length_penalty, early_stopping=early_stopping,
                          num_return_sequences=num_return_sequences, stop=stop, tokenizer=tokenizer,
                          num_samples=num_samples)
    prompt, eot_id = check_prompt(model, ids, eot_id, max_new_tokens)
    if prompt.size + max_new_tokens > model.config.n_ctx:
        raise ArgumentError("max_new_tokens", f"beam search keeps every beam's whole text in the model's context: "
                                              f"the prompt's {prompt.size} tokens + {max_new_tokens} must fit in "
                                              f"{model.config.n_ctx}")
    check_memory(model.config, num_beams, prompt.size + max_new_tokens)
    found = beam_search(model, prompt, max_new_tokens, num_beams, length_penalty=length_penalty,
                        early_stopping=early_stopping, num_return_sequences=num_return_sequences or 1,
                        eot_id=eot_id if stop_at_eot else None, repetition_penalty=repetition_penalty,
                        no_repeat_ngram_size=no_repeat_ngram_size, min_new_tokens=min_new_tokens,
                        progress=progress)
    out = [new[:-1] if stop_at_eot and new and new[-1] == eot_id else new for new, _ in found]
    return out if num_return_sequences else out[0]


def check_beam_args(num_beams: int, length_penalty: float, early_stopping: bool | str,
                    num_return_sequences: int | None, temperature: float, num_samples: int | None,
                    stop: list[str] | None) -> None:
    """ArgumentError naming the first beam-search argument that is out of range or does not go with the rest."""
    if not is_whole(num_beams) or num_beams < 1:
        raise ArgumentError("num_beams", f"must be a whole number >= 1 (1 = no beam search), got {num_beams!r}")
    if not is_real(length_penalty) or not math.isfinite(length_penalty):
        raise ArgumentError("length_penalty", f"must be a finite number, got {length_penalty!r}")
    if early_stopping not in (True, False, "never") or isinstance(early_stopping, (int, float)) and \
            not isinstance(early_stopping, bool):
        raise ArgumentError("early_stopping", f"must be True, False or \"never\", got {early_stopping!r}")
    if num_return_sequences is not None:
        if not is_whole(num_return_sequences) or num_return_sequences < 1:
            raise ArgumentError("num_return_sequences", f"must be a whole number >= 1, got {num_return_sequences!r}")
        if num_beams == 1:
            raise ArgumentError("num_return_sequences", "is for beam search (num_beams > 1); for several samples "
                                                        "pass num_samples")
        if num_return_sequences > num_beams:
            raise ArgumentError("num_return_sequences", f"{num_return_sequences} is more than num_beams "
                                                        f"({num_beams}): beam search finds at most num_beams")
    if num_beams > 1:
        if temperature != 0:
            raise ArgumentError("temperature", f"must be 0 with num_beams={num_beams}: beam search is "
                                               "deterministic, and sampled beams are not built; pass temperature=0")
        if num_samples is not None:
            raise ArgumentError("num_samples", "does not go with beam search; pass num_return_sequences")
        if stop:
            raise ArgumentError("stop", "works with greedy decoding and sampling, not with beam search")


class StopStrings:
    """Ends a sample when its text comes to contain one of `stops`: the rule of transformers'
    StopStringCriteria, on bytes. A token completes a stop string when the string ends inside that token's
    bytes (it may begin in earlier tokens or in the prompt; the token may run past its end); a stop string
    that ended in an earlier token has already stopped the sample."""

    def __init__(self, stops: list[str], tokenizer, rows: int, prompt: np.ndarray):
        self.stops = [x.encode("utf-8") for x in stops]
        self.token_bytes = tokenizer.token_bytes
        self.keep = max(len(x) for x in self.stops) - 1  # bytes of earlier text a stop string can reach into
        start = tokenizer.decode_bytes(prompt[-self.keep:].tolist())[-self.keep:] if self.keep else b""
        self.tails = [start] * rows  # [rows] the last `keep` bytes of each sample's text

    def push(self, row: int, token: int) -> int | None:
        """Add `token` to sample `row`'s text: how many of its bytes run through the end of the stop string it
        completes (the earliest such end), or None when it completes none."""
        piece = self.token_bytes(token)
        text = self.tails[row] + piece
        before = len(text) - len(piece)  # where the token's bytes begin in `text`
        ends = [i + len(x) - before for x in self.stops
                if (i := text.find(x, max(0, before - len(x) + 1))) >= 0]  # the first occurrence ending in piece
        self.tails[row] = text[-self.keep :] if self.keep else b""
        return min(ends) if ends else None

    def through_stop(self, ids: list[int], row: int = 0) -> bytes:
        """The text of `ids` (a sample's new ids) up to and including the first stop string, as bytes: all
        of it if none completes."""
        for n, i in enumerate(ids):
            end = self.push(row, i)
            if end is not None:
                return b"".join(map(self.token_bytes, ids[:n])) + self.token_bytes(i)[:end]
        return b"".join(map(self.token_bytes, ids))

    def first_stop(self, ids: list[int], row: int = 0) -> int:
        """The index in `ids` of the token that completes a stop string, or len(ids) - 1 if none does."""
        for n, i in enumerate(ids):
            if self.push(row, i) is not None:
                return n
        return len(ids) - 1
