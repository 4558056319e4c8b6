"""What the notebooks run on: the real GPT-2 124M if it is already in the cache, else minigpt2's bundled model.

Nothing here downloads anything; run `GPT2.from_pretrained("124M")` once with network to get the real model.
"""

from __future__ import annotations

from pathlib import Path

from minigpt2 import GPT2, Tokenizer
from minigpt2.download import openai_dir
from minigpt2.files import CONVERTED_FILE
from minigpt2.load import converted_dir

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"  # beside the repository, when run from a clone
FIXTURE = SHARED / "fixtures" / "tf-gpt2-tiny"  # a small checkpoint written by TensorFlow, random weights


def teaching_model() -> tuple[GPT2, Tokenizer, str]:
    """(model, tokenizer, a sentence saying which model it is)."""
    if real_model_in_cache():
        real = converted_dir("124M")
        return GPT2.from_pretrained(real), Tokenizer.from_dir(real), f"This notebook runs on the real GPT-2 124M ({real})."
    model, tok = GPT2.from_pretrained("tiny"), Tokenizer.from_pretrained("tiny")
    c = model.config
    shape = (f"{c.n_layer} blocks, {c.n_head} heads, {c.n_embd} wide, a {c.n_ctx}-token context and a "
             f"{c.n_vocab}-token vocabulary")
    note = (f"GPT-2 124M is not in the cache, so this notebook runs on minigpt2's bundled model 'tiny' ({shape}), "
            "trained on Python's own documentation (minigpt2/tiny/MODEL.md). Its distributions peak and it writes "
            "words, but it knows little beyond Python's manual. Run GPT2.from_pretrained('124M') once with network "
            "and re-run the notebook to see the real model.")
    return model, tok, note


def real_model_in_cache() -> bool:
    return (converted_dir("124M") / CONVERTED_FILE).is_file()


def gpt2_tokenizer() -> Tokenizer:
    """GPT-2's vocabulary from the cache or ../shared; else a small one trained here, so the notebook still runs."""
    for d in (openai_dir("124M"), converted_dir("124M"), SHARED / "data", FIXTURE):
        if (d / "encoder.json").is_file() and (d / "vocab.bpe").is_file():
            return Tokenizer.from_dir(d)
    print("GPT-2's vocabulary is not in the cache; using the bundled model's 1,024-token vocabulary instead.")
    return Tokenizer.from_pretrained("tiny")


def eval_file(name: str) -> Path | None:
    """An evaluation set's file if it is on this machine (../shared/data/eval, or the cache where
    `python -m minigpt2.evaluate lambada` puts what it downloads), else None."""
    from minigpt2.download import cache_dir

    for path in (SHARED / "data" / "eval" / name, cache_dir() / "data" / name):
        if path.is_file():
            return path
    return None


CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans CJK JP", "Noto Sans SC", "Source Han Sans SC", "WenQuanYi Zen Hei",
             "WenQuanYi Micro Hei", "SimHei", "Microsoft YaHei", "PingFang SC", "Heiti SC", "AR PL UMing CN")


def cjk_font() -> str | None:
    """Make matplotlib draw Chinese labels with a CJK font installed on this machine (its name), or None if
    there is none (the labels then show as boxes; e.g. apt-get install fonts-noto-cjk)."""
    import matplotlib
    from matplotlib import font_manager

    installed = {f.name for f in font_manager.fontManager.ttflist}
    for name in CJK_FONTS:
        if name in installed:
            matplotlib.rcParams["font.sans-serif"] = [name] + list(matplotlib.rcParams["font.sans-serif"])
            matplotlib.rcParams["axes.unicode_minus"] = False
            return name
    return None
