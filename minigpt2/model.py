"""ids [..., T] -> logits [..., T, V]: the GPT-2 forward pass (pre-LN decoder blocks, tied LM head).

Legend for the shape comments: B batch (the optional leading axis "..."), T tokens in this call,
S positions attended to (cached + T), C n_embd, H n_head, D = C // H, V n_vocab.

    x = wte[ids] + wpe[positions]                       token + position embedding
    for each block:
        x = x + attn(layer_norm(x))                      masked multi-head self-attention
        x = x + mlp(layer_norm(x))                       position-wise MLP with GELU
    logits = layer_norm(x) @ wte.T                       tied LM head

Params (params.py) are a nested dict of float32 arrays with GPT-2's own names: params["blocks"][3]["attn"]
["c_attn"]["w"] is the checkpoint's blocks.3.attn.c_attn.w. subtle: weights are stored [n_out, n_in],
transposed from OpenAI's files, so that `linear` streams them row by row; the loaders transpose once.

Every equation is here in its textbook form; `@tunable` marks the one with a tuned form in fast.py (long
inputs' attention, a block of queries at a time; see dispatch.py), and `with minigpt2.reference_mode():` runs
this file's forms alone.

Every intermediate passes through `record(name, array)`, which returns the array. The plain forward uses
`keep` (returns it unchanged); `GPT2.run_with_activations` passes a recorder that stores arrays by name
("blocks.3.attn.pattern") and lets hooks replace them (head ablation, activation patching).
"""

from __future__ import annotations

import math
from fnmatch import fnmatchcase
from typing import Callable

import numpy as np

from .checks import is_whole
from .config import GPT2Config
from .dispatch import tunable
from .lora import lora_delta
from .ops import dropout as dropout_op  # the function; `dropout` below is always a Dropout object (or None)
from .ops import gelu, layer_norm, linear, softmax
from .params import Params

Record = Callable[[str, np.ndarray], np.ndarray]


def keep(name: str, x: np.ndarray) -> np.ndarray:
    """The plain forward's recorder: records nothing."""
    return x


def records_patterns(record: Record) -> bool:
    """Whether `record` wants the attention scores and patterns whole ([..., H, T, S]); if not, a long input's
    attention may run in query blocks (fast.py). A recorder that never keeps them says so with
    `record.patterns = False`."""
    return record is not keep and getattr(record, "patterns", True)


def dense(x: np.ndarray, p: Params, dropout: Dropout | None = None, name: str = "") -> np.ndarray:
    """A linear layer from its params {"w" [out, in], "b" [out]}: x [..., in] -> [..., out]. With a LoRA
    adapter beside them (lora.attach), its low-rank term is added: x w^T + b + s (x' A^T) B^T, where x' is x
    after the adapter's own dropout in training (PEFT's lora_dropout; mask "<name>.lora"), else x."""
    y = linear(x, p["w"], p["b"])
    if "lora_A" in p:
        xa, rate = x, p.get("lora_dropout", 0.0)
        if dropout is not None and rate > 0:
            xa = dropout_op(x, dropout.mask(f"{name}.lora", x.shape, rate), rate)  # [..., in]
        y += lora_delta(xa, p["lora_A"], p["lora_B"], p["lora_scaling"])
    return y


# --- attention ------------------------------------------------------------------------------------


