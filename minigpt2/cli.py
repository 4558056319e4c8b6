"""What minigpt2's command lines share: flags -> library calls, errors -> one line and an exit code.

    python -m minigpt2.generate "prompt" [--model 124M] ...      generate.py
    python -m minigpt2.train --data FILE --out DIR ...           train/__main__.py
    python -m minigpt2.evaluate FILE ... [--model DIR] ...       evaluate/__main__.py
    python -m minigpt2.export MODEL DEST                         export.py
    python -m minigpt2 [COMMAND ...]                             __main__.py (the list, or one of the four)

Each flag mirrors the keyword argument of the same name (--top-p: top_p). The library checks its arguments
and raises ArgumentError naming the argument; here that becomes the flag. Exit codes: 0 done, 2 bad input
(one line naming the flag, the file or the line), 1 a training run that diverged, 128 + the signal when a
run was stopped by one (130 Ctrl-C, 143 SIGTERM).
"""

from __future__ import annotations

import argparse
import signal
import sys

from .config import ArgumentError
from .distributed import launched_rank, launched_size
from .version import __version__


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
