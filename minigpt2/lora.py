"""Low-rank adaptation (LoRA): fine-tune a frozen GPT-2 through two small matrices per adapted layer.

A linear layer y = x W^T + b (W [out, in], frozen) becomes

    y = x W^T + b + s * (x A^T) B^T          A [r, in], B [out, r]: the only trained weights; s = alpha / r

so the update to W is the rank-r product s * B A, trained at a cost of r * (in + out) numbers instead of
in * out. A starts random (PEFT's kaiming-uniform, a = sqrt(5): U(-1/sqrt(in), 1/sqrt(in))) and B at zero: the
adapted model starts as the base model exactly, and the first gradient reaches B (dB = s dy^T (x A^T)) before
A (dA = s (dy B)^T x, zero while B is). Merged, W' = W + s B A computes the same function at no extra cost.

Targets, by PEFT's names for GPT-2's layers: c_attn (the attention's q, k, v), c_proj (both the attention's
output projection and the MLP's second layer, as in PEFT), c_fc (the MLP's first layer).

In a params tree, an adapted layer's dict carries its adapter beside w and b (`attach`): {"w", "b", "lora_A",
"lora_B", "lora_scaling"}; model.dense and backward.dense_backward read them. An adapter alone is a tree of
the same shape holding only {"lora_A", "lora_B"} per adapted layer (`init_adapter`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .checks import is_real, is_whole
from .config import ArgumentError, GPT2Config
from .params import Params, param_shapes

# PEFT's target name -> the (group, layer) places it adapts in every block
TARGETS = {"c_attn": (("attn", "c_attn"),), "c_proj": (("attn", "c_proj"), ("mlp", "c_proj")),
           "c_fc": (("mlp", "c_fc"),)}
PLACES = (("attn", "c_attn"), ("attn", "c_proj"), ("mlp", "c_fc"), ("mlp", "c_proj"))  # in forward order


@dataclass(frozen=True)
class LoraConfig:
    """A LoRA adapter's settings, PEFT's defaults: rank 8, alpha 8 (scaling alpha / r = 1), no dropout, c_attn."""

    r: int = 8
    alpha: float = 8.0
    dropout: float = 0.0
    targets: tuple[str, ...] = ("c_attn",)

    @property
    def scaling(self) -> float:
        return self.alpha / self.r

    def places(self) -> list[tuple[str, str]]:
        """The (group, layer) places adapted in each block, in forward order."""
        wanted = {place for t in self.targets for place in TARGETS[t]}
        return [p for p in PLACES if p in wanted]


def check_lora(lora: LoraConfig, config: GPT2Config) -> LoraConfig:
    """ArgumentError naming the setting (lora_rank, lora_alpha, lora_dropout, lora_targets) that cannot be."""
    unknown = [t for t in lora.targets if t not in TARGETS]
    if unknown or not lora.targets:
        raise ArgumentError("lora_targets", f"{unknown[0]!r} is not a GPT-2 layer; choose from "
                                            f"{', '.join(TARGETS)}" if unknown else "names no layer")
    if not is_whole(lora.r) or lora.r <= 0:
        raise ArgumentError("lora_rank", f"must be a whole number >= 1, got {lora.r!r}")
    smallest = min(min(out, n_in) for *_, out, n_in in adapted_layers(config, lora))
    if lora.r > smallest:
        raise ArgumentError("lora_rank", f"{lora.r} is larger than the adapted layers allow ({smallest}, their "
                                         "smaller side): a low-rank update needs r below it")
    if not is_real(lora.alpha) or not np.isfinite(lora.alpha) or lora.alpha <= 0:
        raise ArgumentError("lora_alpha", f"must be a finite number > 0, got {lora.alpha!r}")
    if not is_real(lora.dropout) or not 0 <= lora.dropout < 1:
        raise ArgumentError("lora_dropout", f"must be in [0, 1), got {lora.dropout!r}")
    return lora


def init_adapter(config: GPT2Config, lora: LoraConfig, seed: int = 0) -> Params:
    """A fresh adapter: per adapted layer, lora_A [r, in] ~ U(-1/sqrt(in), 1/sqrt(in)) and lora_B [out, r] = 0,
    float32, drawn block by block in forward order."""
    rng = np.random.default_rng(seed)
    blocks: list[Params] = [{} for _ in range(config.n_layer)]
    for i, group, layer, out, n_in in adapted_layers(config, lora):
        bound = 1.0 / np.sqrt(n_in)
        a = rng.uniform(-bound, bound, size=(lora.r, n_in)).astype(np.float32)  # [r, in]
        blocks[i].setdefault(group, {})[layer] = {"lora_A": a, "lora_B": np.zeros((out, lora.r), np.float32)}
    return {"blocks": blocks}


def adapted_layers(config: GPT2Config, lora: LoraConfig):
    """(block, group, layer, out, in) of every layer the adapter adapts, block by block in forward order."""
    shapes = param_shapes(config)
    for i in range(config.n_layer):
        for group, layer in lora.places():
            out, n_in = shapes[f"blocks.{i}.{group}.{layer}.w"]
            yield i, group, layer, out, n_in


def attach(params: Params, adapter: Params, scaling: float, dropout: float = 0.0) -> Params:
    """The params tree with the adapter beside each adapted layer's w and b (no array copied: the base
    weights are shared, frozen); `dropout`, the adapter's own (on its input, in training only)."""
    return replace_layers(params, adapter, lambda p, ab: {**p, **ab, "lora_scaling": scaling, "lora_dropout": dropout})


