"""The zero-shot benchmarks against lm-evaluation-harness itself: its own task files (lambada_openai, wikitext,
hellaswag) pointed at local copies of the data, its Hugging Face backend loading the model minigpt2 exported,
on documents from ../shared/data/eval. Per document: the same log-likelihoods (1e-4 relative), the same
greedy and accuracy decisions wherever the margin exceeds 1e-4; the same aggregate figures."""

from __future__ import annotations

import bz2
import re
import json
import math

import numpy as np
import pytest

from minigpt2 import GPT2, GPT2Config, Tokenizer
from minigpt2.evaluate import datasets
from minigpt2.evaluate.loglikelihood import loglikelihoods, rolling_windows
from minigpt2.evaluate.zeroshot import harness_pair, lambada_split, zero_shot

from . import harness
from .conftest import SHARED, require

EVAL = SHARED / "data" / "eval"
N_LAMBADA, N_ARTICLES, N_HELLASWAG = 24, 3, 24  # documents sampled for the suite (the whole sets: scripts/bench.py)


def eval_file(name: str):
    path = EVAL / name
    if not path.exists():
        pytest.skip(f"{path} not found (the evaluation sets ship beside the repository in ../shared/data/eval)")
    return path


def run_harness(model_dir, task: str, data_file, split: str) -> tuple[dict, list[dict]]:
    """lm-evaluation-harness's own task on a local data file, its hf backend on the model (tests/harness.py)."""
    require("lm_eval")
    return harness.run_harness(model_dir, task, data_file, split)


@pytest.fixture(scope="module")
def spread(vocab_dir, tmp_path_factory):
    """A small GPT-2 with GPT-2's vocabulary, spread weights and a 64-token context (so that LAMBADA's passages
    are truncated and WikiText's articles take many rolling windows), exported for the harness."""
    tok = Tokenizer.from_dir(vocab_dir)
    model = GPT2.init(GPT2Config(n_ctx=64, n_embd=32, n_head=4, n_layer=2), seed=3, std=0.2)
    out = tmp_path_factory.mktemp("spread")
    model.save(out, tok, format="huggingface")
    return model, tok, out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The bundled model (trained weights, its own vocabulary, 128-token context), exported for the harness."""
    model, tok = GPT2.from_pretrained("tiny"), Tokenizer.from_pretrained("tiny")
    out = tmp_path_factory.mktemp("tiny")
    model.save(out, tok, format="huggingface")
    return model, tok, out


def write_jsonl(path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def same_decisions(mine: list[bool], theirs: list[bool], margins: list[float]) -> None:
    """Decisions agree on every document whose margin exceeds 1e-4."""
    for i, (a, b, m) in enumerate(zip(mine, theirs, margins)):
        assert a == b or m <= 1e-4, f"document {i}: minigpt2 decides {a}, the harness {b} (margin {m:.2e})"


def greedy_margin(model, context: list[int], continuation: list[int]) -> float:
    """The smallest gap, over the continuation's tokens, between the largest logit and the next."""
    tokens = (context + continuation)[-(model.config.n_ctx + 1):]
    logits = model(tokens[:-1])[-len(continuation):]  # [k, V]
    top2 = np.sort(logits, axis=-1)[:, -2:]
    return float((top2[:, 1] - top2[:, 0]).min())


# --- LAMBADA ----------------------------------------------------------------------------------------


def greedy_passages(model, tok, n: int) -> list[str]:
    """Passages whose last word the model itself writes greedily: prompts continued by their greedy words, so
    that some targets really are the argmax (real LAMBADA passages on a small model almost never are)."""
    prompts = ["The function returns", "If the argument is", "This module provides", "The default value of",
               "A new list is", "Return the number of"][:n]
    out = []
    for p in prompts:
        text = p + tok.decode(model.generate(tok.encode(p), 12, temperature=0))
        words = [w for w in text.split(" ") if w.strip()]
        out.append(" ".join(words[:-1]) if len(words) > 4 else text)
    return out


