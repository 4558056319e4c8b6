"""What the notebooks run on: the real GPT-2 124M if it is already in the cache, else what is at hand offline.

Nothing here downloads anything; run `GPT2.from_pretrained("124M")` once with network to get the real model.
"""

from __future__ import annotations

from pathlib import Path

from minigpt2 import GPT2, GPT2Config, Tokenizer
from minigpt2.download import openai_dir
from minigpt2.files import CONVERTED_FILE
from minigpt2.load import converted_dir

SHARED = Path(__file__).resolve().parents[2] / "shared"  # beside the repository, when run from a clone
FIXTURE = SHARED / "fixtures" / "tf-gpt2-tiny"  # a small checkpoint written by TensorFlow, random weights


def teaching_model() -> tuple[GPT2, Tokenizer, str]:
    """(model, tokenizer, a sentence saying which model it is)."""
    real = converted_dir("124M")
    if (real / CONVERTED_FILE).is_file():
        return GPT2.from_pretrained(real), Tokenizer.from_dir(real), f"the real GPT-2 124M (from {real})"
    if (FIXTURE / "model.ckpt.index").is_file():
        note = ("GPT-2 124M is not in the cache, so this notebook uses the small TensorFlow-written test "
                f"checkpoint at {FIXTURE} (2 layers, 4 heads, random weights): the text it writes is gibberish, "
                "but every computation is the real one. Run GPT2.from_pretrained('124M') once with network "
                "and re-run the notebook to see the real model.")
        return GPT2.from_pretrained(FIXTURE), Tokenizer.from_dir(FIXTURE), note
    tok = gpt2_tokenizer()
    config = GPT2Config(n_vocab=tok.n_vocab, n_ctx=128, n_embd=64, n_head=4, n_layer=2)
    note = ("GPT-2 124M is not in the cache and no test checkpoint is at hand, so this notebook uses a small "
            "randomly initialised model: its text is gibberish, but every computation is the real one.")
    return GPT2.init(config, seed=0, std=0.2), tok, note


def gpt2_tokenizer() -> Tokenizer:
    """GPT-2's vocabulary from the cache or ../shared; else a small one trained here, so the notebook still runs."""
    for d in (openai_dir("124M"), converted_dir("124M"), SHARED / "data", FIXTURE):
        if (d / "encoder.json").is_file() and (d / "vocab.bpe").is_file():
            return Tokenizer.from_dir(d)
    print("GPT-2's vocabulary is not in the cache; training a small vocabulary instead.")
    text = Path(__file__).read_text() * 20
    return Tokenizer.train(text, vocab_size=1000, progress=False)
