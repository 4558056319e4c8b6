"""The explorer's numbers (model.explore) against transformers, its file against its promises: one page, offline,
small; the command line. What the page's script makes of them is tests/test_explore_browser.py."""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from minigpt2 import GPT2, GPT2Config, Tokenizer
from minigpt2.explore import ATTENTION_BYTES, DENSE_UP_TO, MIN_KEYS, NEXT_KEPT, asset, keys_kept

from .conftest import REPO, require
from .reference import hf_forward, hf_model

TEXT = "The explorer shows attention, the logit lens and the next token. 注意力：模型看哪里？"


@pytest.fixture(scope="module")
def tiny():
    return GPT2.from_pretrained("tiny"), Tokenizer.from_pretrained("tiny")


@pytest.fixture(scope="module")
def sharp():
    """Random weights drawn wide (std 0.2), so that attention is far from uniform and the top tokens far apart."""
    return GPT2.init(GPT2Config(n_vocab=1500, n_ctx=300, n_embd=32, n_head=4, n_layer=3), seed=3, std=0.2)


def test_the_tokens_are_the_tokenizers_cut_with_readable_labels(tiny, tok):
    model, _ = tiny
    text = "GPT-2 reads 我们 as bytes"  # GPT-2's vocabulary splits 我 and 们 into byte pieces
    page = GPT2.init(GPT2Config(n_vocab=50257, n_ctx=64, n_embd=16, n_head=2, n_layer=1)).explore(text, tok)
    assert page.data["ids"] == tok.encode(text)  # nothing prepended
    assert page.tokens == [tok.token_label(i) for i in tok.encode(text)]
    assert "".join(page.tokens).startswith("GPT-2 reads") and "<" in "".join(page.tokens)  # bytes in hex
    assert not any("\ufffd" in t for t in page.tokens)


@pytest.mark.reference
def test_attention_lens_and_surprise_equal_transformers(sharp):
    torch = require("torch")
    ids = np.random.default_rng(0).integers(0, sharp.config.n_vocab, 90)
    page = sharp.explore(ids)
    out = hf_forward(hf_model(sharp), ids, output_attentions=True, output_hidden_states=True)
    for layer in range(sharp.config.n_layer):
        for head in range(sharp.config.n_head):
            expected = out.attentions[layer][0, head].numpy()  # [T, T], zeros above the diagonal
            assert np.abs(page.attention(layer, head) - expected).max() <= 1 / 510 + 1e-6
    # the logit lens: hidden_states[l] is the input of block l; the last one has been through ln_f already
    hf = hf_model(sharp)
    wte = hf.transformer.wte.weight
    for layer in range(sharp.config.n_layer + 1):
        h = out.hidden_states[layer][0]
        normed = h if layer == sharp.config.n_layer else hf.transformer.ln_f(h)
        with torch.no_grad():
            probs = torch.softmax((normed @ wte.T).double(), -1).numpy()  # [T, V]
        for position in (0, 17, 89):
            lens = page.lens(layer, position)
            top = np.argsort(-probs[position], kind="stable")[:5]
            assert [label for label, _ in lens] == [f"#{i}" for i in top]
            np.testing.assert_allclose([p for _, p in lens], probs[position, top], rtol=1e-4, atol=1e-7)
    nll = torch.nn.functional.cross_entropy(out.logits[0, :-1].double(), torch.from_numpy(ids[1:]), reduction="none")
    assert page.losses[0] is None
    np.testing.assert_allclose(page.losses[1:], nll.numpy(), atol=2e-5)


