"""Data-parallel training over MPI: 2 ranks equal 1 process (float32 reduction order aside), resume across rank
counts, a dead rank ends the job, a signal to mpiexec saves once, rank 0 alone writes and speaks. Runs
`mpiexec` (pip install 'minigpt2[mpi]')."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from minigpt2 import GPT2, Tokenizer
from minigpt2.distributed import World

from .test_train import read_log, weights

REPO = Path(__file__).resolve().parents[1]
# float32 sums in another order: per-step losses to 1e-5 relative, weights after a few AdamW steps at lr 3e-3
# to 2e-4 absolute (Adam divides by sqrt(v), so tiny gradient entries can move by up to lr)
LOSS_RTOL, WEIGHT_ATOL = 1e-5, 2e-4


def mpiexec() -> str:
    path = shutil.which("mpiexec") or str(Path(sys.executable).parent / "mpiexec")
    if not Path(path).is_file():
        pytest.skip("mpiexec is missing: pip install 'minigpt2[mpi]' (mpi4py and MPICH)")
    pytest.importorskip("mpi4py", reason="mpi4py is missing: pip install 'minigpt2[mpi]'")
    return path


def train_cmd(n: int, *args) -> list[str]:
    base = [sys.executable, "-m", "minigpt2.train", *args]
    return base if n == 1 else [mpiexec(), "-n", str(n), *base]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("mpi")
    text = "the quick brown fox jumps over the lazy dog. " * 300
    (d / "train.txt").write_text(text)
    Tokenizer.train(text + "0123456789=", 280, progress=False).save(d / "vocab")
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(200):
        digits = rng.integers(0, 10, rng.integers(2, 7))  # examples of unequal length: token weighting matters
        rows.append({"prompt": "".join(map(str, digits)) + "=", "completion": "".join(map(str, np.sort(digits)))})
    (d / "task.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


def run_args(data: Path, out: Path, source: str, steps: int = 6) -> list[str]:
    return ["--data", str(data / source), "--out", str(out), "--init", "scratch", "--n-layer", "2", "--n-head", "2",
            "--n-embd", "32", "--tokenizer", str(data / "vocab"), "--block-size", "24", "--batch-size", "5",
            "--grad-accum", "2", "--steps", str(steps), "--lr", "3e-3", "--eval-every", "3", "--eval-batches", "2",
            "--save-every", "2", "--seed", "1"]


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, cwd=REPO, timeout=300, **kw)
    assert r.returncode == 0, r.stderr.decode()[-3000:]
    return r


def assert_same_run(a: Path, b: Path):
    la, lb = read_log(a), read_log(b)
    steps_a, steps_b = ([r for r in log if "loss" in r] for log in (la, lb))
    assert [r["step"] for r in steps_a] == [r["step"] for r in steps_b]
    np.testing.assert_allclose([r["loss"] for r in steps_b], [r["loss"] for r in steps_a], rtol=LOSS_RTOL)
    va, vb = ({r["step"]: r["val_loss"] for r in log if "val_loss" in r} for log in (la, lb))
    assert set(va) <= set(vb)  # a run that was extended also validated where it first ended
    np.testing.assert_allclose([vb[k] for k in va], list(va.values()), rtol=1e-4)
    wa, wb = weights(a), weights(b)
    for k in wa:
        np.testing.assert_allclose(wb[k], wa[k], rtol=0, atol=WEIGHT_ATOL, err_msg=k)


@pytest.mark.slow
@pytest.mark.parametrize("source", ["train.txt", "task.jsonl"])
def test_two_ranks_equal_one_process(data, tmp_path, source):
    run(train_cmd(1, *run_args(data, tmp_path / "one", source)))
    r = run(train_cmd(2, *run_args(data, tmp_path / "two", source)))
    assert_same_run(tmp_path / "one", tmp_path / "two")
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())
    assert r.stdout.decode().count("trained") <= 1, "rank 0 alone prints"


@pytest.mark.slow
def test_a_two_rank_run_resumes_with_one_and_the_reverse(data, tmp_path):
    constant = ["--min-lr", "3e-3", "--warmup-steps", "0"]  # a schedule that extending a run leaves as it was
    run(train_cmd(1, *run_args(data, tmp_path / "whole", "task.jsonl", steps=8), *constant))
    run(train_cmd(2, *run_args(data, tmp_path / "two-then-one", "task.jsonl", steps=4), *constant))
    run(train_cmd(1, "--out", str(tmp_path / "two-then-one"), "--resume", "--steps", "8"))
    run(train_cmd(1, *run_args(data, tmp_path / "one-then-two", "task.jsonl", steps=4), *constant))
    run(train_cmd(2, "--out", str(tmp_path / "one-then-two"), "--resume", "--steps", "8"))
    for d in ("two-then-one", "one-then-two"):
        log = [r for r in read_log(tmp_path / d) if "resumed" not in r]
        (tmp_path / d / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))  # as if never extended
        assert_same_run(tmp_path / "whole", tmp_path / d)


@pytest.mark.slow
def test_a_two_rank_run_resumed_with_two_is_bit_exact(data, tmp_path):
    """Each rank's rows of the moments go to rank 0 at a checkpoint and come back on resume, exactly."""
    constant = ["--min-lr", "3e-3", "--warmup-steps", "0"]
    run(train_cmd(2, *run_args(data, tmp_path / "whole", "train.txt", steps=6), *constant))
    run(train_cmd(2, *run_args(data, tmp_path / "halves", "train.txt", steps=3), *constant))
    run(train_cmd(2, "--out", str(tmp_path / "halves"), "--resume", "--steps", "6"))
    losses = [[r["loss"] for r in read_log(tmp_path / d) if "loss" in r] for d in ("whole", "halves")]
    assert losses[0] == losses[1]
    whole, halves = weights(tmp_path / "whole"), weights(tmp_path / "halves")
    for k in whole:
        assert np.array_equal(whole[k], halves[k]), k


