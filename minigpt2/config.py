"""hparams.json -> GPT2Config: the shape of a GPT-2 model, and OpenAI's four released sizes."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, fields

from .checks import is_real


class ArgumentError(ValueError):
    """A keyword argument out of range: `name` is the argument (top_p), `message` what is wrong with its value.
    The command lines print it as the flag of the same name (--top-p)."""

    def __init__(self, name: str, message: str):
        super().__init__(f"{name} {message}")
        self.name, self.message = name, message


@dataclass(frozen=True)
class GPT2Config:
    """GPT-2's hyperparameters, named as in OpenAI's hparams.json.

    >>> GPT2Config.from_name("124M").n_embd
    768
    """

    n_vocab: int = 50257  # V: tokens in the vocabulary
    n_ctx: int = 1024  # longest sequence (rows of the position embedding)
    n_embd: int = 768  # C: width of the residual stream
    n_head: int = 12  # H: attention heads per layer
    n_layer: int = 12  # decoder blocks
    layer_norm_epsilon: float = 1e-5  # added to the variance in every layer norm

    def __post_init__(self):
        for f in ("n_vocab", "n_ctx", "n_embd", "n_head", "n_layer"):
            v = getattr(self, f)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"GPT2Config.{f} must be a positive int, got {v!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        eps = self.layer_norm_epsilon
        if not is_real(eps) or not math.isfinite(eps) or eps <= 0:
            raise ValueError(f"GPT2Config.layer_norm_epsilon must be a positive finite number, got {eps!r}")
        object.__setattr__(self, "layer_norm_epsilon", float(eps))  # 1 in a JSON file means 1.0

    @property
    def head_dim(self) -> int:
        """D = C // H, the width of one attention head."""
        return self.n_embd // self.n_head

    @classmethod
    def from_name(cls, name: str) -> GPT2Config:
        """One of OpenAI's sizes: "124M", "355M", "774M", "1558M" (or "gpt2", "gpt2-medium", ...)."""
        return SIZES[canonical_name(name)]

    @classmethod
    def from_hparams(cls, path: str | os.PathLike) -> GPT2Config:
        """Read OpenAI's hparams.json."""
        path = os.fspath(path)
        try:
            with open(path, encoding="utf-8") as f:
                hp = json.load(f)
        except FileNotFoundError:
            raise FileNotFoundError(f"hparams file not found: {path}") from None
        except (ValueError, RecursionError) as e:  # bad JSON, bad UTF-8, absurd nesting or number literals
            raise ValueError(f"{path} is not valid JSON: {e}") from None
        if not isinstance(hp, dict):
            raise ValueError(f"{path} holds a JSON {type(hp).__name__}; expected GPT-2's hparams.json (an object)")
        names = {f.name for f in fields(cls)}
        missing = {"n_vocab", "n_ctx", "n_embd", "n_head", "n_layer"} - set(hp)
        if missing:
            raise ValueError(f"{path} lacks {sorted(missing)}; expected GPT-2's hparams.json")
        try:
            return cls(**{k: v for k, v in hp.items() if k in names})
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None

    def to_dict(self) -> dict:
        return asdict(self)


SIZES = {
    "124M": GPT2Config(n_embd=768, n_head=12, n_layer=12),
    "355M": GPT2Config(n_embd=1024, n_head=16, n_layer=24),
    "774M": GPT2Config(n_embd=1280, n_head=20, n_layer=36),
    "1558M": GPT2Config(n_embd=1600, n_head=25, n_layer=48),
}
ALIASES = {"gpt2": "124M", "gpt2-medium": "355M", "gpt2-large": "774M", "gpt2-xl": "1558M"}


def canonical_name(name: str) -> str:
    """ "gpt2-medium" -> "355M"; raises ValueError for names that are not OpenAI's sizes."""
    key = ALIASES.get(str(name).lower(), str(name).upper())
    if key not in SIZES:
        known = ", ".join(list(SIZES) + list(ALIASES))
        raise ValueError(f"unknown model name {name!r}; known names: {known}, tiny (bundled with minigpt2), or a "
                         "directory path")
    return key
