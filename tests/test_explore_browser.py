"""The explorer page in a real browser (headless Chromium, network off): it asks for nothing, its numbers are the
library's (run_with_activations, a logit lens computed here in NumPy, sample.py's filters) within the stored
precision, its views follow one selection, and it draws something. Both as a saved file and as Jupyter shows it
(an iframe's srcdoc)."""

from __future__ import annotations

import io

import numpy as np
import pytest

from minigpt2 import GPT2, Tokenizer
from minigpt2.ops import softmax
from minigpt2.sample import apply_temperature, top_k_filter, top_p_filter

from .browser import errors_logged, open_chromium, requests_made

TEXT = "The model reads the text one token at a time, and each head looks back. 模型一次读一个词元。"
STEP = 1 / 510 + 1e-6  # an attention weight's storage error at most (8 bits)


@pytest.fixture(scope="module")
def model_and_tok():
    return GPT2.from_pretrained("tiny"), Tokenizer.from_pretrained("tiny")


@pytest.fixture(scope="module")
def files(model_and_tok, tmp_path_factory):
    """The page saved as a file, and a notebook-like page that shows it the way Jupyter does (_repr_html_)."""
    model, tok = model_and_tok
    page = model.explore(TEXT, tok)
    folder = tmp_path_factory.mktemp("explore")
    saved = page.save(folder / "page.html")
    shown = folder / "notebook.html"
    shown.write_text(f"<!DOCTYPE html><html><head><meta charset='utf-8'></head><body><h1>Out[1]:</h1>"
                     f"{page._repr_html_()}</body></html>", encoding="utf-8")
    return {"file": saved, "iframe": shown}


@pytest.fixture(scope="module")
def browser():
    driver = open_chromium()
    yield driver
    driver.quit()


@pytest.fixture(params=["file", "iframe"])
def opened(request, browser, files):
    """The browser on the page (inside its iframe for the Jupyter form); the requests it made while loading."""
    browser.switch_to.default_content()
    requests_made(browser), errors_logged(browser)  # start clean
    url = files[request.param].as_uri()
    browser.get(url)
    if request.param == "iframe":
        browser.switch_to.frame(browser.find_element("tag name", "iframe"))
    browser.implicitly_wait(5)
    assert browser.execute_script("return typeof window.explorer") == "object"
    return browser, url, requests_made(browser)


@pytest.fixture(scope="module")
def library(model_and_tok):
    """The library's own numbers for TEXT: ids, logits, attention patterns and residual streams."""
    model, tok = model_and_tok
    ids = np.array(tok.encode(TEXT))
    logits, acts = model.run_with_activations(ids)
    return ids, logits, acts


def numpy_lens(model, acts, layer: int) -> np.ndarray:
    """The logit lens written out here: layer norm by hand with ln_f's gain and bias, then the tied head; softmax
    in float64. [T, V]."""
    L = model.config.n_layer
    x = (acts[f"blocks.{layer}.resid_pre"] if layer < L else acts[f"blocks.{L - 1}.resid_post"]).astype(np.float64)
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    h = (x - mu) / np.sqrt(var + model.config.layer_norm_epsilon) * model.params["ln_f"]["g"] + model.params["ln_f"]["b"]
    logits = h @ model.params["wte"].astype(np.float64).T
    return softmax(logits)


def test_the_page_asks_nothing_of_the_network_and_raises_no_error(opened):
    driver, url, requests = opened
    assert set(requests) <= {url}, requests  # the page itself (the Jupyter form: the notebook), nothing else
    assert driver.execute_script("return performance.getEntriesByType('resource').length") == 0
    assert errors_logged(driver) == []


def test_the_tokens_are_exactly_the_tokenizers(opened, model_and_tok):
    driver, _, _ = opened
    _, tok = model_and_tok
    labels = [tok.token_label(i) for i in tok.encode(TEXT)]
    assert driver.execute_script("return explorer.tokens") == labels
    shown = driver.execute_script("return [...document.querySelectorAll('#tokens .tok')].map(e => e.firstChild.textContent)")
    assert shown == labels and any(label.startswith("<") for label in labels)  # Chinese bytes as hex, never '�'