def rank_pids(marker: str) -> dict[int, int]:
    """{rank: pid} of the training processes whose command line holds `marker`."""
    out = {}
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
            env = dict(kv.split(b"=", 1) for kv in (proc / "environ").read_bytes().split(b"\0") if b"=" in kv)
        except (OSError, ValueError):
            continue
        if b"minigpt2.train" in cmd and marker.encode() in b" ".join(cmd) and b"PMI_RANK" in env:
            out[int(env[b"PMI_RANK"])] = int(proc.name)
    return out


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the ranks through /proc (Linux)")
def test_a_killed_rank_ends_the_job_and_the_last_checkpoint_loads(data, tmp_path):
    out = tmp_path / "killed"
    proc = subprocess.Popen(train_cmd(2, *run_args(data, out, "train.txt", steps=5000)), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (out / "log.jsonl").is_file() or \
                len([r for r in read_log_safe(out) if "loss" in r]) < 5:
            assert proc.poll() is None, "the run ended before a rank could be killed"
            time.sleep(0.1)
        os.kill(rank_pids(str(out))[1], signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode != 0, "the job ended, and not as a success"
    assert not rank_pids(str(out)), "no rank is left waiting"
    assert GPT2.from_pretrained(out).config.n_layer == 2
    # the kill lands some steps after the fifth: resume past whatever was logged
    target = max(rec["step"] for rec in read_log_safe(out) if "loss" in rec) + 4
    r = run(train_cmd(1, "--out", str(out), "--resume", "--steps", str(target), "--warmup-steps", "0"))
    assert max(rec["step"] for rec in read_log(out) if "loss" in rec) == target, r.stderr.decode()


@pytest.mark.slow
@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_to_mpiexec_saves_once_and_exits_non_zero(data, tmp_path, signum, code):
    out = tmp_path / "stopped"
    proc = subprocess.Popen(train_cmd(2, *run_args(data, out, "train.txt", steps=100000), "--save-every", "100000",
                                      "--warmup-steps", "0"),
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and len([r for r in read_log_safe(out) if "loss" in r]) < 5:
            assert proc.poll() is None, "the run ended before it could be stopped"
            time.sleep(0.1)
        proc.send_signal(signum)  # as Ctrl-C or `kill` would reach mpiexec, which hands it to every rank
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    err = err.decode()
    assert proc.returncode == code, err[-3000:]
    assert err.count("stopping (") == 1 and err.count("stopped by") == 1, "rank 0 alone says so, once"
    last = max(r["step"] for r in read_log(out) if "loss" in r)
    assert sorted(p.name for p in out.glob("optimizer-*")) == [f"optimizer-{last}.safetensors"], \
        "every completed step is saved, once"
    run(train_cmd(1, "--out", str(out), "--resume", "--steps", str(last + 2)))
    assert max(r["step"] for r in read_log(out) if "loss" in r) == last + 2


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the ranks through /proc (Linux)")
def test_a_step_stopped_between_micro_batches_resumes_bit_exact(data, tmp_path):
    """With --grad-accum the ranks agree between micro-batches to drop the step in flight; what it drew is
    put back, so the resumed run is the run that was never stopped."""
    args = ["--grad-accum", "40", "--warmup-steps", "0", "--save-every", "1000"]
    run(train_cmd(2, *run_args(data, tmp_path / "whole", "train.txt", steps=30), *args))
    out = tmp_path / "stopped"
    proc = subprocess.Popen(train_cmd(2, *run_args(data, out, "train.txt", steps=30), *args), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and len([r for r in read_log_safe(out) if "loss" in r]) < 2:
            assert proc.poll() is None, "the run ended before it could be stopped"
            time.sleep(0.05)
        os.kill(rank_pids(str(out))[1], signal.SIGINT)  # one rank alone is asked: the others must follow
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err.decode()[-3000:]
    stopped_at = max(r["step"] for r in read_log(out) if "loss" in r)
    assert stopped_at < 30
    run(train_cmd(2, "--out", str(out), "--resume", "--steps", "30"))
    losses = [[r["loss"] for r in read_log(tmp_path / d) if "loss" in r] for d in ("whole", "stopped")]
    assert losses[0] == losses[1]
    whole, stopped = weights(tmp_path / "whole"), weights(out)
    for k in whole:
        assert np.array_equal(whole[k], stopped[k]), k


def read_log_safe(out: Path) -> list[dict]:
    records = []
    for line in (out / "log.jsonl").read_text().splitlines() if (out / "log.jsonl").is_file() else []:
        try:
            records.append(json.loads(line))
        except ValueError:
            pass
    return records


def test_each_rank_takes_a_contiguous_share_of_the_rows():
    for n in (1, 5, 7, 10):
        for size in (1, 2, 3):
            shares = [World().share(n) if size == 1 else FakeWorld(r, size).share(n) for r in range(size)]
            covered = [i for s in shares for i in range(n)[s]]
            assert covered == list(range(n)), (n, size)
            assert max(map(len, (range(n)[s] for s in shares))) - min(map(len, (range(n)[s] for s in shares))) <= 1


class FakeWorld(World):
    def __init__(self, rank, size):
        super().__init__()
        self.rank, self.size = rank, size


def test_bad_settings_under_two_ranks_exit_2_with_one_line_and_no_abort(data, tmp_path):
    r = subprocess.run(train_cmd(2, *run_args(data, tmp_path / "bad", "train.txt"), "--lr", "-1"),
                       capture_output=True, cwd=REPO, timeout=120)
    err = r.stderr.decode().strip()
    assert r.returncode == 2 and err.splitlines() == ["minigpt2-train: error: --lr must be a positive number, got -1.0"]
    assert not (tmp_path / "bad").exists()


def test_a_model_too_big_for_the_ranks_on_this_machine_is_refused_naming_them(data, tmp_path):
    args = run_args(data, tmp_path / "big", "train.txt")
    args[args.index("--n-embd") + 1] = "1000000"
    r = subprocess.run(train_cmd(2, *args), capture_output=True, cwd=REPO, timeout=120)
    err = r.stderr.decode().strip()
    assert r.returncode == 2 and len(err.splitlines()) == 1, err
    assert "GB to train (2 ranks on this machine), more than this machine's" in err
    assert not (tmp_path / "big").exists()


COLLECTIVES = """
import numpy as np
from minigpt2.distributed import share_of, world
w = world()
def gradient(rank):                                      # each rank its own
    rng = np.random.default_rng(rank)
    return {"w": rng.standard_normal((7, 3)).astype(np.float32), "b": rng.standard_normal(5)}
rows = w.sum_rows(gradient(w.rank))                      # this rank's rows of the sum over the ranks
for k, total in {k: sum(gradient(r)[k] for r in range(w.size)) for k in rows}.items():
    np.testing.assert_allclose(rows[k], total[w.share(len(total))], rtol=1e-6)
params = {"w": np.zeros((7, 3), np.float32), "b": np.zeros(5), "even": np.zeros((6, 2), np.float32)}
for view in w.rows(params).values():
    view[...] = w.rank + 1                               # a rank updates its rows of the parameters alone
w.share_rows_(params)                                    # and every rank gets every rank's rows
for k, a in params.items():
    owner = np.concatenate([np.full(len(range(len(a))[share_of(len(a), r, w.size)]), r + 1) for r in range(w.size)])
    assert (a.reshape(len(a), -1) == owner[:, None]).all(), (k, a)
mine = gradient(0)["w"]
whole = w.gather_rows(mine[w.share(7)], (7, 3))          # rank 0 reassembles an array from the ranks' rows
assert (whole == mine).all() if w.rank == 0 else whole is None
assert w.sum_float(1.5) == 1.5 * w.size
print("ok", w.rank)
"""


@pytest.mark.parametrize("ranks", [2, 3])
def test_the_zero_stage_1_collectives(ranks):
    r = subprocess.run([mpiexec(), "-n", str(ranks), sys.executable, "-c", COLLECTIVES], capture_output=True,
                       cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    assert r.stdout.decode().count("ok") == ranks  # every rank got through its checks (lines may interleave)


@pytest.mark.parametrize("command, args", [("generate", ["hi"]), ("evaluate", ["notes.txt"]),
                                           ("export", ["124M", "out-hf"])])
def test_commands_that_do_not_split_their_work_refuse_several_ranks_once(tmp_path, command, args):
    r = subprocess.run([mpiexec(), "-n", "2", sys.executable, "-m", f"minigpt2.{command}", *args], cwd=tmp_path,
                       capture_output=True, timeout=120)
    lines = r.stderr.decode().strip().splitlines()
    assert r.returncode == 2
    assert lines == [f"minigpt2-{command}: error: runs in one process (mpiexec -n N is for python -m minigpt2.train); "
                     "run it without mpiexec"], "one line, from the first rank"
    assert not list(tmp_path.iterdir()), "nothing was done"


@pytest.mark.slow
def test_train_ranks_launches_mpiexec_and_says_how_to_resume_when_a_rank_dies(data, tmp_path):
    mpiexec()  # MPI is installed
    out = tmp_path / "launched"
    proc = subprocess.Popen([sys.executable, "-m", "minigpt2.train", "--ranks", "2",
                             *run_args(data, out, "train.txt", steps=5000)], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and len([r for r in read_log_safe(out) if "loss" in r]) < 5:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            time.sleep(0.1)
        os.kill(rank_pids(str(out))[1], signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    last = err.decode().strip().splitlines()[-1]
    step = max(r["step"] for r in read_log_safe(out) if "loss" in r) // 2 * 2  # --save-every 2
    assert proc.returncode != 0
    assert last.startswith("minigpt2-train: a rank ended abnormally and MPI stopped the job"), last
    assert "the last checkpoint (step " in last and f"--out {out} --resume --ranks 2" in last, last
    said = int(last.split("(step ")[1].split(")")[0])
    assert said in (step, step - 2) and GPT2.from_pretrained(out).config.n_layer == 2
