"""a Run -> steps -> checkpoints: the training loop (start.py makes the Run: a new run or a resumed one).

Each step draws its batches (data.py), takes the gradient of the mean loss over them (step.py), clips its
global norm and takes an AdamW step at the scheduled learning rate (optim.py); the loop validates, logs and
checkpoints as the settings say (rundir.py), and stops cleanly on a signal (stop.py).
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import time

from tqdm import tqdm

from ..blas import blas_threads, set_blas_threads
from ..config import GPT2Config
from ..distributed import World
from ..distributed import world as distributed_world
from ..gpt2 import GPT2
from ..lora import adapter_of, base_of, has_adapter, trainable
from ..optim import clip_grad_norm, learning_rate
from ..params import Params, flatten
from ..tokenizer import Tokenizer
from .data import TaskData, step_batches
from .rundir import BEST_DIR, append_log, best_so_far, moments_to_save, save_checkpoint, save_model, summary
from .settings import OtherRankFailed, TrainConfig, TrainingDiverged
from .start import Run, prepare_run, thread_count
from .step import Divergence, step_gradient
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


def run_steps(run: Run, resume: bool, progress: bool, world: World) -> GPT2:
    """The training loop proper: steps run.start + 1 .. cfg.steps, validating, logging and checkpointing (rank 0)."""
    cfg, steps = run.cfg, Steps(run, progress, world)
    if not resume:
        steps.checkpoint(0)  # the run exists from the first instant
        steps.log({"step": 0, "val_loss": run.validate()})  # every rank validates its share
    completed = run.start
    bar = tqdm(total=cfg.steps, initial=run.start, desc="training", unit="step", disable=not progress)
    with StopRequest(announces=world.is_main) as stop, bar:
        agreed_go_on = (lambda: not stop.agree(world)) if world.size > 1 else None
        for step in range(run.start, cfg.steps):
            try:
                step_loss = steps.take(step, stop, agreed_go_on, bar)
            except StepAbandoned:
                break
            completed = n = step + 1
            stopping = stop.agree(world)  # a stop asked during the step skips its validation and sample
            if (n % cfg.eval_every == 0 or n == cfg.steps) and not stopping:
                steps.validate(n, step_loss, stop, agreed_go_on, bar)
            if world.is_main and cfg.sample_every and n % cfg.sample_every == 0 and not stopping:
                steps.sample(n, bar)
            if n % cfg.save_every == 0 or n == cfg.steps:
                steps.checkpoint(n)
            if stopping or stop.agree(world):  # every rank stops after the same step
                break
        if stop.requested:
            if steps.last_saved != completed:
                steps.checkpoint(completed)
            raise TrainingInterrupted(stop.signum or signal.SIGTERM)
    if completed > run.start and world.is_main:
        steps.log({"step": completed, "summary": summary(run.out, cfg, run.data, time.perf_counter() - steps.began,
                                                         steps.seconds())})
    return model_of(run.config, run.params, cfg)


class Steps:
    """What the loop does at each step, with what it keeps between steps: the best validation loss so far, the
    last step saved, the time the loop began."""

    def __init__(self, run: Run, progress: bool, world: World):
        self.run, self.progress, self.world = run, progress, world
        self.began = time.perf_counter()
        self.best = best_so_far(run.out)
        self.last_saved = run.start
        self.diverged = Divergence(run.config.n_vocab)

    def log(self, record: dict) -> None:
        if self.world.is_main:
            append_log(self.run.out, record)

    def seconds(self) -> float | None:
        """The run's time so far, checkpoints before this process included (None if an older run did not say)."""
        before = self.run.seconds
        return None if before is None else before + time.perf_counter() - self.began

    def checkpoint(self, n: int) -> None:
        run = self.run
        moments = moments_to_save(run.opt, trainable(run.params), self.world)
        if self.world.is_main:
            save_checkpoint(run.out, n, run.config, run.params, run.tok, run.opt, run.generators, run.cfg, moments,
                            self.seconds())
        elif moments is not None:
            for m in moments.values():
                m.gather()  # this rank's rows of each moment, to rank 0 as it writes that moment
        self.last_saved = n

    def take(self, step: int, stop: StopRequest, agreed_go_on, bar) -> float:
        """Step `step` + 1: the gradient, its clipped norm, AdamW; logged. StepAbandoned (the generators as they
        were) if a stop came during it."""
        run, cfg, world = self.run, self.run.cfg, self.world
        states_before = {k: g.bit_generator.state for k, g in run.generators.items()}  # restored if abandoned
        t0 = time.perf_counter()
        lr = learning_rate(step, cfg.peak_lr, cfg.warmup, cfg.steps, cfg.min_lr)
        try:
            # under MPI a rank never drops a step alone (the others would wait for it): the ranks agree between
            # micro-batches whether any was asked to stop
            with stop.abandonable() if world.size == 1 else contextlib.nullcontext():
                batches, tokens = step_batches(run.data, cfg, step, run.generators["rng"])  # [(inputs, targets)]
                step_loss, grads = step_gradient(batches, isinstance(run.data, TaskData), run.params, run.config,
                                                 cfg.dropout, run.generators["dropout_rng"], world, agreed_go_on,
                                                 cfg.recompute_activations)
        except StepAbandoned:
            for k, g in run.generators.items():
                g.bit_generator.state = states_before[k]
            raise
        grad_norm = clip_grad_norm(grads, cfg.grad_clip if cfg.grad_clip > 0 else math.inf, world.sum_float)
        why = self.diverged(step_loss, grad_norm)
        if why:
            raise TrainingDiverged(f"training diverged: the loss became {step_loss:.4g} at step {step + 1} ({why}); "
                                   f"the last good checkpoint (step {self.last_saved}) is in {run.out}; try a lower "
                                   "--lr (--resume --lr X continues from it)")
        run.opt.step(grads, lr)  # this rank's rows of every tensor (all of them in one process)
        world.share_rows_(flatten(trainable(run.params)))  # every rank's updated rows to every rank
        n, seconds = step + 1, time.perf_counter() - t0
        record = {"step": n, "loss": step_loss, "lr": lr, "grad_norm": grad_norm, "tokens_per_s": tokens / seconds}
        if isinstance(run.data, TaskData):
            record["epoch"] = n * cfg.batch_size * cfg.grad_accum / len(run.data.train)
        self.log(record)
        bar.update(1)
        bar.set_postfix(loss=f"{step_loss:.3f}", lr=f"{lr:.2e}", tok_s=f"{tokens / seconds:.0f}")
        return step_loss

    def validate(self, n: int, step_loss: float, stop: StopRequest, agreed_go_on, bar) -> None:
        """The validation loss after step n, logged; a new best saved in best/ (rank 0)."""
        run = self.run
        try:
            with stop.abandonable() if self.world.size == 1 else contextlib.nullcontext():
                val_loss = run.validate(agreed_go_on)  # every rank validates its share
        except StepAbandoned:
            return  # the step is complete; only its validation is dropped
        self.log({"step": n, "val_loss": val_loss})
        if self.progress:
            bar.write(f"step {n}: train loss {step_loss:.4f}, val loss {val_loss:.4f}", file=sys.stderr)
        if self.world.is_main and val_loss < self.best[1]:
            self.best = (n, val_loss)
            save_model(run.out / BEST_DIR, run.cfg, run.config, run.params, run.tok,
                       {"best_step": str(n), "val_loss": repr(val_loss)})

    def sample(self, n: int, bar) -> None:
        """A short sample of the model after step n, logged (rank 0)."""
        run, cfg = self.run, self.run.cfg
        text = sample_text(model_of(run.config, run.params, cfg), run.tok, cfg.prompt, cfg.sample_tokens,
                           seed=cfg.seed + n)
        append_log(run.out, {"step": n, "sample": text})
        if self.progress:
            bar.write(f"step {n} sample: {cfg.prompt}{text}", file=sys.stderr)


def model_of(config: GPT2Config, params: Params, cfg: TrainConfig) -> GPT2:
    """A GPT2 of a run's params (with its adapter attached, in a LoRA run)."""
    if not has_adapter(params):
        return GPT2(config, params)
    return GPT2(config, base_of(params)).attach_adapter(adapter_of(params), cfg.lora, cfg.init)


def sample_text(model: GPT2, tok: Tokenizer, prompt: str, n_tokens: int, seed: int) -> str:
    """A short sample continuing `prompt` (temperature 0.8, top-k 40, its own seed: the run's generators are
    not touched), as text."""
    ids = tok.encode_ordinary(prompt)[-(model.config.n_ctx - 1):] or [tok.eot_id]
    return tok.decode(model.generate(ids, n_tokens, temperature=0.8, top_k=40, seed=seed, eot_id=tok.eot_id))
