"""Each filter on the next token's logits, and all of them in order, equal transformers' logits processors."""

import numpy as np
import pytest

from minigpt2.sample import (
    min_new_tokens_filter,
    min_p_filter,
    no_repeat_ngram_filter,
    process_logits,
    typical_filter,
)

from .conftest import require

V = 50


def logits_and_ids(seed: int, batch: int = 4, t: int = 12, scale: float = 3.0):
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal((batch, V)) * scale).astype(np.float32)  # [B, V]: peaked enough to filter
    previous = rng.integers(0, 8, size=(batch, t))  # [B, t]: few distinct ids, so n-grams repeat
    return logits, previous


def same(ours: np.ndarray, theirs) -> None:
    theirs = theirs.numpy()
    np.testing.assert_array_equal(np.isneginf(ours), np.isneginf(theirs), err_msg="the same tokens filtered")
    kept = np.isfinite(theirs)
    np.testing.assert_allclose(ours[kept], theirs[kept], rtol=1e-6, atol=1e-6)


def hf(processor, logits, previous):
    torch = require("torch")
    return processor(torch.from_numpy(previous), torch.from_numpy(logits.copy()))


@pytest.mark.reference
@pytest.mark.parametrize("min_p", [0.01, 0.05, 0.2, 0.5, 1.0])
def test_min_p_equals_transformers(min_p):
    from transformers.generation.logits_process import MinPLogitsWarper

    for seed in range(5):
        logits, previous = logits_and_ids(seed)
        same(min_p_filter(logits, min_p), hf(MinPLogitsWarper(min_p), logits, previous))


@pytest.mark.reference
@pytest.mark.parametrize("mass", [0.2, 0.5, 0.9, 0.95, 0.999])
def test_typical_equals_transformers(mass):
    from transformers.generation.logits_process import TypicalLogitsWarper

    for seed in range(5):
        logits, previous = logits_and_ids(seed)
        same(typical_filter(logits, mass), hf(TypicalLogitsWarper(mass), logits, previous))


@pytest.mark.reference
@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_no_repeat_ngram_equals_transformers(n):
    from transformers.generation.logits_process import NoRepeatNGramLogitsProcessor

    for seed in range(5):
        logits, previous = logits_and_ids(seed)
        if seed % 2:  # rows that repeat a phrase of five ids: every prefix has been seen, its follower is banned
            previous = np.tile(previous[:, :5], 3)[:, :12]
        ours = no_repeat_ngram_filter(logits, previous, n)
        same(ours, hf(NoRepeatNGramLogitsProcessor(n), logits, previous))
        if seed % 2:
            assert np.isneginf(ours).all(axis=-1).sum() == 0 and np.isneginf(ours).any(axis=-1).all()


@pytest.mark.reference
def test_min_new_tokens_equals_transformers():
    from transformers.generation.logits_process import MinNewTokensLengthLogitsProcessor

    logits, previous = logits_and_ids(0)
    for made in (0, 2, 3, 5):  # of 3 required; the prompt is the first 12 - made ids
        theirs = hf(MinNewTokensLengthLogitsProcessor(previous.shape[1] - made, 3, eos_token_id=7), logits, previous)
        same(min_new_tokens_filter(logits, made, 3, eot_id=7), theirs)


@pytest.mark.reference
@pytest.mark.parametrize("settings", [
    dict(temperature=0.7, top_k=10, top_p=0.9),
    dict(temperature=1.3, min_p=0.05),
    dict(temperature=0.8, top_k=20, typical_p=0.9),
    dict(repetition_penalty=1.3, no_repeat_ngram_size=2, temperature=0.9, top_p=0.8, min_p=0.02),
    dict(repetition_penalty=0.8, no_repeat_ngram_size=3, min_new_tokens=5, temperature=1.0, top_k=5, typical_p=0.7),
])
def test_every_setting_together_in_transformers_order(settings):
    from transformers.generation.logits_process import (
        LogitsProcessorList,
        MinNewTokensLengthLogitsProcessor,
        MinPLogitsWarper,
        NoRepeatNGramLogitsProcessor,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
        TypicalLogitsWarper,
    )

    s = settings
    chain = LogitsProcessorList()  # the order of transformers' GenerationMixin._get_logits_processor
    if "repetition_penalty" in s:
        chain.append(RepetitionPenaltyLogitsProcessor(s["repetition_penalty"]))
    if "no_repeat_ngram_size" in s:
        chain.append(NoRepeatNGramLogitsProcessor(s["no_repeat_ngram_size"]))
    if "min_new_tokens" in s:
        chain.append(MinNewTokensLengthLogitsProcessor(10, s["min_new_tokens"], eos_token_id=3))
    chain.append(TemperatureLogitsWarper(s["temperature"]))
    for key, warper in (("top_k", TopKLogitsWarper), ("top_p", TopPLogitsWarper), ("min_p", MinPLogitsWarper),
                        ("typical_p", TypicalLogitsWarper)):
        if key in s:
            chain.append(warper(s[key]))
    for seed in range(6):
        logits, previous = logits_and_ids(seed)
        ours = process_logits(logits, previous, new_tokens=previous.shape[1] - 10, eot_id=3, **s)
        same(ours, hf(chain, logits, previous))


# --- through generation: greedy with the processors, token for token against transformers ---------------


@pytest.fixture(scope="module")
def peaked():
    """A small random GPT-2 whose weights are large enough that greedy choices are not ties, and that repeats
    itself (so the n-gram block has work to do)."""
    from minigpt2 import GPT2, GPT2Config

    return GPT2.init(GPT2Config(n_vocab=64, n_ctx=64, n_embd=32, n_head=4, n_layer=2), seed=3, std=0.3)


@pytest.mark.reference
@pytest.mark.parametrize("settings", [dict(no_repeat_ngram_size=2), dict(no_repeat_ngram_size=3),
                                      dict(min_new_tokens=12), dict(repetition_penalty=1.5, no_repeat_ngram_size=2)])
def test_greedy_with_processors_gives_transformers_tokens(peaked, settings):
    torch = require("torch")
    from .reference import hf_model

    hf = hf_model(peaked)
    eot = 5  # a stand-in end of text, for min_new_tokens
    rng = np.random.default_rng(0)
    for _ in range(8):
        prompt = rng.integers(0, 64, size=int(rng.integers(2, 9))).tolist()
        ours = peaked.generate(prompt, 24, temperature=0, eot_id=eot, **settings)  # ends before an end of text
        with torch.no_grad():
            theirs = hf.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                                 max_new_tokens=24, do_sample=False, eos_token_id=eot, pad_token_id=0,
                                 **settings)[0, len(prompt):].tolist()
        theirs = theirs[: theirs.index(eot)] if eot in theirs else theirs
        assert ours == theirs, (prompt, ours, theirs)
        if "min_new_tokens" in settings:
            assert len(ours) >= min(24, settings["min_new_tokens"])
        if "no_repeat_ngram_size" in settings:
            n, row = settings["no_repeat_ngram_size"], prompt + ours
            grams = [tuple(row[i : i + n]) for i in range(len(row) - n + 1)]
            assert len(grams) == len(set(grams)), "no n-gram twice"
