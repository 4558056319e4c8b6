"""text -> batches -> steps -> checkpoints: pre-training and fine-tuning GPT-2 (`python -m minigpt2.train`: cli.py).

    python -m minigpt2.train --data book.txt --out my-gpt2                     # fine-tune GPT-2 124M
    python -m minigpt2.train --data texts/ --out my-small --init scratch --n-layer 2 --n-head 4 --n-embd 128

The objective is GPT-2's own: maximise the likelihood of the text, one next token at a time, i.e. minimise
the mean cross-entropy (backward.py). Each step draws `batch_size` random windows of `block_size + 1` tokens
(inputs and the same shifted by one as targets) per micro-batch, averages the gradients of `grad_accum`
micro-batches, clips their global norm, and takes an AdamW step with the scheduled learning rate
(optim.py: linear warmup, then cosine decay).

A .jsonl task file instead (tasks.py) trains on prompt/completion pairs, maximising sum log P(completion |
prompt): each epoch visits every example once in a seeded order, `batch_size` examples right-padded per
micro-batch, the loss the mean over every scored token of the step (the completion and <|endoftext|>).
`dropout` > 0 drops where GPT-2 does, with masks from a generator of its own (saved with the checkpoint).

The output directory holds, at every instant, a complete model (`GPT2.from_pretrained(DIR)`,
`Tokenizer.from_pretrained(DIR)`, `python -m minigpt2.generate --model DIR`) and the state to continue it:

    minigpt2.safetensors (+ encoder.json, vocab.bpe)   the model at the last checkpoint, with its step
    optimizer-<step>.safetensors                         AdamW's moments, the step, the batch RNG, the settings
    log.jsonl                                            one JSON line per step and per evaluation

A checkpoint writes the optimizer state under a new name, then the model (renamed last: the commit point,
naming its step), then removes the older optimizer state; a kill at any instant leaves the last complete
checkpoint. `resume=True` continues from it and ends with exactly the weights and per-step losses of a run
that was never interrupted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .backward import loss, loss_and_grads
from .blas import blas_threads, default_threads, set_blas_threads
from .config import GPT2Config
from .distributed import World
from .distributed import world as distributed_world
from .download import DownloadError, cache_dir
from .files import CONVERTED_FILE, read_utf8, write_atomically
from .gpt2 import GPT2
from .load import load_converted, load_model
from .machine import cores, physical_memory
from .model import Dropout
from .optim import AdamW, clip_grad_norm, learning_rate
from .params import Params, flatten, init_params, param_count, unflatten
from .safetensors import read_safetensors, write_safetensors
from .save import models_in, save_converted
from .tasks import (
    Example,
    TaskFileError,
    completion_nll,
    encode_examples,
    examples_at,
    is_task_file,
    length_batches,
    pad_batch,
    read_task_file,
)
from .tokenizer import Tokenizer
from .version import __version__
from .vocab import ENDOFTEXT

LOG_FILE = "log.jsonl"
OPTIMIZER_FILE = re.compile(r"optimizer-(\d+)\.safetensors")


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

    @property
    def peak_lr(self) -> float:
        return self.lr if self.lr is not None else 6e-4 if self.init == "scratch" else 3e-5

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
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
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
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise TrainingError(f"--{flag(name)} must be a non-negative integer, got {v!r}")
        for name in ("sample_tokens",) + (("threads",) if self.threads is not None else ()):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise TrainingError(f"--{flag(name)} must be a positive integer, got {v!r}")
        if not (isinstance(self.dropout, (int, float)) and 0 <= self.dropout < 1):
            raise TrainingError(f"--dropout must be a probability in [0, 1), got {self.dropout!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise TrainingError(f"--seed must be a non-negative integer, got {self.seed!r}")
        if self.init == "scratch" and self.n_embd % self.n_head:
            raise TrainingError(f"--n-embd ({self.n_embd}) must be divisible by --n-head ({self.n_head})")
        if self.min_lr is not None and self.min_lr > self.peak_lr:
            raise TrainingError(f"--min-lr {self.min_lr:g} is above the peak learning rate {self.peak_lr:g} (--lr): "
                                "the decay would rise; give a --min-lr below --lr")
        if self.warmup_steps is not None and self.warmup_steps > self.steps:
            raise TrainingError(f"--warmup-steps {self.warmup_steps} is more than --steps {self.steps}: the run would "
                                "never reach its learning rate")


def flag(name: str) -> str:
    return name.replace("_", "-")


# --- data -----------------------------------------------------------------------------------------


def read_documents(path: str | os.PathLike, what: str = "--data") -> list[str]:
    """A UTF-8 text file, or every .txt file of a directory (sorted by name), as strings."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise TrainingError(f"{what} {path} holds no .txt files")
    elif path.is_file():
        files = [path]
    else:
        raise TrainingError(f"{what} {path} does not exist")
    docs = []
    for f in files:
        try:
            docs.append(read_utf8(f, f"{what} "))
        except (OSError, ValueError) as e:
            raise TrainingError(str(e)) from None
    if not any(d.strip() for d in docs):
        raise TrainingError(f"{what} {path} is empty")
    return docs


