"""flags -> library calls, errors -> one line and an exit code: minigpt2's four command lines.

    python -m minigpt2.generate "prompt" [--model 124M] ...      generate_main
    python -m minigpt2.train --data FILE --out DIR ...           train_main
    python -m minigpt2.evaluate FILE ... [--model DIR] ...       evaluate_main
    python -m minigpt2.export MODEL DEST                         export_main

Each flag mirrors the keyword argument of the same name (--top-p: top_p). The library checks its arguments
and raises ArgumentError naming the argument; here that becomes the flag. Exit codes: 0 done, 2 bad input
(one line naming the flag, the file or the line), 1 a training run that diverged, 128 + the signal when a
run was stopped by one (130 Ctrl-C, 143 SIGTERM).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from .config import ArgumentError
from .distributed import World, launched_rank, launched_size
from .distributed import world as distributed_world
from .download import DownloadError, unavailable_message
from .files import decode_utf8
from .evaluate import (
    check_batch_size,
    check_windows,
    evaluate,
    read_text,
    score_task_file,
)
from .generation import check_generation_args, generate, stream
from .gpt2 import GPT2
from .save import OverwriteRefused
from .tasks import TaskFileError, is_task_file, read_task_file
from .tf_checkpoint import CheckpointError
from .tokenizer import Tokenizer
from .train import (
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
from .version import __version__
from .vocab import ENDOFTEXT, EOT_ID


class Parser(argparse.ArgumentParser):
    """argparse for minigpt2's command lines: a bad flag is one line and exit code 2, not usage + message;
    --version on every command."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_argument("--version", action="version", version=f"%(prog)s (minigpt2) {__version__}",
                          help="print minigpt2's version and exit")

    def error(self, message: str):
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def finish(code: int) -> int:
    """A command's exit code, made final: from here on Ctrl-C and SIGTERM are ignored, so that a second signal
    arriving while Python shuts down (joining tqdm's thread, say) can neither print 'Exception ignored ...
    KeyboardInterrupt' nor turn the exit code into the signal's."""
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_IGN)
    return code


def command(main):
    """Wrap a command's main(argv) -> int: Ctrl-C anywhere is exit code 130 with one line, never a traceback,
    and the code returned is final (`finish`)."""
    def run(argv: list[str] | None = None) -> int:
        try:
            code = main(argv)
        except KeyboardInterrupt:
            print(file=sys.stderr)
            code = 128 + signal.SIGINT
        return finish(code)

    run.__name__, run.__doc__, run.__wrapped__ = main.__name__, main.__doc__, main
    return run


def one_process_only(prog: str) -> int | None:
    """Exit code 2, said once, when mpiexec started several copies of a command that does not split its work
    (only minigpt2.train runs data-parallel: each copy would do all of it, fighting the others for the cores);
    None in one process."""
    if launched_size() <= 1:
        return None
    if launched_rank() == 0:
        print(f"{prog}: error: runs in one process (mpiexec -n N is for python -m minigpt2.train); run it without "
              "mpiexec", file=sys.stderr)
    return 2


def fail(prog: str, e: Exception) -> int:
    """Print the error as one line (an ArgumentError names its flag) and return exit code 2."""
    message = f"--{e.name.replace('_', '-')} {e.message}" if isinstance(e, ArgumentError) else str(e)
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 2


# --- python -m minigpt2 -----------------------------------------------------------------------------------

COMMANDS = {
    "generate": ("continue a prompt (GPT-2 124M, or the bundled tiny model offline)", "generate_main"),
    "train": ("pre-train or fine-tune on text or a .jsonl task file", "train_main"),
    "evaluate": ("perplexity of text files, scores of task files", "evaluate_main"),
    "export": ("write a model in Hugging Face's layout", "export_main"),
}


