"""What minigpt2's command lines share: flags -> library calls, errors -> one line and an exit code.

    python -m minigpt2.generate "prompt" [--model 124M] ...      generate.py
    python -m minigpt2.train --data FILE --out DIR ...           train/__main__.py
    python -m minigpt2.evaluate FILE ... [--model DIR] ...       evaluate/__main__.py
    python -m minigpt2.export MODEL DEST                         export.py
    python -m minigpt2.explore "text" [--model 124M] --out F     explore/__main__.py
    python -m minigpt2 [COMMAND ...]                             __main__.py (the list, or one of the five)

Each flag mirrors the keyword argument of the same name (--top-p: top_p). The library checks its arguments
and raises ArgumentError naming the argument; here that becomes the flag. Exit codes: 0 done, 2 bad input
(one line naming the flag, the file or the line), 1 a training run that diverged, 128 + the signal when a
run was stopped by one (130 Ctrl-C, 143 SIGTERM).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from .adapter import AdapterError
from .config import ArgumentError
from .distributed import launched_rank, launched_size
from .download import DownloadError, unavailable_message
from .files import decode_utf8
from .gpt2 import GPT2
from .tokenizer import Tokenizer
from .version import __version__
from .vocab import EOT_ID


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


def parse_in_one_process(parser: Parser, argv: list[str] | None) -> argparse.Namespace:
    """parser.parse_args(argv) for a command that does not split its work: when mpiexec started several copies
    (only minigpt2.train runs data-parallel; each copy would do all of it, fighting the others for the cores),
    exit code 2, said once."""
    args = parser.parse_args(argv)
    if launched_size() > 1:
        if launched_rank() == 0:
            print(f"{parser.prog}: error: runs in one process (mpiexec -n N is for python -m minigpt2.train); run "
                  "it without mpiexec", file=sys.stderr)
        sys.exit(2)
    return args


def fail(prog: str, e: Exception) -> int:
    """Print the error as one line (an ArgumentError names its flag) and return exit code 2."""
    message = f"--{e.name.replace('_', '-')} {e.message}" if isinstance(e, ArgumentError) else str(e)
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 2


def read_prompt(arg: str) -> str:
    """The prompt: the argument, or standard input for '-', as UTF-8 text (one message for bytes that are not,
    from either)."""
    if arg == "-":
        return decode_utf8(sys.stdin.buffer.read(), "standard input")
    # subtle: Python hands over argument bytes that are not UTF-8 as lone surrogates; back to those bytes
    return decode_utf8(arg.encode("utf-8", "surrogateescape"), "the prompt")


DEFAULT_MODEL, FALLBACK_MODEL = "124M", "tiny"


def adapted_model(name: str, adapter: str | None, flag: str = "--adapter") -> GPT2:
    """GPT2.from_pretrained(name, adapter=adapter), an adapter that does not fit named by the flag that gave it."""
    try:
        return GPT2.from_pretrained(name, adapter=adapter)
    except AdapterError as e:
        raise AdapterError(f"{flag} {e}") from None


def some_model(prog: str, name: str | None, adapter: str | None = None) -> tuple[GPT2, str]:
    """(the model, its name) for a command that can run with any: `name`, or by default GPT-2 124M, and when that
    is neither cached nor downloadable the bundled model, said in one line on stderr. A model named explicitly,
    or one an adapter needs, is never replaced: a DownloadError becomes the one line that says how to get it."""
    try:
        return adapted_model(name or DEFAULT_MODEL, adapter), name or DEFAULT_MODEL
    except DownloadError as e:
        line = unavailable_message(name or DEFAULT_MODEL, e)
        if name is not None or adapter is not None:
            raise DownloadError(line) from None
    print(f"{prog}: {line}. Using minigpt2's bundled model '{FALLBACK_MODEL}' instead (a small model "
          "trained on Python's documentation, not GPT-2)", file=sys.stderr)
    return GPT2.from_pretrained(FALLBACK_MODEL), FALLBACK_MODEL


def model_tokenizer(prog: str, model: str, n_vocab: int) -> Tokenizer:
    """The model's own vocabulary; for a directory without one, GPT-2's if the sizes fit (saying so)."""
    try:
        return Tokenizer.from_pretrained(model)
    except FileNotFoundError:
        if not os.path.isdir(model) or n_vocab != EOT_ID + 1:
            raise
    print(f"{prog}: {model} holds no vocabulary; using GPT-2's (save the model with its tokenizer, "
          "model.save(dir, tokenizer), to keep its own)", file=sys.stderr)
    return Tokenizer.from_pretrained("124M")
