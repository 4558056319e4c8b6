"""minigpt2: GPT-2 from scratch in NumPy.

    text -> Tokenizer -> ids -> GPT2 -> logits -> sampler -> ids -> Tokenizer -> text
"""

from .config import GPT2Config
from .fast import reference_mode
from .model import KVCache
from .tokenizer import Tokenizer

__all__ = ["GPT2", "GPT2Config", "KVCache", "Tokenizer", "reference_mode"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # subtle: GPT2 is imported on first use, not here. It sits downstream of minigpt2.generate; importing it
    # with the package would import generate before `python -m minigpt2.generate` runs it as __main__.
    if name == "GPT2":
        from .gpt2 import GPT2

        return GPT2
    raise AttributeError(f"module 'minigpt2' has no attribute {name!r}")