def tokenize(docs: list[str], tok: Tokenizer, progress: bool = True) -> np.ndarray:
    """Documents -> one array of ids, documents joined by <|endoftext|>, with a progress bar over the bytes.

    A literal "<|endoftext|>" inside a text separates documents too (many GPT-2 datasets are written so): it
    becomes the one end-of-text token, not seven ordinary ones."""
    eot = tok.special_tokens.get(ENDOFTEXT)
    dtype = np.uint16 if tok.n_vocab <= 2**16 else np.uint32
    pieces = []
    with tqdm(total=sum(len(d) for d in docs), unit="char", unit_scale=True, desc="tokenizing", disable=not progress,
              leave=False) as bar:
        parts = [part for doc in docs for part in (doc.split(ENDOFTEXT) if eot is not None else [doc])]
        for i, part in enumerate(parts):
            if i and eot is not None:
                pieces.append(np.array([eot], dtype))
                bar.update(len(ENDOFTEXT))
            for chunk in tok.chunks(part):
                pieces.append(np.array(tok.encode_ordinary(chunk), dtype))
                bar.update(len(chunk))
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype)


def load_tokens(path: str | os.PathLike, tok: Tokenizer, what: str = "--data", progress: bool = True) -> np.ndarray:
    """The ids of the text at `path`, cached in {cache}/tokens/ by the text's and the vocabulary's hashes, so a
    second run on the same data starts at once."""
    docs = read_documents(path, what)
    key = hashlib.sha256(b"documents joined and split at <|endoftext|>")  # the rule is part of the key
    for d in docs:
        key.update(hashlib.sha256(d.encode("utf-8")).digest())
    for name, data in sorted(tok.files().items()):
        key.update(name.encode() + hashlib.sha256(data).digest())
    cached = cache_dir() / "tokens" / f"{key.hexdigest()}.npy"
    if cached.is_file():
        try:
            tokens = np.load(cached)
            os.utime(cached)  # recently used: kept longest when the cache is trimmed
            return tokens
        except (OSError, ValueError):
            pass  # damaged: tokenize again
    tokens = tokenize(docs, tok, progress)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(cached, lambda f: np.save(f, tokens))
        trim_token_cache(cached.parent, TOKEN_CACHE_BYTES)
    except OSError:
        pass  # a read-only cache only costs the time to tokenize again
    return tokens


TOKEN_CACHE_BYTES = 2 * 10**9  # {cache}/tokens/ is trimmed to this, least recently used first


def trim_token_cache(directory: Path, limit: int) -> None:
    """Delete the least recently used token files of `directory` until the rest fit in `limit` bytes (the
    newest file always stays)."""
    files = []
    for p in directory.glob("*.npy"):
        try:
            st = p.stat()
        except OSError:
            continue  # removed by another process meanwhile
        files.append((st.st_mtime, st.st_size, p))
    files.sort(reverse=True)  # newest first
    total = 0
    for i, (_, size, p) in enumerate(files):
        total += size
        if total > limit and i > 0:
            p.unlink(missing_ok=True)


def random_windows(tokens: np.ndarray, block_size: int, batch_size: int, rng: np.random.Generator,
                   ) -> tuple[np.ndarray, np.ndarray]:
    """`batch_size` random windows of block_size + 1 tokens -> (inputs [B, T], targets [B, T]: shifted by one)."""
    starts = rng.integers(0, len(tokens) - block_size, size=batch_size)  # [B]: every window fits
    windows = tokens[starts[:, None] + np.arange(block_size + 1)].astype(np.int64)  # [B, T + 1]
    return windows[:, :-1], windows[:, 1:]