@pytest.mark.reference
@pytest.mark.parametrize("which", ["spread", "tiny"])
def test_lambada_equals_the_harness_per_passage(which, request, tmp_path):
    model, tok, model_dir = request.getfixturevalue(which)
    texts = datasets.read_lambada(eval_file("lambada_test.jsonl"))[:N_LAMBADA]
    if which == "tiny":
        texts += greedy_passages(model, tok, 6)
    data = tmp_path / "lambada.jsonl"
    write_jsonl(data, [{"text": t} for t in texts])
    theirs, samples = run_harness(model_dir, "lambada_openai", data, "test")
    mine = zero_shot(model, tok, "lambada", data, batch_size=8)
    assert [s["target"] for s in samples] == [lambada_split(t)[1] for t in texts]
    lls = [s["continuations"][0]["loglikelihood"] for s in mine.samples]
    np.testing.assert_allclose(lls, [s["resps"][0][0][0] for s in samples], rtol=1e-4)
    requests = [harness_pair(tok, *lambada_split(t)) for t in texts]
    margins = [greedy_margin(model, *r) for r in requests]
    same_decisions([s["acc"] for s in mine.samples], [bool(s["resps"][0][0][1]) for s in samples], margins)
    assert mine.figures["n"] == len(texts)
    assert mine.figures["perplexity"] == pytest.approx(theirs["perplexity"], rel=1e-4)
    if all(m > 1e-4 for m in margins):
        assert mine.figures["acc"] == theirs["acc"]
    if which == "spread":
        assert mine.figures["truncated"] > 0, "passages longer than the 64-token context were scored truncated"
    else:
        assert 0 < mine.figures["acc"] < 1, "some targets are the argmax and some are not: the decision is tested"


# --- WikiText-2 ---------------------------------------------------------------------------------------


def harness_articles(lines: list[str]) -> list[str]:
    """Articles as the harness's dataset (EleutherAI/wikitext_document_level) makes them, written out here from
    its published loading script: a line whose subheading runs are closed up ("= = =" -> "===", "= =" -> "==")
    and that, stripped, starts with "= " and ends with " =" begins a new page."""
    pages, current = [], []
    for line in lines:
        r = line.replace("= = =", "===").replace("= =", "==").strip()
        if r.startswith("= ") and r.endswith(" ="):
            if "\n".join(current).strip():
                pages.append("\n".join(current))
            current = []
        current.append(line)
    pages.append("\n".join(current))
    return pages


@pytest.mark.reference
def test_wikitext_articles_are_the_harness_dataset_s_pages():
    path = eval_file("wikitext-2/test.txt")
    lines = path.read_text(encoding="utf-8").split("\n")
    assert datasets.read_wikitext(path) == harness_articles(lines)
    assert len(datasets.read_wikitext(path)) == 62, "WikiText-2's 62 test articles"


@pytest.mark.reference
def test_wikitext2_equals_the_harness_per_article(spread, tmp_path):
    model, tok, model_dir = spread
    lines = eval_file("wikitext-2/test.txt").read_text(encoding="utf-8").split("\n")
    articles = harness_articles(lines)[:N_ARTICLES]
    data = tmp_path / "wikitext.jsonl"
    write_jsonl(data, [{"page": a} for a in articles])
    theirs, samples = run_harness(model_dir, "wikitext", data, "test")
    # minigpt2 reads the same articles from a WikiText file
    text = tmp_path / "wiki.test.txt"
    text.write_text("\n".join(articles), encoding="utf-8")
    mine = zero_shot(model, tok, "wikitext2", text)
    assert mine.figures["n"] == len(articles)
    np.testing.assert_allclose([s["continuations"][0]["loglikelihood"] for s in mine.samples],
                               [s["word_perplexity"][0] for s in samples], rtol=1e-4)
    assert [s["words"] for s in mine.samples] == [s["word_perplexity"][1] for s in samples]
    assert [s["bytes"] for s in mine.samples] == [s["bits_per_byte"][1] for s in samples]
    for key in ("word_perplexity", "byte_perplexity", "bits_per_byte"):
        assert mine.figures[key] == pytest.approx(theirs[key], rel=1e-4), key
    assert min(s["continuations"][0]["tokens"] for s in mine.samples) > 3 * model.config.n_ctx, "many windows"


