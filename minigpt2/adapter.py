"""LoRA adapters on disk, in Hugging Face PEFT's layout, so that either side loads the other's.

    DIR/adapter_config.json          {"peft_type": "LORA", "r": 8, "lora_alpha": 8, "lora_dropout": 0.0,
                                      "target_modules": ["c_attn"], "fan_in_fan_out": true, "bias": "none",
                                      "task_type": "CAUSAL_LM", "base_model_name_or_path": "124M", ...}
    DIR/adapter_model.safetensors    base_model.model.transformer.h.{i}.attn.c_attn.lora_A.weight  [r, in]
                                     base_model.model.transformer.h.{i}.attn.c_attn.lora_B.weight  [out, r]

`PeftModel.from_pretrained(GPT2LMHeadModel.from_pretrained(base), DIR)` loads what `write_adapter` writes, and
`read_adapter` reads what PEFT's `save_pretrained` writes. fan_in_fan_out is true because GPT-2's layers store
their weights [in, out] (transformers' Conv1D); the LoRA matrices themselves are [r, in] and [out, r] either way.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .config import GPT2Config
from .files import write_atomically
from .lora import TARGETS, LoraConfig, adapted_layers, check_lora
from .params import Params
from .safetensors import SafetensorsError, read_safetensors, write_safetensors

CONFIG, WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
PREFIX = "base_model.model.transformer.h."


class AdapterError(ValueError):
    """An adapter directory that minigpt2 cannot use, with the reason."""


def is_adapter(path: str | os.PathLike) -> bool:
    """Whether `path` is a directory holding an adapter (its adapter_config.json)."""
    return (Path(path) / CONFIG).is_file()


def adapter_base(model: str | None, adapter: str | None) -> str | None:
    """The base model a command loads: `model` if given, else the base an --adapter's config names."""
    if model is not None or adapter is None:
        return model
    try:
        base = read_adapter_config(adapter)[1]
    except AdapterError as e:
        raise AdapterError(f"--adapter {e}") from None
    if not base:
        raise AdapterError(f"--adapter {adapter} names no base model: pass --model")
    return base


def tensor_name(block: int, group: str, layer: str, which: str) -> str:
    """PEFT's name of one LoRA matrix ("A" or "B") of block `block`'s `group`.`layer`."""
    return f"{PREFIX}{block}.{group}.{layer}.lora_{which}.weight"


