"""GPT2: the user-facing model, one object for everything minigpt2 does with one.

It holds a config and params and delegates each job to the module that does it, all of them upstream:
the forward and the KV cache (model), loading (load) and saving (save), decoding (decoding), gradients
(backward).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

from . import backward
from .adapter import AdapterError, is_adapter, read_adapter, read_adapter_config, write_adapter
from .config import GPT2Config
from .decoding import generate, stream
from .explore import Page, explore
from .load import load_model
from .lora import LoraConfig, attach, check_lora, init_adapter, merge
from .model import KVCache, check_ids, gpt2, recorder
from .params import Params, check_params, flatten, init_params
from .save import save_converted, save_huggingface
from .vocab import ENDOFTEXT


class GPT2:
    """GPT-2: `GPT2(config, params)`, `GPT2.init(config)`, or `GPT2.from_pretrained("124M")`.

    >>> model = GPT2.init(GPT2Config(n_vocab=10, n_ctx=8, n_embd=4, n_head=2, n_layer=1))
    >>> model(np.array([1, 2, 3])).shape
    (3, 10)
    """

    def __init__(self, config: GPT2Config, params: Params):
        self.config = config
        self.params = check_params(params, config)
        self.base_params = self.params  # without an adapter, the params themselves
        self.adapter: Params | None = None  # a LoRA adapter's matrices (lora.py), when one is attached
        self.lora: LoraConfig | None = None
        self.base_name = ""  # what the adapter was trained on, as its files name it

    @classmethod
    def init(cls, config: GPT2Config, seed: int = 0, std: float = 0.02) -> GPT2:
        """A new model with GPT-2's initialisation (see params.init_params)."""
        return cls(config, init_params(config, seed, std))

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike = "124M", verify_crc: bool = False,
                        adapter: str | os.PathLike | None = None) -> GPT2:
        """A released model by name ("124M", "gpt2-xl", ...; downloaded and converted once, its checksums
        verified) or a directory: OpenAI's checkpoint files, a Hugging Face save_pretrained directory, or one
        written by `save`. `verify_crc=True` checks a TensorFlow checkpoint directory's tensor checksums too
        (it reads every byte: about 3 s for 124M). `adapter=DIR` attaches a LoRA adapter (minigpt2's or
        PEFT's); a directory that is itself an adapter loads the base its adapter_config.json names."""
        if adapter is None and is_adapter(name_or_path):
            adapter, name_or_path = name_or_path, read_adapter_config(name_or_path)[1]
            if not name_or_path:
                raise AdapterError(f"{adapter} names no base model (base_model_name_or_path): load the base "
                                   f"and pass the adapter, GPT2.from_pretrained(base, adapter={str(adapter)!r})")
        config, params = load_model(name_or_path, verify_crc=verify_crc)
        model = cls(config, params)
        if adapter is not None:
            model.attach_adapter(*read_adapter(adapter, config))
        return model

    # --- LoRA adapters ---

    def add_adapter(self, lora: LoraConfig | None = None, seed: int = 0) -> GPT2:
        """Attach a fresh LoRA adapter (lora.LoraConfig: rank 8, alpha 8, c_attn by default): from now on the
        base weights are frozen and `loss_and_grads` returns the adapter's gradients alone."""
        lora = check_lora(lora or LoraConfig(), self.config)
        return self.attach_adapter(init_adapter(self.config, lora, seed), lora, self.base_name)

    def attach_adapter(self, adapter: Params, lora: LoraConfig, base: str = "") -> GPT2:
        """Attach an adapter (the tree `init_adapter` or `read_adapter` gives) to the base weights."""
        self.adapter, self.lora, self.base_name = adapter, lora, base
        self.params = attach(self.base_params, adapter, lora.scaling, lora.dropout)
        return self

    def merge_adapter(self) -> GPT2:
        """Fold the adapter into the weights, W + (alpha / r) B A, and detach it: the same function, a plain
        model again (one that `save` writes and transformers reads)."""
        if self.adapter is None:
            raise ValueError("the model has no adapter to merge")
        self.params = self.base_params = merge(self.base_params, self.adapter, self.lora.scaling)
        self.adapter = self.lora = None
        return self

    def save_adapter(self, path: str | os.PathLike, base: str | None = None) -> None:
        """Write the adapter in PEFT's layout (adapter_config.json, adapter_model.safetensors); `base` names the
        base model in it (default: the name it was loaded with)."""
        if self.adapter is None:
            raise ValueError("the model has no adapter to save: model.add_adapter(...) first, or model.save(...)")
        write_adapter(path, self.adapter, self.lora, self.base_name if base is None else base)

    def save(self, path: str | os.PathLike, tokenizer=None, *, format: str = "minigpt2", overwrite: bool = False,
             ) -> None:
        """Write the model into the directory `path`, with `tokenizer`'s vocabulary (tokenizer=False: none;
        a Hugging Face export needs one, or an explicit False).

        format="minigpt2": minigpt2.safetensors, memory-mapped on load. format="huggingface": config.json,
        model.safetensors, vocab.json, merges.txt, which transformers' GPT2LMHeadModel.from_pretrained and
        GPT2TokenizerFast.from_pretrained read. `GPT2.from_pretrained(path)` and `Tokenizer.from_pretrained(path)`
        load either. Only the format's own files are written, each atomically; nothing else in `path` is
        touched. A directory holding another kind of model, or (for "huggingface") a Hugging Face model minigpt2
        did not export, is refused unless `overwrite=True`.
        """
        if self.adapter is not None:
            raise ValueError("the model carries a LoRA adapter: model.save_adapter(dir) writes it (PEFT's layout), "
                             "or model.merge_adapter() first to save a plain model")
        files, eot_id = {}, None
        if tokenizer is None and format == "huggingface" and not (Path(path) / "vocab.json").is_file():
            raise ValueError("format='huggingface' without a tokenizer writes no vocab.json and merges.txt, so "
                             "GPT2TokenizerFast.from_pretrained could not read the directory: pass the tokenizer "
                             "(model.save(path, tok, format='huggingface')), or tokenizer=False for the weights alone")
        if tokenizer:
            if tokenizer.n_vocab > self.config.n_vocab:
                raise ValueError(f"the tokenizer has {tokenizer.n_vocab} ids but the model only "
                                 f"n_vocab = {self.config.n_vocab}; they do not belong together")
            files, eot_id = tokenizer.files(), tokenizer.special_tokens.get(ENDOFTEXT)
        if format == "minigpt2":
            save_converted(self.config, self.params, path, files, overwrite=overwrite, progress=False)
        elif format == "huggingface":
            save_huggingface(self.config, self.params, path, files, eot_id=eot_id, overwrite=overwrite, progress=False)
        else:
            raise ValueError(f"format must be 'minigpt2' or 'huggingface', got {format!r}")

    # --- running it ---

    def __call__(self, ids, *, cache: KVCache | None = None, last_only: bool = False) -> np.ndarray:
        """ids [T] -> logits [T, V] (float32); ids [B, T] -> [B, T, V]. With a cache, ids continue it."""
        ids = check_ids(ids, self.config, cache)
        return gpt2(ids, self.params, self.config, cache, last_only=last_only)

    def new_cache(self, batch_size: int | None = None) -> KVCache:
        """An empty KV cache for one sequence (ids [T]) or a batch (ids [B, T])."""
        return KVCache(self.config, batch_size)

    def generate(self, ids, max_new_tokens: int, *, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, repetition_penalty: float | None = None, seed: int | None = None,
                 stop_at_eot: bool = True, num_samples: int | None = None, progress: bool = False,
                 eot_id: int | None = None, min_p: float | None = None, typical_p: float | None = None,
                 no_repeat_ngram_size: int | None = None, min_new_tokens: int = 0, stop: list[str] | None = None,
                 tokenizer=None, num_beams: int = 1, length_penalty: float = 1.0,
                 early_stopping: bool | str = False, num_return_sequences: int | None = None):
        """Continue the prompt `ids` [T] with up to `max_new_tokens` new ids (temperature=0: greedy).

        Returns the new ids as a list (without a final <|endoftext|>), or a list per sample when
        `num_samples` is given (the samples run together as one batch). The settings act in transformers'
        order (see minigpt2.decoding.stream and sample.process_logits). `stop=["\n\n"]` with
        `tokenizer=tok` ends a sample at the token that completes one of the strings (kept in the ids).
        `num_beams=4, temperature=0`: beam search (minigpt2.beam), with `length_penalty`, `early_stopping`
        (False, True or "never") and `num_return_sequences` (that many lists, best first), as transformers.
        """
        return generate(self, ids, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                        repetition_penalty=repetition_penalty, seed=seed, stop_at_eot=stop_at_eot,
                        num_samples=num_samples, progress=progress, eot_id=eot_id, min_p=min_p,
                        typical_p=typical_p, no_repeat_ngram_size=no_repeat_ngram_size,
                        min_new_tokens=min_new_tokens, stop=stop, tokenizer=tokenizer, num_beams=num_beams,
                        length_penalty=length_penalty, early_stopping=early_stopping,
                        num_return_sequences=num_return_sequences)

    def stream(self, ids, max_new_tokens: int, **kwargs):
        """Like `generate`, but yields each new id as soon as it is made (a list of ids per step with
        `num_samples`). Arguments are checked at the call."""
        return (i.tolist() for i in stream(self, ids, max_new_tokens, **kwargs))  # numpy -> int / list of int

    # --- looking inside ---

    def run_with_activations(self, ids, names: str | list[str] | None = None,
                             hooks: dict[str, Callable[[np.ndarray], np.ndarray]] | None = None,
                             ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Forward pass that also returns every intermediate by name (see `activation_names`).

        `names`: names or glob patterns to keep ("blocks.*.attn.pattern"); default all.
        `hooks`: {name or pattern: f(array) -> array}, applied where that activation is made; what f returns
        flows on through the model (e.g. zero one head of "blocks.3.attn.z"). A pattern of `names` or `hooks`
        that matches no activation is an error (a typo would otherwise quietly do nothing).
        """
        ids = check_ids(ids, self.config, None)
        record, recorded, matched = recorder(names, hooks)
        logits = gpt2(ids, self.params, self.config, record=record)
        wanted = ([names] if isinstance(names, str) else list(names or [])) + list(hooks or {})
        unmatched = [p for p in wanted if p not in matched]
        if unmatched:
            raise ValueError(f"{unmatched[0]!r} matches no activation of this model; names look like "
                             f"'blocks.0.attn.z' (blocks 0..{self.config.n_layer - 1}); see activation_names()")
        return logits, recorded

    def explore(self, text_or_ids, tok=None, *, title: str | None = None, name: str | None = None,
                progress: bool = False) -> Page:
        """A page that shows what the model does with a text (cut by `tok`) or ids [T]: attention (head view, model
        view), the logit lens, the next token under temperature / top-k / top-p, each token's surprise. Shown
        inline in Jupyter; `.save("page.html")` writes it as one file that works offline (minigpt2.explore)."""
        return explore(self, text_or_ids, tok, title=title, name=name, progress=progress)

    def activation_names(self) -> list[str]:
        """Every name `run_with_activations` records, in the order the forward pass makes them."""
        _, acts = self.run_with_activations(np.zeros(1, dtype=np.int64))
        return list(acts)

    # --- learning ---

    def loss_and_grads(self, ids, targets) -> tuple[float, Params]:
        """(mean next-token cross-entropy, its gradient): ids and targets [T] or [B, T] integers; a target of -1
        marks a position without loss. grads has the structure, shapes and dtype of `params`; with an adapter
        attached, of the adapter (the base is frozen).

        >>> model = GPT2.init(GPT2Config(n_vocab=10, n_ctx=8, n_embd=4, n_head=2, n_layer=1))
        >>> loss, grads = model.loss_and_grads([1, 2, 3], [2, 3, -1])
        >>> grads["blocks"][0]["attn"]["c_attn"]["w"].shape
        (12, 4)
        """
        ids = check_ids(ids, self.config, None)
        targets = backward.check_targets(targets, ids, self.config.n_vocab)
        return backward.loss_and_grads(ids, targets, self.params, self.config)

    def loss(self, ids, targets) -> float:
        """The mean next-token cross-entropy alone (no activations kept)."""
        ids = check_ids(ids, self.config, None)
        targets = backward.check_targets(targets, ids, self.config.n_vocab)
        return backward.loss(ids, targets, self.params, self.config)

    @property
    def num_params(self) -> int:
        return sum(a.size for a in flatten(self.base_params).values())

    def __repr__(self) -> str:
        lora = "" if self.lora is None else \
            f", LoRA r={self.lora.r} on {'/'.join(self.lora.targets)}: {sum(a.size for a in flatten(self.adapter).values()):,} trained"
        return f"GPT2({self.config}, {self.num_params / 1e6:.1f}M params{lora})"
