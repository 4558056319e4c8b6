"""Task files: which tokens are scored, the run's order, scoring against transformers in float64, fine-tuning."""

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minigpt2 import GPT2, GPT2Config, Tokenizer
from minigpt2.decoding import greedy_continuations
from minigpt2.evaluate import continuation_logprobs, log_likelihood, score_task_file
from minigpt2.params import flatten
from minigpt2.tasks import encode_example, examples_at, is_task_file, pad_batch, read_task_file
from minigpt2.train import TrainConfig, step_gradient, train

from .conftest import require
from .reference import hf_model

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train("the film was good; the film was bad. a dull plot, a fine cast! 0123456789=", 257 + 41,
                           progress=False)  # every merge the text allows


@pytest.fixture(scope="module")
def model(tok):
    # large weights: attention far from uniform, greedy decoding not stuck on one token
    return GPT2.init(GPT2Config(n_vocab=tok.n_vocab, n_ctx=48, n_embd=32, n_head=4, n_layer=2), seed=2, std=0.3)


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


# --- the rule: what is scored ------------------------------------------------------------------------


def test_only_the_completion_and_the_final_endoftext_are_scored(tok):
    a = encode_example(tok, "the film was", " good")
    b = encode_example(tok, "a dull plot, a fine cast! the film was", " bad. a dull plot")
    inputs, targets = pad_batch([a, b])
    for row, e in enumerate((a, b)):
        prompt, completion = tok.encode("the film was" if row == 0 else "a dull plot, a fine cast! the film was"), \
            tok.encode(" good" if row == 0 else " bad. a dull plot")
        assert e.tokens.tolist() == prompt + completion + [tok.eot_id]
        scored = targets[row][targets[row] >= 0].tolist()
        assert scored == completion + [tok.eot_id], "every completion token, then <|endoftext|>, nothing else"
        first = np.flatnonzero(targets[row] >= 0)[0]
        assert first == len(prompt) - 1, "the first completion token is predicted from the prompt's last position"
        assert inputs[row, : len(e.tokens) - 1].tolist() == e.tokens[:-1].tolist()
    assert inputs.shape == targets.shape == (2, len(b.tokens) - 1), "right-padded to the longest"


def test_an_empty_prompt_conditions_on_endoftext(tok):
    e = encode_example(tok, "", " good")
    assert e.tokens.tolist() == [tok.eot_id] + tok.encode(" good") + [tok.eot_id] and e.n_prompt == 1


def test_padding_and_prompt_get_no_gradient(tok, model):
    """Perturbing the padding's ids changes nothing; the loss is the mean over the completion tokens alone."""
    examples = [encode_example(tok, "the film was", " good"), encode_example(tok, "a dull plot, the film", " was bad")]
    inputs, targets = pad_batch(examples)
    loss, grads = model.loss_and_grads(inputs, targets)
    noisy = inputs.copy()
    short = len(examples[0].tokens) - 1
    noisy[0, short:] = np.random.default_rng(0).integers(0, tok.n_vocab, inputs.shape[1] - short)
    loss2, grads2 = model.loss_and_grads(noisy, targets)
    assert loss2 == pytest.approx(loss, rel=1e-6)
    for name, g in flatten(grads).items():
        np.testing.assert_allclose(flatten(grads2)[name], g, rtol=1e-5, atol=1e-7, err_msg=name)
    # the loss by hand from the full logits, over the completion positions only
    logits = model(inputs).astype(np.float64)  # [B, T, V]
    logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
        - logits.max(-1, keepdims=True)
    picked = [logp[b, t, targets[b, t]] for b, t in zip(*np.nonzero(targets >= 0))]
    assert loss == pytest.approx(-np.mean(picked), rel=1e-5)


def test_each_epoch_visits_every_example_once_and_the_stream_is_a_function_of_position():
    n, seed = 13, 4
    stream = examples_at(0, 3 * n, n, seed)
    for epoch in range(3):
        assert sorted(stream[epoch * n : (epoch + 1) * n]) == list(range(n))
    assert stream[:n] != stream[n : 2 * n], "a new order each epoch"
    assert examples_at(7, 20, n, seed) == stream[7:27], "any window of the stream, drawn from its position alone"


