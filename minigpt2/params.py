"""GPT-2's parameters by name: their shapes, initialisation, and the nested <-> flat dict bookkeeping.

Params are a nested dict of float32 arrays with GPT-2's own names:
    {"wte": [V, C], "wpe": [n_ctx, C], "ln_f": {"g", "b"},
     "blocks": [{"ln_1": {"g", "b"}, "attn": {"c_attn": {"w": [3C, C], "b"}, "c_proj": {"w": [C, C], "b"}},
                 "ln_2": {"g", "b"}, "mlp": {"c_fc": {"w": [4C, C], "b"}, "c_proj": {"w": [C, 4C], "b"}}}, ...]}
and flat names join the keys with dots ("blocks.0.attn.c_attn.w"), as checkpoints store them.
subtle: weights are stored [n_out, n_in], transposed from OpenAI's files ([n_in, n_out]) (see ops.linear).
"""

from __future__ import annotations

import math

import numpy as np

from .config import GPT2Config

Params = dict


def param_count(config: GPT2Config) -> int:
    """The number of parameters `config` implies (the sum over param_shapes, without building it).

    >>> param_count(GPT2Config.from_name("124M"))
    124439808
    """
    V, C, L = config.n_vocab, config.n_embd, config.n_layer
    per_block = 2 * C + (3 * C * C + 3 * C) + (C * C + C) + 2 * C + (4 * C * C + 4 * C) + (4 * C * C + C)
    return V * C + config.n_ctx * C + L * per_block + 2 * C


def iter_param_shapes(config: GPT2Config):
    """(flat parameter name, shape) in GPT-2's naming and order ("blocks.0.attn.c_attn.w", (3C, C)), one at a time."""
    V, C = config.n_vocab, config.n_embd
    yield from (("wte", (V, C)), ("wpe", (config.n_ctx, C)))
    for i in range(config.n_layer):
        yield from ((f"blocks.{i}.ln_1.g", (C,)), (f"blocks.{i}.ln_1.b", (C,)),
                    (f"blocks.{i}.attn.c_attn.w", (3 * C, C)), (f"blocks.{i}.attn.c_attn.b", (3 * C,)),
                    (f"blocks.{i}.attn.c_proj.w", (C, C)), (f"blocks.{i}.attn.c_proj.b", (C,)),
                    (f"blocks.{i}.ln_2.g", (C,)), (f"blocks.{i}.ln_2.b", (C,)),
                    (f"blocks.{i}.mlp.c_fc.w", (4 * C, C)), (f"blocks.{i}.mlp.c_fc.b", (4 * C,)),
                    (f"blocks.{i}.mlp.c_proj.w", (C, 4 * C)), (f"blocks.{i}.mlp.c_proj.b", (C,)))
    yield from (("ln_f.g", (C,)), ("ln_f.b", (C,)))


def param_shapes(config: GPT2Config) -> dict[str, tuple[int, ...]]:
    """Flat parameter name -> shape, in GPT-2's naming ("blocks.0.attn.c_attn.w": (3C, C), [n_out, n_in])."""
    return dict(iter_param_shapes(config))


def flatten(params: Params, prefix: str = "") -> dict[str, np.ndarray]:
    """Nested params -> {"blocks.0.attn.c_attn.w": array, ...}."""
    items = enumerate(params) if isinstance(params, list) else params.items()
    out = {}
    for key, value in items:
        name = f"{prefix}{key}"
        if isinstance(value, (dict, list)):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def unflatten(flat: dict[str, np.ndarray]) -> Params:
    """{"blocks.0.attn.c_attn.w": array, ...} -> nested params (blocks as a list)."""
    params: dict = {}
    for name, value in flat.items():
        node = params
        *path, leaf = name.split(".")
        for key in path:
            node = node.setdefault(key, {})
        node[leaf] = value
    if "blocks" in params:
        blocks = params["blocks"]
        params["blocks"] = [blocks[k] for k in sorted(blocks, key=int)]
    return params


def check_params(params: Params, config: GPT2Config) -> Params:
    """Every tensor present with the shape `config` implies, as float32; a clear error otherwise."""
    try:
        flat = flatten(params)
    except (AttributeError, TypeError) as e:
        raise ValueError(f"params must be a nested dict of arrays (see minigpt2.model): {e}") from None
    expected = param_shapes(config)
    missing = [n for n in expected if n not in flat]
    if missing:
        raise ValueError(f"params lack {len(missing)} tensors, first {missing[:3]}")
    unexpected = [n for n in flat if n not in expected]
    if unexpected:
        raise ValueError(f"params have unexpected tensors {unexpected[:3]} for {config}")
    out = {}
    for name, shape in expected.items():
        a = flat[name]
        if not hasattr(a, "shape") or tuple(a.shape) != shape:
            got = getattr(a, "shape", type(a).__name__)
            raise ValueError(f"parameter {name} has shape {got}, expected {shape} for {config}")
        if not np.issubdtype(a.dtype, np.floating):
            raise ValueError(f"parameter {name} has dtype {a.dtype}, expected float32")
        out[name] = a if a.dtype == np.float32 else a.astype(np.float32)
    return unflatten(out)


def init_params(config: GPT2Config, seed: int = 0, std: float = 0.02) -> Params:
    """GPT-2's initialisation: normal(0, std) weights (wpe: std/2), residual projections scaled by
    1/sqrt(2 n_layer), zero biases, unit layer-norm gains."""
    rng = np.random.default_rng(seed)
    proj_std = std / math.sqrt(2 * config.n_layer)
    flat = {}
    for name, shape in param_shapes(config).items():
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "g":
            flat[name] = np.ones(shape, np.float32)
        elif leaf == "b":
            flat[name] = np.zeros(shape, np.float32)
        else:
            scale = proj_std if name.endswith("c_proj.w") else std / 2 if name == "wpe" else std
            flat[name] = rng.standard_normal(shape, dtype=np.float32) * np.float32(scale)
    return unflatten(flat)
