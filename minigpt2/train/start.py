"""settings -> a run ready for its first step: a new run (the model it starts from, a fresh optimizer) or a
resumed one (its last checkpoint: weights, AdamW's moments, the generators' states), the data and the
validation, all checked before anything is written; loop.py runs the steps.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..adapter import AdapterError, read_adapter
from ..blas import default_threads
from ..config import ArgumentError, GPT2Config
from ..distributed import World
from ..download import DownloadError
from ..files import names_a_path
from ..load import load_converted, load_model
from ..lora import attach, check_lora, init_adapter, trainable
from ..machine import cores, physical_memory
from ..optim import AdamW
from ..params import Params, flatten, init_params, param_count, unflatten
from ..safetensors import read_safetensors
from ..tokenizer import Tokenizer
from .data import TaskData, TextData, load_data
from .rundir import append_log, lock_run, refuse_existing_run, run_state, truncate_log, write_settings
from .settings import PATHS, PATHS_OR_NAMES, TrainConfig, TrainingError, absolute, flag, resumed_settings
from .step import ceil_div, dropout_generator, validator

DEFAULT_BLOCK_SIZE = 256  # tokens per training window unless --block-size says (or the model's context is less)


@dataclass
class Run:
    """Everything a run holds between its steps: what `prepare_run` makes and `run_steps` works on."""

    cfg: TrainConfig  # the settings, every default resolved
    out: Path  # the run's directory
    start: int  # the step it starts (or resumes) after
    config: GPT2Config  # the model's shape
    params: Params  # the weights, updated in place
    tok: Tokenizer  # the vocabulary, saved with every checkpoint
    opt: AdamW  # this rank's rows of the optimizer
    generators: dict[str, np.random.Generator]  # {"rng": the text windows', "dropout_rng": the masks'}
    lock: object | None = None  # the open lock file of the directory (rank 0), closed at the end
    seconds: float | None = None  # the run's time up to its checkpoint at `start` (None: an older run did not say)
    data: TextData | TaskData | None = None  # the training (and validation) data, loaded last
    validate: Callable | None = None  # validate(go_on=None) -> the validation loss now (step.validator)


def prepare_run(cfg: TrainConfig, resume: bool, progress: bool, changes: dict | None, world: World) -> Run:
    """Everything a run needs before its first step: the settings, the model, the optimizer, the generators,
    the data and the validation (TrainingError for anything wrong, before anything is written)."""
    out = Path(cfg.out)
    run, changed = resumed_run(cfg, out, changes, world) if resume else (new_run(cfg, out, progress, world), {})
    run.data = load_data(run.cfg, run.tok, progress)  # the data is known good before anything is written
    run.validate = validator(run.data, run.cfg, run.params, run.config, progress, world)
    if world.is_main and resume:  # the other ranks read the run's files; rank 0 alone writes them
        truncate_log(out, run.start)
        if changed:
            append_log(out, {"step": run.start, "resumed": changed})
            if progress:
                print(f"resuming {out} at step {run.start}, with {describe_changes(changed, run.cfg)}",
                      file=sys.stderr)
    elif world.is_main:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise TrainingError(f"--out {out}: cannot create the directory ({e.strerror})") from None
        run.lock = run.lock or lock_run(out)
        refuse_existing_run(out)  # again, under the lock: a run started at the same instant may have begun
    if world.is_main:
        write_settings(out, run.cfg, run.config, world, run.start)
    return run


def new_run(cfg: TrainConfig, out: Path, progress: bool, world: World) -> Run:
    """A run from step 0: the settings checked, the starting model, a fresh optimizer, seeded generators."""
    cfg.check()
    cfg = dataclasses.replace(cfg, **{k: absolute(k, getattr(cfg, k)) for k in PATHS + PATHS_OR_NAMES})
    if out.exists() and not out.is_dir():
        raise TrainingError(f"--out {out} is a file, not a directory")
    refuse_existing_run(out)
    lock = lock_run(out) if out.is_dir() and world.is_main else None
    cfg, config, params, tok = starting_model(cfg, progress, world)
    opt = AdamW(unflatten(world.rows(flatten(trainable(params)))), cfg.peak_lr, weight_decay=cfg.weight_decay)
    generators = {"rng": np.random.default_rng(cfg.seed),  # the text windows
                  "dropout_rng": dropout_generator(cfg.seed, world.rank)}
    return Run(cfg, out, 0, config, params, tok, opt, generators, lock=lock, seconds=0.0)


def resumed_run(cfg: TrainConfig, out: Path, changes: dict | None, world: World) -> tuple[Run, dict]:
    """A run continued from its last checkpoint (settings, weights, AdamW's moments, the generators), and the
    settings `changes` changed ({field: (old, new)})."""
    done = run_state(out) if out.is_dir() else None
    if done is None:
        raise TrainingError(f"--resume: {out} holds no training run to continue")
    lock = lock_run(out) if world.is_main else None
    state_file = out / f"optimizer-{done}.safetensors"
    if not state_file.is_file():
        raise TrainingError(f"--resume: {out} has the model of step {done} but not its optimizer state "
                            f"({state_file.name})")
    arrays, meta = read_safetensors(state_file)
    seconds = float(meta["seconds"]) if "seconds" in meta else None  # written since minigpt2 0.2
    saved = dataclasses.replace(TrainConfig(**json.loads(meta["settings"])), out=str(out))
    cfg, changed = resumed_settings(saved, changes or {}, out, done)
    config, params = resumed_model(out, cfg)
    tok = Tokenizer.from_dir(out)
    opt = AdamW(unflatten(world.rows(flatten(trainable(params)))), cfg.peak_lr, weight_decay=cfg.weight_decay)
    adam = json.loads(meta["adam"])
    if adam["t"] > 0:  # step 0's state has no moments (they are zeros)
        opt.load_state_dict(world.rows(arrays), adam)  # this rank's rows of them
    opt.weight_decay = cfg.weight_decay  # as the settings say now
    rng, drop_rng = np.random.default_rng(), np.random.default_rng()
    rng.bit_generator.state = json.loads(meta["rng"])
    if "dropout_rng" in meta:  # saved since dropout exists; an older run starts its masks afresh
        drop_rng.bit_generator.state = json.loads(meta["dropout_rng"])
    else:
        drop_rng = dropout_generator(cfg.seed, world.rank)
    run = Run(cfg, out, done, config, params, tok, opt, {"rng": rng, "dropout_rng": drop_rng}, lock=lock,
              seconds=seconds)
    return run, changed


def describe_changes(changed: dict, cfg: TrainConfig) -> str:
    """"--lr 0.001 -> 0.0005, ..." for the settings a resumed run changed."""
    def show(v):
        return f"{v:g}" if isinstance(v, float) else repr(v)

    return ", ".join(f"{flag(k)} {show(old)} -> {show(new)}" + (" (lr / 10)" if k == "min_lr" and cfg.min_lr is None
                                                                 else "") for k, (old, new) in changed.items())


def thread_count(cfg: TrainConfig, config: GPT2Config, world: World) -> int:
    """--threads, or the default for the model's width (this machine's cores shared among its ranks); more than
    the cores is said and capped: the extra threads would only take turns on the cores (measured: 1,000 threads
    made a step about 10x slower on two cores)."""
    if cfg.threads is None:
        return default_threads(config.n_embd, world.local_size)
    have = max(1, cores() // world.local_size)
    if cfg.threads > have:
        if world.is_main:
            print(f"minigpt2-train: --threads {cfg.threads} is more than the {have} cores this run has on this "
                  f"machine; extra threads only take turns on them (about 10x slower at 1,000 threads on two "
                  f"cores), so {have} are used", file=sys.stderr)
        return have
    return cfg.threads


def starting_model(cfg: TrainConfig, progress: bool, world: World | None = None,
                   ) -> tuple[TrainConfig, GPT2Config, Params, Tokenizer]:
    """The model a new run starts from (a copy, writable), its tokenizer, and the settings with the block size
    decided (256, or the --init model's context if that is shorter)."""
    if cfg.init == "scratch":
        cfg = dataclasses.replace(cfg, block_size=cfg.block_size or DEFAULT_BLOCK_SIZE)
        tok = scratch_tokenizer(cfg.tokenizer)
        config = GPT2Config(n_vocab=tok.n_vocab, n_ctx=cfg.block_size, n_embd=cfg.n_embd, n_head=cfg.n_head,
                            n_layer=cfg.n_layer)
        check_training_memory(cfg, config, world)
        return cfg, config, init_params(config, cfg.seed), tok
    if not os.path.isdir(cfg.init) and names_a_path(cfg.init):
        raise TrainingError(f"--init {cfg.init} is not found (give a model directory, a size such as 124M, "
                            "or scratch)")
    try:
        config, params = load_model(cfg.init, progress=progress)
    except ValueError as e:
        raise TrainingError(f"--init {cfg.init}: {e}") from None
    tok = Tokenizer.from_pretrained(cfg.tokenizer or cfg.init)
    if tok.n_vocab > config.n_vocab:
        raise TrainingError(f"the tokenizer has {tok.n_vocab} ids but the --init model only {config.n_vocab}")
    cfg = dataclasses.replace(cfg, block_size=cfg.block_size or min(DEFAULT_BLOCK_SIZE, config.n_ctx))
    if cfg.block_size > config.n_ctx:
        raise TrainingError(f"--block-size {cfg.block_size} is larger than the model's context ({config.n_ctx})")
    if cfg.lora_rank is not None or cfg.init_adapter is not None:
        cfg, params = with_adapter(cfg, config, params)  # the base stays as loaded: frozen, memory-mapped
        check_training_memory(cfg, config, world)
        return cfg, config, params, tok
    check_training_memory(cfg, config, world)
    params = unflatten({k: np.array(v, dtype=np.float32) for k, v in flatten(params).items()})  # writable copy
    return cfg, config, params, tok


def with_adapter(cfg: TrainConfig, config: GPT2Config, base: Params) -> tuple[TrainConfig, Params]:
    """A LoRA run's params: the base with a fresh adapter (--lora-*), or --init-adapter's, whose settings the run
    takes (a --lora-* flag that says otherwise is refused by name)."""
    if cfg.init_adapter is None:
        try:
            lora = check_lora(cfg.lora, config)
        except ArgumentError as e:
            raise TrainingError(f"--{flag(e.name)} {e.message}") from None
        return cfg, attach(base, init_adapter(config, lora, cfg.seed), lora.scaling, lora.dropout)
    try:
        adapter, lora, _ = read_adapter(cfg.init_adapter, config)
    except (AdapterError, OSError) as e:
        raise TrainingError(f"--init-adapter {e}") from None
    theirs = {"lora_rank": lora.r, "lora_alpha": lora.alpha, "lora_dropout": lora.dropout,
              "lora_targets": ",".join(lora.targets)}
    for name, value in theirs.items():
        given = getattr(cfg, name)
        if given is not None and (set(given.split(",")) != set(lora.targets) if name == "lora_targets" else
                                  given != value):
            raise TrainingError(f"--{flag(name)} {given} disagrees with --init-adapter {cfg.init_adapter}, which has "
                                f"{value}; leave the flag out (the adapter's settings are the run's)")
    cfg = dataclasses.replace(cfg, **theirs)
    return cfg, attach(base, adapter, lora.scaling, lora.dropout)


def resumed_model(out: Path, cfg: TrainConfig) -> tuple[GPT2Config, Params]:
    """The model at a run's last checkpoint, writable where it trains: the whole model, or in a LoRA run the
    --init base (memory-mapped, frozen) with the run's adapter."""
    if cfg.lora is None:
        config, flat = load_converted(out)
        return config, unflatten({k: np.array(v) for k, v in flat.items()})  # writable: updated in place
    try:
        config, base = load_model(cfg.init)
        adapter, lora, _ = read_adapter(out, config)
    except (ValueError, OSError) as e:
        raise TrainingError(f"--resume: the LoRA run's base {cfg.init} or its adapter in {out}: {e}") from None
    return config, attach(base, adapter, lora.scaling, lora.dropout)


def scratch_tokenizer(name_or_dir: str | None) -> Tokenizer:
    """A new model's vocabulary: --tokenizer's, else GPT-2's (from the cache, or downloaded once)."""
    if name_or_dir is not None:
        return Tokenizer.from_pretrained(name_or_dir)
    try:
        return Tokenizer.from_pretrained("124M")
    except DownloadError as e:
        raise TrainingError(f"--init scratch without --tokenizer uses GPT-2's vocabulary, which is not in the cache "
                            f"and could not be downloaded ({e.url}: {e.reason}); pass --tokenizer DIR (a directory "
                            "written by Tokenizer.save), or --tokenizer tiny (the bundled model's 1,024 tokens)"
                            ) from None


def check_training_memory(cfg: TrainConfig, config: GPT2Config, world: World | None = None) -> None:
    """Refuse, before allocating anything, a run whose arrays cannot fit in this machine's memory: the
    parameters, gradients and AdamW's two moments (4 copies; under MPI each rank holds 1/N of the moments), and
    one micro-batch's saved activations (about 16 C floats per token and layer, backward.SAVED) with one
    layer's attention scores (a rank's share of the rows); times the ranks running on this machine."""
    total = physical_memory()
    if total is None:
        return
    world = world or World()
    gb = 1e9
    here = world.local_size  # processes of the run on this machine
    weights = here * 4 * (2 + 2 / world.size) * param_count(config)  # bytes: params, grads, m, v in float32
    if cfg.lora_rank is not None:
        weights = here * 4 * param_count(config)  # the frozen base alone (an adapter is a small fraction)
    rows = ceil_div(cfg.batch_size, world.size)  # the largest rank's share of a micro-batch
    kept = (config.n_layer + 16) if cfg.recompute_activations else 16 * config.n_layer  # C floats a token
    acts = here * (4 * rows * cfg.block_size * (kept * config.n_embd + 4 * config.n_embd)
                   + 4 * 4 * rows * config.n_head * cfg.block_size ** 2)
    ranks = f" ({here} ranks on this machine)" if here > 1 else ""
    if weights > total:
        raise TrainingError(f"the model ({config.n_layer} layers of --n-embd {config.n_embd}, {param_count(config):,} "
                            f"parameters) needs about {weights / gb:,.1f} GB to train{ranks}, more than this "
                            f"machine's {total / gb:.1f} GB")
    if weights + acts > total:
        raise TrainingError(f"--batch-size {cfg.batch_size} x --block-size {cfg.block_size} needs about "
                            f"{acts / gb:,.1f} GB of activations (and {weights / gb:.1f} GB for the model){ranks}, "
                            f"more than this machine's {total / gb:.1f} GB; use a smaller --batch-size with "
                            "--grad-accum")
