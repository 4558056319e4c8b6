"""settings + data -> steps -> checkpoints: starting (or resuming) a run and the training loop itself.

The loop: each step draws its batches (data.py), takes the gradient of the mean loss over them (step.py), clips
its global norm and takes an AdamW step at the scheduled learning rate (optim.py); it validates, logs and
checkpoints as the settings say (rundir.py), and stops cleanly on a signal (stop.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..blas import blas_threads, default_threads, set_blas_threads
from ..adapter import AdapterError, read_adapter
from ..config import ArgumentError, GPT2Config
from ..distributed import World
from ..distributed import world as distributed_world
from ..download import DownloadError
from ..files import names_a_path
from ..gpt2 import GPT2
from ..load import load_converted, load_model
from ..machine import cores, physical_memory
from ..lora import adapter_of, attach, base_of, check_lora, has_adapter, init_adapter, trainable
from ..optim import AdamW, clip_grad_norm, learning_rate
from ..params import Params, flatten, init_params, param_count, unflatten
from ..safetensors import read_safetensors
from ..tokenizer import Tokenizer
from .data import TaskData, TextData, load_data, step_batches
from .rundir import (
    BEST_DIR,
    append_log,
    best_so_far,
    lock_run,
    moments_to_save,
    refuse_existing_run,
    run_state,
    save_checkpoint,
    save_model,
    summary,
    truncate_log,
    write_settings,
)
from .settings import (
    PATHS,
    PATHS_OR_NAMES,
    OtherRankFailed,
    TrainConfig,
    TrainingDiverged,
    TrainingError,
    absolute,
    flag,
    resumed_settings,
)
from .step import Divergence, ceil_div, dropout_generator, step_gradient, validator
from .stop import StepAbandoned, StopRequest, TrainingInterrupted

def train(cfg: TrainConfig, resume: bool = False, progress: bool = True, changes: dict | None = None,
          world: World | None = None) -> GPT2:
    """Run (or, with `resume`, continue) the training `cfg` describes; return the trained model.

    With `resume`, only cfg.out is read: the run continues with its own settings, and `changes` ({field:
    value}) changes some (`CHANGEABLE`: steps extends the run; lr, dropout, ... retune it; data says where
    its data is now). Raises TrainingError for bad settings or data, TrainingDiverged if the loss stops being
    finite, and TrainingInterrupted (a KeyboardInterrupt) after saving a checkpoint on Ctrl-C or SIGTERM.

    `world` (distributed.py; default: from the MPI launcher, else one process) splits each step's batch over
    its ranks; rank 0 alone prints, logs and writes.
    """
    world = world or distributed_world()
    progress = progress and world.is_main
    try:
        prepared = prepare_run(cfg, resume, progress, changes, world)
        failed = None
    except Exception as e:  # noqa: BLE001  (re-raised below, on every rank)
        prepared, failed = None, e
    if world.size > 1 and world.any(failed is not None):  # every rank starts, or none does
        if failed is None:
            failed = OtherRankFailed("another rank could not start the run (rank 0 says why)")
        failed.everywhere = True
    if failed is not None:
        raise failed
    run = prepared
    threads_before = blas_threads()
    set_blas_threads(thread_count(run.cfg, run.config, world))
    try:
        return run_steps(run, resume, progress, world)
    finally:
        if threads_before is not None:
            set_blas_threads(threads_before)
        if run.lock is not None:
            run.lock.close()


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
    data: TextData | TaskData
    validate: Callable  # validate(go_on=None) -> the validation loss now (step.validator)
    lock: object | None  # the open lock file of the directory (rank 0), closed at the end
    seconds: float | None  # the run's time up to its checkpoint at `start` (None: an older run did not say)


def prepare_run(cfg: TrainConfig, resume: bool, progress: bool, changes: dict | None, world: World) -> Run:
    """Everything a run needs before its first step: the settings, the model, the optimizer, the generators,
    the data and the validation (TrainingError for anything wrong, before anything is written)."""
    out = Path(cfg.out)
    lock = None
    if resume:
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
        start = done
    else:
        cfg.check()
        cfg = dataclasses.replace(cfg, **{k: absolute(k, getattr(cfg, k)) for k in PATHS + PATHS_OR_NAMES})
        if out.exists() and not out.is_dir():
            raise TrainingError(f"--out {out} is a file, not a directory")
        refuse_existing_run(out)
        lock = lock_run(out) if out.is_dir() and world.is_main else None
        cfg, config, params, tok = starting_model(cfg, progress, world)
        opt = AdamW(unflatten(world.rows(flatten(trainable(params)))), cfg.peak_lr, weight_decay=cfg.weight_decay)
        rng = np.random.default_rng(cfg.seed)  # the text windows
        drop_rng = dropout_generator(cfg.seed, world.rank)
        start, seconds = 0, 0.0
    data = load_data(cfg, tok, progress)  # the data is known good before anything is written
    validate = validator(data, cfg, params, config, progress, world)
    if world.is_main and resume:  # the other ranks read the run's files; rank 0 alone writes them
        truncate_log(out, done)
        if changed:
            append_log(out, {"step": done, "resumed": changed})
            if progress:
                def show(v):
                    return f"{v:g}" if isinstance(v, float) else repr(v)
                print(f"resuming {out} at step {done}, with " + ", ".join(
                    f"{flag(k)} {show(old)} -> {show(new)}" + (" (lr / 10)" if k == "min_lr" and cfg.min_lr is None
                                                               else "") for k, (old, new) in changed.items()),
                      file=sys.stderr)
    elif world.is_main:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise TrainingError(f"--out {out}: cannot create the directory ({e.strerror})") from None
        lock = lock or lock_run(out)
        refuse_existing_run(out)  # again, under the lock: a run started at the same instant may have begun
    generators = {"rng": rng, "dropout_rng": drop_rng}
    if world.is_main:
        write_settings(out, cfg, config, world, start)
    return Run(cfg, out, start, config, params, tok, opt, generators, data, validate, lock, seconds)


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
        check_memory(cfg, config, world)
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
        check_memory(cfg, config, world)
        return cfg, config, params, tok
    check_memory(cfg, config, world)
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


def model_of(config: GPT2Config, params: Params, cfg: TrainConfig) -> GPT2:
    """A GPT2 of a run's params (with its adapter attached, in a LoRA run)."""
    if not has_adapter(params):
        return GPT2(config, params)
    return GPT2(config, base_of(params)).attach_adapter(adapter_of(params), cfg.lora, cfg.init)


