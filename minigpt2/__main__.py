"""`python -m minigpt2`: the commands minigpt2 has, and `python -m minigpt2 COMMAND ...` runs one."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