# --- scoring against transformers in float64 ---------------------------------------------------------


def hf_logprobs(model, ids):
    """log P of every next token under transformers' GPT-2 in float64: [T] ids -> [T, V]."""
    torch = require("torch")
    hf = hf_model(model).to(torch.float64)
    with torch.no_grad():
        logits = hf(torch.tensor([ids])).logits[0]
    return torch.log_softmax(logits, -1).numpy()


@pytest.mark.reference
def test_a_task_files_nll_equals_transformers_in_float64(tok, model, tmp_path):
    rows = [{"prompt": "the film was", "completion": " good"}, {"prompt": "a dull plot", "completion": ", a fine cast!"},
            {"prompt": "", "completion": "the film"}, {"prompt": "0123", "completion": "456789="}]
    got = score_task_file(model, tok, write_jsonl(tmp_path / "t.jsonl", rows), batch_size=3)
    total, count = 0.0, 0
    for r in rows:
        prompt = tok.encode(r["prompt"]) or [tok.eot_id]
        scored = tok.encode(r["completion"]) + [tok.eot_id]
        lp = hf_logprobs(model, prompt + scored)
        total -= sum(lp[len(prompt) - 1 + i, t] for i, t in enumerate(scored))
        count += len(scored)
    assert got["examples"] == 4 and got["tokens"] == count
    assert got["nll"] == pytest.approx(total / count, rel=1e-5)
    assert got["perplexity"] == pytest.approx(np.exp(total / count), rel=1e-5)


@pytest.mark.reference
def test_accuracy_picks_the_choice_transformers_gives_the_largest_log_probability(tok, model, tmp_path):
    rng = np.random.default_rng(0)
    words = [" good", " bad", " dull", " fine", " film was", " plot, a cast", "!"]
    rows, expected, expected_norm = [], [], []
    for i in range(24):
        choices = [str(c) for c in rng.choice(words, size=3, replace=False)] if i % 2 else [" good", " bad"]
        prompt = " ".join(rng.choice(["the", "film", "was", "a", "plot"], size=rng.integers(1, 6)))
        rows.append({"prompt": prompt, "choices": choices, "answer": int(rng.integers(len(choices)))})
        ctx = tok.encode(prompt)
        sums = []
        for c in choices:
            ids = tok.encode(c)
            lp = hf_logprobs(model, ctx + ids)
            sums.append(sum(lp[len(ctx) - 1 + k, t] for k, t in enumerate(ids)))
        expected.append(int(np.argmax(sums)) == rows[-1]["answer"])
        expected_norm.append(int(np.argmax([s / len(c.encode()) for s, c in zip(sums, choices)])) == rows[-1]["answer"])
        if i < 3:
            for c, s in zip(choices, sums):
                assert log_likelihood(model, tok, prompt, c) == pytest.approx(s, rel=1e-5)
    got = score_task_file(model, tok, write_jsonl(tmp_path / "c.jsonl", rows), batch_size=5)
    assert got == {"examples": 24, "accuracy": np.mean(expected), "accuracy_norm": np.mean(expected_norm)}
    assert 0 < got["accuracy"] < 1, "a test that can fail either way"


def test_batching_and_sharing_the_prompt_do_not_change_log_probabilities(tok, model):
    requests = [(tok.encode("the film was"), [tok.encode(" good"), tok.encode(" bad")]),  # one token each: shared
                (tok.encode("a dull"), [tok.encode(" plot, a fine cast"), tok.encode("!")]),
                (tok.encode("0123"), [tok.encode("45")])]
    together = continuation_logprobs(model, requests, batch_size=8)
    alone = [continuation_logprobs(model, [r], batch_size=1)[0] for r in requests]
    np.testing.assert_allclose(np.concatenate(together), np.concatenate(alone), rtol=1e-5)
    full = [log_likelihood(model, tok, "the film was", c) for c in (" good", " bad")]
    np.testing.assert_allclose(together[0], full, rtol=1e-6)