def test_rolling_windows_score_every_token_once_with_a_full_context_at_the_end():
    lm_utils = require("lm_eval.utils")
    for n in (1, 5, 63, 64, 65, 127, 128, 129, 300):
        tokens = list(range(1000, 1000 + n))
        s = [7] + tokens
        expected = [lm_utils.make_disjoint_window(w) for w in
                    lm_utils.get_rolling_token_windows(tokens, prefix_token=7, max_seq_len=64, context_len=1)]
        got = rolling_windows(n, 64)
        assert len(got) == len(expected)
        for (begin, end, first), (context, continuation) in zip(got, expected):
            reads = (context + continuation)[-65:][:-1]
            assert s[begin : end - 1] == reads and s[first:end] == continuation


# --- HellaSwag ----------------------------------------------------------------------------------------


def hellaswag_lines() -> list[str]:
    with bz2.open(eval_file("hellaswag_val_full.txt.bz2"), "rt", encoding="utf-8") as f:
        return f.read().split("\n")


def as_json(lines: list[str], n: int) -> list[dict]:
    """llama.cpp's items as HellaSwag's JSON: the context line's activity label before its first ": ", the rest as
    ctx_a (ctx_b empty, as the shared copy has lost the split)."""
    rows = []
    for i in range(n):
        context, label, *endings = lines[6 * i : 6 * i + 6]
        activity, ctx_a = context.split(": ", 1)
        rows.append({"ind": i, "activity_label": activity, "ctx_a": ctx_a, "ctx_b": "", "ctx": ctx_a,
                     "endings": endings, "label": label, "source_id": "", "split": "val", "split_type": "indomain"})
    return rows


@pytest.mark.reference
def test_hellaswag_equals_the_harness_per_item(spread, tmp_path):
    model, tok, model_dir = spread
    lines = hellaswag_lines()
    data = tmp_path / "hellaswag.jsonl"
    write_jsonl(data, as_json(lines, N_HELLASWAG))
    theirs, samples = run_harness(model_dir, "hellaswag", data, "validation")
    llama = tmp_path / "hellaswag.txt"
    llama.write_text("\n".join(lines[: 6 * N_HELLASWAG]) + "\n", encoding="utf-8")
    mine = zero_shot(model, tok, "hellaswag", llama)
    assert datasets.read_hellaswag(llama) == datasets.read_hellaswag(data), "both layouts read as the same items"
    items = datasets.read_hellaswag(data)
    assert [i.query for i in items] == [s["doc"]["query"] for s in samples]
    assert [list(i.endings) for i in items] == [s["doc"]["choices"] for s in samples]
    lls = np.array([[c["loglikelihood"] for c in s["continuations"]] for s in mine.samples])  # [N, 4]
    np.testing.assert_allclose(lls, [[r[0][0] for r in s["resps"]] for s in samples], rtol=1e-4)
    lengths = np.array([[len(e) for e in i.endings] for i in items], dtype=float)
    for key, scores in (("acc", lls), ("acc_norm", lls / lengths)):
        top2 = np.sort(scores, axis=1)[:, -2:]
        same_decisions([s[key] for s in mine.samples], [bool(s[key]) for s in samples], top2[:, 1] - top2[:, 0])
        if (top2[:, 1] - top2[:, 0] > 1e-4).all():
            assert mine.figures[key] == pytest.approx(theirs[key], rel=1e-4)
    assert 0 < mine.figures["acc"] < 1 and mine.figures["n"] == N_HELLASWAG


