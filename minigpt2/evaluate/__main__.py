"""`python -m minigpt2.evaluate FILE ...`: the command line (cli.evaluate_main); the library is this package."""

import sys

from ..cli import evaluate_main

if __name__ == "__main__":
    sys.exit(evaluate_main())