# --- the run ----------------------------------------------------------------------------------------


def run_state(out: Path) -> int | None:
    """The step of the run checkpointed in `out`, or None if it holds no run."""
    if not (out / CONVERTED_FILE).is_file():
        return None
    _, meta = read_safetensors(out / CONVERTED_FILE)
    return int(meta["train_step"]) if "train_step" in meta else None


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
    init_is_dir = os.path.isdir(cfg.init)
    if not init_is_dir and (os.sep in cfg.init or os.path.exists(cfg.init)):
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
    check_memory(cfg, config, world)
    params = unflatten({k: np.array(v, dtype=np.float32) for k, v in flatten(params).items()})  # writable copy
    return cfg, config, params, tok


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
    one micro-batch's saved activations (about 16 C floats per token and layer, model.py's SAVED) with one
    layer's attention scores (a rank's share of the rows); times the ranks running on this machine."""
    total = physical_memory()
    if total is None:
        return
    world = world or World()
    gb = 1e9
    here = world.local_size  # processes of the run on this machine
    weights = here * 4 * (2 + 2 / world.size) * param_count(config)  # bytes: params, grads, m, v in float32
    rows = ceil_div(cfg.batch_size, world.size)  # the largest rank's share of a micro-batch
    acts = here * (4 * rows * cfg.block_size * (16 * config.n_embd * config.n_layer + 4 * config.n_embd)
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


def save_checkpoint(out: Path, step: int, config: GPT2Config, params: Params, tok: Tokenizer, opt: AdamW,
                    generators: dict[str, np.random.Generator], cfg: TrainConfig,
                    moments: dict | None = None, seconds: float | None = None) -> None:
    """Optimizer state under a new name, then the model (the commit point, naming the step), then the old state.
    `generators` ({"rng": the text windows', "dropout_rng": the masks'}) are saved in their exact state;
    `moments`, if given, are the optimizer's whole moments (under MPI, gathered from the ranks as written)."""
    arrays, scalars = opt.state_dict()
    arrays = moments if moments is not None else arrays
    arrays = arrays if opt.t > 0 else {}  # before the first update the moments are zeros: not written
    meta = {"step": str(step), "adam": json.dumps(scalars), "settings": json.dumps(dataclasses.asdict(cfg))}
    if seconds is not None:
        meta["seconds"] = repr(seconds)  # the run's time up to this checkpoint, every invocation
    meta.update({k: json.dumps(g.bit_generator.state) for k, g in generators.items()})
    state = out / f"optimizer-{step}.safetensors"
    write_atomically(state, lambda f: write_safetensors(f, arrays, meta))
    save_converted(config, params, out, tok.files(), progress=False, metadata={"train_step": str(step)})
    for p in out.iterdir():
        m = OPTIMIZER_FILE.fullmatch(p.name)
        if m and int(m[1]) != step:
            p.unlink()  # ours, and superseded by the checkpoint just committed