def replace_layers(params: Params, adapter: Params, make) -> Params:
    """The params tree with each adapted layer's dict replaced by make(its params, its adapter's {"lora_A",
    "lora_B"}); every other dict and array shared."""
    blocks = []
    for p, a in zip(params["blocks"], adapter["blocks"]):
        block = dict(p)
        for group, layers in a.items():
            block[group] = dict(p[group])
            for layer, ab in layers.items():
                block[group][layer] = make(p[group][layer], ab)
        blocks.append(block)
    return {**params, "blocks": blocks}


def attached_layers(params: Params):
    """(block, group, layer, its params dict) of every layer of a params tree that carries an adapter, block by
    block in forward order."""
    for i, block in enumerate(params["blocks"]):
        for group, layer in PLACES:
            p = block[group][layer]
            if "lora_A" in p:
                yield i, group, layer, p


def has_adapter(params: Params) -> bool:
    """Whether a params tree carries an adapter (then its base is frozen)."""
    return next(attached_layers(params), None) is not None


def adapter_of(params: Params) -> Params:
    """The adapter part of an attached tree (the shape of `init_adapter`'s): what a LoRA run trains."""
    blocks: list[Params] = [{} for _ in params["blocks"]]
    for i, group, layer, p in attached_layers(params):
        blocks[i].setdefault(group, {})[layer] = {"lora_A": p["lora_A"], "lora_B": p["lora_B"]}
    return {"blocks": blocks}


def base_of(params: Params) -> Params:
    """An attached tree without its adapter: the base model's params (the same arrays)."""
    return replace_layers(params, adapter_of(params),
                          lambda p, ab: {k: v for k, v in p.items() if not k.startswith("lora_")})


def adapter_drops(params: Params) -> bool:
    """Whether an attached adapter drops its input in training (lora_dropout > 0)."""
    return any(p["lora_dropout"] > 0 for *_, p in attached_layers(params))


def trainable(params: Params) -> Params:
    """What a run trains: the adapter of an attached tree (its base is frozen), else every parameter."""
    return adapter_of(params) if has_adapter(params) else params


def lora_delta(x: np.ndarray, a: np.ndarray, b: np.ndarray, scaling: float) -> np.ndarray:
    """The adapter's term s * (x A^T) B^T: x [..., in] -> [..., out], through the rank-r bottleneck [..., r]."""
    h = x @ a.T  # [..., r]
    return (h @ b.T) * np.float32(scaling)  # [..., out]


def lora_delta_backward(dy: np.ndarray, x: np.ndarray, a: np.ndarray, b: np.ndarray, scaling: float,
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`lora_delta` mirrored: dy [..., out] -> (dx [..., in], dA [r, in], dB [out, r]).
    With h = x A^T: dB = s dy^T h, dh = s dy B, dA = dh^T x, dx = dh A."""
    x2, dy2 = x.reshape(-1, x.shape[-1]), dy.reshape(-1, dy.shape[-1])  # [N, in], [N, out]
    h = x2 @ a.T  # [N, r], recomputed: r numbers a row
    db = (dy2.T @ h) * np.float32(scaling)  # [out, r]
    dh = (dy2 @ b) * np.float32(scaling)  # [N, r]
    da = dh.T @ x2  # [r, in]
    dx = (dh @ a).reshape(*dy.shape[:-1], a.shape[1])  # [..., in]
    return dx, da, db


def merge(params: Params, adapter: Params, scaling: float) -> Params:
    """The params with the adapter folded in: W + s B A for each adapted layer (those w are new arrays; the
    rest is shared)."""
    def merged(p: Params, ab: Params) -> Params:
        delta = (ab["lora_B"].astype(np.float64) @ ab["lora_A"].astype(np.float64)) * scaling  # [out, in]
        return {**p, "w": (p["w"] + delta).astype(p["w"].dtype)}

    return replace_layers(params, adapter, merged)