@pytest.mark.reference
def test_the_next_token_store_is_exact_to_its_step(sharp):
    torch = require("torch")
    ids = np.random.default_rng(1).integers(0, sharp.config.n_vocab, 40)
    page = sharp.explore(ids)
    logp = torch.log_softmax(hf_forward(hf_model(sharp), ids).logits[0].double(), -1).numpy()  # [T, V]
    k = page.data["next"]["k"]
    assert k == NEXT_KEPT
    for t in (0, 20, 39):
        order = np.argsort(-logp[t], kind="stable")[:k]
        stored = page.arrays["next_ids"][t]
        step = page.data["next"]["step"][t]
        # the same tokens, most likely first (a swap only between two closer than float32 can tell)
        assert np.mean(stored == order) > 0.99
        stored_logp = -page.arrays["next_logp"][t].astype(float) * step
        np.testing.assert_allclose(stored_logp, logp[t, stored], atol=step / 2 + 1e-5)
        assert page.data["next"]["rest"][t] == pytest.approx(1 - np.exp(logp[t, stored]).sum(), abs=1e-6)
    logits = hf_forward(hf_model(sharp), ids).logits[0].double().numpy()
    np.testing.assert_allclose(page.data["next"]["log_z"], np.log(np.exp(logits).sum(-1)), rtol=1e-6)


def test_every_key_is_kept_up_to_128_tokens_and_the_largest_beyond():
    assert keys_kept(DENSE_UP_TO, 48, 25) == DENSE_UP_TO  # even 1558M's 1,200 heads
    assert keys_kept(219, 12, 12) == 219 and keys_kept(220, 12, 12) < 220  # 124M: while 3.5 MB hold the half
    assert keys_kept(1024, 12, 12) == MIN_KEYS == 8
    assert keys_kept(300, 8, 10) == ATTENTION_BYTES // (3 * 8 * 10 * 300)


def test_past_the_limit_each_query_keeps_its_largest_weights():
    model = GPT2.init(GPT2Config(n_vocab=300, n_ctx=300, n_embd=40, n_head=10, n_layer=8), seed=1, std=0.3)
    ids = np.random.default_rng(2).integers(0, 300, 300)
    page = model.explore(ids)
    K = page.data["attention"]["keys"]
    assert K == keys_kept(300, 8, 10) < 300
    _, acts = model.run_with_activations(ids, names="blocks.*.attn.pattern")
    for layer, head in ((0, 0), (7, 9), (3, 4)):
        true, stored = acts[f"blocks.{layer}.attn.pattern"][head], page.attention(layer, head)
        for t in (0, 5, 150, 299):
            kept = stored[t] > 0
            assert np.abs(stored[t][kept] - true[t][kept]).max() <= 1 / 510 + 1e-6
            smallest_kept = np.sort(true[t])[::-1][min(K, t + 1) - 1]
            assert true[t][~kept].max(initial=0) <= smallest_kept + 1 / 255  # what is dropped is no larger
        assert not np.triu(stored, 1).any()


def test_a_124m_page_is_small():
    """124M's shape for the file (its size depends on layers, heads, vocabulary and tokens, not on the width)."""
    model = GPT2.init(GPT2Config(n_vocab=50257, n_ctx=1024, n_embd=24, n_head=12, n_layer=12), seed=0, std=0.2)
    ids = np.random.default_rng(0).integers(0, 50257, 1024)
    assert len(model.explore(ids[:128]).html.encode()) <= 3_000_000
    assert len(model.explore(ids).html.encode()) <= 12_000_000


def test_the_page_is_one_file_that_asks_nothing_of_any_network(tiny):
    model, tok = tiny
    page = model.explore("<script>alert(1)</script> & </script>", tok, title="<b>title</b>")
    text = page.html
    assert "Content-Security-Policy" in text and "default-src 'none'" in text
    for part in ("page.html", "page.css", "page.js"):  # what the project wrote: no address, no loader
        source = asset(part)
        loads = r"https?:|//[a-z]|\bsrc=|<link|@import|url\(|fetch\(|XMLHttpRequest|import\("
        assert not re.search(loads, source), part
    # the text cannot end the data's script or put markup in the page
    assert text.count("</script>") == 2 and "<b>title</b>" not in text and "&lt;b&gt;title&lt;/b&gt;" in text


def test_jupyter_shows_the_page_in_a_sandboxed_iframe(tiny):
    model, tok = tiny
    page = model.explore("Hello there", tok)
    shown = page._repr_html_()
    assert shown.startswith("<iframe ") and 'sandbox="allow-scripts"' in shown
    assert html.unescape(re.search(r'srcdoc="([^"]*)"', shown)[1]) == page.html