def append_log(out: Path, record: dict) -> None:
    with open(out / LOG_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()


def truncate_log(out: Path, step: int) -> None:
    """Keep the log's lines up to `step` (a killed run may have logged steps after its last checkpoint)."""
    path = out / LOG_FILE
    if not path.is_file():
        return
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    kept = []
    for ln in lines:
        try:
            if json.loads(ln)["step"] <= step:
                kept.append(ln)
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by the kill
    write_atomically(path, lambda f: f.write("".join(ln + "\n" for ln in kept).encode("utf-8")))


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM stopped the run after it saved a checkpoint; `signum` says which."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class StepAbandoned(Exception):
    """Raised inside a step's gradient (or a validation) when a stop is requested: that work is dropped."""


class StopRequest:
    """Ctrl-C or SIGTERM during training: drop the step in flight (its gradient, or a validation, is abandoned
    at once; an optimizer update or a checkpoint being written is finished first), checkpoint every completed
    step, then stop. A second signal stops at once (the last checkpoint stays). Under MPI every rank gets the
    signal; only the one that `announces` (rank 0) says so."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, announces: bool = True):
        self.requested, self.signum, self.in_step, self.announces = False, None, False, announces
        self.previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self.handle) for s in self.SIGNALS}
        return self

    def handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested, self.signum = True, signum
        if self.announces:
            print(f"\nstopping ({signal.Signals(signum).name}): saving a checkpoint (again to stop at once)",
                  file=sys.stderr)
        if self.in_step:
            self.in_step = False
            raise StepAbandoned

    def agree(self, world: World) -> bool:
        """Whether any rank was asked to stop; every rank gets the same answer and, if so, the same signal (the
        highest-numbered one any rank got), so that all of them stop at the same point and exit alike."""
        signum = world.largest(self.signum or 0)  # a signal arriving after this is seen at the next agreement
        if signum:
            self.requested, self.signum = True, signum
        return bool(signum)

    @contextlib.contextmanager
    def abandonable(self):
        """Work in this block may be dropped half-way by a stop request (it changes nothing it cannot redo)."""
        self.in_step = not self.requested
        try:
            if self.requested:
                raise StepAbandoned
            yield
        finally:
            self.in_step = False

    def __exit__(self, *exc):
        for s, previous in self.previous.items():
            signal.signal(s, previous)


@dataclass
class TextData:
    """Tokens of a text run: random windows are drawn from `train`; `val` is scored on fixed windows."""

    train: np.ndarray  # [N] ids
    val: np.ndarray  # [M] ids


@dataclass
class TaskData:
    """Examples of a task run: every training example once per epoch; all of `val` at each validation."""

    train: list[Example]
    val: list[Example]


# settings a resumed run can change (honoured, and logged in log.jsonl as "resumed"); the rest are fixed by the
# run's model, its vocabulary or the batches it has drawn
CHANGEABLE = ("steps", "lr", "min_lr", "warmup_steps", "weight_decay", "grad_clip", "dropout", "eval_every",
              "eval_batches", "save_every", "data", "val_data", "sample_every", "prompt", "sample_tokens", "threads")


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


PATHS = ("data", "val_data")  # settings that name a file or directory
PATHS_OR_NAMES = ("init", "tokenizer")  # a directory, or a name (124M, tiny, scratch)


def absolute(setting: str, value):
    """The value of `setting` with a path made absolute (so that a run resumes from any working directory and
    compares equal however the path was spelled); a name (124M, tiny, scratch), None or any other value as it is."""
    if not isinstance(value, str) or setting not in PATHS + PATHS_OR_NAMES:
        return value
    if setting in PATHS_OR_NAMES and not os.path.exists(value) and os.sep not in value:
        return value
    return os.path.abspath(value)


def lock_run(out: Path):
    """Hold an exclusive lock on `out` for this process's life (released by the kernel even after SIGKILL);
    TrainingError at once if another run holds it."""
    try:
        f = open(out / ".lock", "a+")
    except OSError as e:
        raise TrainingError(f"--out {out}: cannot write in the directory ({e.strerror})") from None
    try:
        import fcntl  # POSIX; elsewhere runs are not locked
    except ImportError:
        return f
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise TrainingError(f"--out {out} is in use by another training run; wait for it to end, or choose another "
                            "directory") from None
    return f


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
    cfg, out, start, config, params, tok, opt, generators, data, validate, lock, seconds = prepared
    threads_before = blas_threads()
    set_blas_threads(thread_count(cfg, config, world))
    try:
        return run_steps(cfg, out, start, resume, config, params, tok, opt, generators, data, validate, progress,
                         world, seconds)
    finally:
        if threads_before is not None:
            set_blas_threads(threads_before)
        if lock is not None:
            lock.close()


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


def prepare_run(cfg: TrainConfig, resume: bool, progress: bool, changes: dict | None, world: World) -> tuple:
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
        config, flat = load_converted(out)
        params = unflatten({k: np.array(v) for k, v in flat.items()})  # writable: the optimizer updates in place
        tok = Tokenizer.from_dir(out)
        opt = AdamW(unflatten(world.rows(flatten(params))), cfg.peak_lr, weight_decay=cfg.weight_decay)
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
        opt = AdamW(unflatten(world.rows(flatten(params))), cfg.peak_lr, weight_decay=cfg.weight_decay)
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
    return cfg, out, start, config, params, tok, opt, generators, data, validate, lock, seconds


SETTINGS_FILE = "settings.json"  # the run's settings as resolved, for people (resuming reads the checkpoint's)


def write_settings(out: Path, cfg: TrainConfig, config: GPT2Config, world: World, step: int) -> None:
    """DIR/settings.json: every setting with its default resolved (lr, min_lr, warmup, block size, threads),
    the model's shape, the world size and the step this invocation starts at; rewritten on each resume."""
    resolved = dict(dataclasses.asdict(cfg), lr=cfg.peak_lr, min_lr=cfg.min_lr if cfg.min_lr is not None else
                    cfg.peak_lr / 10, warmup_steps=cfg.warmup,
                    threads=cfg.threads or default_threads(config.n_embd, world.local_size))
    record = {"settings": resolved, "model": config.to_dict(), "world_size": world.size, "started_at_step": step,
              "minigpt2": __version__}
    write_atomically(out / SETTINGS_FILE, lambda f: f.write((json.dumps(record, indent=2) + "\n").encode("utf-8")))


def dropout_generator(seed: int, rank: int) -> np.random.Generator:
    """The generator of a run's dropout masks, apart from its batches' (each MPI rank its own)."""
    return np.random.default_rng([seed, 3, rank])


def refuse_existing_run(out: Path) -> None:
    """TrainingError if `out` already holds a model or a run (nothing is ever overwritten)."""
    done = run_state(out) if out.is_dir() else None
    if out.is_dir() and (done is not None or (out / LOG_FILE).exists() or models_in(out)):
        what = f"a training run at step {done}" if done is not None else "a model or a run"
        raise TrainingError(f"--out {out} already holds {what}; pass --resume to continue it, or choose "
                            "another directory (nothing is overwritten)")


def run_steps(cfg: TrainConfig, out: Path, start: int, resume: bool, config: GPT2Config, params: Params,
              tok: Tokenizer, opt: AdamW, generators: dict, data, validate, progress: bool,
              world: World, seconds_before: float | None = 0.0) -> GPT2:
    """The training loop proper: steps start + 1 .. cfg.steps, validating, logging and checkpointing (rank 0).
    `seconds_before`: the run's time up to its checkpoint at `start` (None if an older version did not say)."""
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
        moments = moments_to_save(opt, params, world)
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
                                                     cfg.dropout, drop_rng, world, agreed_go_on)
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
            world.share_rows_(flatten(params))  # every rank's updated rows to every rank
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
                        save_converted(config, params, out / BEST_DIR, tok.files(), progress=False,
                                       metadata={"best_step": str(n), "val_loss": repr(val_loss)})
                except StepAbandoned:
                    pass  # the step is complete; only its validation is dropped
            if main and cfg.sample_every and n % cfg.sample_every == 0 and not stopping:
                text = sample_text(GPT2(config, params), tok, cfg.prompt, cfg.sample_tokens, seed=cfg.seed + n)
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
    return GPT2(config, params)


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


