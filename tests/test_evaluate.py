"""Perplexity and bits per byte: the stated rule, against an independent float64 computation with transformers."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minigpt2 import GPT2, GPT2Config, Tokenizer
from minigpt2.evaluate import evaluate, windows

from .conftest import require

REPO = Path(__file__).resolve().parents[1]


@given(st.integers(1, 300), st.integers(1, 64), st.data())
@settings(max_examples=300, deadline=None)
def test_every_token_is_scored_exactly_once_with_the_context_the_rule_gives(n, context, data):
    stride = data.draw(st.integers(1, context))
    spans = windows(n, context, stride)
    scored = [p for _, end, first in spans for p in range(first, end)]
    assert scored == list(range(1, n + 1)), "positions 1..N, each once, in order"
    for k, (begin, end, first) in enumerate(spans):
        assert begin == k * stride and end - 1 - begin <= context, "the model reads at most `context` tokens"
        assert first >= begin + 1, "a scored token has at least one token before it in its window"
        if k:
            assert first == spans[k - 1][1], "a window starts scoring where the previous one ended"
    if n <= context:
        assert len(spans) == 1, "a text of up to `context` tokens is one window"


@pytest.fixture(scope="module")
def vocab():
    return Tokenizer.train("Perplexity is the exponential of the mean negative log-likelihood per token. " * 30,
                           300, progress=False)


@pytest.fixture(scope="module")
def model(vocab):
    # large weights: attention far from uniform, so the context each token gets really matters
    return GPT2.init(GPT2Config(n_vocab=vocab.n_vocab, n_ctx=64, n_embd=32, n_head=4, n_layer=2), seed=5, std=0.2)


def reference_nll(model, s: np.ndarray, context: int, stride: int) -> tuple[float, int]:
    """The module docstring's rule, written out on transformers in float64: (total NLL, tokens scored)."""
    torch = require("torch")
    from .reference import hf_model

    hf = hf_model(model).to(torch.float64)
    total, count, prev_end, begin = 0.0, 0, 0, 0
    while prev_end < len(s):
        end = min(begin + context + 1, len(s))
        with torch.no_grad():
            logits = hf(torch.tensor(s[begin : end - 1][None])).logits[0]
        logp = torch.log_softmax(logits, dim=-1).numpy()  # [T, V], row j predicts position begin + j + 1
        for p in range(max(prev_end, begin + 1), end):
            total -= logp[p - begin - 1, s[p]]
            count += 1
        prev_end, begin = end, begin + stride
    return total, count


TEXT = ("Perplexity is the exponential of the mean negative log-likelihood per token; bits per byte divide the "
        "total by ln 2 and by the bytes of the text, so that vocabularies can be compared. ") * 2


@pytest.mark.reference
@pytest.mark.parametrize("context, stride", [(16, 16), (16, 8), (16, 4), (64, 32), (64, 64)])
def test_nll_perplexity_and_bits_per_byte_equal_a_float64_reference(model, vocab, context, stride):
    ids = vocab.encode(TEXT)
    assert len(ids) > 64, "longer than any window"
    score = evaluate(model, text=TEXT, tokenizer=vocab, context=context, stride=stride)
    s = np.array([vocab.eot_id] + ids)
    nll, count = reference_nll(model, s, context, stride)
    assert score.tokens == count == len(ids)
    assert score.nll == pytest.approx(nll, rel=1e-5)
    assert score.perplexity == pytest.approx(math.exp(nll / count), rel=1e-5)
    assert score.bytes == len(TEXT.encode("utf-8"))
    assert score.bits_per_byte == pytest.approx(nll / math.log(2) / len(TEXT.encode("utf-8")), rel=1e-5)


@pytest.mark.reference
@pytest.mark.parametrize("n", [5, 16])  # shorter than one window; exactly `context` tokens
def test_short_texts_are_one_window(model, vocab, n):
    ids = vocab.encode(TEXT)[:n]
    score = evaluate(model, ids, context=16, stride=8, eot_id=vocab.eot_id)
    nll, count = reference_nll(model, np.array([vocab.eot_id] + ids), 16, 8)
    assert score.tokens == count == n and score.nll == pytest.approx(nll, rel=1e-5)
    assert score.bits_per_byte is None, "bytes are unknown from ids alone"
    assert len(windows(n, 16, 8)) == 1


def test_batching_the_windows_does_not_change_the_result(model, vocab):
    ids = vocab.encode(TEXT)
    totals = [evaluate(model, ids, context=16, stride=4, batch_size=b, eot_id=vocab.eot_id).nll for b in (1, 3, 64)]
    assert totals[1] == pytest.approx(totals[0], rel=1e-6) and totals[2] == pytest.approx(totals[0], rel=1e-6)