def main(argv: list[str] | None = None) -> int:
    """`python -m minigpt2`: list the commands; `python -m minigpt2 COMMAND ...` runs one."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in COMMANDS:
        return globals()[COMMANDS[argv[0]][1]](argv[1:])
    if argv and argv[0] == "--version":
        print(f"minigpt2 {__version__}")
        return 0
    out = sys.stdout if not argv or argv[0] in ("-h", "--help") else sys.stderr
    if out is sys.stderr:
        print(f"minigpt2: error: unknown command {argv[0]!r}", file=out)
    print(f"minigpt2 {__version__}: GPT-2 in NumPy. Commands (python -m minigpt2.COMMAND, or python -m minigpt2 "
          "COMMAND; --help on each):", file=out)
    for name, (what, _) in COMMANDS.items():
        print(f"  {name:<9} {what}", file=out)
    return 0 if out is sys.stdout else 2


# --- generate -------------------------------------------------------------------------------------------


def generate_parser() -> argparse.ArgumentParser:
    p = Parser(prog="minigpt2-generate", description="Continue a prompt with GPT-2 (NumPy).")
    p.add_argument("prompt", help="text to continue; '-' reads it from standard input; '' samples unconditionally")
    p.add_argument("--model", default=None, help="124M, 355M, 774M, 1558M (or gpt2, gpt2-medium, ...), "
                   "downloaded once; tiny, the small model bundled with minigpt2; or a directory with OpenAI, Hugging "
                   "Face or minigpt2 files (default 124M, or tiny, saying so, when 124M is neither cached nor "
                   "downloadable)")
    p.add_argument("--max-new-tokens", type=int, default=100, help="tokens to generate (default 100)")
    p.add_argument("--temperature", type=float, default=1.0, help="softmax temperature; 0 = greedy (default 1)")
    p.add_argument("--top-k", type=int, default=40, help="sample from the k most likely tokens; 0 = all (default 40)")
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling: the smallest set with mass >= p, "
                   "in (0, 1] (default: off)")
    p.add_argument("--repetition-penalty", type=float, default=None, help="> 1 discourages repeating tokens")
    p.add_argument("--min-p", type=float, default=None, help="keep tokens at least this share of the most likely "
                   "one's probability, in [0, 1] (default: off)")
    p.add_argument("--typical-p", type=float, default=None, help="locally typical sampling: the mass of the most "
                   "typical tokens kept, in (0, 1] (default: off)")
    p.add_argument("--no-repeat-ngram-size", type=int, default=None, help="never repeat an n-gram of this size "
                   "(prompt included) (default: off)")
    p.add_argument("--min-new-tokens", type=int, default=0, help="no <|endoftext|> before this many new tokens "
                   "(default 0)")
    p.add_argument("--seed", type=int, default=None, help="random seed, for reproducible samples")
    p.add_argument("--num-samples", type=int, default=1, help="independent continuations (default 1)")
    p.add_argument("--no-stream", action="store_true", help="print when done instead of token by token")
    p.add_argument("--no-stop", action="store_true", help="keep going after <|endoftext|>")
    return p


@command
def generate_main(argv: list[str] | None = None) -> int:
    """`python -m minigpt2.generate "prompt"`: print GPT-2's continuation as it is produced."""
    parser = generate_parser()
    args = parser.parse_args(argv)
    refused = one_process_only(parser.prog)
    if refused is not None:
        return refused
    try:  # the library's own checks, before the model loads
        check_generation_args(args.max_new_tokens, temperature=args.temperature, top_k=args.top_k or None,
                              top_p=args.top_p, repetition_penalty=args.repetition_penalty, seed=args.seed,
                              num_samples=args.num_samples, min_p=args.min_p, typical_p=args.typical_p,
                              no_repeat_ngram_size=args.no_repeat_ngram_size, min_new_tokens=args.min_new_tokens)
    except ArgumentError as e:
        return fail("minigpt2-generate", e)
    # never a UnicodeEncodeError on a console that is not UTF-8: unprintable characters become "?"
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="replace")
    try:
        prompt = read_prompt(args.prompt)
        model, name = generation_model(args.model)
        tok = model_tokenizer(name, model.config.n_vocab)
        eot_id = tok.special_tokens.get(ENDOFTEXT)
        if not prompt and eot_id is None:
            raise ValueError("an empty prompt starts after <|endoftext|>, which this vocabulary does not have")
        ids = tok.encode(prompt) if prompt else [eot_id]  # no prompt: start after <|endoftext|>, as OpenAI does
    except (OSError, ValueError, CheckpointError, DownloadError) as e:
        return fail("minigpt2-generate", e)
    options = dict(temperature=args.temperature, top_k=args.top_k or None, top_p=args.top_p,
                   repetition_penalty=args.repetition_penalty, seed=args.seed, stop_at_eot=not args.no_stop,
                   eot_id=eot_id, min_p=args.min_p, typical_p=args.typical_p,
                   no_repeat_ngram_size=args.no_repeat_ngram_size, min_new_tokens=args.min_new_tokens)
    try:
        print_continuations(model, tok, ids, args, options)
    except ArgumentError as e:  # checks that need the model (the memory a batch of samples takes)
        return fail("minigpt2-generate", e)
    except BrokenPipeError:  # the reader went away (e.g. `| head`): nothing more to say
        # subtle: point stdout at /dev/null, or Python's final flush at exit fails again and prints an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 0


