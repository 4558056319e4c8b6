"""`python -m minigpt2.train ...`: the command line of training (flags -> TrainConfig, errors -> one line and
an exit code; `--ranks N` starts the MPI job); the library is this package."""

from __future__ import annotations

import argparse
import io
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from ..cli import Parser, command
from ..distributed import World, launched_size
from ..distributed import world as distributed_world
from ..download import DownloadError
from ..tf_checkpoint import CheckpointError
from ..train import (
    BEST_DIR,
    OtherRankFailed,
    TrainConfig,
    TrainingDiverged,
    TrainingError,
    TrainingInterrupted,
    read_log_records,
    run_state,
    train,
)


def train_parser() -> argparse.ArgumentParser:
    d = TrainConfig(data="", out="")
    p = Parser(prog="minigpt2-train", description="Pre-train or fine-tune GPT-2 on text (NumPy).")
    p.add_argument("--data", help="a UTF-8 text file, a directory of .txt files, or a .jsonl task file of "
                   "prompt/completion pairs (required unless --resume)")
    p.add_argument("--out", required=True, help="the run's directory: model, optimizer state, log.jsonl")
    p.add_argument("--val-data", help="validation data of --data's kind (default: the last 10%% of --data)")
    p.add_argument("--init", default=d.init, help="model to fine-tune: 124M, 355M, ..., or a directory (OpenAI, "
                   "Hugging Face, minigpt2); or 'scratch' for a new model (default 124M)")
    p.add_argument("--n-layer", type=int, default=d.n_layer, help="--init scratch: blocks (default 12)")
    p.add_argument("--n-head", type=int, default=d.n_head, help="--init scratch: attention heads (default 12)")
    p.add_argument("--n-embd", type=int, default=d.n_embd, help="--init scratch: width (default 768)")
    p.add_argument("--tokenizer", help="vocabulary directory (Tokenizer.save); default the --init model's, or GPT-2's")
    p.add_argument("--block-size", type=int, default=d.block_size, help="tokens per window (default 256, or the "
                   "--init model's context if shorter)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="windows (or task examples) per "
                   "micro-batch (default 8)")
    p.add_argument("--grad-accum", type=int, default=d.grad_accum, help="micro-batches per step (default 1)")
    p.add_argument("--steps", type=int, default=d.steps, help="optimizer steps (default 200)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default 6e-4 from scratch, "
                   "3e-5 fine-tuning, 2e-4 for a LoRA adapter)")
    p.add_argument("--min-lr", type=float, default=None, help="learning rate at the last step (default lr / 10)")
    p.add_argument("--warmup-steps", type=int, default=None, help="linear warmup steps (default steps / 20)")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help="AdamW's, on 2-D tensors (default 0.1)")
    p.add_argument("--grad-clip", type=float, default=d.grad_clip, help="max gradient norm; 0 = off (default 1)")
    p.add_argument("--dropout", type=float, default=d.dropout, help="dropout probability in training, where GPT-2 "
                   "drops: embeddings, attention, residual branches (default 0)")
    p.add_argument("--eval-every", type=int, default=d.eval_every, help="steps between validations (default 50)")
    p.add_argument("--eval-batches", type=int, default=d.eval_batches, help="validation batches (default 8)")
    p.add_argument("--save-every", type=int, default=d.save_every, help="steps between checkpoints (default 100)")
    p.add_argument("--seed", type=int, default=d.seed, help="random seed for init and batches (default 0)")
    p.add_argument("--sample-every", type=int, default=d.sample_every, help="steps between samples printed and "
                   "logged during training (default 0: none)")
    p.add_argument("--prompt", default=d.prompt, help="what the samples continue (default: from <|endoftext|>)")
    p.add_argument("--sample-tokens", type=int, default=d.sample_tokens, help="tokens per sample (default 48)")
    p.add_argument("--threads", type=int, default=None, help="threads for NumPy's matrix products (default 1 for "
                   "n_embd <= 256, where sharing a product costs more than it gives, else every core; more than the cores is "
                   "said and capped)")
    p.add_argument("--lora-rank", type=int, default=None, help="train a LoRA adapter of this rank instead of every "
                   "weight: the --init model stays frozen (memory-mapped); the run saves the adapter in PEFT's "
                   "layout (docs/lora.md)")
    p.add_argument("--lora-alpha", type=float, default=None, help="the adapter's scaling is alpha / rank (default 8)")
    p.add_argument("--lora-dropout", type=float, default=None, help="dropout on the adapter's input, in training "
                   "(default 0, as PEFT's)")
    p.add_argument("--lora-targets", default=None, help="layers to adapt, comma-separated: c_attn, c_proj (both "
                   "projections), c_fc (default c_attn)")
    p.add_argument("--init-adapter", default=None, metavar="DIR", help="start from this LoRA adapter (minigpt2's "
                   "or PEFT's), with its rank, alpha and targets")
    p.add_argument("--recompute-activations", action="store_true", help="keep only each block's input in the "
                   "forward and recompute the block in the backward: the same gradients, activations of about one "
                   "block instead of all of them, about a third more time a step")
    p.add_argument("--ranks", type=int, default=None, help="train data-parallel over this many MPI processes on "
                   "this machine: runs mpiexec -n RANKS for you and, if a rank dies, says which checkpoint survives "
                   "and how to resume (pip install 'minigpt2[mpi]')")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint, "
                   "with the run's own settings; flags given with it change them (--steps extends the run; --lr, "
                   "--dropout, ... retune it; --data says where its data is now); the model's shape, vocabulary, "
                   "batch and seed cannot change")
    return p