def test_the_first_token_is_conditioned_on_endoftext_alone(model, vocab):
    ids = vocab.encode("Perplexity")[:1]
    logits = model([vocab.eot_id]).astype(np.float64)[0]
    expected = -(logits[ids[0]] - np.log(np.exp(logits - logits.max()).sum()) - logits.max())
    assert evaluate(model, ids, eot_id=vocab.eot_id).nll == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    (dict(context=0), "context 0 must be in"), (dict(context=65), "context 65 must be in"),
    (dict(stride=0), "stride 0 must be in"), (dict(context=16, stride=17), "stride 17 must be in"),
    (dict(eot_id=300), "outside the vocabulary.*end-of-text id"),
])
def test_bad_arguments_are_named(model, vocab, kwargs, message):
    with pytest.raises(ValueError, match=message):
        evaluate(model, vocab.encode("Perplexity"), **kwargs)
    with pytest.raises(ValueError, match="nothing to score|non-empty"):
        evaluate(model, [], eot_id=1)


# --- the command line --------------------------------------------------------------------------------


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "minigpt2.evaluate", *args], capture_output=True, cwd=REPO,
                          env=dict(os.environ, PYTHONIOENCODING="utf-8"))


@pytest.fixture(scope="module")
def saved(model, vocab, tmp_path_factory):
    d = tmp_path_factory.mktemp("eval")
    model.save(d / "model", vocab)
    (d / "a.txt").write_text(TEXT)
    (d / "b.txt").write_text("Perplexity per token.")
    return d


def test_cli_json_has_one_object_per_file(saved, model, vocab):
    r = run_cli(str(saved / "a.txt"), str(saved / "b.txt"), "--model", str(saved / "model"), "--context", "16",
                "--stride", "8", "--json")
    assert r.returncode == 0, r.stderr.decode()
    lines = r.stdout.decode().splitlines()
    assert len(lines) == 2
    for line, path in zip(lines, ("a.txt", "b.txt")):
        got = json.loads(line)
        assert {"tokens", "nll", "perplexity", "bits_per_byte", "bytes"} <= set(got)
        text = (saved / path).read_text()
        score = evaluate(model, text=text, tokenizer=vocab, context=16, stride=8)
        assert got["tokens"] == score.tokens and got["bytes"] == len(text.encode())
        assert got["nll"] == pytest.approx(score.nll_per_token, rel=1e-6)
        assert got["perplexity"] == pytest.approx(score.perplexity, rel=1e-6)
    plain = run_cli(str(saved / "a.txt"), "--model", str(saved / "model"), "--context", "16")
    assert plain.returncode == 0 and "perplexity" in plain.stdout.decode() and "bits/byte" in plain.stdout.decode()


@pytest.mark.parametrize("setup, args, message", [
    (None, ["{d}/missing.txt"], "missing.txt does not exist"),
    ("empty", ["{d}/empty.txt"], "empty.txt is empty"),
    ("latin1", ["{d}/latin1.txt"], "latin1.txt is not UTF-8 text: byte 0xe9 at byte offset 3"),
    (None, ["{d}/a.txt", "--stride", "0"], "--stride 0 must be in"),
    (None, ["{d}/a.txt", "--context", "16", "--stride", "17"], "--stride 17 must be in"),
    (None, ["{d}/a.txt", "--context", "65"], "--context 65 must be in"),
])
def test_cli_bad_input_exits_2_with_one_line(saved, setup, args, message):
    if setup == "empty":
        (saved / "empty.txt").write_text("")
    if setup == "latin1":
        (saved / "latin1.txt").write_bytes(b"caf\xe9")
    r = run_cli(*[a.format(d=saved) for a in args], "--model", str(saved / "model"))
    err = r.stderr.decode().strip()
    assert r.returncode == 2 and len(err.splitlines()) == 1 and message in err, err


# --- the real GPT-2, where the network allows ---------------------------------------------------------


@pytest.mark.online
def test_real_gpt2_124m_matches_transformerlens_and_transformers():
    from minigpt2.download import DownloadError

    try:
        model, tok = GPT2.from_pretrained("124M"), Tokenizer.from_pretrained("124M")
    except DownloadError as e:
        pytest.skip(f"OpenAI's host is not reachable: {e}")
    # TransformerLens pins this loss for gpt2-small on "Hello world!" after <|endoftext|> in its own tests
    assert evaluate(model, text="Hello world!", tokenizer=tok).nll_per_token == pytest.approx(5.331855773925781,
                                                                                              abs=1e-4)
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        model.save(d, tok, format="huggingface")
        hf = transformers.GPT2LMHeadModel.from_pretrained(d).eval()
        prompt = tok.encode("The capital of France is")
        with torch.no_grad():
            ref = hf.generate(torch.tensor([prompt]), max_new_tokens=20, do_sample=False, pad_token_id=50256)
        assert model.generate(prompt, 20, temperature=0, stop_at_eot=False) == ref[0, len(prompt):].tolist()


def test_empty_text_is_named_not_a_dtype_error(model, vocab):
    with pytest.raises(ValueError, match=r"needs a non-empty string to score, got ''"):
        evaluate(model, text="", tokenizer=vocab)