def read_prompt(arg: str) -> str:
    """The prompt: the argument, or standard input for '-', as UTF-8 text (one message for bytes that are not,
    from either)."""
    if arg == "-":
        return decode_utf8(sys.stdin.buffer.read(), "standard input")
    # subtle: Python hands over argument bytes that are not UTF-8 as lone surrogates; back to those bytes
    return decode_utf8(arg.encode("utf-8", "surrogateescape"), "the prompt")


DEFAULT_MODEL, FALLBACK_MODEL = "124M", "tiny"


def generation_model(name: str | None) -> tuple[GPT2, str]:
    """(the model, its name): `name`, or by default GPT-2 124M, and when that is neither cached nor downloadable
    the bundled model, said in one line on stderr. A model named explicitly is never replaced: a DownloadError
    becomes the one line that says how to get it."""
    try:
        return GPT2.from_pretrained(name or DEFAULT_MODEL), name or DEFAULT_MODEL
    except DownloadError as e:
        line = unavailable_message(name or DEFAULT_MODEL, e)
        if name is not None:
            raise DownloadError(line) from None
    print(f"minigpt2-generate: {line}. The text below is by minigpt2's bundled model '{FALLBACK_MODEL}' (a small "
          "model trained on Python's documentation), not by GPT-2", file=sys.stderr)
    return GPT2.from_pretrained(FALLBACK_MODEL), FALLBACK_MODEL


def model_tokenizer(model: str, n_vocab: int) -> Tokenizer:
    """The model's own vocabulary; for a directory without one, GPT-2's if the sizes fit (saying so)."""
    try:
        return Tokenizer.from_pretrained(model)
    except FileNotFoundError:
        if not os.path.isdir(model) or n_vocab != EOT_ID + 1:
            raise
    print(f"minigpt2-generate: {model} holds no vocabulary; using GPT-2's (save the model with its tokenizer, "
          "model.save(dir, tokenizer), to keep its own)", file=sys.stderr)
    return Tokenizer.from_pretrained("124M")


def print_continuations(model, tok: Tokenizer, ids: list[int], args: argparse.Namespace, options: dict) -> None:
    """Stream one continuation to stdout as it is made, or print several when they are done."""
    if args.num_samples == 1 and not args.no_stream:
        decoder = tok.stream_decoder()
        for i in stream(model, ids, args.max_new_tokens, **options):
            if i == options["eot_id"] and options["stop_at_eot"]:
                break  # the end of the text is not part of it (as generate() leaves it out)
            sys.stdout.write(decoder.push(int(i)))
            sys.stdout.flush()
        sys.stdout.write(decoder.flush() + "\n")
        sys.stdout.flush()  # inside the caller's try: a closed pipe shows up here, not at exit
        return
    samples = generate(model, ids, args.max_new_tokens, num_samples=args.num_samples, progress=True, **options)
    for n, new in enumerate(samples, start=1):
        if args.num_samples > 1:
            print(f"{'=' * 30} sample {n} {'=' * 30}")
        print(tok.decode(new), flush=True)


# --- train ----------------------------------------------------------------------------------------------


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
                   "3e-5 fine-tuning)")
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


# --- evaluate -------------------------------------------------------------------------------------------