def flags_given(argv: list[str] | None) -> set[str]:
    """The settings (TrainConfig field names) the command line spells out, as opposed to defaults."""
    parser = train_parser()
    for action in parser._actions:  # parse again with no defaults: only what was given remains
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv))) - {"resume", "out", "ranks"}


@command
def train_main(argv: list[str] | None = None) -> int:
    """`python -m minigpt2.train --data PATH --out DIR`: train, checkpointing as it goes."""
    parser = train_parser()
    args = vars(parser.parse_args(argv))
    resume, ranks = args.pop("resume"), args.pop("ranks")
    if ranks is not None:
        return launch_ranks(ranks, sys.argv[1:] if argv is None else argv, args["out"], parser)
    if args["data"] is None and not resume:
        parser.error("the following arguments are required: --data (unless --resume)")
    cfg = TrainConfig(**args)  # with --resume only --out is read; the flags given change the run's settings
    changes = {k: args[k] for k in flags_given(argv)} if resume else None
    err = sys.stderr
    try:
        world = distributed_world()  # several processes when started by mpiexec, else one
    except RuntimeError as e:
        print(f"minigpt2-train: error: {e}", file=err)
        return 2
    code, error = train_run(cfg, resume, changes, world)
    if world.size > 1 and error is not None and not getattr(error, "everywhere", False):
        world.abort(code)  # a rank that failed alone must not leave the others waiting in an all-reduce
    return code


