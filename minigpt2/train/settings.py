"""flags -> a run's settings: TrainConfig (the command line's flags by the same names), their checks, the errors a
run raises, and what a resumed run may change."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path

from ..checks import is_whole
from ..files import names_a_path
from ..lora import LoraConfig

class TrainingError(ValueError):
    """Bad settings or data for a run; the message names the flag or the file."""


class OtherRankFailed(TrainingError):
    """Under MPI, another rank could not start the run; that rank's error is the one to read."""


class TrainingDiverged(RuntimeError):
    """The loss or the gradient became NaN or infinite; the last good checkpoint is kept."""


@dataclass(frozen=True)
class TrainConfig:
    """One run's settings; the command line's flags, by the same names."""

    data: str  # a UTF-8 text file, a directory of .txt files (documents joined by <|endoftext|>), or a .jsonl
    # task file of prompt/completion pairs (tasks.py: the loss on the completion only)
    out: str  # the run's directory
    val_data: str | None = None  # validation data of --data's kind; default: the last 10% of the tokens (or examples)
    init: str = "124M"  # what to fine-tune (anything GPT2.from_pretrained reads), or "scratch"
    n_layer: int = 12  # --init scratch: the new model's shape (its context is block_size)
    n_head: int = 12
    n_embd: int = 768
    tokenizer: str | None = None  # a vocabulary directory; default: the init model's (GPT-2's for scratch)
    block_size: int | None = None  # tokens per training window; default 256, or the --init model's context if shorter
    batch_size: int = 8  # windows per micro-batch
    grad_accum: int = 1  # micro-batches per step
    steps: int = 200
    lr: float | None = None  # peak learning rate; default 6e-4 from scratch, 3e-5 fine-tuning
    min_lr: float | None = None  # at the last step; default lr / 10
    warmup_steps: int | None = None  # default steps // 20
    weight_decay: float = 0.1
    grad_clip: float = 1.0  # max global gradient norm; 0 = no clipping
    dropout: float = 0.0  # probability of dropping, where GPT-2 drops, in training only
    eval_every: int = 50  # steps between validation losses (and at the end)
    eval_batches: int = 8  # validation micro-batches, the same windows every time
    save_every: int = 100  # steps between checkpoints (and at the end)
    seed: int = 0
    sample_every: int = 0  # steps between printed (and logged) samples; 0 = none
    prompt: str = ""  # what the samples continue ("": from <|endoftext|>)
    sample_tokens: int = 48  # tokens per sample
    threads: int | None = None  # NumPy's BLAS threads; default 1 for n_embd <= 256, else every core
    lora_rank: int | None = None  # LoRA (lora.py): train an adapter of this rank, the --init model frozen
    lora_alpha: float | None = None  # its scaling alpha / r; default 8 (PEFT's)
    lora_dropout: float | None = None  # dropout on the adapter's input (PEFT's lora_dropout); default 0
    lora_targets: str | None = None  # comma-separated: c_attn, c_proj, c_fc; default c_attn (PEFT's for GPT-2)
    init_adapter: str | None = None  # start from this adapter (minigpt2's or PEFT's): LoRA with its settings
    recompute_activations: bool = False  # keep each block's input only; recompute the block in the backward

    @property
    def lora(self) -> LoraConfig | None:
        """The adapter's settings, or None for a run that trains every weight."""
        if self.lora_rank is None:
            return None
        targets = tuple(t.strip() for t in (self.lora_targets or "c_attn").split(",") if t.strip())
        return LoraConfig(r=self.lora_rank, alpha=8.0 if self.lora_alpha is None else self.lora_alpha,
                          dropout=self.lora_dropout or 0.0, targets=targets)

    @property
    def peak_lr(self) -> float:
        if self.lr is not None:
            return self.lr
        return 6e-4 if self.init == "scratch" else 2e-4 if self.lora_rank is not None else 3e-5

    @property
    def warmup(self) -> int:
        return self.warmup_steps if self.warmup_steps is not None else self.steps // 20

    def check(self) -> None:
        """Raise TrainingError naming the first setting that is out of range."""
        positive = ["batch_size", "grad_accum", "steps", "eval_every", "eval_batches", "save_every"]
        positive += ["block_size"] if self.block_size is not None else []
        if self.init == "scratch":
            positive += ["n_layer", "n_head", "n_embd"]
        for name in positive:
            v = getattr(self, name)
            if not is_whole(v) or v <= 0:
                raise TrainingError(f"--{flag(name)} must be a positive integer, got {v!r}")
        for name in ("lr", "min_lr"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise TrainingError(f"--{flag(name)} must be a positive number, got {v!r}")
        if self.warmup_steps is not None and (not isinstance(self.warmup_steps, int) or self.warmup_steps < 0):
            raise TrainingError(f"--warmup-steps must be a non-negative integer, got {self.warmup_steps!r}")
        for name in ("weight_decay", "grad_clip"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise TrainingError(f"--{flag(name)} must be a number >= 0, got {v!r}")
        for name in ("sample_every",):
            v = getattr(self, name)
            if not is_whole(v) or v < 0:
                raise TrainingError(f"--{flag(name)} must be a non-negative integer, got {v!r}")
        for name in ("sample_tokens",) + (("threads",) if self.threads is not None else ()):
            v = getattr(self, name)
            if not is_whole(v) or v <= 0:
                raise TrainingError(f"--{flag(name)} must be a positive integer, got {v!r}")
        if not (isinstance(self.dropout, (int, float)) and 0 <= self.dropout < 1):
            raise TrainingError(f"--dropout must be a probability in [0, 1), got {self.dropout!r}")
        if not is_whole(self.seed) or self.seed < 0:
            raise TrainingError(f"--seed must be a non-negative integer, got {self.seed!r}")
        if self.init == "scratch" and self.n_embd % self.n_head:
            raise TrainingError(f"--n-embd ({self.n_embd}) must be divisible by --n-head ({self.n_head})")
        if self.min_lr is not None and self.min_lr > self.peak_lr:
            raise TrainingError(f"--min-lr {self.min_lr:g} is above the peak learning rate {self.peak_lr:g} (--lr): "
                                "the decay would rise; give a --min-lr below --lr")
        self.check_lora()
        if self.warmup_steps is not None and self.warmup_steps > self.steps:
            raise TrainingError(f"--warmup-steps {self.warmup_steps} is more than --steps {self.steps}: the run would "
                                "never reach its learning rate")


    def check_lora(self) -> None:
        """The LoRA settings make sense together (their ranges are lora.check_lora's, against the model)."""
        given = [k for k in ("lora_alpha", "lora_targets") if getattr(self, k) is not None]
        given += ["lora_dropout"] if self.lora_dropout is not None else []
        if self.lora_rank is None and self.init_adapter is None and given:
            raise TrainingError(f"--{flag(given[0])} needs --lora-rank R (or --init-adapter DIR)")
        if (self.lora_rank is not None or self.init_adapter is not None) and self.init == "scratch":
            raise TrainingError("--lora-rank: LoRA adapts a trained model, and --init scratch has nothing to adapt; "
                                "give --init a model")
        if self.lora_dropout is not None and not (isinstance(self.lora_dropout, (int, float))
                                                  and 0 <= self.lora_dropout < 1):
            raise TrainingError(f"--lora-dropout must be a probability in [0, 1), got {self.lora_dropout!r}")


def flag(name: str) -> str:
    return name.replace("_", "-")


# settings a resumed run can change (honoured, and logged in log.jsonl as "resumed"); the rest are fixed by the
# run's model, its vocabulary or the batches it has drawn
CHANGEABLE = ("steps", "lr", "min_lr", "warmup_steps", "weight_decay", "grad_clip", "dropout", "eval_every",
              "eval_batches", "save_every", "data", "val_data", "sample_every", "prompt", "sample_tokens", "threads",
              "recompute_activations")


def resumed_settings(saved: TrainConfig, changes: dict, out: Path, done: int) -> tuple[TrainConfig, dict]:
    """The run's own settings with `changes` ({field: value}, e.g. from the flags given with --resume) applied:
    (new settings, {field: [old, new]} of what changed). A change to a fixed setting is a TrainingError.

    The warmup stays what the run had (its default, steps // 20, is frozen at the run's first steps), so that
    `steps` extends the cosine decay alone: the remaining steps follow the schedule of a run given the new
    `steps` from the start, from the weights this run has."""
    saved = dataclasses.replace(saved, warmup_steps=saved.warmup)
    changes = {k: absolute(k, v) for k, v in changes.items()}
    changed = {k: v for k, v in changes.items() if absolute(k, getattr(saved, k)) != v}  # (an older run's
    # relative path is read from here)
    for k, v in changed.items():
        if k not in CHANGEABLE:
            raise TrainingError(f"--{flag(k)} cannot change when resuming (the run has {getattr(saved, k)!r}; it fixes "
                                f"the model or the batches); to change it, start a new run with --init {out}")
    cfg = dataclasses.replace(saved, **changed)
    if "lr" in changed and saved.min_lr is None and "min_lr" not in changed:  # the default min_lr follows lr
        changed["min_lr"] = [saved.peak_lr / 10, cfg.peak_lr / 10]
    if "steps" in changed and "warmup_steps" not in changed and cfg.warmup_steps > cfg.steps:
        raise TrainingError(f"--steps {cfg.steps} is shorter than the run's warmup ({cfg.warmup_steps} steps); give "
                            f"--warmup-steps with it (at most {cfg.steps})")
    if cfg.steps < done:
        raise TrainingError(f"--steps {cfg.steps} is fewer than the {done} steps {out} has already taken")
    cfg.check()
    order = [f.name for f in dataclasses.fields(TrainConfig)]  # said and logged in the settings' own order
    return cfg, {k: v if isinstance(v, list) else [getattr(saved, k), v]
                 for k, v in sorted(changed.items(), key=lambda kv: order.index(kv[0]))}


PATHS = ("data", "val_data", "init_adapter")  # settings that name a file or directory


PATHS_OR_NAMES = ("init", "tokenizer")  # a directory, or a name (124M, tiny, scratch)


def absolute(setting: str, value):
    """The value of `setting` with a path made absolute (so that a run resumes from any working directory and
    compares equal however the path was spelled); a name (124M, tiny, scratch), None or any other value as it is."""
    if not isinstance(value, str) or setting not in PATHS + PATHS_OR_NAMES:
        return value
    if setting in PATHS_OR_NAMES and not names_a_path(value):
        return value
    return os.path.abspath(value)
