"""Training: AdamW and clipping against PyTorch, learning, checkpoints that survive a kill, the CLI's faults."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from minigpt2 import GPT2, GPT2Config, Tokenizer
from minigpt2.files import CONVERTED_FILE
from minigpt2.optim import AdamW, clip_grad_norm, learning_rate
from minigpt2.params import flatten
from minigpt2.safetensors import read_safetensors
from minigpt2.train import TrainConfig, train

from .conftest import require

REPO = Path(__file__).resolve().parents[1]


# --- the optimizer against torch ------------------------------------------------------------------


def test_adamw_and_clipping_equal_torch_over_25_steps():
    torch = require("torch")
    rng = np.random.default_rng(0)
    params = {"w": rng.standard_normal((6, 4)).astype(np.float32), "emb": rng.standard_normal((5, 3)).astype(np.float32),
              "b": rng.standard_normal(6).astype(np.float32), "g": np.ones(4, np.float32)}
    theirs = {k: torch.nn.Parameter(torch.from_numpy(v.copy())) for k, v in params.items()}
    groups = [{"params": [theirs["w"], theirs["emb"]], "weight_decay": 0.1},  # nanoGPT's two groups
              {"params": [theirs["b"], theirs["g"]], "weight_decay": 0.0}]
    torch_opt = torch.optim.AdamW(groups, lr=1e-2, betas=(0.9, 0.95), eps=1e-8)
    ours = AdamW(params, lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    for step in range(25):
        lr = learning_rate(step, 1e-2, 5, 25)
        grads = {k: (rng.standard_normal(v.shape) * (3.0 if step % 4 == 0 else 0.05)).astype(np.float32)
                 for k, v in params.items()}  # some steps clip, some do not
        for k, p in theirs.items():
            p.grad = torch.from_numpy(grads[k].copy())
        their_norm = torch.nn.utils.clip_grad_norm_(list(theirs.values()), 1.0)
        our_norm = clip_grad_norm(grads, 1.0)
        assert our_norm == pytest.approx(float(their_norm), rel=1e-5)
        for group in torch_opt.param_groups:
            group["lr"] = lr
        torch_opt.step()
        ours.step(grads, lr)
    for k, v in params.items():
        np.testing.assert_allclose(v, theirs[k].detach().numpy(), rtol=1e-5, atol=1e-7, err_msg=k)


def test_optimizer_state_round_trips_exactly():
    rng = np.random.default_rng(1)
    a = {"w": rng.standard_normal((3, 3)).astype(np.float32)}
    b = {"w": a["w"].copy()}
    opt_a = AdamW(a, lr=0.1)
    grads = [{"w": rng.standard_normal((3, 3)).astype(np.float32)} for _ in range(4)]
    for g in grads[:2]:
        opt_a.step(g)
    b["w"][...] = a["w"]
    opt_b = AdamW(b, lr=0.5)
    opt_b.load_state_dict(*opt_a.state_dict())
    for g in grads[2:]:
        opt_a.step(g)
        opt_b.step(g)
    np.testing.assert_array_equal(a["w"], b["w"])


def test_schedule_warms_up_then_decays_to_min_lr():
    lrs = [learning_rate(s, 1.0, 10, 100, 0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == 1.0 and lrs[-1] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])), "non-increasing after warmup"
    assert learning_rate(99, 1.0, 10, 100) == pytest.approx(0.1), "min_lr defaults to lr / 10"


# --- learning -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pattern_data(tmp_path_factory):
    """A deterministic text and a small vocabulary of its own."""
    d = tmp_path_factory.mktemp("pattern")
    text = "the quick brown fox jumps over the lazy dog. " * 400
    (d / "train.txt").write_text(text)
    tok = Tokenizer.train(text, 280, progress=False)
    tok.save(d / "vocab")
    return d


def small_run(data: Path, out: Path, **kw) -> TrainConfig:
    settings = dict(data=str(data / "train.txt"), out=str(out), init="scratch", n_layer=2, n_head=2, n_embd=32,
                    tokenizer=str(data / "vocab"), block_size=32, batch_size=8, steps=100, lr=1e-2, warmup_steps=5,
                    eval_every=20, eval_batches=2, save_every=20, seed=0)
    settings.update(kw)
    return TrainConfig(**settings)


def read_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_a_tiny_model_learns_a_deterministic_pattern(pattern_data, tmp_path):
    model = train(small_run(pattern_data, tmp_path / "run"), progress=False)
    log = read_log(tmp_path / "run")
    steps = [r for r in log if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 101))
    assert set(steps[0]) == {"step", "loss", "lr", "grad_norm", "tokens_per_s"}
    assert steps[0]["loss"] > 4 and steps[-1]["loss"] < 0.1, "from chance to near zero"
    vals = [r["val_loss"] for r in log if "val_loss" in r]
    assert len(vals) == 6 and vals[-1] < 0.1 < vals[0]  # steps 0, 20, ..., 100
    # the directory holds a complete model that every loader reads
    again = GPT2.from_pretrained(tmp_path / "run")
    np.testing.assert_array_equal(again([1, 2, 3]), model([1, 2, 3]))
    tok = Tokenizer.from_pretrained(tmp_path / "run")
    ids = tok.encode("the quick brown fox")
    text = tok.decode(model.generate(ids, 20, temperature=0, eot_id=tok.eot_id))
    assert text.startswith(" jumps over the lazy dog. the quick brown fox"), text


@pytest.mark.reference
def test_fine_tuning_the_tensorflow_fixture_lowers_its_validation_loss(tiny_checkpoint, tmp_path):
    text = "".join(f"Line {i}: the value of item {i % 7} is {(i * 37) % 11}.\n" for i in range(600))
    (tmp_path / "data.txt").write_text(text)
    cfg = TrainConfig(data=str(tmp_path / "data.txt"), out=str(tmp_path / "ft"), init=str(tiny_checkpoint),
                      block_size=32, batch_size=4, steps=30, lr=1e-3, eval_every=30, eval_batches=4, save_every=30)
    train(cfg, progress=False)
    vals = [r["val_loss"] for r in read_log(tmp_path / "ft") if "val_loss" in r]
    assert vals[-1] < vals[0] - 1.0, vals
    assert Tokenizer.from_pretrained(tmp_path / "ft").encode("Hello world") == [15496, 995]


# --- checkpoints that survive a kill ----------------------------------------------------------------


def cli(*args, **popen):
    return [sys.executable, "-m", "minigpt2.train", *args]


def run_args(data: Path, out: Path, steps=40) -> list[str]:
    return ["--data", str(data / "train.txt"), "--out", str(out), "--init", "scratch", "--n-layer", "2",
            "--n-head", "2", "--n-embd", "32", "--tokenizer", str(data / "vocab"), "--block-size", "32",
            "--batch-size", "8", "--steps", str(steps), "--lr", "3e-3", "--eval-every", "10", "--eval-batches", "2",
            "--save-every", "5", "--seed", "3"]


def weights(out: Path) -> dict:
    tensors, _ = read_safetensors(out / CONVERTED_FILE)
    return {k: np.array(v) for k, v in tensors.items()}


def wait_for_step(out: Path, step: int, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (out / "log.jsonl").is_file():
            done = [r.get("step", 0) for r in read_log_lenient(out) if "loss" in r]
            if done and max(done) >= step:
                return
        assert proc.poll() is None, "the run ended before it could be interrupted"
        time.sleep(0.05)
    raise TimeoutError


def read_log_lenient(out: Path) -> list[dict]:
    records = []
    for line in (out / "log.jsonl").read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            pass
    return records


def test_a_killed_run_resumes_to_exactly_the_uninterrupted_run(pattern_data, tmp_path):
    whole = subprocess.run(cli(*run_args(pattern_data, tmp_path / "whole")), capture_output=True, cwd=REPO)
    assert whole.returncode == 0, whole.stderr.decode()
    proc = subprocess.Popen(cli(*run_args(pattern_data, tmp_path / "killed")), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_step(tmp_path / "killed", 12, proc)  # between the checkpoints of steps 10 and 15
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert GPT2.from_pretrained(tmp_path / "killed").config.n_layer == 2, "a complete model is there after the kill"
    resumed = subprocess.run(cli("--out", str(tmp_path / "killed"), "--resume"), capture_output=True, cwd=REPO)
    assert resumed.returncode == 0, resumed.stderr.decode()
    a, b = weights(tmp_path / "whole"), weights(tmp_path / "killed")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    def strip(out):  # what a run's timing changes: tokens/s, and the summary's wall time
        return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in read_log(out) if "summary" not in r]
    assert strip(tmp_path / "whole") == strip(tmp_path / "killed")
    assert sorted(p.name for p in (tmp_path / "killed").glob("optimizer-*")) == ["optimizer-40.safetensors"]


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_or_sigterm_saves_a_checkpoint_and_exits_128_plus_the_signal(pattern_data, tmp_path, signum, code):
    out = tmp_path / "interrupted"
    proc = subprocess.Popen(cli(*run_args(pattern_data, out, steps=400)), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    wait_for_step(out, 7, proc)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err.decode()
    done = max(r["step"] for r in read_log(out) if "loss" in r)
    _, meta = read_safetensors(out / CONVERTED_FILE)
    assert int(meta["train_step"]) == done >= 7, "the checkpoint holds every completed step"
    assert GPT2.from_pretrained(out).config.n_layer == 2
    last = err.decode().splitlines()[-1]
    assert signal.Signals(signum).name in last and "--resume" in last


# --- export -------------------------------------------------------------------------------------------


@pytest.mark.reference
def test_hugging_face_export_loads_in_transformers(tiny_checkpoint, vocab_dir, tmp_path):
    torch = require("torch")
    transformers = require("transformers")
    model, tok = GPT2.from_pretrained(tiny_checkpoint), Tokenizer.from_dir(vocab_dir)
    (tmp_path / "notes.txt").write_text("mine")
    model.save(tmp_path, tok, format="huggingface")
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    text = "Hello world, exported from minigpt2!"
    ids = tok.encode(text)
    with torch.no_grad():
        ref = hf(torch.tensor([ids])).logits[0].numpy()
    np.testing.assert_allclose(model(ids), ref, atol=1e-4, rtol=0)
    fast = transformers.GPT2TokenizerFast.from_pretrained(tmp_path)
    assert fast(text)["input_ids"] == ids and len(fast) == 50257
    assert (tmp_path / "notes.txt").read_text() == "mine"
    np.testing.assert_array_equal(GPT2.from_pretrained(tmp_path)(ids), model(ids))
    out = subprocess.run([sys.executable, "-m", "minigpt2.export", str(tiny_checkpoint), str(tmp_path / "cli")],
                         capture_output=True, cwd=REPO)
    assert out.returncode == 0, out.stderr.decode()
    assert transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "cli").config.n_layer == 2


# --- bad input and faults, through the command line -------------------------------------------------


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    (d / "empty.txt").write_text("   \n")
    (d / "latin1.txt").write_bytes("caf".encode() + b"\xe9 au lait\n" * 3)
    (d / "short.txt").write_text("just a few words")
    (d / "nothing").mkdir()
    return d


def one_line(r, code=2):
    err = r.stderr.decode().strip().splitlines()
    assert r.returncode == code, r.stderr.decode()
    assert err and "Traceback" not in r.stderr.decode(), r.stderr.decode()
    return err[-1]


@pytest.mark.parametrize("args, message", [
    (["--data", "{bad}/missing.txt"], "--data .*missing.txt does not exist"),
    (["--data", "{bad}/empty.txt"], "--data .*empty.txt is empty"),
    (["--data", "{bad}/nothing"], "holds no .txt files"),
    (["--data", "{bad}/latin1.txt"], r"latin1.txt is not UTF-8 text: byte 0xe9 at byte offset 3 \(line 1\)"),
    (["--data", "{bad}/short.txt"], "too few tokens for one training window"),
    (["--data", "{data}/train.txt", "--steps", "0"], "--steps must be a positive integer"),
    (["--data", "{data}/train.txt", "--batch-size", "-2"], "--batch-size must be a positive integer"),
    (["--data", "{data}/train.txt", "--lr", "0"], "--lr must be a positive number"),
    (["--data", "{data}/train.txt", "--lr", "nan"], "--lr must be a positive number"),
    (["--data", "{data}/train.txt", "--n-embd", "30", "--n-head", "4"], "divisible by --n-head"),
    (["--data", "{data}/train.txt", "--lr", "1e-4", "--min-lr", "1e-2"], "--min-lr 0.01 is above the peak"),
    (["--data", "{data}/train.txt", "--steps", "10", "--warmup-steps", "11"], "--warmup-steps 11 is more than --steps"),
    (["--data", "{data}/train.txt", "--n-embd", "1000000", "--n-head", "1"], "needs about .* GB to train, more than"),
    (["--data", "{data}/train.txt", "--batch-size", "100000000"], "--batch-size 100000000 x --block-size 16 needs"),
])
def test_bad_settings_exit_2_naming_the_flag_or_file(pattern_data, bad_files, tmp_path, args, message):
    base = ["--out", str(tmp_path / "o"), "--init", "scratch", "--n-layer", "1", "--n-head", "2", "--n-embd", "8",
            "--tokenizer", str(pattern_data / "vocab"), "--block-size", "16"]
    args = [a.format(bad=bad_files, data=pattern_data) for a in args]
    r = subprocess.run(cli(*base, *args), capture_output=True, cwd=REPO)
    import re

    assert re.search(message, one_line(r)), one_line(r)


def test_faults_of_the_run_itself(pattern_data, tiny_checkpoint, tmp_path):
    data = ["--data", str(pattern_data / "train.txt")]
    r = subprocess.run(cli(*data, "--out", str(tmp_path / "a"), "--init", str(tmp_path / "no-such-model")),
                       capture_output=True, cwd=REPO)
    assert "--init" in one_line(r) and "not found" in one_line(r)
    r = subprocess.run(cli(*data, "--out", str(tmp_path / "a"), "--init", str(tiny_checkpoint), "--block-size", "65",
                           "--tokenizer", str(pattern_data / "vocab")), capture_output=True, cwd=REPO)
    assert "--block-size 65 is larger than the model's context (64)" in one_line(r)
    r = subprocess.run(cli("--out", str(tmp_path / "nothing-here"), "--resume"), capture_output=True, cwd=REPO)
    assert "holds no training run to continue" in one_line(r)
    done = subprocess.run(cli(*run_args(pattern_data, tmp_path / "run", steps=3)), capture_output=True, cwd=REPO)
    assert done.returncode == 0
    before = weights(tmp_path / "run")
    r = subprocess.run(cli(*run_args(pattern_data, tmp_path / "run", steps=3)), capture_output=True, cwd=REPO)
    assert "already holds a training run at step 3; pass --resume" in one_line(r)
    after = weights(tmp_path / "run")
    assert all(np.array_equal(before[k], after[k]) for k in before), "never overwritten"


def test_a_diverging_run_stops_naming_the_step_and_keeps_the_last_good_checkpoint(pattern_data, tmp_path):
    out = tmp_path / "diverge"
    args = run_args(pattern_data, out, steps=200)
    args[args.index("--lr") + 1] = "1e30"
    args += ["--grad-clip", "0", "--warmup-steps", "0"]
    r = subprocess.run(cli(*args), capture_output=True, cwd=REPO)
    line = one_line(r, code=1)
    assert "the loss became" in line and "at step" in line and "last good checkpoint" in line
    _, meta = read_safetensors(out / CONVERTED_FILE)
    model = GPT2.from_pretrained(out)
    assert all(np.isfinite(v).all() for v in flatten(model.params).values()), f"step {meta['train_step']} is finite"


# --- steering a run: extend, retune, relocate; one run per directory; signals ------------------------------


def test_resume_extends_and_retunes_a_run_and_logs_what_changed(pattern_data, tmp_path):
    out = tmp_path / "run"
    first = subprocess.run(cli(*run_args(pattern_data, out, steps=6)), capture_output=True, cwd=REPO)
    assert first.returncode == 0, first.stderr.decode()
    r = subprocess.run(cli("--out", str(out), "--resume", "--steps", "12", "--lr", "1e-3"), capture_output=True,
                       cwd=REPO)
    assert r.returncode == 0, r.stderr.decode()
    log = read_log(out)
    assert [x["step"] for x in log if "loss" in x] == list(range(1, 13)), "the finished run went on to step 12"
    assert {"step": 6, "resumed": {"steps": [6, 12], "lr": [0.003, 0.001],
                                   "min_lr": [pytest.approx(0.0003), pytest.approx(0.0001)]}} in log
    assert "with steps 6 -> 12, lr 0.003 -> 0.001, min-lr 0.0003 -> 0.0001 (lr / 10)" in r.stderr.decode(), \
        "the default min_lr follows lr, and both changes are said"
    lrs = [x["lr"] for x in log if "loss" in x]
    assert max(lrs[6:]) <= 1e-3 < max(lrs[:6]), "the new peak rate is honoured"
    assert lrs[-1] == pytest.approx(1e-4), "the cosine decays to the new lr / 10 at the new last step"
    for args, flag in ((["--n-embd", "64"], "--n-embd"), (["--batch-size", "4"], "--batch-size"),
                       (["--steps", "3"], "--steps 3 is fewer")):
        r = subprocess.run(cli("--out", str(out), "--resume", *args), capture_output=True, cwd=REPO)
        assert flag in one_line(r), one_line(r)
    assert [x["step"] for x in read_log(out) if "loss" in x] == list(range(1, 13)), "a refused resume changes nothing"


def test_a_run_started_with_a_relative_data_path_resumes_from_anywhere(pattern_data, tmp_path):
    args = run_args(pattern_data, tmp_path / "run", steps=3)
    args[args.index("--data") + 1] = "train.txt"  # relative to the data's directory, where it starts
    r = subprocess.run(cli(*args), capture_output=True, cwd=pattern_data, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert r.returncode == 0, r.stderr.decode()
    r = subprocess.run(cli("--out", str(tmp_path / "run"), "--resume", "--steps", "5"), capture_output=True,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr.decode()
    assert max(x["step"] for x in read_log(tmp_path / "run")) == 5


def test_two_runs_into_one_directory_one_runs_and_the_other_exits_at_once(pattern_data, tmp_path):
    out = tmp_path / "shared"
    proc = subprocess.Popen(cli(*run_args(pattern_data, out, steps=2000)), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_for_step(out, 2, proc)
        for args in (run_args(pattern_data, out, steps=2000), ["--out", str(out), "--resume"]):
            r = subprocess.run(cli(*args), capture_output=True, cwd=REPO, timeout=60)
            assert "in use by another training run" in one_line(r) or "already holds a training run" in one_line(r)
        assert proc.poll() is None, "the first run goes on"
    finally:
        proc.kill()
        proc.wait()
    steps = [x["step"] for x in read_log_lenient(out) if "loss" in x]
    assert len(steps) == len(set(steps)), "log.jsonl never holds a step twice"


def test_ctrl_c_before_the_first_checkpoint_says_nothing_was_saved(pattern_data, tmp_path, monkeypatch, capsys):
    import minigpt2.train.start as train_module
    from minigpt2.train.__main__ import train_main

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "load_data", interrupted)  # as if Ctrl-C came while tokenizing
    code = train_main(run_args(pattern_data, tmp_path / "early"))
    assert code == 130 and "nothing was saved" in capsys.readouterr().err


def test_step_0_writes_no_moments_and_resumes_from_them(pattern_data, tmp_path):
    from minigpt2.train import save_checkpoint

    model = GPT2.init(GPT2Config(n_vocab=10, n_ctx=8, n_embd=8, n_head=2, n_layer=1))
    rng = np.random.default_rng(0)
    save_checkpoint(tmp_path, 0, model.config, model.params, Tokenizer.from_dir(pattern_data / "vocab"),
                    AdamW(model.params, 1e-3), {"rng": rng}, small_run(pattern_data, tmp_path))
    arrays, meta = read_safetensors(tmp_path / "optimizer-0.safetensors")
    assert arrays == {} and json.loads(meta["adam"])["t"] == 0


def test_endoftext_in_a_training_text_is_the_one_token(pattern_data):
    from minigpt2.train import tokenize

    tok = Tokenizer.from_dir(pattern_data / "vocab")
    ids = tokenize(["the fox<|endoftext|>the dog", "a cat"], tok, progress=False).tolist()
    assert ids == tok.encode("the fox") + [tok.eot_id] + tok.encode("the dog") + [tok.eot_id] + tok.encode("a cat")


def test_a_quiet_run_prints_nothing_and_the_block_size_follows_a_short_context(tiny_checkpoint, tmp_path, capsys):
    text = "".join(f"Line {i}: the value is {(i * 37) % 11}.\n" for i in range(300))
    (tmp_path / "data.txt").write_text(text)
    cfg = TrainConfig(data=str(tmp_path / "data.txt"), out=str(tmp_path / "ft"), init=str(tiny_checkpoint),
                      batch_size=2, steps=2, lr=1e-3, eval_every=1, eval_batches=1, save_every=2)
    train(cfg, progress=False)
    assert capsys.readouterr() == ("", ""), "progress=False: no bar and no step lines"
    _, meta = read_safetensors(tmp_path / "ft" / "optimizer-2.safetensors")
    assert json.loads(meta["settings"])["block_size"] == 64, "the fixture's context (64) is shorter than 256"


def test_export_onto_a_file_or_another_model_exits_2_with_one_line(pattern_data, tmp_path):
    small = subprocess.run(cli(*run_args(pattern_data, tmp_path / "run", steps=1)), capture_output=True, cwd=REPO)
    assert small.returncode == 0
    (tmp_path / "a-file").write_text("mine")
    export = [sys.executable, "-m", "minigpt2.export", str(tmp_path / "run")]
    r = subprocess.run([*export, str(tmp_path / "a-file")], capture_output=True, cwd=REPO)
    assert "a-file is a file, not a directory" in one_line(r)
    r = subprocess.run([*export, str(tmp_path / "run")], capture_output=True, cwd=REPO)
    assert "pass --overwrite" in one_line(r) and "overwrite=True" not in one_line(r)
    assert (tmp_path / "a-file").read_text() == "mine"
    r = subprocess.run([*export, str(tmp_path / "a-file" / "below")], capture_output=True, cwd=REPO)
    line = one_line(r)
    assert f"DEST {tmp_path / 'a-file' / 'below'}: cannot write the model there" in line and "Errno" not in line


def test_a_hugging_face_save_without_a_tokenizer_says_so(tmp_path):
    model = GPT2.init(GPT2Config(n_vocab=10, n_ctx=8, n_embd=8, n_head=2, n_layer=1))
    with pytest.raises(ValueError, match="GPT2TokenizerFast.from_pretrained could not read"):
        model.save(tmp_path / "hf", format="huggingface")
    assert not (tmp_path / "hf").exists()
    model.save(tmp_path / "hf", False, format="huggingface")  # asked for: the weights alone
    assert (tmp_path / "hf" / "model.safetensors").is_file()


def test_samples_the_best_model_and_a_summary(pattern_data, tmp_path):
    out = tmp_path / "run"
    r = subprocess.run(cli(*run_args(pattern_data, out, steps=20), "--sample-every", "10", "--prompt", "the quick",
                           "--sample-tokens", "8"), capture_output=True, cwd=REPO)
    assert r.returncode == 0, r.stderr.decode()
    log = read_log(out)
    samples = [x for x in log if "sample" in x]
    assert [x["step"] for x in samples] == [10, 20] and all(isinstance(x["sample"], str) for x in samples)
    vals = {x["step"]: x["val_loss"] for x in log if "val_loss" in x}
    best_step = min((s for s in vals if s > 0), key=vals.get)
    best = GPT2.from_pretrained(out / "best")
    _, meta = read_safetensors(out / "best" / CONVERTED_FILE)
    assert int(meta["best_step"]) == best_step and float(meta["val_loss"]) == vals[best_step]
    assert best.config == GPT2.from_pretrained(out).config
    summary = log[-1]["summary"]
    assert summary["steps"] == 20 and summary["tokens"] == 20 * 8 * 32
    assert summary["best_val_loss"] == vals[best_step] and summary["last_val_loss"] == vals[20]
    assert "validation loss: last" in r.stderr.decode().splitlines()[-1]


def test_init_from_another_run_starts_a_fresh_optimizer_and_schedule(pattern_data, tmp_path):
    first = subprocess.run(cli(*run_args(pattern_data, tmp_path / "a", steps=5)), capture_output=True, cwd=REPO)
    assert first.returncode == 0
    r = subprocess.run(cli("--data", str(pattern_data / "train.txt"), "--out", str(tmp_path / "b"), "--init",
                           str(tmp_path / "a"), "--block-size", "32", "--batch-size", "4", "--steps", "3",
                           "--eval-every", "3", "--eval-batches", "1"), capture_output=True, cwd=REPO)
    assert r.returncode == 0, r.stderr.decode()
    _, meta = read_safetensors(tmp_path / "b" / "optimizer-3.safetensors")
    assert json.loads(meta["adam"])["t"] == 3, "a fresh optimizer: three steps, not eight"
    assert read_log(tmp_path / "b")[0]["val_loss"] < read_log(tmp_path / "a")[0]["val_loss"] - 0.3, \
        "it starts from the trained model, not from a new one"


def test_blas_threads_can_be_set_while_running():
    from minigpt2.blas import blas_threads, default_threads, set_blas_threads

    before = blas_threads()
    assert before is not None, "NumPy's OpenBLAS was found"
    try:
        assert set_blas_threads(1) and blas_threads() == 1
        a = np.ones((64, 64), np.float32)
        np.testing.assert_array_equal(a @ a, np.full((64, 64), 64, np.float32))
    finally:
        set_blas_threads(before)
    assert blas_threads() == before
    assert default_threads(32) == 1 and default_threads(768) == os.cpu_count()
    assert default_threads(768, processes=os.cpu_count()) == 1, "the machine's cores shared by its ranks"
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        set_blas_threads(0)


def test_step_gradient_asks_go_on_between_micro_batches_and_drops_the_step_when_told():
    from minigpt2.train import StepAbandoned, step_gradient

    model = GPT2.init(GPT2Config(n_vocab=10, n_ctx=8, n_embd=8, n_head=2, n_layer=1))
    rng = np.random.default_rng(0)
    batches = [(rng.integers(0, 10, (2, 8)), rng.integers(0, 10, (2, 8))) for _ in range(4)]
    asked = []
    step_gradient(batches, False, model.params, model.config, go_on=lambda: asked.append(1) or True)
    assert len(asked) == 3, "once before each micro-batch after the first"
    answers = iter([True, False])
    with pytest.raises(StepAbandoned):
        step_gradient(batches, False, model.params, model.config, go_on=lambda: next(answers))
    assert next(answers, "asked no more") == "asked no more", "the step ends at the first No"


def rank_of(rank: int, size: int):
    """One rank's view of a run of `size` ranks, without MPI: its shares, its sums not added up."""
    from minigpt2.distributed import World

    world = World()
    world.rank, world.size = rank, size
    return world