def launch_ranks(ranks: int, argv: list[str], out: str, parser: argparse.ArgumentParser) -> int:
    """`train --ranks N ...`: run `mpiexec -n N python -m minigpt2.train ...` (the same flags, less --ranks) and
    wait for it. MPI ends the whole job when one rank dies (SIGKILL to the others, so no rank can speak): this
    process, outside the job, then says which checkpoint survives and how to resume. A signal to this process
    is passed on to mpiexec once (mpiexec runs in a session of its own, so a terminal's Ctrl-C reaches the ranks
    once, not twice: a second signal would stop them at once)."""
    if ranks < 1:
        parser.error(f"--ranks must be a positive integer, got {ranks}")
    if launched_size() > 1:
        parser.error("--ranks starts mpiexec itself; under mpiexec, leave it out")
    launcher = shutil.which("mpiexec") or os.path.join(os.path.dirname(sys.executable), "mpiexec")
    if not os.path.isfile(launcher):
        parser.error("--ranks needs MPI's mpiexec, which is not installed: pip install 'minigpt2[mpi]'")
    rest, skip = [], False
    for a in argv:  # the same flags, less --ranks N / --ranks=N
        if skip:
            skip = False
        elif a == "--ranks":
            skip = True
        elif not a.startswith("--ranks="):
            rest.append(a)
    proc = subprocess.Popen([launcher, "-n", str(ranks), sys.executable, "-m", "minigpt2.train", *rest],
                            start_new_session=True)
    previous = {s: signal.signal(s, lambda signum, frame: proc.send_signal(signum))
                for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = proc.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if code in (0, 1, 2, 128 + signal.SIGINT, 128 + signal.SIGTERM):
        return code  # the ranks ended the run themselves and said why
    step = run_state(Path(out)) if Path(out).is_dir() else None
    where = "nothing was saved" if step is None else (f"the last checkpoint (step {step}) is in {out}; continue with "
                                                      f"python -m minigpt2.train --out {out} --resume --ranks {ranks}")
    print(file=sys.stderr)  # after the killed ranks' unfinished progress bar
    print(f"minigpt2-train: a rank ended abnormally and MPI stopped the job (mpiexec exit code {code}); {where}",
          file=sys.stderr)
    return code if code > 0 else 1


def train_run(cfg: TrainConfig, resume: bool, changes: dict | None, world: World) -> tuple[int, Exception | None]:
    """Run `train`; (exit code, the error if any), with the lines rank 0 prints (another rank prints an error
    only if it is its own)."""
    err = sys.stderr if world.is_main else io.StringIO()  # the other ranks' lines go nowhere
    before = run_state(Path(cfg.out)) if resume and Path(cfg.out).is_dir() else None
    try:
        model = train(cfg, resume=resume, changes=changes, world=world)
    except KeyboardInterrupt as e:  # TrainingInterrupted after a checkpoint, or Ctrl-C before the run began
        signum = e.signum if isinstance(e, TrainingInterrupted) else signal.SIGINT
        step = run_state(Path(cfg.out)) if Path(cfg.out).is_dir() else None
        where = "nothing was saved" if step is None else \
            f"the last checkpoint (step {step}) is in {cfg.out} (continue with --resume)"
        print(f"minigpt2-train: stopped by {signal.Signals(signum).name}; {where}", file=err)
        agreed = isinstance(e, TrainingInterrupted)  # every rank stopped at the same step; else (a second
        return 128 + signum, None if agreed else e  # signal, or one outside the loop) this rank stopped alone
    except TrainingDiverged as e:
        print(f"minigpt2-train: error: {e}", file=err)
        return 1, None
    except (TrainingError, OSError, ValueError, CheckpointError, DownloadError) as e:
        own = world.is_main or not (getattr(e, "everywhere", False) or isinstance(e, OtherRankFailed))
        print(f"minigpt2-train: error: {e}", file=sys.stderr if own else err)
        return 2, e
    after = run_state(Path(cfg.out))
    if resume and after == before:
        print(f"minigpt2-train: nothing to do: the run has {after} of {after} steps; pass --steps M to extend it "
              f"(M above {after}, with --resume)", file=err)
        return 0, None
    print(f"trained {model}; saved in {cfg.out}", file=err)
    done = [r["summary"] for r in read_log_records(Path(cfg.out)) if "summary" in r] if world.is_main else []
    if done:
        s = done[-1]
        best = f", best {s['best_val_loss']:.4f} at step {s['best_step']} (in {Path(cfg.out) / BEST_DIR})" \
            if s["best_step"] else ""
        last = f"{s['last_val_loss']:.4f} (perplexity {s['last_perplexity']:.3f})" if s["last_perplexity"] else \
            str(s["last_val_loss"])
        took = f"{s['session_seconds']:.1f} s" + (f" now, {s['run_seconds']:.1f} s in all" if resume and
                                                  s.get("run_seconds") is not None else "")
        print(f"{s['steps']} steps, {s['tokens']:,} tokens, {took}; validation loss: last {last}{best}", file=err)
    return 0, None


if __name__ == "__main__":
    sys.exit(train_main())