DEFAULT_BLOCK_SIZE = 256


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


def check_memory(cfg: TrainConfig, config: GPT2Config, world: World | None = None) -> None:
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


def run_steps(run: Run, resume: bool, progress: bool, world: World) -> GPT2:
    """The training loop proper: steps run.start + 1 .. cfg.steps, validating, logging and checkpointing (rank 0)."""
    cfg, out, start, config, params, tok = run.cfg, run.out, run.start, run.config, run.params, run.tok
    opt, generators, data, validate, seconds_before = run.opt, run.generators, run.data, run.validate, run.seconds
    drop_rng = generators["dropout_rng"]
    rng = generators["rng"]
    main = world.is_main
    began = time.perf_counter()

    def log(record: dict) -> None:
        if main:
            append_log(out, record)

    def run_seconds() -> float | None:
        return None if seconds_before is None else seconds_before + time.perf_counter() - began

    def checkpoint(n: int) -> None:
        moments = moments_to_save(opt, trainable(params), world)
        if main:
            save_checkpoint(out, n, config, params, tok, opt, generators, cfg, moments, run_seconds())
        elif moments is not None:
            for m in moments.values():
                m.gather()  # this rank's rows of each moment, to rank 0 as it writes that moment

    if not resume:
        checkpoint(0)  # the run exists from the first instant
        log({"step": 0, "val_loss": validate()})  # every rank validates its share
    best = best_so_far(out)
    last_saved = start
    bar = tqdm(total=cfg.steps, initial=start, desc="training", unit="step", disable=not progress)
    completed = start
    diverged = Divergence(config.n_vocab)
    with StopRequest(announces=main) as stop, bar:
        agreed_go_on = (lambda: not stop.agree(world)) if world.size > 1 else None
        for step in range(start, cfg.steps):
            states_before = {k: g.bit_generator.state for k, g in generators.items()}  # restored if abandoned
            t0 = time.perf_counter()
            lr = learning_rate(step, cfg.peak_lr, cfg.warmup, cfg.steps, cfg.min_lr)
            try:
                # under MPI a rank never drops a step alone (the others would wait for it): the ranks agree
                # between micro-batches whether any was asked to stop
                with stop.abandonable() if world.size == 1 else contextlib.nullcontext():
                    batches, tokens = step_batches(data, cfg, step, rng)  # [(inputs [B, T], targets [B, T])] * accum
                    step_loss, grads = step_gradient(batches, isinstance(data, TaskData), params, config,
                                                     cfg.dropout, drop_rng, world, agreed_go_on,
                                                     cfg.recompute_activations)
            except StepAbandoned:
                for k, g in generators.items():
                    g.bit_generator.state = states_before[k]
                break
            grad_norm = clip_grad_norm(grads, cfg.grad_clip if cfg.grad_clip > 0 else math.inf, world.sum_float)
            why = diverged(step_loss, grad_norm)
            if why:
                raise TrainingDiverged(f"training diverged: the loss became {step_loss:.4g} at step {step + 1} ({why});"
                                       f" the last good checkpoint (step {last_saved}) is in {out}; try a lower --lr "
                                       "(--resume --lr X continues from it)")
            opt.step(grads, lr)  # this rank's rows of every tensor (all of them in one process)
            world.share_rows_(flatten(trainable(params)))  # every rank's updated rows to every rank
            completed = n = step + 1
            seconds = time.perf_counter() - t0
            record = {"step": n, "loss": step_loss, "lr": lr, "grad_norm": grad_norm, "tokens_per_s": tokens / seconds}
            if isinstance(data, TaskData):
                record["epoch"] = n * cfg.batch_size * cfg.grad_accum / len(data.train)
            log(record)
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.3f}", lr=f"{lr:.2e}", tok_s=f"{tokens / seconds:.0f}")
            stopping = stop.agree(world)  # a stop asked during the step skips its validation and sample
            if (n % cfg.eval_every == 0 or n == cfg.steps) and not stopping:
                try:
                    with stop.abandonable() if world.size == 1 else contextlib.nullcontext():
                        val_loss = validate(agreed_go_on)  # every rank validates its share
                    log({"step": n, "val_loss": val_loss})
                    if progress:
                        bar.write(f"step {n}: train loss {step_loss:.4f}, val loss {val_loss:.4f}", file=sys.stderr)
                    if main and val_loss < best[1]:
                        best = (n, val_loss)
                        save_model(out / BEST_DIR, cfg, config, params, tok,
                                   {"best_step": str(n), "val_loss": repr(val_loss)})
                except StepAbandoned:
                    pass  # the step is complete; only its validation is dropped
            if main and cfg.sample_every and n % cfg.sample_every == 0 and not stopping:
                text = sample_text(model_of(config, params, cfg), tok, cfg.prompt, cfg.sample_tokens, seed=cfg.seed + n)
                append_log(out, {"step": n, "sample": text})
                if progress:
                    bar.write(f"step {n} sample: {cfg.prompt}{text}", file=sys.stderr)
            if n % cfg.save_every == 0 or n == cfg.steps:
                checkpoint(n)
                last_saved = n
            if stopping or stop.agree(world):  # every rank stops after the same step
                break
        if stop.requested:
            if last_saved != completed:
                checkpoint(completed)
            raise TrainingInterrupted(stop.signum or signal.SIGTERM)
    if completed > start and main:
        log({"step": completed, "summary": summary(out, cfg, data, time.perf_counter() - began, run_seconds())})
    return model_of(config, params, cfg)


def sample_text(model: GPT2, tok: Tokenizer, prompt: str, n_tokens: int, seed: int) -> str:
    """A short sample continuing `prompt` (temperature 0.8, top-k 40, its own seed: the run's generators are
    not touched), as text."""
    ids = tok.encode_ordinary(prompt)[-(model.config.n_ctx - 1):] or [tok.eot_id]
    return tok.decode(model.generate(ids, n_tokens, temperature=0.8, top_k=40, seed=seed, eot_id=tok.eot_id))