class GatheredRows:
    """A whole tensor whose rows the MPI ranks hold, gathered to rank 0 only as it is written (`__array__`):
    rank 0 then holds one whole moment at a time, not all of them. Every rank must ask in the same order."""

    def __init__(self, rows: np.ndarray, shape: tuple[int, ...], world: World):
        self.rows, self.shape, self.world, self.dtype = rows, shape, world, rows.dtype
        self.nbytes = int(np.prod(shape, dtype=np.int64)) * rows.dtype.itemsize

    def gather(self) -> np.ndarray | None:
        return self.world.gather_rows(self.rows, self.shape)  # the whole array on rank 0, None elsewhere

    def __array__(self, dtype=None, copy=None) -> np.ndarray:  # as rank 0 writes it
        return self.gather()


def moments_to_save(opt: AdamW, params: Params, world: World) -> dict[str, GatheredRows] | None:
    """Under MPI, the optimizer's moments of whole tensors, {"m.<name>", "v.<name>"}, as GatheredRows that rank
    0 writes while the other ranks send their rows; None in one process (or before the first update), where
    the optimizer's own state is what is saved."""
    if world.size == 1 or opt.t == 0:
        return None
    arrays, _ = opt.state_dict()
    shapes = {k: p.shape for k, p in flatten(params).items()}
    return {k: GatheredRows(a, shapes[k.split(".", 1)[1]], world) for k, a in arrays.items()}