def test_batched_greedy_continuations_equal_one_at_a_time_generation(tok, model):
    prompts = [tok.encode(p) for p in ("the film", "a dull plot, a fine", "0", "the film was good; the")]
    got = greedy_continuations(model, prompts, [6, 3, 8, 5], eot_id=tok.eot_id, batch_size=3)
    for p, n, g in zip(prompts, [6, 3, 8, 5], got):
        assert g == model.generate(p, n, temperature=0, eot_id=tok.eot_id)


# --- fine-tuning on a task ------------------------------------------------------------------------------


def sorting_rows(n, seed):
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        d = rng.integers(0, 10, 6)
        rows.append({"prompt": "".join(map(str, d)) + "=", "completion": "".join(map(str, np.sort(d)))})
    return rows


@pytest.fixture(scope="module")
def sorting(tmp_path_factory):
    d = tmp_path_factory.mktemp("sorting")
    write_jsonl(d / "train.jsonl", sorting_rows(3000, 0))
    write_jsonl(d / "val.jsonl", sorting_rows(200, 1))
    Tokenizer.train("0123456789=", 257, progress=False).save(d / "vocab")  # bytes: one token per digit
    return d


def sorting_run(d: Path, out: Path, **kw) -> TrainConfig:
    settings = dict(data=str(d / "train.jsonl"), val_data=str(d / "val.jsonl"), out=str(out), init="scratch",
                    n_layer=2, n_head=4, n_embd=64, tokenizer=str(d / "vocab"), block_size=16, batch_size=32,
                    steps=600, lr=3e-3, eval_every=200, save_every=200, seed=0)
    settings.update(kw)
    return TrainConfig(**settings)


@pytest.mark.slow
def test_a_model_trained_from_scratch_sorts_held_out_digits(sorting, tmp_path):
    model = train(sorting_run(sorting, tmp_path / "sort"), progress=False)
    log = [json.loads(line) for line in (tmp_path / "sort" / "log.jsonl").read_text().splitlines()]
    steps = [r for r in log if "loss" in r]
    assert steps[-1]["epoch"] == pytest.approx(600 * 32 / 3000)
    tok = Tokenizer.from_pretrained(tmp_path / "sort")
    scores = score_task_file(model, tok, sorting / "val.jsonl")
    assert scores["exact_match"] >= 0.95, scores
    assert [r["val_loss"] for r in log if "val_loss" in r][-1] == pytest.approx(scores["nll"], rel=1e-4), \
        "val_loss is the NLL per scored token of the whole validation file"


def test_grad_accum_equals_one_larger_batch(tok, model):
    """Examples of unequal length: the step's loss and gradient are the mean over all its scored tokens."""
    examples = [encode_example(tok, "the film" * (1 + i % 4), " was good" * (1 + i % 3)) for i in range(8)]
    whole = step_gradient([pad_batch(examples)], True, model.params, model.config)
    parts = step_gradient([pad_batch(examples[i : i + 2]) for i in range(0, 8, 2)], True, model.params, model.config)
    assert parts[0] == pytest.approx(whole[0], rel=1e-6)
    for name, g in flatten(whole[1]).items():
        np.testing.assert_allclose(flatten(parts[1])[name], g, rtol=1e-4, atol=1e-6 * np.abs(g).max(), err_msg=name)
    mean_of_means = np.mean([model.loss(*pad_batch(examples[i : i + 2])) for i in range(0, 8, 2)])
    assert abs(mean_of_means - whole[0]) > 1e-3, "the examples' lengths differ enough to tell the two rules apart"


def cli(*args):
    return [sys.executable, "-m", "minigpt2.train", *args]


