"""a run's directory: its checkpoints (written so that a kill at any instant leaves the last complete one), its log,
its lock, its settings.json, its best model and its summary.

    minigpt2.safetensors (+ encoder.json, vocab.bpe)   the model at the last checkpoint, with its step; a LoRA
                                                         run: adapter_model.safetensors + adapter_config.json
    optimizer-<step>.safetensors                         AdamW's moments, the step, the generators, the settings
    log.jsonl                                            one JSON line per step and per evaluation
    settings.json                                        the settings as resolved, for people
    best/                                                the model of the lowest validation loss
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import numpy as np

from ..blas import default_threads
from ..adapter import WEIGHTS as ADAPTER_WEIGHTS
from ..adapter import is_adapter, write_adapter
from ..config import GPT2Config
from ..distributed import World
from ..files import CONVERTED_FILE, write_atomically
from ..optim import AdamW
from ..lora import adapter_of
from ..params import Params, flatten
from ..safetensors import read_safetensors, write_safetensors
from ..save import models_in, save_converted
from ..tasks import examples_at
from ..tokenizer import Tokenizer
from ..version import __version__
from .data import TaskData
from .settings import TrainConfig, TrainingError

LOG_FILE = "log.jsonl"


OPTIMIZER_FILE = re.compile(r"optimizer-(\d+)\.safetensors")


def run_state(out: Path) -> int | None:
    """The step of the run checkpointed in `out`, or None if it holds no run."""
    model = model_file(out)
    if model is None:
        return None
    _, meta = read_safetensors(model)
    return int(meta["train_step"]) if "train_step" in meta else None


def model_file(out: Path) -> Path | None:
    """The weights file of the model (or, in a LoRA run, the adapter) in `out`, if there is one."""
    for path in (out / CONVERTED_FILE, out / ADAPTER_WEIGHTS):
        if path.is_file():
            return path
    return None


def save_model(out: Path, cfg: TrainConfig, config: GPT2Config, params: Params, tok: Tokenizer,
               metadata: dict[str, str]) -> None:
    """The model as a run saves it, with `metadata`: the whole model, or in a LoRA run the adapter alone (PEFT's
    layout, naming --init as its base) beside the vocabulary."""
    if cfg.lora is None:
        save_converted(config, params, out, tok.files(), progress=False, metadata=metadata)
        return
    out.mkdir(parents=True, exist_ok=True)
    for name, data in tok.files().items():
        if not (out / name).is_file() or (out / name).read_bytes() != data:
            write_atomically(out / name, lambda f, data=data: f.write(data))
    write_adapter(out, adapter_of(params), cfg.lora, cfg.init, metadata)


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
    save_model(out, cfg, config, params, tok, {"train_step": str(step)})
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


def refuse_existing_run(out: Path) -> None:
    """TrainingError if `out` already holds a model or a run (nothing is ever overwritten)."""
    done = run_state(out) if out.is_dir() else None
    if out.is_dir() and (done is not None or (out / LOG_FILE).exists() or models_in(out) or is_adapter(out)):
        what = f"a training run at step {done}" if done is not None else "a model or a run"
        raise TrainingError(f"--out {out} already holds {what}; pass --resume to continue it, or choose "
                            "another directory (nothing is overwritten)")


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


BEST_DIR = "best"  # inside a run's directory: the model of the step with the lowest validation loss


def best_so_far(out: Path) -> tuple[int, float]:
    """(step, validation loss) of the model in out/best, or (0, inf) if there is none yet."""
    best = model_file(out / BEST_DIR)
    if best is None:
        return 0, math.inf
    try:
        meta = read_safetensors(best)[1]
        return int(meta["best_step"]), float(meta["val_loss"])
    except (OSError, ValueError, KeyError):
        return 0, math.inf


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


def moments_to_save(opt: AdamW, trained: Params, world: World) -> dict[str, GatheredRows] | None:
    """Under MPI, the optimizer's moments of whole tensors, {"m.<name>", "v.<name>"}, as GatheredRows that rank
    0 writes while the other ranks send their rows; None in one process (or before the first update), where
    the optimizer's own state is what is saved."""
    if world.size == 1 or opt.t == 0:
        return None
    arrays, _ = opt.state_dict()
    shapes = {k: p.shape for k, p in flatten(trained).items()}
    return {k: GatheredRows(a, shapes[k.split(".", 1)[1]], world) for k, a in arrays.items()}