BEST_DIR = "best"  # inside a run's directory: the model of the step with the lowest validation loss


def best_so_far(out: Path) -> tuple[int, float]:
    """(step, validation loss) of the model in out/best, or (0, inf) if there is none yet."""
    try:
        meta = read_safetensors(out / BEST_DIR / CONVERTED_FILE)[1]
        return int(meta["best_step"]), float(meta["val_loss"])
    except (OSError, ValueError, KeyError):
        return 0, math.inf


def sample_text(model: GPT2, tok: Tokenizer, prompt: str, n_tokens: int, seed: int) -> str:
    """A short sample continuing `prompt` (temperature 0.8, top-k 40, its own seed: the run's generators are
    not touched), as text."""
    ids = tok.encode_ordinary(prompt)[-(model.config.n_ctx - 1):] or [tok.eot_id]
    return tok.decode(model.generate(ids, n_tokens, temperature=0.8, top_k=40, seed=seed, eot_id=tok.eot_id))


def summary(out: Path, cfg: TrainConfig, data, seconds: float, run_seconds: float | None = None) -> dict:
    """What the run did, for the end of log.jsonl and the command line: steps, tokens seen and `run_seconds`
    (the whole run's: every invocation up to its last checkpoint; None for a run begun by an older minigpt2),
    `session_seconds` (this invocation's wall time), the best and the last validation loss. Padding is not
    counted as tokens."""
    per_step = cfg.batch_size * cfg.grad_accum
    if isinstance(data, TaskData):
        seen = examples_at(0, cfg.steps * per_step, len(data.train), cfg.seed)
        tokens = sum(len(data.train[i].tokens) - 1 for i in seen)
    else:
        tokens = cfg.steps * per_step * cfg.block_size
    vals = [r for r in read_log_records(out) if "val_loss" in r]
    best_step, best_loss = best_so_far(out)
    last = vals[-1]["val_loss"] if vals else None
    return {"steps": cfg.steps, "tokens": tokens, "run_seconds": None if run_seconds is None else round(run_seconds, 3),
            "session_seconds": round(seconds, 3), "last_val_loss": last,
            "last_perplexity": math.exp(last) if last is not None and last < 700 else None,
            "best_val_loss": best_loss if best_step else None, "best_step": best_step or None}


def read_log_records(out: Path) -> list[dict]:
    """log.jsonl's records (a line cut short by a kill is skipped)."""
    records = []
    for line in (out / LOG_FILE).read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def step_gradient(batches: list[tuple[np.ndarray, np.ndarray]], by_tokens: bool, params: Params,
                  config: GPT2Config, dropout: float = 0.0, drop_rng: np.random.Generator | None = None,
                  world: World | None = None, go_on: Callable[[], bool] | None = None) -> tuple[float, Params]:
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
        drop = Dropout(dropout, drop_rng) if dropout > 0 else None
        micro_loss, micro_grads = loss_and_grads(x, y, params, config, drop, grad_scale=w / total)
        loss_sum += micro_loss * w
        grads = micro_grads if grads is None else add_into(grads, micro_grads)
    if grads is None:
        grads = unflatten({k: np.zeros_like(v) for k, v in flatten(params).items()})
    if world.size > 1:
        grads = unflatten(world.sum_rows(flatten(grads)))  # this rank's rows of the summed gradient
        loss_sum = world.sum_float(loss_sum)
    return loss_sum / total, grads


def step_examples(data: TaskData, cfg: TrainConfig, step: int) -> list[Example]:
    """The training examples of step `step` (0-based): the next batch_size x grad_accum of the epoch stream."""
    per_step = cfg.batch_size * cfg.grad_accum
    return [data.train[i] for i in examples_at(step * per_step, per_step, len(data.train), cfg.seed)]


