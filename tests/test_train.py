"""Training: AdamW and clipping against PyTorch, learning, checkpoints that survive a kill, the CLI's faults."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from minigpt2 import GPT2, Tokenizer
from minigpt2.load import CONVERTED_FILE
from minigpt2.model import flatten
from minigpt2.optim import AdamW, clip_grad_norm, learning_rate
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
    strip = [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in read_log(tmp_path / "whole")]
    assert strip == [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in read_log(tmp_path / "killed")]
    assert sorted(p.name for p in (tmp_path / "killed").glob("optimizer-*")) == ["optimizer-40.safetensors"]


def test_ctrl_c_saves_a_checkpoint_and_exits_130(pattern_data, tmp_path):
    out = tmp_path / "interrupted"
    proc = subprocess.Popen(cli(*run_args(pattern_data, out, steps=400)), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    wait_for_step(out, 7, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()
    done = max(r["step"] for r in read_log(out) if "loss" in r)
    _, meta = read_safetensors(out / CONVERTED_FILE)
    assert int(meta["train_step"]) == done >= 7, "the checkpoint holds every completed step"
    assert "--resume" in err.decode().splitlines()[-1]


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