def write_adapter(path: str | os.PathLike, adapter: Params, lora: LoraConfig, base: str,
                  metadata: dict[str, str] | None = None) -> None:
    """Write the adapter into directory `path` (created if needed): its tensors (with `metadata` beside PEFT's
    own), then its config, each file atomically."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {tensor_name(i, group, layer, which): np.ascontiguousarray(ab[f"lora_{which}"], dtype=np.float32)
               for i, block in enumerate(adapter["blocks"]) for group, layers in block.items()
               for layer, ab in layers.items() for which in ("A", "B")}
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": lora.r, "lora_alpha": lora.alpha,
              "lora_dropout": lora.dropout, "target_modules": list(lora.targets), "fan_in_fan_out": True,
              "bias": "none", "base_model_name_or_path": base, "inference_mode": True, "use_rslora": False,
              "use_dora": False, "modules_to_save": None, "init_lora_weights": True, "revision": None,
              "layers_to_transform": None, "rank_pattern": {}, "alpha_pattern": {}}
    write_atomically(path / WEIGHTS, lambda f: write_safetensors(f, tensors, {"format": "pt", **(metadata or {})}))
    text = json.dumps(config, indent=2) + "\n"
    write_atomically(path / CONFIG, lambda f: f.write(text.encode()))


def read_adapter_config(path: str | os.PathLike) -> tuple[LoraConfig, str]:
    """(the adapter's settings, its base model's name or path) from DIR/adapter_config.json; AdapterError
    naming what minigpt2 cannot use (another PEFT method, a bias, rsLoRA, DoRA, per-layer ranks...)."""
    where = Path(path) / CONFIG
    try:
        cfg = json.loads(where.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AdapterError(f"{path} holds no {CONFIG}: not an adapter directory") from None
    except (OSError, ValueError, RecursionError) as e:
        raise AdapterError(f"{where} is not readable JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise AdapterError(f"{where} holds a JSON {type(cfg).__name__}, expected an object")
    kind = cfg.get("peft_type")
    if kind != "LORA":
        raise AdapterError(f"{where} is a {kind} adapter; minigpt2 reads LoRA adapters (peft_type LORA)")
    unsupported = [(k, v) for k, v in (("bias", cfg.get("bias", "none")), ("use_rslora", cfg.get("use_rslora")),
                                       ("use_dora", cfg.get("use_dora")),
                                       ("modules_to_save", cfg.get("modules_to_save")),
                                       ("layers_to_transform", cfg.get("layers_to_transform")),
                                       ("rank_pattern", cfg.get("rank_pattern")),
                                       ("alpha_pattern", cfg.get("alpha_pattern")))
                   if v not in (None, False, "none", {}, [])]
    if unsupported:
        k, v = unsupported[0]
        raise AdapterError(f"{where}: {k} = {v!r} is not supported (minigpt2 reads plain LoRA: bias 'none', no "
                           "rsLoRA, DoRA, saved modules or per-layer settings)")
    targets = cfg.get("target_modules")
    targets = [targets] if isinstance(targets, str) else targets
    if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
        raise AdapterError(f"{where}: target_modules must be a list of layer names, got {targets!r}")
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        raise AdapterError(f"{where}: target {unknown[0]!r} is not a GPT-2 layer minigpt2 adapts "
                           f"({', '.join(TARGETS)})")
    try:
        lora = LoraConfig(r=cfg["r"], alpha=float(cfg.get("lora_alpha", 8)), dropout=float(cfg.get("lora_dropout", 0)),
                          targets=tuple(t for t in TARGETS if t in targets))
    except (KeyError, TypeError, ValueError) as e:
        raise AdapterError(f"{where}: r, lora_alpha and lora_dropout must be numbers ({e})") from None
    base = cfg.get("base_model_name_or_path")
    return lora, base if isinstance(base, str) else ""


def read_adapter(path: str | os.PathLike, config: GPT2Config) -> tuple[Params, LoraConfig, str]:
    """(adapter, its settings, its base's name) from an adapter directory, checked against the base model's
    `config`: every adapted layer present with the shapes that base implies, nothing else."""
    lora, base = read_adapter_config(path)
    try:
        check_lora(lora, config)
    except ValueError as e:
        raise AdapterError(f"{Path(path) / CONFIG}: {e}") from None
    try:
        tensors, _ = read_safetensors(Path(path) / WEIGHTS)
    except (FileNotFoundError, SafetensorsError) as e:
        raise AdapterError(f"{path}: {e}") from None
    blocks: list[Params] = [{} for _ in range(config.n_layer)]
    expected = set()
    for i, group, layer, out, n_in in adapted_layers(config, lora):
        pair = {}
        for which, shape in (("A", (lora.r, n_in)), ("B", (out, lora.r))):
            name = tensor_name(i, group, layer, which)
            expected.add(name)
            if name not in tensors:
                raise AdapterError(f"{path}: {name} is missing; the adapter does not fit this base model "
                                   f"({config.n_layer} blocks, width {config.n_embd})")
            if tuple(tensors[name].shape) != shape:
                raise AdapterError(f"{path}: {name} has shape {tuple(tensors[name].shape)}, but this base model "
                                   f"needs {shape}: the adapter was made for another base")
            pair[f"lora_{which}"] = np.array(tensors[name], dtype=np.float32)
        blocks[i].setdefault(group, {})[layer] = pair
    extra = sorted(set(tensors) - expected)
    if extra:
        raise AdapterError(f"{path}: tensor {extra[0]} belongs to no layer of this base model "
                           f"({config.n_layer} blocks) and targets {list(lora.targets)}")
    return {"blocks": blocks}, lora, base