def test_save_writes_the_page(tiny, tmp_path):
    model, tok = tiny
    page = model.explore(TEXT, tok)
    path = page.save(tmp_path / "page.html")
    assert path.read_text(encoding="utf-8") == page.html
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


@pytest.mark.parametrize("call, message", [
    (lambda m, tok: m.explore("text"), "needs the tokenizer"),
    (lambda m, tok: m.explore("", tok), "the text is empty"),
    (lambda m, tok: m.explore([[1, 2]], tok), "one text"),
    (lambda m, tok: m.explore([], tok), "no tokens"),
    (lambda m, tok: m.explore([5000], tok), "token id 5000 is outside the vocabulary"),
    (lambda m, tok: m.explore(list(range(129)), tok), "n_ctx = 128"),
])
def test_bad_input_is_named(tiny, call, message):
    model, tok = tiny
    with pytest.raises(ValueError, match=message):
        call(model, tok)


def run(*args, stdin=None, cwd=None):
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    return subprocess.run([sys.executable, "-m", "minigpt2.explore", *args], input=stdin, capture_output=True,
                          cwd=cwd, env=env, timeout=120)


def test_the_command_writes_the_page(tiny, tmp_path):
    model, tok = tiny
    r = run(TEXT, "--model", "tiny", "--out", str(tmp_path / "p.html"))
    assert r.returncode == 0, r.stderr.decode()
    assert "wrote" in r.stdout.decode() and "open it in a browser" in r.stdout.decode()
    written = (tmp_path / "p.html").read_text(encoding="utf-8")
    assert written.count(model.explore(TEXT, tok).data["tokens"][3]) >= 1
    r = run("-", "--model", "tiny", "--out", str(tmp_path / "stdin.html"), stdin=TEXT.encode("utf-8"))
    assert r.returncode == 0, r.stderr.decode()
    assert (tmp_path / "stdin.html").is_file()


def test_the_command_explores_with_an_adapter(tiny, tmp_path):
    model, tok = tiny
    adapted = GPT2.from_pretrained("tiny").add_adapter(seed=1)
    for layer in adapted.adapter["blocks"]:  # B starts at zero (a no-op): give it something to do
        for group in layer.values():
            for ab in group.values():
                ab["lora_B"][:] = np.random.default_rng(0).standard_normal(ab["lora_B"].shape) * 0.5
    adapted.save_adapter(tmp_path / "adapter", base="tiny")
    r = run("def f(x):", "--adapter", str(tmp_path / "adapter"), "--out", str(tmp_path / "a.html"))
    assert r.returncode == 0, r.stderr.decode()
    page = GPT2.from_pretrained("tiny", adapter=tmp_path / "adapter").explore("def f(x):", tok)
    base = model.explore("def f(x):", tok)
    written = data_of((tmp_path / "a.html").read_text(encoding="utf-8"))
    assert written["next"] == data_of(page.html)["next"]  # the adapter's numbers, not the base's
    assert written["next"] != data_of(base.html)["next"]
    assert "+ " + str(tmp_path / "adapter") in written["model"]


def data_of(page_html: str) -> dict:
    """The data a page file carries (its JSON script)."""
    return json.loads(re.search(r'<script type="application/json" id="explorer-data">(.*?)</script>', page_html, re.S)[1])


@pytest.mark.parametrize("args, message", [
    (["", "--model", "tiny"], "the text is empty"),
    (["x", "--model", "tiny", "--out", "."], "--out . is a directory"),
    (["x", "--model", "no-such-model-dir/"], "no-such-model-dir"),
    (["x" * 600, "--model", "tiny"], "n_ctx = 128"),
])
def test_the_command_names_bad_input_in_one_line(tmp_path, args, message):
    r = run(*args, cwd=tmp_path)
    err = r.stderr.decode()
    assert r.returncode == 2 and message in err and "Traceback" not in err, err
    assert err.strip().startswith("minigpt2-explore: error:") and len(err.strip().splitlines()) == 1, err


def test_the_command_is_listed():
    r = subprocess.run([sys.executable, "-m", "minigpt2"], capture_output=True, text=True, cwd=REPO)
    assert "explore" in r.stdout