@pytest.mark.parametrize("kind", ["text", "task"])
def test_validation_asks_go_on_as_often_on_every_rank_and_stops_when_told(kind):
    from minigpt2.tasks import Example
    from minigpt2.train import StepAbandoned, TaskData, TextData, validator

    model = GPT2.init(GPT2Config(n_vocab=10, n_ctx=8, n_embd=8, n_head=2, n_layer=1))
    rng = np.random.default_rng(0)
    if kind == "text":
        data = TextData(rng.integers(0, 10, 100), rng.integers(0, 10, 100))
        cfg = TrainConfig(data="-", out="-", block_size=4, batch_size=2, eval_batches=7)
        most = 3  # of 7 batches over 3 ranks: 3, 2, 2
    else:
        examples = [Example(rng.integers(0, 10, rng.integers(3, 8)), 2) for _ in range(13)]
        data = TaskData(examples, examples)
        cfg = TrainConfig(data="-", out="-", block_size=8, batch_size=2)
        most = 3  # of 13 examples over 3 ranks: 5, 4, 4, in batches of 2: 3, 2, 2
    parts = []
    for rank in range(3):
        asked = []
        parts.append(validator(data, cfg, model.params, model.config, False, rank_of(rank, 3))(
            lambda: asked.append(1) or True))
        assert len(asked) == most - 1, f"rank {rank} asks as often as the rank with the most batches"
    if kind == "text":  # each rank's part of the mean (a task's per-token mean does not split so)
        np.testing.assert_allclose(sum(parts), validator(data, cfg, model.params, model.config, False)(), rtol=1e-6)
    answers = iter([True, False])
    with pytest.raises(StepAbandoned):
        validator(data, cfg, model.params, model.config, False)(lambda: next(answers))
    assert next(answers, "asked no more") == "asked no more"


