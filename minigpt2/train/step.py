"""batches -> one step's loss and gradient (its micro-batches, its ranks' shares), the validation loss, and the
check that a run has not diverged."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from tqdm import tqdm

from ..backward import loss, loss_and_grads
from ..config import GPT2Config
from ..distributed import World
from ..lora import adapter_drops, trainable
from ..model import Dropout
from ..params import Params, flatten, unflatten
from ..tasks import completion_nll, length_batches
from .data import TaskData, TextData, random_windows
from .settings import TrainConfig
from .stop import agreed_rounds

def step_gradient(batches: list[tuple[np.ndarray, np.ndarray]], by_tokens: bool, params: Params,
                  config: GPT2Config, dropout: float = 0.0, drop_rng: np.random.Generator | None = None,
                  world: World | None = None, go_on: Callable[[], bool] | None = None,
                  recompute: bool = False) -> tuple[float, Params]:
    """(loss, gradient) of one step over its micro-batches: the mean over every scored token of all of them
    (`by_tokens`, task files: a micro-batch counts by its scored tokens), or the mean of the micro-batches'
    means (text: every window scores all of its tokens, so the two are the same). The gradient is this rank's
    rows of it under MPI, all of it in one process.

    Each micro-batch's gradient comes out of the backward already weighted by its share of the step's scored
    tokens (grad_scale = its tokens / the step's), so the sum of them is the step's gradient with no pass to
    rescale it. With a `world` of several ranks, each rank takes its share of every micro-batch's rows (it
    drew the whole batch, so it knows the step's token count), the losses are summed over the ranks, and the
    gradient that comes back is this rank's rows of the sum (`World.rows`; distributed.py). `go_on`, asked
    between micro-batches (`agreed_rounds`), drops the step when it says False (StepAbandoned)."""
    world = world or World()
    by_tokens = by_tokens or world.size > 1  # a rank's share of a micro-batch counts by its tokens
    total = sum(int((y >= 0).sum()) for _, y in batches) if by_tokens else len(batches)  # the whole step's
    if world.size > 1:
        batches = [(x[world.share(len(x))], y[world.share(len(y))]) for x, y in batches]  # this rank's rows
    loss_sum, grads = 0.0, None
    for x, y in agreed_rounds(batches, len(batches), go_on):  # every rank has as many micro-batches
        w = int((y >= 0).sum()) if by_tokens else 1  # what this micro-batch (share) weighs in the step's mean
        if w == 0:
            continue  # an empty share (fewer rows than ranks), or nothing scored
        drop = Dropout(dropout, drop_rng) if dropout > 0 or adapter_drops(params) else None
        micro_loss, micro_grads = loss_and_grads(x, y, params, config, drop, grad_scale=w / total, recompute=recompute)
        loss_sum += micro_loss * w
        grads = micro_grads if grads is None else add_into(grads, micro_grads)
    if grads is None:
        grads = unflatten({k: np.zeros_like(v) for k, v in flatten(trainable(params)).items()})
    if world.size > 1:
        grads = unflatten(world.sum_rows(flatten(grads)))  # this rank's rows of the summed gradient
        loss_sum = world.sum_float(loss_sum)
    return loss_sum / total, grads


def add_into(total: Params, more: Params) -> Params:
    for a, b in zip(flatten(total).values(), flatten(more).values()):
        a += b
    return total


def validator(data: TextData | TaskData, cfg: TrainConfig, params: Params, config: GPT2Config, progress: bool,
              world: World | None = None):
    """A function returning the validation loss of the model as it is now (under MPI every rank calls it: each
    evaluates its share of the batches or examples, and the sums are added up); its one optional argument,
    `go_on`, is asked between batches as `agreed_rounds` says.

    Text: the mean loss over eval_batches fixed random windows of the validation tokens. Task file: the mean
    NLL over every scored token of every validation example (comparable between runs of one file)."""
    world = world or World()
    if isinstance(data, TaskData):
        def task_val_loss(go_on: Callable[[], bool] | None = None) -> float:
            batches = length_batches(data.val[world.share(len(data.val))], cfg.batch_size)  # this rank's
            rounds = ceil_div(ceil_div(len(data.val), world.size), cfg.batch_size)  # the largest share's batches
            total, count = 0.0, 0
            for batch in tqdm(agreed_rounds(batches, rounds, go_on), total=len(batches), desc="validating",
                              unit="batch", disable=not progress, leave=False):
                nll, n = completion_nll(batch, params, config, cfg.batch_size)
                total, count = total + nll, count + n
            return world.sum_float(total) / world.sum_float(count)
        return task_val_loss
    val_rng = np.random.default_rng([cfg.seed, 1])  # the same validation windows at every evaluation
    val_batches = [random_windows(data.val, cfg.block_size, cfg.batch_size, val_rng) for _ in range(cfg.eval_batches)]
    return lambda go_on=None: validation_loss(val_batches, params, config, progress, world, go_on)


def validation_loss(batches: list[tuple[np.ndarray, np.ndarray]], params: Params, config: GPT2Config,
                    progress: bool = False, world: World | None = None,
                    go_on: Callable[[], bool] | None = None) -> float:
    """The mean loss over the validation batches (inputs, targets), forward only; with a `world` of several
    ranks, each takes its share of the batches and the sums are added up. `go_on`: as in `agreed_rounds`."""
    world = world or World()
    mine = batches[world.share(len(batches))]
    total = 0.0
    for x, y in tqdm(agreed_rounds(mine, ceil_div(len(batches), world.size), go_on), total=len(mine),
                     desc="validating", unit="batch", disable=not progress, leave=False):
        total += loss(x, y, params, config)
    return world.sum_float(total) / len(batches)


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def dropout_generator(seed: int, rank: int) -> np.random.Generator:
    """The generator of a run's dropout masks, apart from its batches' (each MPI rank its own)."""
    return np.random.default_rng([seed, 3, rank])


class Divergence:
    """Whether a step's loss says the run has diverged: not finite (or its gradient norm not), or more than
    `FACTOR` times the larger of ln V (a uniform guess's loss) and the first loss this invocation saw. A
    learning rate far too high sends the loss up by orders of magnitude (--lr 1e3: 1e9 within steps) while it
    stays finite; a healthy run's loss never rises tenfold above where it began."""

    FACTOR = 10.0

    def __init__(self, n_vocab: int):
        self.uniform = math.log(n_vocab)  # nats per token of a uniform guess
        self.first: float | None = None  # the first finite loss of this invocation

    def __call__(self, loss: float, grad_norm: float) -> str | None:
        """None while the run is healthy, else why it is not (a few words)."""
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
            return f"not a finite number; gradient norm {grad_norm:.4g}"
        self.first = loss if self.first is None else self.first
        limit = self.FACTOR * max(self.uniform, self.first)
        if loss > limit:
            return f"more than {self.FACTOR:g} x {limit / self.FACTOR:.3f}, the larger of ln V and the first step's loss"
        return None