def test_sharing_a_context_changes_no_score(short_model):
    """The four endings after one cached query score as each ending run whole (the shared path against rows)."""
    rng = np.random.default_rng(0)
    context = rng.integers(0, 300, 9).tolist()
    endings = [rng.integers(0, 300, k).tolist() for k in (1, 4, 2, 7)]
    shared = loglikelihoods(short_model, [(context, e) for e in endings])
    alone = [loglikelihoods(short_model, [(context, e)])[0] for e in endings]
    for (a, ga), (b, gb) in zip(shared, alone):
        assert a == pytest.approx(b, rel=1e-5) and ga == gb
    logits = short_model(context + endings[1])  # [T, V], float32: the textbook sum
    logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) - \
        logits.max(-1, keepdims=True)
    expected = sum(logp[len(context) - 1 + i, t] for i, t in enumerate(endings[1]))
    assert shared[1][0] == pytest.approx(float(expected), rel=1e-5)


# --- the protocols' details ---------------------------------------------------------------------------


def test_harness_pair_moves_trailing_spaces_into_the_continuation(tok):
    context, continuation = harness_pair(tok, "He said  ", "hello")
    assert tok.decode(context) == "He said" and tok.decode(continuation) == "  hello"
    assert context + continuation == tok.encode("He said  hello")


def test_lambada_perplexity_is_exp_of_minus_the_mean_passage_log_likelihood(short_model, tmp_path):
    tok = Tokenizer.train("a b c d e f g h " * 20, 265, progress=False)
    data = tmp_path / "l.jsonl"
    write_jsonl(data, [{"text": "a b c d e"}, {"text": "b c d e f g"}])
    r = zero_shot(short_model, tok, "lambada", data)
    lls = [s["continuations"][0]["loglikelihood"] for s in r.samples]
    assert r.figures["perplexity"] == pytest.approx(math.exp(-np.mean(lls)), rel=1e-12)
    assert r.figures["acc"] == np.mean([s["acc"] for s in r.samples])


# --- the data's downloads, against a local server -------------------------------------------------------


@pytest.fixture
def data_server(tmp_path, monkeypatch):
    """A local server standing in for the three hosts, an empty cache, no waiting between retries."""
    from minigpt2 import download as dl

    from .httpserver import FileServer

    monkeypatch.setattr(dl, "BACKOFF_SECONDS", 0.0)
    monkeypatch.setattr(dl, "RETRIES", 1)
    monkeypatch.setenv("MINIGPT2_HOME", str(tmp_path / "cache"))
    with FileServer() as server:
        monkeypatch.setenv("MINIGPT2_BASE_URL", server.url)
        monkeypatch.setattr(datasets, "WIKITEXT2_URL", f"{server.url}/wikitext-2-raw-v1.zip")
        monkeypatch.setattr(datasets, "HELLASWAG_URL", f"{server.url}/hellaswag_val.jsonl")
        yield server


def serve(server, monkeypatch, name: str, body: bytes, published: bytes | None = None) -> str:
    """Serve `body` as benchmark `name`'s file; its published hash is that of `published` (default: body)."""
    import hashlib

    path = {"lambada": "/data/lambada_test.jsonl", "wikitext2": "/wikitext-2-raw-v1.zip",
            "hellaswag": "/hellaswag_val.jsonl"}[name]
    server.files[path] = body
    if name != "lambada":  # LAMBADA's hash is the real file's: serve the real file for it
        attr = {"wikitext2": "WIKITEXT2_SHA256", "hellaswag": "HELLASWAG_SHA256"}[name]
        monkeypatch.setattr(datasets, attr, hashlib.sha256(published or body).hexdigest())
    return path


def run_evaluate(capsys, *argv) -> tuple[int, str, str]:
    from minigpt2.evaluate.__main__ import evaluate_main

    code = evaluate_main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("minigpt2-evaluate")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def cache_files(tmp_path) -> list[str]:
    data = tmp_path / "cache" / "data"
    return sorted(p.name for p in data.iterdir() if not p.name.endswith(".lock")) if data.exists() else []