# --- a newcomer's rough edges ------------------------------------------------------------------------


def test_resume_compares_paths_resolved_however_they_were_spelled(pattern_data, tmp_path):
    args = run_args(pattern_data, tmp_path / "run", steps=3)
    args[args.index("--tokenizer") + 1] = "vocab"  # relative to the data's directory, where the run starts
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run(cli(*args), capture_output=True, cwd=pattern_data, env=env)
    assert r.returncode == 0, r.stderr.decode()
    settings = json.loads((tmp_path / "run" / "settings.json").read_text())["settings"]
    assert settings["tokenizer"] == str(pattern_data / "vocab"), "stored absolute"
    r = subprocess.run(cli("--out", str(tmp_path / "run"), "--resume", "--steps", "5", "--tokenizer",
                           str(pattern_data / "vocab")), capture_output=True, cwd=REPO)
    assert r.returncode == 0, r.stderr.decode()


def test_a_second_ctrl_c_still_exits_130_with_no_traceback(pattern_data, tmp_path):
    for i, pause in enumerate((0.0, 0.02, 0.2)):
        out = tmp_path / f"run{i}"
        proc = subprocess.Popen(cli(*run_args(pattern_data, out, steps=400)), cwd=REPO, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        wait_for_step(out, 3, proc)
        proc.send_signal(signal.SIGINT)
        time.sleep(pause)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, (pause, err.decode())
        assert "Traceback" not in err.decode() and "Exception ignored" not in err.decode(), err.decode()
        assert GPT2.from_pretrained(out).config.n_layer == 2, "a complete model stays"


def test_resume_on_a_finished_run_says_there_is_nothing_to_do(pattern_data, tmp_path):
    out = tmp_path / "run"
    assert subprocess.run(cli(*run_args(pattern_data, out, steps=4)), capture_output=True, cwd=REPO).returncode == 0
    r = subprocess.run(cli("--out", str(out), "--resume"), capture_output=True, cwd=REPO)
    assert r.returncode == 0
    assert one_line(r, code=0) == ("minigpt2-train: nothing to do: the run has 4 of 4 steps; pass --steps M to extend "
                                   "it (M above 4, with --resume)")


def test_the_summary_gives_this_invocation_s_time_and_the_whole_run_s(pattern_data, tmp_path):
    out = tmp_path / "run"
    assert subprocess.run(cli(*run_args(pattern_data, out, steps=4)), capture_output=True, cwd=REPO).returncode == 0
    first = [r["summary"] for r in read_log(out) if "summary" in r][-1]
    assert first["run_seconds"] >= first["session_seconds"] > 0
    r = subprocess.run(cli("--out", str(out), "--resume", "--steps", "8"), capture_output=True, cwd=REPO)
    assert r.returncode == 0, r.stderr.decode()
    second = [r["summary"] for r in read_log(out) if "summary" in r][-1]
    assert second["steps"] == 8 and second["tokens"] == 8 * 8 * 32, "steps and tokens: the whole run's"
    assert second["run_seconds"] >= first["run_seconds"] + second["session_seconds"] - 0.5
    assert " s now, " in r.stderr.decode() and " s in all" in r.stderr.decode()


def test_a_loss_that_grows_by_orders_of_magnitude_stops_the_run(pattern_data, tmp_path):
    out = tmp_path / "run"
    args = run_args(pattern_data, out, steps=40)
    args[args.index("--lr") + 1] = "1e3"
    r = subprocess.run(cli(*args, "--warmup-steps", "0"), capture_output=True, cwd=REPO)
    line = one_line(r, code=1)
    assert line.startswith("minigpt2-train: error: training diverged: the loss became") and "at step" in line
    assert "last good checkpoint" in line
    losses = [x["loss"] for x in read_log(out) if "loss" in x]
    assert len(losses) < 40 and max(losses) < 1e3, "stopped before the run went on at loss 1e9"


def test_threads_beyond_the_cores_are_said_and_capped(pattern_data, tmp_path):
    r = subprocess.run(cli(*run_args(pattern_data, tmp_path / "run", steps=2), "--threads", "1000"),
                       capture_output=True, cwd=REPO)
    assert r.returncode == 0, r.stderr.decode()
    assert "--threads 1000 is more than the" in r.stderr.decode() and "10x slower" in r.stderr.decode()
    settings = json.loads((tmp_path / "run" / "settings.json").read_text())["settings"]
    assert settings["threads"] == 1000, "settings.json records what was asked"


def test_an_out_directory_that_cannot_be_made_names_the_flag(pattern_data, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    r = subprocess.run(cli(*run_args(pattern_data, blocker / "run", steps=2)), capture_output=True, cwd=REPO)
    line = one_line(r)
    assert line.startswith(f"minigpt2-train: error: --out {blocker / 'run'}: cannot create the directory"), line
    assert "Errno" not in line


def test_the_run_directory_records_its_settings(pattern_data, tmp_path):
    out = tmp_path / "run"
    assert subprocess.run(cli(*run_args(pattern_data, out, steps=3)), capture_output=True, cwd=REPO).returncode == 0
    record = json.loads((out / "settings.json").read_text())
    s = record["settings"]
    assert s["steps"] == 3 and s["lr"] == 3e-3 and s["min_lr"] == pytest.approx(3e-4), "defaults resolved"
    assert s["warmup_steps"] == 0 and s["block_size"] == 32 and s["data"] == str(pattern_data / "train.txt")
    assert record["world_size"] == 1 and record["started_at_step"] == 0 and record["model"]["n_layer"] == 2
    r = subprocess.run(cli("--out", str(out), "--resume", "--steps", "5", "--lr", "1e-3"), capture_output=True, cwd=REPO)
    assert r.returncode == 0, r.stderr.decode()
    record = json.loads((out / "settings.json").read_text())
    assert record["started_at_step"] == 3 and record["settings"]["lr"] == 1e-3
    assert record["settings"]["min_lr"] == pytest.approx(1e-4)


def test_the_token_cache_is_trimmed_least_recently_used_first(tmp_path):
    from minigpt2.train import trim_token_cache

    for i, size in enumerate((300, 300, 300)):
        p = tmp_path / f"{i}.npy"
        p.write_bytes(b"x" * size)
        os.utime(p, (1000 + i, 1000 + i))
    trim_token_cache(tmp_path, 700)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1.npy", "2.npy"], "the oldest went"
    trim_token_cache(tmp_path, 10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2.npy"], "the newest always stays"


def test_tests_never_touch_the_user_s_cache():
    from minigpt2.download import cache_dir

    home = Path(os.path.expanduser("~")) / ".cache" / "minigpt2"
    assert cache_dir() != home and "minigpt2-tests-" in str(cache_dir())