def test_attention_is_the_librarys_within_8_bits(opened, model_and_tok, library):
    driver, _, _ = opened
    model, _ = model_and_tok
    _, _, acts = library
    for layer in range(model.config.n_layer):
        for head in range(model.config.n_head):
            page = np.array(driver.execute_script("return explorer.attention(arguments[0], arguments[1])", layer, head))
            true = acts[f"blocks.{layer}.attn.pattern"][head]  # [T, T]
            assert np.abs(page - true).max() <= STEP, (layer, head)
            assert not np.triu(page, 1).any()


def test_the_logit_lens_is_the_numpy_one(opened, model_and_tok, library):
    driver, _, _ = opened
    model, tok = model_and_tok
    _, _, acts = library
    T = len(tok.encode(TEXT))
    for layer in range(model.config.n_layer + 1):
        probs = numpy_lens(model, acts, layer)
        for position in (0, T // 2, T - 1):
            page = driver.execute_script("return explorer.lens(arguments[0], arguments[1])", layer, position)
            top = np.argsort(-probs[position], kind="stable")[:5]
            assert [label for label, _ in page] == [tok.token_label(int(i)) for i in top], (layer, position)
            np.testing.assert_allclose([p for _, p in page], probs[position, top], rtol=1e-4, atol=1e-7)


CHOICES = [{}, {"top_k": 5}, {"temperature": 0.7, "top_k": 40}, {"temperature": 2.5, "top_k": 12, "top_p": 0.8},
           {"top_p": 0.9}, {"temperature": 1, "top_p": 0.5}, {"temperature": 0}, {"temperature": 0.3, "top_k": 1000}]


@pytest.mark.parametrize("choice", CHOICES, ids=[str(c) for c in CHOICES])
def test_the_next_token_follows_sample_py(opened, model_and_tok, library, choice):
    driver, _, _ = opened
    model, tok = model_and_tok
    _, logits, _ = library
    for position in (3, logits.shape[0] - 1):
        page = driver.execute_script("return explorer.next(arguments[0], arguments[1])", position, choice)
        x = logits[position]
        if choice.get("temperature") == 0:
            kept = np.array([x.argmax()])
            probs = np.ones(1)
        else:
            x = apply_temperature(x, choice.get("temperature", 1.0))
            x = top_k_filter(x, choice["top_k"]) if choice.get("top_k") else x
            x = top_p_filter(x, choice["top_p"]) if choice.get("top_p", 1) < 1 else x
            p = softmax(x.astype(np.float64))
            kept = np.argsort(-x, kind="stable")[: np.isfinite(x).sum()]
            probs = p[kept]
        n = min(len(kept), 1000)  # the page lists the stored tokens: the 1,000 most likely
        assert len(page) == n, (position, choice)
        assert [label for label, _ in page] == [tok.token_label(int(i)) for i in kept[:n]]
        np.testing.assert_allclose([q for _, q in page], probs[:n], rtol=1e-3, atol=1e-9)


def test_a_head_clicked_and_a_token_hovered_make_the_head_view(opened, model_and_tok, library):
    from selenium.webdriver.common.action_chains import ActionChains

    driver, _, _ = opened
    model, _ = model_and_tok
    _, _, acts = library
    driver.find_element("css selector", '#model-view canvas[data-layer="2"][data-head="1"]').click()
    token = driver.find_element("css selector", '#tokens .tok[data-position="9"]')
    ActionChains(driver).move_to_element(token).perform()
    assert driver.execute_script("return explorer.selection") == {"layer": 2, "head": 1, "position": 9}
    view = driver.find_element("id", "head-view")
    assert (view.get_attribute("data-layer"), view.get_attribute("data-head"), view.get_attribute("data-position")) \
        == ("2", "1", "9")
    shown = [float(w) for w in driver.execute_script(
        "return [...document.querySelectorAll('#head-view .tok')].map(e => e.dataset.weight)")]
    true = acts["blocks.2.attn.pattern"][1][9]
    assert np.abs(np.array(shown) - true).max() <= STEP and shown[10:] == [0.0] * (len(shown) - 10)
    # another head and token: the view follows
    driver.find_element("css selector", '#model-view canvas[data-layer="0"][data-head="3"]').click()
    ActionChains(driver).move_to_element(driver.find_element("css selector", '#tokens .tok[data-position="4"]')).perform()
    assert view.get_attribute("data-layer") == "0" and view.get_attribute("data-position") == "4"
    driver.execute_script("explorer.select(3, 2, 1)")
    assert view.get_attribute("data-head") == "2" and driver.execute_script("return explorer.selection.layer") == 3
    body = driver.find_element("tag name", "body")  # keys: left / right a token, up / down a layer, [ ] a head
    for key in ("\ue014", "\ue014", "\ue013", "[", "\ue012"):  # right, right, up, [, left
        body.send_keys(key)
    assert driver.execute_script("return explorer.selection") == {"layer": 2, "head": 1, "position": 2}


def test_the_api_names_a_bad_argument(opened):
    driver, _, _ = opened
    message = driver.execute_script("try { explorer.lens(99, 0) } catch (e) { return e.name + ': ' + e.message }")
    assert message.startswith("RangeError: layer must be an integer in [0, 4]")
    message = driver.execute_script("try { explorer.next(0, {top_p: 0}) } catch (e) { return e.message }")
    assert "top_p must be in (0, 1]" in message


def test_a_screenshot_is_not_blank(opened, tmp_path):
    from PIL import Image  # matplotlib's dependency

    driver, _, _ = opened
    image = np.asarray(Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB"))
    colours = np.unique(image.reshape(-1, 3), axis=0)
    assert len(colours) > 50 and (image < 200).mean() > 0.01  # text, heatmaps, bars: not one flat colour


def test_a_one_token_page_and_a_large_vocabulary(browser, tmp_path):
    """The smallest page (one token: nothing predicts it, one weight of 1), and a vocabulary far larger than the
    1,000 tokens stored: at another temperature with top-k off the page says its numbers are approximate."""
    from minigpt2 import GPT2Config

    model = GPT2.init(GPT2Config(n_vocab=50257, n_ctx=16, n_embd=16, n_head=2, n_layer=2), seed=0, std=0.2)
    browser.switch_to.default_content()
    for ids in ([42], [5, 6, 7]):
        browser.get(model.explore(ids).save(tmp_path / f"{len(ids)}.html").as_uri())
        assert browser.execute_script("return explorer.attention(1, 1)")[0] == [1] + [0] * (len(ids) - 1)
        assert browser.execute_script("return explorer.losses")[0] is None
        assert len(browser.execute_script("return explorer.next(0, {})")) == 1000
        assert len(browser.execute_script("return explorer.lens(2, 0)")) == 5
        assert errors_logged(browser) == []
    caption = browser.find_element("id", "next-caption")
    assert "Approximate" not in caption.text and "of 50,257 tokens" in caption.text
    browser.find_element("id", "temperature").clear()
    browser.find_element("id", "temperature").send_keys("2")
    assert "Approximate" in caption.text
    browser.find_element("id", "top-k").clear()
    browser.find_element("id", "top-k").send_keys("50")
    assert "Approximate" not in caption.text and "keeps 50 of 50,257 tokens" in caption.text


def test_a_long_text_keeps_each_querys_largest_keys_and_a_large_vocabulary_its_ids(browser, tmp_path):
    """Past the limit (here 300 tokens over 80 heads) each query keeps its K largest weights: the page shows those,
    the library's within 8 bits, and nothing else. A vocabulary over 65,536 ids stores them in 4 bytes."""
    from minigpt2 import GPT2Config

    model = GPT2.init(GPT2Config(n_vocab=70_000, n_ctx=300, n_embd=40, n_head=10, n_layer=8), seed=1, std=0.3)
    ids = np.random.default_rng(2).integers(0, 70_000, 300)
    page = model.explore(ids)
    K = page.data["attention"]["keys"]
    assert K < 300 and page.arrays["next_ids"].dtype == np.uint32
    browser.switch_to.default_content()
    browser.get(page.save(tmp_path / "long.html").as_uri())
    _, acts = model.run_with_activations(ids, names="blocks.*.attn.pattern")
    for layer, head in ((0, 0), (7, 9)):
        shown = np.array(browser.execute_script("return explorer.attention(arguments[0], arguments[1])", layer, head))
        true = acts[f"blocks.{layer}.attn.pattern"][head]
        for t in (0, 3, 150, 299):
            kept = np.argsort(-true[t], kind="stable")[:K]
            assert np.abs(shown[t, kept] - true[t, kept]).max() <= STEP
            assert (shown[t] > 0).sum() <= K and not shown[t, t + 1:].any()
    top = np.argsort(-(logits := model(ids))[299], kind="stable")[:3]
    assert [label for label, _ in browser.execute_script("return explorer.next(299, {top_k: 3})")] == \
        [f"#{i}" for i in top]
    assert logits.shape[-1] == 70_000 and errors_logged(browser) == []
