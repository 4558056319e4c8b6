"""`python -m minigpt2.train ...`: the command line (cli.train_main); the library is this package."""

import sys

from ..cli import train_main

if __name__ == "__main__":
    sys.exit(train_main())