@pytest.mark.reference
def test_lambada_downloads_once_checked_and_scores(data_server, monkeypatch, capsys, tmp_path):
    real = eval_file("lambada_test.jsonl").read_bytes()
    path = serve(data_server, monkeypatch, "lambada", real)
    code, out, _ = run_evaluate(capsys, "lambada", "--model", "tiny", "--limit", "3", "--json")
    assert code == 0
    figures = json.loads(out)
    assert figures["task"] == "lambada" and figures["n"] == 3 and 0 <= figures["acc"] <= 1
    assert cache_files(tmp_path) == ["lambada_test.jsonl"]
    assert (tmp_path / "cache" / "data" / "lambada_test.jsonl").read_bytes() == real
    run_evaluate(capsys, "lambada", "--model", "tiny", "--limit", "2")
    assert [p for p, _ in data_server.requests] == [path], "the second run reads the cache"


@pytest.mark.parametrize("fault", ["404", "checksum", "truncated body", "connection cut short"])
def test_a_failed_download_is_one_line_naming_the_url_and_leaves_nothing(data_server, monkeypatch, capsys,
                                                                         tmp_path, fault):
    body = "".join(json.dumps({"text": f"passage number {i}"}) + "\n" for i in range(50)).encode()
    path = serve(data_server, monkeypatch, "hellaswag", body)
    if fault == "404":
        data_server.faults[path] = ["404"] * 3
    elif fault == "checksum":
        data_server.files[path] = body.replace(b"number", b"NUMBER")
    elif fault == "truncated body":  # a complete answer of a file cut short: only the hash can tell
        data_server.files[path] = body[: len(body) // 2]
    else:
        data_server.faults[path] = ["short"] * 3
    code, _, err = run_evaluate(capsys, "hellaswag", "--model", "tiny")
    assert code == 2
    line = one_line(err)
    assert f"{data_server.url}{path}" in line
    assert ("HTTP 404" in line) if fault == "404" else True
    assert ("sha256" in line) if fault in ("checksum", "truncated body") else True
    assert cache_files(tmp_path) == [], "nothing half-written, nothing unchecked, left in the cache"


def test_wikitext2_is_read_inside_its_downloaded_archive(data_server, monkeypatch, capsys, tmp_path, spread):
    import io
    import zipfile

    pages = harness_articles(eval_file("wikitext-2/test.txt").read_text(encoding="utf-8").split("\n"))[:2]
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("wikitext-2-raw/wiki.train.raw", " = Other = \n text \n")
        z.writestr("wikitext-2-raw/wiki.test.raw", "\n".join(pages))
    serve(data_server, monkeypatch, "wikitext2", archive.getvalue())
    model, tok, model_dir = spread
    code, out, err = run_evaluate(capsys, "wikitext2", "--model", str(model_dir), "--json")
    assert code == 0, err
    figures = json.loads(out)
    text = tmp_path / "wiki.txt"
    text.write_text("\n".join(pages), encoding="utf-8")
    assert figures["n"] == 2
    assert figures["word_perplexity"] == pytest.approx(zero_shot(model, tok, "wikitext2", text).figures[
        "word_perplexity"], rel=1e-6)


# --- the command line's bad input -----------------------------------------------------------------------


@pytest.mark.parametrize("argv, message", [
    (["lambda"], r"lambda is neither a file nor a benchmark \(the benchmarks: lambada, wikitext2, hellaswag\)"),
    (["{d}/x.jsonl", "--task", "squad"], "--task 'squad' is not a benchmark: the known ones are lambada, wikitext2"),
    (["{d}/l.jsonl", "--task", "lambada", "--limit", "0"], "--limit must be a positive number"),
    (["{d}/l.jsonl", "--task", "lambada", "--limit", "-3"], "--limit must be a positive number"),
    (["{d}/h.txt", "--task", "hellaswag"], "h.txt line 2: expected the label of the item starting on line 1, 0 to 3"),
    (["{d}/h.jsonl", "--task", "hellaswag"], "h.jsonl line 1: expected a HellaSwag item with activity_label"),
    (["{d}/l.jsonl", "--task", "lambada", "--log-samples", "{d}"], "--log-samples .* is a directory"),
    (["{d}/w.txt", "--task", "wikitext2"], "w.txt: expected WikiText, articles each starting with a ' = Title = '"),
    (["{d}/bad.jsonl", "--task", "lambada"], "bad.jsonl line 2: expected a LAMBADA passage"),
    (["{d}/a.txt", "--limit", "5"], "--limit applies to benchmarks"),
])
def test_bad_benchmark_input_is_one_line_and_exit_2(tmp_path, capsys, argv, message):
    (tmp_path / "l.jsonl").write_text('{"text": "a b c"}\n')
    (tmp_path / "bad.jsonl").write_text('{"text": "a b c"}\n["not", "an", "object"]\n')
    (tmp_path / "h.txt").write_text("Ctx: a man\nfour\na\nb\nc\nd\n")
    (tmp_path / "h.jsonl").write_text('{"activity_label": "x", "ctx_a": "y", "ctx_b": "", "endings": ["a"], '
                                      '"label": 0}\n')
    (tmp_path / "w.txt").write_text("just some text\nwith no titles\n")
    (tmp_path / "a.txt").write_text("text")
    code, _, err = run_evaluate(capsys, *[a.format(d=tmp_path) for a in argv], "--model", "tiny")
    assert code == 2
    assert re.search(message, one_line(err)), err


def test_truncation_is_said_and_counted(tmp_path, capsys):
    long = " ".join(["word"] * 400)
    (tmp_path / "l.jsonl").write_text(json.dumps({"text": long}) + "\n" + json.dumps({"text": "a short one"}) + "\n")
    out = tmp_path / "samples.jsonl"
    code, stdout, err = run_evaluate(capsys, str(tmp_path / "l.jsonl"), "--task", "lambada", "--model", "tiny",
                                     "--log-samples", str(out))
    assert code == 0
    assert "1 of 2 passages are longer than the model's context (128 tokens) and were scored left-truncated" in err
    assert stdout.startswith("lambada: 2 passages, acc ")
    samples = [json.loads(line) for line in out.read_text().splitlines()]
    assert [s["doc_id"] for s in samples] == [0, 1] and samples[0]["gold"] == " word"
    assert set(samples[0]["continuations"][0]) == {"text", "loglikelihood", "tokens", "is_greedy"}


def test_the_last_block_at_the_read_positions_alone_equals_the_whole_forward(short_model):
    from minigpt2.evaluate.loglikelihood import states_at
    from minigpt2.model import transformer

    ids = np.random.default_rng(1).integers(0, 300, (3, 20))
    where = np.array([[0, 19], [0, 5], [1, 0], [2, 11], [2, 12]])
    whole = transformer(ids, short_model.params, short_model.config)[tuple(where.T)]  # [N, C]
    np.testing.assert_allclose(states_at(short_model, ids, where), whole, rtol=1e-5, atol=1e-6)


def test_a_continuation_longer_than_the_context_is_scored_on_what_the_model_can_read(short_model):
    """The harness refuses it; minigpt2 scores its last n_ctx tokens (with their own context) and says so."""
    rng = np.random.default_rng(2)
    context, continuation = rng.integers(0, 300, 5).tolist(), rng.integers(0, 300, 40).tolist()  # n_ctx 32
    (ll, _), = loglikelihoods(short_model, [(context, continuation)])
    tokens = (context + continuation)[-33:]
    logits = short_model(tokens[:-1]).astype(np.float64)  # [32, V]
    logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) - \
        logits.max(-1, keepdims=True)
    assert ll == pytest.approx(float(sum(logp[i, t] for i, t in enumerate(tokens[1:]))), rel=1e-5)