def split_heads(x: np.ndarray, n_head: int) -> np.ndarray:
    """[..., T, C] -> [..., H, T, D]: heads become an array axis."""
    *lead, T, C = x.shape
    return x.reshape(*lead, T, n_head, C // n_head).swapaxes(-2, -3)


def merge_heads(x: np.ndarray) -> np.ndarray:
    """[..., H, T, D] -> [..., T, C]: the heads' outputs side by side."""
    x = x.swapaxes(-2, -3)  # [..., T, H, D]
    return x.reshape(*x.shape[:-2], -1)


def causal_mask(T: int, S: int) -> np.ndarray:
    """[T, S] bool: the t-th new token (at position S - T + t) may attend to positions <= its own."""
    return np.arange(S) <= np.arange(S - T, S)[:, None]


def attention_scores(q: np.ndarray, k: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """q [..., H, T, D], k [..., H, S, D] -> scaled dot products [..., H, T, S], masked positions -inf."""
    scores = (q * (1.0 / math.sqrt(q.shape[-1]))) @ k.swapaxes(-1, -2)  # [..., H, T, S]; scaling q is cheaper
    if mask is not None:  # None: nothing to hide (one new token may see every position before it)
        np.copyto(scores, -np.inf, where=~mask)  # causal mask: no attending to later positions
    return scores


@tunable
def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray | None, record: Record = keep,
              name: str = "attn", drop: np.ndarray | None = None, p: float = 0.0) -> np.ndarray:
    """softmax(q k^T / sqrt(D), masked) v: q [..., H, T, D], k and v [..., H, S, D] -> [..., H, T, D].
    In training with dropout, `drop` ([..., H, T, S] bool, True = kept) and `p` drop attention probabilities."""
    scores = record(f"{name}.scores", attention_scores(q, k, mask))  # [..., H, T, S]
    pattern = record(f"{name}.pattern", softmax(scores))  # [..., H, T, S], rows sum to 1
    if drop is not None:
        pattern = dropout_op(pattern, drop, p)  # [..., H, T, S]: some probabilities zeroed, the rest scaled up
    return pattern @ v  # [..., H, T, D]: each position's weighted sum of values


def mha(x: np.ndarray, attn: Params, n_head: int, layer: int, cache: KVCache | None, mask: np.ndarray | None,
        record: Record = keep, dropout: Dropout | None = None) -> np.ndarray:
    """Masked multi-head self-attention: x [..., T, C] -> [..., T, C]."""
    name = f"blocks.{layer}.attn"
    qkv = dense(x, attn["c_attn"], dropout, f"{name}.c_attn")  # [..., T, C] -> [..., T, 3C]: q, k, v at once
    C = x.shape[-1]
    q, k, v = (split_heads(qkv[..., i * C : (i + 1) * C], n_head) for i in range(3))  # 3 x [..., H, T, D]
    q, k, v = record(f"{name}.q", q), record(f"{name}.k", k), record(f"{name}.v", v)
    if cache is not None:
        k, v = cache.update(layer, k, v)  # [..., H, S, D]: all positions so far
    drop, p = None, 0.0
    if dropout is not None:  # training: one mask over the whole pattern, whichever way it is computed
        drop, p = dropout.mask(f"{name}.pattern", (*q.shape[:-1], k.shape[-2])), dropout.p  # [..., H, T, S]
    z = record(f"{name}.z", attention(q, k, v, mask, record, name, drop, p))  # [..., H, T, D]: each head's output
    return record(f"{name}.out", dense(merge_heads(z), attn["c_proj"], dropout, f"{name}.c_proj"))  # [..., T, C]


# --- MLP and block --------------------------------------------------------------------------------


def mlp(x: np.ndarray, p: Params, layer: int, record: Record = keep, dropout: Dropout | None = None) -> np.ndarray:
    """Position-wise MLP: x [..., T, C] -> [..., T, 4C] -> GELU -> [..., T, C]."""
    h = record(f"blocks.{layer}.mlp.pre", dense(x, p["c_fc"], dropout, f"blocks.{layer}.mlp.c_fc"))  # [..., T, 4C]
    h = record(f"blocks.{layer}.mlp.post", gelu(h))  # [..., T, 4C]
    return record(f"blocks.{layer}.mlp.out", dense(h, p["c_proj"], dropout, f"blocks.{layer}.mlp.c_proj"))


def block(x: np.ndarray, p: Params, config: GPT2Config, layer: int, cache: KVCache | None,
          mask: np.ndarray | None, record: Record = keep, dropout: Dropout | None = None) -> np.ndarray:
    """One pre-LN decoder block: x [..., T, C] -> [..., T, C]. With `dropout` (training), each branch's
    output is dropped before it joins the residual stream, as GPT-2's resid_pdrop."""
    eps = config.layer_norm_epsilon
    x = record(f"blocks.{layer}.resid_pre", x)
    h = record(f"blocks.{layer}.ln_1", layer_norm(x, **p["ln_1"], eps=eps))
    h = mha(h, p["attn"], config.n_head, layer, cache, mask, record, dropout)  # [..., T, C]
    x = x + (h if dropout is None else dropout(f"blocks.{layer}.attn.out", h))  # [..., T, C]
    x = record(f"blocks.{layer}.resid_mid", x)
    h = record(f"blocks.{layer}.ln_2", layer_norm(x, **p["ln_2"], eps=eps))
    h = mlp(h, p["mlp"], layer, record, dropout)  # [..., T, C]
    x = x + (h if dropout is None else dropout(f"blocks.{layer}.mlp.out", h))  # [..., T, C]
    return record(f"blocks.{layer}.resid_post", x)


def transformer(ids: np.ndarray, params: Params, config: GPT2Config, cache: KVCache | None = None,
                record: Record = keep, last_only: bool = False, dropout: Dropout | None = None) -> np.ndarray:
    """ids [..., T] -> the final layer norm's output [..., T, C] (or [..., 1, C] with last_only): everything
    but the LM head. Appends to `cache` if given; `dropout` (training only) drops where GPT-2 does."""
    T = ids.shape[-1]
    start = cache.length if cache is not None else 0  # position of the first new token
    x = params["wte"][ids] + params["wpe"][start : start + T]  # [..., T, C]
    x = record("embed", x)
    if dropout is not None:
        x = dropout("embed", x)  # [..., T, C]: GPT-2's embd_pdrop
    mask = causal_mask(T, start + T) if T > 1 else None  # [T, S]; a single new token may see everything
    for layer, p in enumerate(params["blocks"]):
        x = block(x, p, config, layer, cache, mask, record, dropout)  # [..., T, C]
    if cache is not None:
        cache.length += T
    if last_only:
        x = x[..., -1:, :]  # [..., 1, C]: generation needs only the next-token logits
    return record("ln_f", layer_norm(x, **params["ln_f"], eps=config.layer_norm_epsilon))  # [..., T, C]


def gpt2(ids: np.ndarray, params: Params, config: GPT2Config, cache: KVCache | None = None,
         record: Record = keep, last_only: bool = False) -> np.ndarray:
    """ids [..., T] -> logits [..., T, V] (or [..., 1, V] with last_only). Appends to `cache` if given."""
    x = transformer(ids, params, config, cache, record, last_only)  # [..., T, C]
    # tied LM head: the token embedding, [V, C], is the output projection too
    return record("logits", linear(x, params["wte"]))  # [..., T, C] -> [..., T, V]


# --- dropout --------------------------------------------------------------------------------------


class Dropout:
    """Dropout for one training forward: drops with probability `p` where GPT-2 does (the embeddings,
    the attention probabilities, each residual branch's output), masks drawn from `rng` in the forward's
    order and kept by name (`keep["blocks.0.attn.pattern"]`, bool, True = kept) for the backward."""

    def __init__(self, p: float, rng: np.random.Generator):
        assert 0.0 <= p < 1.0, f"dropout probability {p} is outside [0, 1)"
        self.p, self.rng = p, rng
        self.keep: dict[str, np.ndarray] = {}
        self.replay = False  # True while the backward recomputes a block: the masks already drawn are reused

    def mask(self, name: str, shape: tuple[int, ...], p: float | None = None) -> np.ndarray:
        """A new mask of `shape` (True with probability 1 - p, by default self.p), kept under `name` (when
        replaying, the one kept). Probability 0 keeps everything and draws nothing."""
        if self.replay:
            return self.keep[name]
        p = self.p if p is None else p
        self.keep[name] = self.rng.random(shape, dtype=np.float32) >= p if p > 0 else np.ones(shape, bool)
        return self.keep[name]

    def __call__(self, name: str, x: np.ndarray) -> np.ndarray:
        """x with a new mask applied (ops.dropout)."""
        return dropout_op(x, self.mask(name, x.shape), self.p)  # x's shape


# --- KV cache -------------------------------------------------------------------------------------


class KVCache:
    """Keys and values of every layer for the positions processed so far, preallocated to n_ctx.

    With it, each new token costs one row of work instead of re-running the whole prefix. Memory:
    2 (k and v) * n_layer * n_ctx * n_embd * 4 bytes per sequence (75.5 MB for 124M, 629 MB for 1558M).
    """

    def __init__(self, config: GPT2Config, batch_size: int | None = None):
        lead = () if batch_size is None else (batch_size,)
        shape = (config.n_layer, *lead, config.n_head, config.n_ctx, config.head_dim)
        self.k = np.zeros(shape, dtype=np.float32)  # [L, ..., H, n_ctx, D]
        self.v = np.zeros(shape, dtype=np.float32)  # [L, ..., H, n_ctx, D]
        self.batch_size = batch_size
        self.length = 0  # positions filled

    def update(self, layer: int, k: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Store k, v [..., H, T, D] after the cached positions; return all [..., H, S, D] (views, no copy)."""
        S = self.length + k.shape[-2]
        self.k[layer, ..., self.length : S, :] = k
        self.v[layer, ..., self.length : S, :] = v
        return self.k[layer, ..., :S, :], self.v[layer, ..., :S, :]

    def select(self, rows) -> KVCache:
        """A new cache whose row i holds this cache's row rows[i] (a batched cache; beam search starts its
        beams from one prefilled prompt this way)."""
        out = KVCache.__new__(KVCache)
        S = self.length
        out.k, out.v = (np.zeros((a.shape[0], len(rows), *a.shape[2:]), dtype=a.dtype) for a in (self.k, self.v))
        out.k[:, :, :, :S], out.v[:, :, :, :S] = self.k[:, rows, :, :S], self.v[:, rows, :, :S]
        out.batch_size, out.length = len(rows), S
        return out

    def reorder(self, rows) -> None:
        """Row i now holds what row rows[i] held, in place (beam search: each beam continues from the beam
        it came from). Only the rows that change and their filled positions are moved."""
        rows = np.asarray(rows)
        moved = np.flatnonzero(rows != np.arange(len(rows)))  # rows that continue another row
        S = self.length
        self.k[:, moved, :, :S] = self.k[:, rows[moved], :, :S]  # [L, m, H, S, D]; the right side is a copy
        self.v[:, moved, :, :S] = self.v[:, rows[moved], :, :S]

    @property
    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes


# --- checks at the edges --------------------------------------------------------------------------


def check_ids(ids, config: GPT2Config, cache: KVCache | None) -> np.ndarray:
    """Validate token ids: an integer array [T] or [B, T] (B, T >= 1) of ids in [0, V) that fits in the
    context, and a cache (if given) made for this model and batch, with a length in [0, n_ctx]."""
    ids = np.asarray(ids)
    if ids.dtype == bool or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"token ids must be integers, got dtype {ids.dtype}")
    if ids.ndim not in (1, 2) or ids.size == 0:
        raise ValueError(f"token ids must have shape [T] or [B, T] with B, T >= 1, got shape {ids.shape}")
    if cache is not None:
        check_cache(cache, config)
    start = cache.length if cache is not None else 0
    if start + ids.shape[-1] > config.n_ctx:
        raise ValueError(f"sequence too long: {start} cached + {ids.shape[-1]} new tokens > n_ctx = {config.n_ctx}")
    if ids.min() < 0 or ids.max() >= config.n_vocab:
        bad = ids[(ids < 0) | (ids >= config.n_vocab)].flat[0]
        raise ValueError(f"token id {bad} is outside the vocabulary [0, {config.n_vocab})")
    if cache is not None and (ids.ndim == 2) != (cache.batch_size is not None):
        raise ValueError(f"ids of shape {ids.shape} do not match a cache made for batch_size={cache.batch_size}")
    if cache is not None and ids.ndim == 2 and ids.shape[0] != cache.batch_size:
        raise ValueError(f"batch of {ids.shape[0]} sequences does not match the cache's batch_size={cache.batch_size}")
    return ids


def check_cache(cache: KVCache, config: GPT2Config) -> None:
    """A KVCache made for a model of this shape, holding between 0 and n_ctx positions."""
    if not isinstance(cache, KVCache):
        raise ValueError(f"cache must be a KVCache (model.new_cache()), got {type(cache).__name__}")
    lead = () if cache.batch_size is None else (cache.batch_size,)
    shape = (config.n_layer, *lead, config.n_head, config.n_ctx, config.head_dim)
    if cache.k.shape != shape or cache.v.shape != shape:
        raise ValueError(f"the cache holds keys of shape {cache.k.shape}, but this model needs {shape}: it was made "
                         "for another model; make one with model.new_cache()")
    if not is_whole(cache.length) \
            or not 0 <= cache.length <= config.n_ctx:
        raise ValueError(f"the cache's length is {cache.length!r}, outside [0, n_ctx = {config.n_ctx}]")


def recorder(names: str | list[str] | None = None, hooks: dict[str, Callable] | None = None,
             ) -> tuple[Record, dict[str, np.ndarray], set[str]]:
    """A `record` for the forward that keeps the activations matching `names` (glob patterns; None: all) and
    lets `hooks` ({pattern: f(array) -> array}) replace them. Returns (record, recorded, patterns that matched).

    A hook must return an array of the activation's shape; anything else is an error naming both.
    """
    patterns = [names] if isinstance(names, str) else names
    recorded: dict[str, np.ndarray] = {}
    matched: set[str] = set()

    def record(name: str, x: np.ndarray) -> np.ndarray:
        for pattern, hook in (hooks or {}).items():
            if fnmatchcase(name, pattern):
                matched.add(pattern)
                out = hook(x)
                if out is None:
                    raise ValueError(f"the hook for {pattern!r} returned None at activation {name!r}; a hook must "
                                     "return the (possibly edited) array, e.g. end it with `return x`")
                out = np.asarray(out, dtype=np.float32)
                if out.shape != x.shape:
                    raise ValueError(f"the hook for {pattern!r} returned shape {out.shape} at activation {name!r}, "
                                     f"which has shape {x.shape}; a hook must keep the shape")
                x = out
        if patterns is None:
            recorded[name] = x
        else:
            for p in patterns:
                if fnmatchcase(name, p):
                    matched.add(p)
                    recorded[name] = x
        return x

    return record, recorded, matched
