"""ids, targets -> loss and d loss / d params: backpropagation through GPT-2, the forward mirrored.

The loss is the mean next-token cross-entropy, -1/N sum_t log P(targets[t] | ids[..t]), over the N positions
whose target is not -1 (padding, or the prompt of a fine-tuning example). Maximising the likelihood of the
text, as GPT-2 was pre-trained, is minimising this.

    forward (model.py)                          backward (here), in reverse order
    x = wte[ids] + wpe[positions]               dwte[ids] += dx; dwpe[positions] += dx   (embedding_backward)
    for each block:                             for each block, last first:         (block_backward)
        x = x + mha(ln_1(x))                        dx += ln_1 <- mha_backward(dx)
        x = x + mlp(ln_2(x))                        dx += ln_2 <- mlp_backward(dx)
    h = ln_f(x); logits = h @ wte.T             dh, dwte = lm_head_and_loss(...)  (the tied head: wte again)

The forward is model.transformer itself: its `record` hook keeps, by name, the activations the backward
reads (SAVED). Kept per token and layer: the block's input and midpoint, both layer norms' outputs, q, k,
v and z, and the MLP's input and output of GELU: 16 C floats, 48 KB at the 124M shape (C = 768), 590 KB per
token for all 12 layers. Not kept: attention patterns ([H, T, T] per layer), recomputed from q and k; logits
([T, V], 201 KB per token at V = 50257), made in the head, whose backward runs right away. `@tunable` marks
the functions with a tuned form in fast.py (the same numbers, faster; see dispatch.py).

Legend as in model.py: T tokens, C n_embd, H n_head, D = C // H, V n_vocab, N rows that have a target.
"""

from __future__ import annotations

import math

import numpy as np

from .config import GPT2Config
from .dispatch import tunable
from .lora import has_adapter, lora_delta_backward
from .model import (
    Dropout,
    attention_scores,
    block,
    causal_mask,
    merge_heads,
    split_heads,
    transformer,
)
from .ops import dropout as dropout_op  # the function; `dropout` below is always a Dropout object (or None)
from .ops import (
    cross_entropy,
    cross_entropy_backward,
    dropout_backward,
    gelu_backward,
    layer_norm_backward,
    linear,
    linear_backward,
    softmax,
    softmax_backward,
)
from .params import Params

# the activations the backward reads, by the last part of their names (model.py's record names)
SAVED = {"resid_pre", "ln_1", "q", "k", "v", "z", "resid_mid", "ln_2", "pre", "post", "resid_post"}


# --- the loss -------------------------------------------------------------------------------------


def check_targets(targets, ids: np.ndarray, n_vocab: int) -> np.ndarray:
    """Targets: integers of the ids' shape, each in [0, n_vocab) or -1 (no loss at that position)."""
    targets = np.asarray(targets)
    if targets.dtype == bool or not np.issubdtype(targets.dtype, np.integer):
        raise ValueError(f"targets must be integers, got dtype {targets.dtype}")
    if targets.shape != ids.shape:
        raise ValueError(f"targets have shape {targets.shape} but ids have shape {ids.shape}; give one target "
                         "per position (-1 where there is none)")
    bad = (targets < -1) | (targets >= n_vocab)
    if bad.any():
        raise ValueError(f"target {targets[bad].flat[0]} is outside [-1, {n_vocab}) (-1 means no loss there)")
    if not (targets >= 0).any():
        raise ValueError("every target is -1: there is no position to compute a loss on")
    return targets


@tunable
def lm_head_and_loss(h: np.ndarray, wte: np.ndarray, targets: np.ndarray, with_grads: bool = True,
                     grad_scale: float = 1.0, head_grad: bool = True,
                     ) -> tuple[float, np.ndarray | None, np.ndarray | None]:
    """Mean cross-entropy of the tied head's logits h @ wte.T: h [..., T, C], targets [..., T] ->
    (loss, dh [..., T, C], dwte [V, C]), or (loss, None, None) without `with_grads`. Only the N rows with a
    target go through the head. The gradients are those of grad_scale x loss (the seed of the backward).
    head_grad=False (a frozen head, as in a LoRA run): dwte is None and never computed."""
    C = h.shape[-1]
    h2, t2 = h.reshape(-1, C), targets.reshape(-1)  # [B*T, C], [B*T]
    rows = np.flatnonzero(t2 >= 0)  # [N] positions that are scored
    x, t = h2[rows], t2[rows]  # [N, C], [N]
    logits = linear(x, wte)  # [N, C] @ [C, V] -> [N, V]
    nll, probs = cross_entropy(logits, t)  # [N], [N, V]
    loss = float(nll.sum(dtype=np.float64)) / len(rows)
    if not with_grads:
        return loss, None, None
    dlogits = cross_entropy_backward(np.full(len(rows), grad_scale / len(rows), dtype=h.dtype), probs, t)  # [N, V]
    dx = dlogits @ wte  # [N, C]
    dwte = dlogits.T @ x if head_grad else None  # [V, C]
    dh = np.zeros_like(h2)  # [B*T, C]: unscored positions get no gradient
    dh[rows] = dx
    return loss, dh.reshape(h.shape), dwte


