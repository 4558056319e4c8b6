"""`python -m minigpt2`: the list of commands; `python -m minigpt2 COMMAND ...` runs one (the same as
`python -m minigpt2.COMMAND ...`)."""

from __future__ import annotations

import sys

from .evaluate.__main__ import evaluate_main
from .explore.__main__ import explore_main
from .export import export_main
from .generate import generate_main
from .train.__main__ import train_main
from .version import __version__

COMMANDS = {
    "generate": ("continue a prompt (GPT-2 124M, or the bundled tiny model offline)", generate_main),
    "train": ("pre-train or fine-tune on text or a .jsonl task file", train_main),
    "evaluate": ("perplexity of text files, scores of task files", evaluate_main),
    "export": ("write a model in Hugging Face's layout", export_main),
    "explore": ("write one offline HTML page to look inside the model (attention, logit lens, next token)",
                explore_main),
}


def main(argv: list[str] | None = None) -> int:
    """`python -m minigpt2`: list the commands; `python -m minigpt2 COMMAND ...` runs one."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in COMMANDS:
        return COMMANDS[argv[0]][1](argv[1:])
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


if __name__ == "__main__":
    sys.exit(main())