@command
def evaluate_main(argv: list[str] | None = None) -> int:
    """`python -m minigpt2.evaluate FILE ... --model M`: each text file's tokens, NLL per token, perplexity,
    bits/byte; each .jsonl task file's scores (score_task_file)."""
    p = Parser(prog="minigpt2-evaluate", description="Perplexity and bits per byte of text files, or the scores "
               "of .jsonl task files (NLL, exact match; accuracy for multiple choice), under GPT-2.")
    p.add_argument("files", nargs="+", metavar="FILE", help="UTF-8 text files, or .jsonl task files")
    p.add_argument("--model", default="124M", help="124M, ..., or a model directory (default 124M)")
    p.add_argument("--context", type=int, default=None, help="tokens the model reads per window (default n_ctx)")
    p.add_argument("--stride", type=int, default=None, help="tokens between window starts (default context // 2)")
    p.add_argument("--batch-size", type=int, default=8, help="windows per forward pass (default 8)")
    p.add_argument("--json", action="store_true", help="one JSON object per file: file, tokens, nll (per token), "
                   "total_nll, perplexity, bits_per_byte, bytes, bits_per_char, chars; for a task file: file, "
                   "examples, tokens, nll, perplexity, exact_match, or file, examples, accuracy, accuracy_norm")
    args = p.parse_args(argv)
    refused = one_process_only(p.prog)
    if refused is not None:
        return refused
    err = sys.stderr
    try:
        texts = [read_task_file(f) if is_task_file(f) else read_text(f) for f in args.files]  # all good first
        check_batch_size(args.batch_size)
        model = GPT2.from_pretrained(args.model)
        context, stride = check_windows(args.context, args.stride, model.config.n_ctx)  # before any scoring
        tok = Tokenizer.from_pretrained(args.model)
    except (OSError, ValueError, CheckpointError, DownloadError) as e:
        return fail("minigpt2-evaluate", e)
    for path, text in zip(args.files, texts):
        if isinstance(text, list):  # a task file's rows
            try:
                scores = score_task_file(model, tok, text, args.batch_size, progress=True)
            except (TaskFileError, ValueError) as e:
                print(f"minigpt2-evaluate: error: {path} {e}", file=err)
                return 2
            if args.json:
                print(json.dumps({"file": path, **scores}), flush=True)
            elif "accuracy" in scores:
                print(f"{path}: {scores['examples']} examples, accuracy {scores['accuracy']:.4f}, accuracy_norm "
                      f"{scores['accuracy_norm']:.4f}", flush=True)
            else:
                print(f"{path}: {scores['examples']} examples, {scores['tokens']} scored tokens, NLL "
                      f"{scores['nll']:.4f} nats/token, perplexity {scores['perplexity']:.3f}, exact match "
                      f"{scores['exact_match']:.4f}", flush=True)
            continue
        score = evaluate(model, text=text, tokenizer=tok, context=context, stride=stride, batch_size=args.batch_size,
                         progress=True)
        if args.json:
            print(json.dumps({"file": path, "tokens": score.tokens, "nll": score.nll_per_token, "total_nll": score.nll,
                              "perplexity": score.perplexity, "bits_per_byte": score.bits_per_byte,
                              "bytes": score.bytes, "bits_per_char": score.bits_per_char, "chars": score.chars}),
                  flush=True)
        else:
            print(f"{path}: {score.tokens} tokens, NLL {score.nll_per_token:.4f} nats/token, perplexity "
                  f"{score.perplexity:.3f}, {score.bits_per_byte:.4f} bits/byte, {score.bits_per_char:.4f} bits/char",
                  flush=True)
    return 0


# --- export ---------------------------------------------------------------------------------------------


@command
def export_main(argv: list[str] | None = None) -> int:
    """`python -m minigpt2.export MODEL DEST`: write a model in Hugging Face's layout."""
    p = Parser(prog="minigpt2-export", description="Write a model in Hugging Face's GPT-2 layout.")
    p.add_argument("model", help="124M, ..., or a model directory (OpenAI, Hugging Face, minigpt2)")
    p.add_argument("dest", help="the directory to write config.json, model.safetensors, vocab.json, merges.txt into")
    p.add_argument("--overwrite", action="store_true", help="write even where another model is: other formats' "
                   "files stay beside ours; a Hugging Face model minigpt2 did not export is replaced")
    args = p.parse_args(argv)
    refused = one_process_only(p.prog)
    if refused is not None:
        return refused
    try:
        model = GPT2.from_pretrained(args.model)
        try:
            tok = Tokenizer.from_pretrained(args.model)
        except FileNotFoundError:
            tok = False  # a model saved without its vocabulary: the weights alone, said below
            print(f"minigpt2-export: {args.model} holds no vocabulary; writing the weights alone", file=sys.stderr)
        try:
            model.save(args.dest, tok, format="huggingface", overwrite=args.overwrite)
        except OSError as e:
            if not e.strerror:
                raise
            elsewhere = e.filename and os.path.abspath(e.filename) != os.path.abspath(args.dest)
            where = f" ({e.filename})" if elsewhere else ""
            raise OSError(f"DEST {args.dest}: cannot write the model there{where}: {e.strerror}") from None
    except OverwriteRefused as e:
        print(f"minigpt2-export: error: {e.reason}. Export into another directory, or pass --overwrite to "
              f"{e.overwrite_does}", file=sys.stderr)
        return 2
    except (OSError, ValueError, CheckpointError, DownloadError) as e:
        print(f"minigpt2-export: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.dest}", file=sys.stderr)
    return 0
