"""`python -m minigpt2.generate "prompt"`: continue a prompt from the command line (cli.generate_main).

    python -m minigpt2.generate "Alan Turing theorized that computers would" --max-new-tokens 40

The generation loop itself is generation.py (GPT2.generate and GPT2.stream from Python).
"""

import sys

from .cli import generate_main

if __name__ == "__main__":
    sys.exit(generate_main())
