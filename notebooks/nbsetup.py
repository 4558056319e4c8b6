"""What the notebooks run on: the real GPT-2 124M if it is already in the cache, else a small stand-in trained here.

Nothing here downloads anything; run `GPT2.from_pretrained("124M")` once with network to get the real model.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sysconfig
import tempfile
from pathlib import Path

from minigpt2 import GPT2, Tokenizer
from minigpt2.download import cache_dir, openai_dir
from minigpt2.files import CONVERTED_FILE
from minigpt2.load import converted_dir
from minigpt2.train import TrainConfig, train

SHARED = Path(__file__).resolve().parents[2] / "shared"  # beside the repository, when run from a clone
FIXTURE = SHARED / "fixtures" / "tf-gpt2-tiny"  # a small checkpoint written by TensorFlow, random weights


def teaching_model() -> tuple[GPT2, Tokenizer, str]:
    """(model, tokenizer, a sentence saying which model it is)."""
    if real_model_in_cache():
        real = converted_dir("124M")
        return GPT2.from_pretrained(real), Tokenizer.from_dir(real), f"This notebook runs on the real GPT-2 124M ({real})."
    model, tok, loss = stand_in()
    c = model.config
    shape = (f"{c.n_layer} blocks, {c.n_head} heads, {c.n_embd} wide, a {c.n_ctx}-token context and a "
             f"{c.n_vocab}-token vocabulary")
    note = (f"GPT-2 124M is not in the cache, so this notebook uses a small stand-in: {shape}, trained "
            f"on Python's own documentation (pydoc_data) to {loss:.2f} nats per token, saved in {stand_in_dir()}. "
            "Its distributions peak and it writes words, but it knows little beyond Python's manual. Run "
            "GPT2.from_pretrained('124M') once with network and re-run the notebook to see the real model.")
    return model, tok, note


def real_model_in_cache() -> bool:
    return (converted_dir("124M") / CONVERTED_FILE).is_file()


STAND_IN_NAME = "pydoc-2x128-v2"  # change it when the recipe below changes: the cached model is then retrained


def stand_in_dir() -> Path:
    return cache_dir() / "notebooks" / STAND_IN_NAME


def documentation_text() -> str:
    """English that every Python has offline: the reference manual's topics behind help(), the underlines of
    its headings and the borders of its tables (----, ====, +---+) dropped and its whitespace folded."""
    try:
        from pydoc_data.topics import topics
        pages = [topics[k] for k in sorted(topics)]
    except ImportError:  # a Python packaged without it: its standard library's source instead
        pages = [p.read_text(encoding="utf-8") for p in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))]
    underline = re.compile(r"^[-=*~^+| \t]*[-=*~^]{3,}[-=*~^+| \t]*$", re.MULTILINE)  # and table borders
    return "\n".join(" ".join(underline.sub("", page).split()) for page in pages)


def stand_in() -> tuple[GPT2, Tokenizer, float]:
    """(model, tokenizer, final validation loss) of the stand-in: trained once (a minute or two on two cores),
    then read from the cache. Training happens in a private directory that is renamed into place when complete,
    so an interrupted or concurrent first run never leaves half a model behind."""
    final = stand_in_dir()
    if not (final / CONVERTED_FILE).is_file():
        print(f"Training the small stand-in model once (a minute or two), to {final}")
        final.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{STAND_IN_NAME}-", dir=final.parent))
        try:
            text = documentation_text()
            (work / "docs.txt").write_text(text, encoding="utf-8")
            Tokenizer.train(text, 512, progress=False).save(work / "vocab")
            settings = TrainConfig(data=str(work / "docs.txt"), out=str(work / "run"), init="scratch",
                                   tokenizer=str(work / "vocab"), n_layer=2, n_head=4, n_embd=128, block_size=64,
                                   batch_size=32, steps=400, lr=5e-3, warmup_steps=20, eval_every=400,
                                   eval_batches=8, save_every=400, seed=0)
            model = train(settings, progress=True)
            model.save(work / "model", Tokenizer.from_dir(work / "vocab"))
            shutil.copy(work / "run" / "log.jsonl", work / "model" / "log.jsonl")
            try:
                os.rename(work / "model", final)
            except OSError:  # another notebook finished first: keep its model
                pass
        finally:
            shutil.rmtree(work, ignore_errors=True)
    log = [json.loads(line) for line in (final / "log.jsonl").read_text().splitlines()]
    loss = [r["val_loss"] for r in log if "val_loss" in r][-1]
    return GPT2.from_pretrained(final), Tokenizer.from_dir(final), loss


def gpt2_tokenizer() -> Tokenizer:
    """GPT-2's vocabulary from the cache or ../shared; else a small one trained here, so the notebook still runs."""
    for d in (openai_dir("124M"), converted_dir("124M"), SHARED / "data", FIXTURE):
        if (d / "encoder.json").is_file() and (d / "vocab.bpe").is_file():
            return Tokenizer.from_dir(d)
    print("GPT-2's vocabulary is not in the cache; training a small vocabulary instead.")
    text = Path(__file__).read_text() * 20
    return Tokenizer.train(text, vocab_size=1000, progress=False)