# --- attention ------------------------------------------------------------------------------------


@tunable
def attention_backward(dz: np.ndarray, q: np.ndarray, k: np.ndarray, v: np.ndarray, z: np.ndarray,
                       mask: np.ndarray | None, drop: np.ndarray | None = None, p: float = 0.0,
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Through z = dropout(softmax(q k^T / sqrt(D), masked)) v: dz [..., H, T, D] -> (dq [..., H, T, D],
    dk, dv [..., H, S, D]). The pattern is recomputed from q and k rather than kept from the forward
    ([H, T, S] per layer). Masked positions have P = 0, so their scores get no gradient."""
    pattern = softmax(attention_scores(q, k, mask))  # [..., H, T, S], as in the forward
    dropped = pattern if drop is None else dropout_op(pattern, drop, p)  # [..., H, T, S]: what multiplied v
    dv = dropped.swapaxes(-1, -2) @ dz  # [..., H, S, T] @ [..., H, T, D] -> [..., H, S, D]
    dpattern = dz @ v.swapaxes(-1, -2)  # [..., H, T, S]
    if drop is not None:
        dpattern = dropout_backward(dpattern, drop, p)  # d of the pattern before dropout
    dscores = softmax_backward(dpattern, pattern) * (1.0 / math.sqrt(q.shape[-1]))  # scores were q k^T / sqrt(D)
    dq = dscores @ k  # [..., H, T, S] @ [..., H, S, D] -> [..., H, T, D]
    dk = dscores.swapaxes(-1, -2) @ q  # [..., H, S, D]
    return dq, dk, dv


def dense_backward(dy: np.ndarray, x: np.ndarray, p: Params, frozen: bool = False, dropout: Dropout | None = None,
                   name: str = "") -> tuple[np.ndarray, Params]:
    """`model.dense` mirrored: dy [..., out] -> (dx [..., in], grads of what trains). A frozen layer (a LoRA run
    freezes every base weight) passes dx = dy w back and computes no dw or db; its adapter, if it has one,
    gets dA and dB (lora.lora_delta_backward), through the forward's adapter dropout mask if it had one."""
    if not frozen:
        dx, dw, db = linear_backward(dy, x, p["w"])
        return dx, {"w": dw, "b": db}
    dx = (dy.reshape(-1, dy.shape[-1]) @ p["w"]).reshape(*dy.shape[:-1], p["w"].shape[1])  # [..., in]
    if "lora_A" not in p:
        return dx, {}
    mask = None if dropout is None else dropout.keep.get(f"{name}.lora")  # [..., in] bool, or None
    rate = p.get("lora_dropout", 0.0)
    xa = x if mask is None else dropout_op(x, mask, rate)  # what the adapter read
    dx_lora, da, db = lora_delta_backward(dy, xa, p["lora_A"], p["lora_B"], p["lora_scaling"])
    dx += dx_lora if mask is None else dropout_backward(dx_lora, mask, rate)
    return dx, {"lora_A": da, "lora_B": db}


def mha_backward(dout: np.ndarray, attn: Params, acts: dict, n_head: int, layer: int, mask: np.ndarray | None,
                 dropout: Dropout | None = None, frozen: bool = False) -> tuple[np.ndarray, Params]:
    """`mha` mirrored: dout [..., T, C] -> (d its input [..., T, C], grads of c_attn and c_proj)."""
    name = f"blocks.{layer}.attn"
    q, k, v, z = (acts[f"{name}.{a}"] for a in "qkvz")  # [..., H, T, D] each
    dmerged, d_proj = dense_backward(dout, merge_heads(z), attn["c_proj"], frozen, dropout, f"{name}.c_proj")
    dz = split_heads(dmerged, n_head)  # [..., H, T, D]
    drop, p = (None, 0.0) if dropout is None else (dropout.keep[f"{name}.pattern"], dropout.p)  # [..., H, T, S]
    dq, dk, dv = attention_backward(dz, q, k, v, z, mask, drop, p)  # [..., H, T, D] each
    dqkv = np.concatenate([merge_heads(dq), merge_heads(dk), merge_heads(dv)], axis=-1)  # [..., T, 3C]
    dx, d_attn = dense_backward(dqkv, acts[f"blocks.{layer}.ln_1"], attn["c_attn"], frozen, dropout,
                                f"{name}.c_attn")  # [..., T, C]
    return dx, trained({"c_attn": d_attn, "c_proj": d_proj})


# --- MLP and block --------------------------------------------------------------------------------


def mlp_backward(dout: np.ndarray, p: Params, acts: dict, layer: int, frozen: bool = False,
                 dropout: Dropout | None = None) -> tuple[np.ndarray, Params]:
    """`mlp` mirrored: dout [..., T, C] -> (d its input [..., T, C], grads of c_fc and c_proj)."""
    name = f"blocks.{layer}.mlp"
    dpost, d_proj = dense_backward(dout, acts[f"{name}.post"], p["c_proj"], frozen, dropout, f"{name}.c_proj")
    dpre = gelu_backward(dpost, acts[f"{name}.pre"])  # [..., T, 4C]
    dx, d_fc = dense_backward(dpre, acts[f"blocks.{layer}.ln_2"], p["c_fc"], frozen, dropout, f"{name}.c_fc")
    return dx, trained({"c_fc": d_fc, "c_proj": d_proj})


def trained(grads: Params) -> Params:
    """The grads without the entries of frozen parts (empty dicts), so that a LoRA run's grads have the
    adapter's shape."""
    return {k: v for k, v in grads.items() if not isinstance(v, dict) or v}


def block_backward(dx: np.ndarray, p: Params, acts: dict, config: GPT2Config, layer: int,
                   mask: np.ndarray | None, dropout: Dropout | None = None, frozen: bool = False,
                   ) -> tuple[np.ndarray, Params]:
    """`block` mirrored: d its output [..., T, C] -> (d its input [..., T, C], grads of the block's params).

    Each residual connection x + f(x) passes dx straight through and adds what flows back through f
    (through the forward's dropout mask first, if it had one). `frozen`: the layer norms' gains and biases
    and the base weights get no grads (a LoRA run), only the adapters do.
    """
    eps, name = config.layer_norm_epsilon, f"blocks.{layer}"
    # x = x_mid + dropout(mlp(ln_2(x_mid)))
    dh = dx if dropout is None else dropout_backward(dx, dropout.keep[f"{name}.mlp.out"], dropout.p)
    dh, d_mlp = mlp_backward(dh, p["mlp"], acts, layer, frozen, dropout)  # [..., T, C]
    dh, dg_2, db_2 = layer_norm_backward(dh, acts[f"{name}.resid_mid"], p["ln_2"]["g"], eps)
    dx = dx + dh  # [..., T, C]: d x_mid
    # x_mid = x_pre + dropout(mha(ln_1(x_pre)))
    dh = dx if dropout is None else dropout_backward(dx, dropout.keep[f"{name}.attn.out"], dropout.p)
    dh, d_attn = mha_backward(dh, p["attn"], acts, config.n_head, layer, mask, dropout, frozen)  # [..., T, C]
    dh, dg_1, db_1 = layer_norm_backward(dh, acts[f"{name}.resid_pre"], p["ln_1"]["g"], eps)
    dx = dx + dh  # [..., T, C]: d x_pre
    if frozen:
        return dx, trained({"attn": d_attn, "mlp": d_mlp})
    return dx, {"ln_1": {"g": dg_1, "b": db_1}, "attn": d_attn, "ln_2": {"g": dg_2, "b": db_2}, "mlp": d_mlp}


def embedding_backward(dx: np.ndarray, ids: np.ndarray, params: Params, dwte: np.ndarray | None = None,
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Through x = wte[ids] + wpe[0..T-1]: dx [..., T, C] -> (dwte [V, C], dwpe [n_ctx, C]).

    A lookup's backward is a scatter-add: every occurrence of an id adds its row of dx to that id's row.
    Given `dwte` (the tied head's share), it is added into that array rather than a new one.
    """
    T, C = dx.shape[-2:]
    dwte = np.zeros_like(params["wte"]) if dwte is None else dwte  # [V, C]
    np.add.at(dwte, ids.reshape(-1), dx.reshape(-1, C))  # repeated ids accumulate, unlike dwte[ids] += dx
    dwpe = np.zeros_like(params["wpe"])  # [n_ctx, C]
    dwpe[:T] = dx.reshape(-1, T, C).sum(axis=0)  # every sequence of the batch uses positions 0..T-1
    return dwte, dwpe


# --- the whole model ------------------------------------------------------------------------------


def forward_for_backward(ids: np.ndarray, params: Params, config: GPT2Config, dropout: Dropout | None = None,
                         recompute: bool = False) -> tuple[np.ndarray, dict]:
    """model.transformer, keeping the activations the backward reads: (h [..., T, C], {name: array}).

    With `recompute` (activation checkpointing), only each block's input and the last block's output are kept:
    1 C floats per token and layer instead of 16; the backward runs each block's forward again
    (`recompute_block`) just before going back through it, about one more forward pass in all."""
    acts: dict[str, np.ndarray] = {}
    last = f"blocks.{config.n_layer - 1}.resid_post"  # ln_f's input

    def record(name: str, x: np.ndarray) -> np.ndarray:
        part = name.rsplit(".", 1)[-1]
        if (part == "resid_pre" or name == last) if recompute else part in SAVED:
            acts[name] = x
        return x

    record.patterns = False  # attention patterns are recomputed in the backward: blocked attention is fine
    return transformer(ids, params, config, record=record, dropout=dropout), acts


def recompute_block(params: Params, acts: dict, config: GPT2Config, layer: int, dropout: Dropout | None) -> None:
    """Block `layer`'s activations again, into `acts`, from its kept input [..., T, C], with the causal mask
    and the dropout masks the first forward used (Dropout.replay): the same arrays, so the same gradients."""
    x = acts[f"blocks.{layer}.resid_pre"]  # [..., T, C]
    T = x.shape[-2]
    mask = causal_mask(T, T) if T > 1 else None  # [T, T], as the forward's
    def record(name: str, x: np.ndarray) -> np.ndarray:
        if name.rsplit(".", 1)[-1] in SAVED:
            acts[name] = x
        return x

    record.patterns = False
    if dropout is not None:
        dropout.replay = True
    try:
        block(x, params["blocks"][layer], config, layer, None, mask, record, dropout)
    finally:
        if dropout is not None:
            dropout.replay = False


def gpt2_backward(dh: np.ndarray, ids: np.ndarray, params: Params, config: GPT2Config, acts: dict,
                  dwte_head: np.ndarray | None = None, dropout: Dropout | None = None,
                  recompute: bool = False) -> Params:
    """`transformer` mirrored: dh (d the final layer norm's output) [..., T, C] -> grads of every parameter.
    The tied head's share of dwte, if given, receives the embedding's share (and is the grads' "wte").
    With a LoRA adapter attached (lora.attach), the base is frozen: the grads are the adapter's alone, and the
    backward stops at the first block (the embeddings need no gradient)."""
    frozen = has_adapter(params)
    T = ids.shape[-1]
    mask = causal_mask(T, T) if T > 1 else None
    x_last = acts[f"blocks.{config.n_layer - 1}.resid_post"]  # [..., T, C]: ln_f's input
    dx, dg, db = layer_norm_backward(dh, x_last, params["ln_f"]["g"], config.layer_norm_epsilon)
    blocks = [None] * config.n_layer
    for layer in reversed(range(config.n_layer)):
        if recompute:  # this block's activations, made again from its input and dropped right after
            recompute_block(params, acts, config, layer, dropout)
        dx, blocks[layer] = block_backward(dx, params["blocks"][layer], acts, config, layer, mask, dropout, frozen)
        if recompute:
            for name in [k for k in acts if k.startswith(f"blocks.{layer}.") and not k.endswith(".resid_pre")]:
                del acts[name]
    if frozen:
        return {"blocks": blocks}
    if dropout is not None:
        dx = dropout_backward(dx, dropout.keep["embed"], dropout.p)  # [..., T, C]: the embeddings' dropout
    dwte, dwpe = embedding_backward(dx, ids, params, dwte_head)  # tied: wte is the embedding and the head
    return {"wte": dwte, "wpe": dwpe, "blocks": blocks, "ln_f": {"g": dg, "b": db}}


def loss_and_grads(ids: np.ndarray, targets: np.ndarray, params: Params, config: GPT2Config,
                   dropout: Dropout | None = None, grad_scale: float = 1.0, recompute: bool = False,
                   ) -> tuple[float, Params]:
    """(mean cross-entropy, grads with the structure, shapes and dtype of params). ids, targets [T] or [B, T].
    With `dropout` (a model.Dropout), the forward drops as GPT-2 does in training and the backward uses the
    same masks: the exact gradient of the loss for the masks drawn. The grads are those of grad_scale x the
    loss: a micro-batch's share of a larger mean costs no extra pass over the gradient (train.step_gradient).
    `recompute`: keep only each block's input and recompute the rest in the backward (forward_for_backward)."""
    h, acts = forward_for_backward(ids, params, config, dropout, recompute)  # [..., T, C]
    loss, dh, dwte_head = lm_head_and_loss(h, params["wte"], targets, grad_scale=grad_scale,
                                           head_grad=not has_adapter(params))
    del h  # [..., T, C]: no longer needed
    return loss, gpt2_backward(dh, ids, params, config, acts, dwte_head, dropout, recompute)


def loss(ids: np.ndarray, targets: np.ndarray, params: Params, config: GPT2Config) -> float:
    """The mean cross-entropy alone: the plain forward, nothing kept for a backward."""
    h = transformer(ids, params, config)  # [..., T, C]
    return lm_head_and_loss(h, params["wte"], targets, with_grads=False)[0]
