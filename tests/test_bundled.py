"""The bundled model `tiny`: minigpt2 works on a machine without GPT-2's weights, offline, and says so."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from minigpt2 import GPT2, Tokenizer
from minigpt2.bundled import bundled_dir
from minigpt2.download import MODEL_FILES

from .conftest import one_line_error, run_module
from .httpserver import FileServer

REPO = Path(__file__).resolve().parents[1]


def test_tiny_ships_inside_the_package_small_with_its_vocabulary_and_card():
    d = bundled_dir("tiny")
    assert d == REPO / "minigpt2" / "tiny"
    weights = (d / "minigpt2.safetensors").stat().st_size
    assert weights <= 4 * 10**6, f"{weights:,} bytes"
    card = (d / "MODEL.md").read_text(encoding="utf-8")
    assert "PSF License" in card and "scripts/train_tiny.py" in card
    model, tok = GPT2.from_pretrained("tiny"), Tokenizer.from_pretrained("tiny")
    assert model.config.n_vocab == tok.n_vocab == 1024 and tok.eot_id == 1023
    assert f"{model.num_params:,} parameters" in card


def test_tiny_is_a_language_model_of_python_s_manual():
    """Not random weights: it predicts the manual's prose far better than a uniform guess (ln 1024 = 6.93)."""
    from minigpt2.evaluate import evaluate

    model, tok = GPT2.from_pretrained("tiny"), Tokenizer.from_pretrained("tiny")
    text = ("The for statement is used to iterate over the elements of a sequence (such as a string, tuple or "
            "list) or other iterable object.")
    score = evaluate(model, text=text, tokenizer=tok)
    assert score.nll_per_token < 4.5, score
    greedy = tok.decode(model.generate(tok.encode("The return value of the function is"), 12, temperature=0,
                                       eot_id=tok.eot_id))
    assert sum(w.isalpha() for w in greedy.split()) >= 3, greedy


def test_a_directory_named_like_the_bundled_model_wins(tmp_path, monkeypatch):
    GPT2.from_pretrained("tiny").save(tmp_path / "tiny", Tokenizer.from_pretrained("tiny"))
    monkeypatch.chdir(tmp_path)
    assert GPT2.from_pretrained("tiny").config.n_layer == 4
    assert GPT2.from_pretrained(Path("tiny")).config.n_layer == 4  # the local copy, same shape, also read


@pytest.fixture
def no_gpt2(tmp_path):
    """An empty cache and a host that answers 404 to every request for GPT-2's files."""
    with FileServer() as server:  # serves nothing: every file is "not found"
        yield dict(MINIGPT2_HOME=str(tmp_path / "cache"), MINIGPT2_BASE_URL=server.url), server


def test_generate_without_gpt2_continues_with_tiny_and_says_so_in_one_line(no_gpt2):
    env, server = no_gpt2
    r = run_module("Alan Turing theorized that computers would", "--max-new-tokens", "20", "--seed", "0", **env)
    assert r.returncode == 0, r.stderr.decode()
    err = r.stderr.decode().strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "GPT-2 124M is not in the cache and could not be downloaded" in err
    assert "HTTP 404" in err and "MINIGPT2_BASE_URL" in err and "run once with network" in err
    assert all(f in err for f in MODEL_FILES), "all seven files are named"
    assert "bundled model 'tiny'" in err
    model, tok = GPT2.from_pretrained("tiny"), Tokenizer.from_pretrained("tiny")
    ids = model.generate(tok.encode("Alan Turing theorized that computers would"), 20, seed=0, top_k=40,
                         eot_id=tok.eot_id)
    assert r.stdout.decode() == tok.decode(ids) + "\n", "the text is tiny's, as the API gives it"
    assert server.requests, "it did try GPT-2 first"


def test_a_model_named_explicitly_is_never_replaced(no_gpt2):
    env, _ = no_gpt2
    err = one_line_error(run_module("Hello", "--model", "124M", **env))
    assert "GPT-2 124M is not in the cache and could not be downloaded" in err and "tiny" not in err.split(";")[0]
    assert "bundled" not in err


def test_generate_with_tiny_named_never_touches_the_network(no_gpt2):
    env, server = no_gpt2
    r = run_module("The list", "--model", "tiny", "--max-new-tokens", "5", "--seed", "1", **env)
    assert r.returncode == 0 and r.stderr == b"", r.stderr.decode()
    assert server.requests == []


def test_every_command_takes_tiny(tmp_path, no_gpt2):
    env, server = no_gpt2
    (tmp_path / "notes.txt").write_text("The import statement finds a module and loads it. " * 40)
    r = run_module(str(tmp_path / "notes.txt"), "--model", "tiny", "--json", module="minigpt2.evaluate", **env)
    assert r.returncode == 0, r.stderr.decode()
    assert json.loads(r.stdout)["perplexity"] < 60
    r = run_module("--data", str(tmp_path / "notes.txt"), "--out", str(tmp_path / "ft"), "--init", "tiny",
                   "--steps", "2", "--batch-size", "2", "--block-size", "32", "--eval-batches", "1",
                   module="minigpt2.train", **env)
    assert r.returncode == 0, r.stderr.decode()
    r = run_module("--data", str(tmp_path / "notes.txt"), "--out", str(tmp_path / "new"), "--init", "scratch",
                   "--tokenizer", "tiny", "--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--steps", "2",
                   "--batch-size", "2", "--block-size", "16", "--eval-batches", "1", module="minigpt2.train", **env)
    assert r.returncode == 0, r.stderr.decode()
    assert Tokenizer.from_pretrained(tmp_path / "new").n_vocab == 1024
    r = run_module("tiny", str(tmp_path / "hf"), module="minigpt2.export", **env)
    assert r.returncode == 0, r.stderr.decode()
    assert server.requests == [], "nothing was fetched"


def test_init_scratch_without_a_vocabulary_says_to_pass_tokenizer(tmp_path, no_gpt2):
    env, _ = no_gpt2
    (tmp_path / "notes.txt").write_text("some text " * 200)
    err = one_line_error(run_module("--data", str(tmp_path / "notes.txt"), "--out", str(tmp_path / "run"),
                                    "--init", "scratch", module="minigpt2.train", **env))
    assert "--tokenizer DIR" in err and "--tokenizer tiny" in err and "could not be downloaded" in err
    assert not (tmp_path / "run").exists()


def test_python_m_minigpt2_lists_the_commands_and_runs_one():
    r = subprocess.run([sys.executable, "-m", "minigpt2"], capture_output=True, cwd=REPO)
    assert r.returncode == 0 and r.stderr == b""
    listing = r.stdout.decode()
    for command in ("generate", "train", "evaluate", "export"):
        assert f"  {command} " in listing
    r = subprocess.run([sys.executable, "-m", "minigpt2", "generate", "Hi", "--model", "tiny", "--max-new-tokens", "3"],
                       capture_output=True, cwd=REPO)
    assert r.returncode == 0, r.stderr.decode()
    r = subprocess.run([sys.executable, "-m", "minigpt2", "trian"], capture_output=True, cwd=REPO)
    assert r.returncode == 2 and r.stdout == b""
    assert r.stderr.decode().splitlines()[0] == "minigpt2: error: unknown command 'trian'"


@pytest.mark.parametrize("module", ["minigpt2", "minigpt2.generate", "minigpt2.train", "minigpt2.evaluate",
                                    "minigpt2.export"])
def test_every_command_says_its_version(module):
    from minigpt2 import __version__

    r = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True, cwd=REPO)
    assert r.returncode == 0, r.stderr.decode()
    assert __version__ in r.stdout.decode()