def test_a_killed_task_run_with_dropout_resumes_bit_exact(sorting, tmp_path):
    from .test_train import wait_for_step, weights

    args = ["--data", str(sorting / "train.jsonl"), "--init", "scratch", "--n-layer", "2", "--n-head", "2",
            "--n-embd", "32", "--tokenizer", str(sorting / "vocab"), "--block-size", "16", "--batch-size", "16",
            "--steps", "200", "--lr", "3e-3", "--eval-every", "50", "--save-every", "7", "--dropout", "0.2"]
    whole = subprocess.run(cli(*args, "--out", str(tmp_path / "whole")), capture_output=True, cwd=REPO)
    assert whole.returncode == 0, whole.stderr.decode()
    proc = subprocess.Popen(cli(*args, "--out", str(tmp_path / "killed")), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_for_step(tmp_path / "killed", 100, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumed = subprocess.run(cli("--out", str(tmp_path / "killed"), "--resume"), capture_output=True, cwd=REPO)
    assert resumed.returncode == 0, resumed.stderr.decode()
    a, b = weights(tmp_path / "whole"), weights(tmp_path / "killed")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    logs = [[{k: v for k, v in json.loads(line).items() if k != "tokens_per_s"}
             for line in (tmp_path / d / "log.jsonl").read_text().splitlines() if "summary" not in line]
            for d in ("whole", "killed")]
    assert logs[0] == logs[1]
    train(TrainConfig(data=str(sorting / "train.jsonl"), out=str(tmp_path / "plain"), init="scratch",
                                   n_layer=2, n_head=2, n_embd=32, tokenizer=str(sorting / "vocab"), block_size=16,
                                   batch_size=16, steps=3, lr=3e-3, eval_every=50, save_every=7), progress=False)
    first = [json.loads(line) for line in (tmp_path / "plain" / "log.jsonl").read_text().splitlines()][1]
    assert first["loss"] != logs[0][1]["loss"], "dropout was on (the same first batch, another loss)"


# --- bad input ----------------------------------------------------------------------------------------


BAD = [
    (["{'prompt': 'x'}"], "line 1: not JSON"),
    (['["prompt", "completion"]'], "line 1: a JSON list, expected an object"),
    (['{"prompt": "a", "completion": "b"}', '{"completion": "b"}'], "line 2: no \"prompt\" field"),
    (['{"prompt": "a"}'], "line 1: no \"completion\" field"),
    (['{"prompt": 3, "completion": "b"}'], "line 1: \"prompt\" is a number, expected a string"),
    (['{"prompt": "a", "completion": null}'], "line 1: \"completion\" is a null, expected a string"),
    (['{"prompt": "a", "completion": ""}'], "line 1: the completion is empty"),
    (['{"prompt": "a", "choices": ["x", "y"], "answer": 2}'], "line 1: \"answer\" 2 is out of range for 2 choices"),
    (['{"prompt": "a", "choices": ["x", 1], "answer": 0}'], "line 1: choice 1 is a number"),
    (['{"prompt": "a", "choices": "xy", "answer": 0}'], "line 1: \"choices\" must be a non-empty list"),
    (['{"prompt": "a", "choices": ["x"]}'], "line 1: no \"answer\" field"),
    (['{"prompt": "a", "completion": "b"}', '{"prompt": "a", "choices": ["x"], "answer": 0}'],
     "line 2: a prompt \\+ choices \\+ answer row, but line 1 is a prompt \\+ completion row"),
    ([], "is empty: it holds no examples"),
    (["", "  "], "is empty: it holds no examples"),
]


@pytest.mark.parametrize("lines, message", BAD)
def test_bad_task_files_are_named_by_file_and_line(tmp_path, lines, message):
    path = write_jsonl(tmp_path / "bad.jsonl", lines)
    with pytest.raises(ValueError, match=message) as e:
        read_task_file(path)
    assert "bad.jsonl" in str(e.value)


def one_line(r, code=2):
    err = r.stderr.decode().strip()
    assert r.returncode == code and "Traceback" not in err, err
    return err.splitlines()[-1]


@pytest.mark.parametrize("lines, message", [BAD[0], BAD[6], BAD[7], BAD[12]])
def test_bad_task_files_exit_2_in_both_command_lines_and_nothing_is_written(sorting, tmp_path, lines, message):
    path = write_jsonl(tmp_path / "bad.jsonl", lines)
    out = tmp_path / "run"
    r = subprocess.run(cli("--data", str(path), "--out", str(out), "--init", "scratch", "--tokenizer",
                           str(sorting / "vocab"), "--n-layer", "1", "--n-embd", "8", "--n-head", "2"),
                       capture_output=True, cwd=REPO)
    assert re.search(message, one_line(r)) and "bad.jsonl" in one_line(r)
    assert not out.exists(), "nothing written into --out before the data is known good"
    GPT2.init(GPT2Config(n_vocab=257, n_ctx=16, n_embd=8, n_head=2, n_layer=1)).save(
        tmp_path / "m", Tokenizer.from_dir(sorting / "vocab"))
    r = subprocess.run([sys.executable, "-m", "minigpt2.evaluate", str(path), "--model", str(tmp_path / "m")],
                       capture_output=True, cwd=REPO)
    assert re.search(message, one_line(r)) and "bad.jsonl" in one_line(r)


def test_training_refuses_what_it_cannot_train_on(sorting, tmp_path):
    long = write_jsonl(tmp_path / "long.jsonl", [{"prompt": "1=", "completion": "1"}] * 3 +
                       [{"prompt": "12345678901234=", "completion": "0112233445566778899"}])
    choice = write_jsonl(tmp_path / "choice.jsonl", [{"prompt": "1=", "choices": ["1", "2"], "answer": 0}])
    base = ["--out", str(tmp_path / "run"), "--init", "scratch", "--tokenizer", str(sorting / "vocab"), "--n-layer",
            "1", "--n-embd", "8", "--n-head", "2", "--block-size", "16"]
    r = subprocess.run(cli("--data", str(long), *base), capture_output=True, cwd=REPO)
    assert "long.jsonl line 4: the example is 35 tokens" in one_line(r) and "--block-size + 1 = 17" in one_line(r)
    r = subprocess.run(cli("--data", str(choice), *base), capture_output=True, cwd=REPO)
    assert "multiple-choice rows" in one_line(r)
    r = subprocess.run(cli("--data", str(sorting / "train.jsonl"), "--val-data", str(sorting / "vocab" / "x.txt"),
                           *base), capture_output=True, cwd=REPO)
    assert "--val-data" in one_line(r) and "kind" in one_line(r)
    r = subprocess.run(cli("--data", str(sorting / "train.jsonl"), "--dropout", "1", *base), capture_output=True,
                       cwd=REPO)
    assert "--dropout must be a probability in [0, 1), got 1.0" in one_line(r)
    assert not (tmp_path / "run").exists()


def test_json_lines_under_another_name_are_task_rows_and_other_json_is_refused(sorting, tmp_path):
    rows = [{"prompt": "21=", "completion": "12"}, {"prompt": "31=", "completion": "13"}] * 8
    named_json = write_jsonl(tmp_path / "rows.json", rows)  # JSON lines, named .json
    assert is_task_file(named_json) and is_task_file(write_jsonl(tmp_path / "rows.txt", rows))
    base = ["--init", "scratch", "--tokenizer", str(sorting / "vocab"), "--n-layer", "1", "--n-embd", "8",
            "--n-head", "2", "--block-size", "16", "--steps", "2", "--batch-size", "4", "--eval-batches", "1"]
    r = subprocess.run(cli("--data", str(named_json), "--out", str(tmp_path / "run"), *base), capture_output=True,
                       cwd=REPO)
    assert r.returncode == 0, r.stderr.decode()
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert any("epoch" in x for x in log), "trained as a task file (epochs of examples), not as text"
    r = subprocess.run([sys.executable, "-m", "minigpt2.evaluate", str(named_json), "--model", str(tmp_path / "run"),
                        "--json"], capture_output=True, cwd=REPO)
    assert "exact_match" in json.loads(r.stdout), "scored as a task file, not as text's perplexity"
    array = tmp_path / "rows-array.json"
    array.write_text(json.dumps(rows, indent=1))  # a JSON array: not one object per line
    r = subprocess.run(cli("--data", str(array), "--out", str(tmp_path / "run2"), *base), capture_output=True,
                       cwd=REPO)
    assert "rows-array.json is a .json file but not a task file" in one_line(r) and ".jsonl" in one_line(r)
    assert not (tmp_path / "run2").exists()
