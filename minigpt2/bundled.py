"""name -> directory: the small model that ships inside the package, so minigpt2 runs without GPT-2's weights.

    GPT2.from_pretrained("tiny"), Tokenizer.from_pretrained("tiny"), --model tiny, --init tiny, --tokenizer tiny

`tiny` is a GPT-2 of 4 blocks, 128 wide, a 128-token context and a 1,024-token vocabulary, trained by
scripts/train_tiny.py on Python's own documentation; its model card is minigpt2/tiny/MODEL.md.
"""

from __future__ import annotations

from pathlib import Path

BUNDLED = {"tiny": Path(__file__).resolve().parent / "tiny"}  # name -> directory (minigpt2's format)


def bundled_dir(name: str) -> Path | None:
    """The directory of the bundled model `name` ("tiny"), or None if `name` is not one."""
    return BUNDLED.get(str(name).lower())