def step_batches(data: TextData | TaskData, cfg: TrainConfig, step: int, rng: np.random.Generator,
                 ) -> tuple[list[tuple[np.ndarray, np.ndarray]], int]:
    """(the step's grad_accum micro-batches (inputs [B, T], targets [B, T]), the tokens they hold, padding not
    counted): random windows of the text, or the next examples of the epoch (task files: right-padded, the
    prompt and padding with target -1)."""
    if isinstance(data, TextData):
        batches = [random_windows(data.train, cfg.block_size, cfg.batch_size, rng) for _ in range(cfg.grad_accum)]
        return batches, sum(int(x.size) for x, _ in batches)
    examples = step_examples(data, cfg, step)
    batches = [pad_batch(examples[i : i + cfg.batch_size]) for i in range(0, len(examples), cfg.batch_size)]
    return batches, sum(len(e.tokens) - 1 for e in examples)


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


def agreed_rounds(items: list, rounds: int, go_on: Callable[[], bool] | None = None) -> Iterator:
    """`items` one at a time over `rounds` rounds (the most any rank has: under MPI the ranks' shares differ
    by one at most), asking `go_on` before every round after the first, so that every rank asks it as often
    (it is a collective under MPI); a False drops the work (StepAbandoned)."""
    assert rounds >= len(items), f"{len(items)} items in {rounds} rounds"
    for i in range(rounds):
        if i > 0 and go_on is not None and not go_on():
            raise StepAbandoned
        if i < len(items):
            yield items[i]


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def add_into(total: Params, more: Params) -> Params:
    for a, b in zip(flatten(total).values(), flatten(more).values()):
        a += b
    return total


def load_data(cfg: TrainConfig, tok: Tokenizer, progress: bool) -> TextData | TaskData:
    """--data (and --val-data) as a text run's tokens or a task run's examples."""
    task = is_task_file(cfg.data)
    if cfg.val_data is not None and is_task_file(cfg.val_data) != task:
        kind = "a .jsonl task file" if task else "text"
        raise TrainingError(f"--val-data {cfg.val_data} must be of --data's kind ({kind})")
    return task_data(cfg, tok, progress) if task else TextData(*split_data(cfg, tok, progress))


def task_data(cfg: TrainConfig, tok: Tokenizer, progress: bool) -> TaskData:
    """(training examples, validation examples): --val-data, else the file's last 10% of examples."""
    def examples(path: str, what: str) -> list[Example]:
        try:
            rows = read_task_file(path, what)
            if rows[0].completion is None:
                raise TrainingError(f"{what} {path}: multiple-choice rows (choices, answer) are for "
                                    "minigpt2.evaluate; training needs \"prompt\" and \"completion\"")
            out = encode_examples(rows, tok, progress)
        except TaskFileError as e:
            raise TrainingError(str(e)) from None
        for e in out:
            if len(e.tokens) > cfg.block_size + 1:
                raise TrainingError(f"{what} {path} line {e.line}: the example is {len(e.tokens)} tokens (prompt + "
                                    f"completion + <|endoftext|>), more than --block-size + 1 = {cfg.block_size + 1}"
                                    " (raise --block-size or shorten it)")
        return out

    train_examples = examples(cfg.data, "--data")
    if cfg.val_data is not None:
        return TaskData(train_examples, examples(cfg.val_data, "--val-data"))
    if len(train_examples) < 2:
        raise TrainingError(f"--data {cfg.data} has {len(train_examples)} example: too few to hold out a "
                            "validation example (give --val-data)")
    n_val = max(1, len(train_examples) // 10)
    return TaskData(train_examples[:-n_val], train_examples[-n_val:])


def split_data(cfg: TrainConfig, tok: Tokenizer, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """(training tokens, validation tokens): --val-data, else the last 10% of the training text."""
    tokens = load_tokens(cfg.data, tok, "--data", progress)
    need = cfg.block_size + 1
    if cfg.val_data is not None:
        val = load_tokens(cfg.val_data, tok, "--val-data", progress)
        if len(val) < need:
            raise TrainingError(f"--val-data {cfg.val_data} has {len(val)} tokens, fewer than one window of "
                                f"--block-size + 1 = {need}")
    else:
        n_val = max(need, len(tokens) // 10)
        tokens, val = tokens[:-n_val], tokens[-n_val:]
    if len(tokens) < need:
        raise TrainingError(f"--data {cfg.data} has too few tokens for one training window of --block-size + 1 = "
                            f"{need} (and a held-out tail for validation, unless --val-data is given)")
    return tokens, val


if __name__ == "__main__":  # the command line lives in cli.py
    from .cli import train_main

    sys.exit(train_main())
