"""minigpt2: GPT-2 from scratch in NumPy.

    text -> Tokenizer -> ids -> GPT2 -> logits -> sampler -> ids -> Tokenizer -> text
"""

from . import fast  # noqa: F401  (registers the tuned forms: dispatch.py)
from .config import GPT2Config
from .dispatch import reference_mode
from .gpt2 import GPT2
from .model import KVCache
from .tokenizer import Tokenizer
from .version import __version__

__all__ = ["GPT2", "GPT2Config", "KVCache", "Tokenizer", "reference_mode"]
