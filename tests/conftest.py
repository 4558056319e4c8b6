"""Shared fixtures: OpenAI's vocabulary, the TensorFlow-written fixture, reference implementations.

Tests look for data in ../shared (beside the repository). Without it they fetch what they need the way the
library does, or skip saying what is missing. With MINIGPT2_NO_SKIPS=1 (set by .ci/run), every skip is a
failure: in CI a reference test that did not run is not a pass.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from minigpt2 import download as dl

from .httpserver import FileServer

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
TINY_CHECKPOINT = SHARED / "fixtures" / "tf-gpt2-tiny"

# subtle: every test runs with a cache of its own, never the user's (~/.cache/minigpt2): set before any test
# imports minigpt2's cache_dir users, kept for the session (the notebooks share it), removed at the end
_HOME = tempfile.TemporaryDirectory(prefix="minigpt2-tests-")
os.environ["MINIGPT2_HOME"] = _HOME.name


def pytest_unconfigure(config):
    _HOME.cleanup()


collect_ignore = ["data"]  # tests/data holds fixtures and the script that made one (needs TensorFlow)

# the GPT-2 pre-tokenizer as tiktoken writes it (an independent spelling of OpenAI's pattern)
TIKTOKEN_GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("MINIGPT2_NO_SKIPS") == "1" and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.longrepr = f"skipped, but MINIGPT2_NO_SKIPS=1 requires every test to run: {reason}"


def require(module: str):
    """Import a reference implementation or skip, saying how to install it."""
    return pytest.importorskip(module, reason=f"{module} is missing: pip install -e '.[reference]'")


@pytest.fixture(scope="session")
def vocab_dir() -> Path:
    """OpenAI's encoder.json + vocab.bpe: ../shared/data, else downloaded into the cache as the library does."""
    if (SHARED / "data" / "encoder.json").is_file():
        return SHARED / "data"
    from minigpt2.download import VOCAB_FILES, DownloadError, download_openai_files

    try:
        return download_openai_files("124M", VOCAB_FILES)
    except DownloadError as e:
        pytest.skip(f"GPT-2 vocabulary not found: no {SHARED / 'data'} and the download failed: {e}")


@pytest.fixture(scope="session")
def tok(vocab_dir):
    from minigpt2 import Tokenizer

    return Tokenizer.from_dir(vocab_dir)


@pytest.fixture(scope="session")
def tiktoken_gpt2(vocab_dir):
    """tiktoken's GPT-2 encoding built offline from the same two files."""
    tiktoken = require("tiktoken")
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    ranks = data_gym_to_mergeable_bpe_ranks(str(vocab_dir / "vocab.bpe"), str(vocab_dir / "encoder.json"))
    return tiktoken.Encoding(name="gpt2-offline", pat_str=TIKTOKEN_GPT2_PATTERN, mergeable_ranks=ranks,
                             special_tokens={"<|endoftext|>": 50256})


@pytest.fixture(scope="session")
def tiny_checkpoint() -> Path:
    """The small checkpoint written by real TensorFlow in OpenAI's layout (with reference.npz)."""
    if not (TINY_CHECKPOINT / "model.ckpt.index").is_file():
        pytest.skip(f"TensorFlow-written fixture not found at {TINY_CHECKPOINT} (it ships beside the repo as "
                    "../shared/fixtures/tf-gpt2-tiny)")
    return TINY_CHECKPOINT


@pytest.fixture
def copy_of_fixture(tiny_checkpoint, tmp_path):
    """A writable copy of the TensorFlow-written fixture, to corrupt."""
    import shutil

    dest = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, dest)
    for f in dest.iterdir():
        f.chmod(0o644)
    return dest


@pytest.fixture(scope="session")
def reference(tiny_checkpoint):
    """reference.npz: logits of the TensorFlow-written fixture computed by an independent converter."""
    import numpy as np

    return np.load(tiny_checkpoint / "reference.npz")


@pytest.fixture
def bucket(tiny_checkpoint, tmp_path, monkeypatch):
    """The fixture served as model "124M" at http://127.0.0.1:port/models/124M/..., an empty cache."""
    monkeypatch.setattr(dl, "BACKOFF_SECONDS", 0.01)
    monkeypatch.setenv("MINIGPT2_HOME", str(tmp_path / "cache"))
    with FileServer() as server:
        for f in dl.MODEL_FILES:
            server.files[f"/models/124M/{f}"] = (tiny_checkpoint / f).read_bytes()
        monkeypatch.setenv("MINIGPT2_BASE_URL", server.url)
        yield server


@pytest.fixture(scope="module")
def short_model():
    """A small random GPT-2 with a short context (32) and weights large enough to make attention uneven."""
    from minigpt2 import GPT2, GPT2Config

    return GPT2.init(GPT2Config(n_vocab=300, n_ctx=32, n_embd=16, n_head=2, n_layer=2), seed=0, std=0.3)


def run_module(*args, module="minigpt2.generate", **env):
    """`python -m module args...` from the repository, its output captured, with extra environment variables."""
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, cwd=REPO,
                          env=dict(os.environ, PYTHONIOENCODING="utf-8", **env))


def one_line_error(r, returncode=2) -> str:
    """The one line a command printed for its error (and nothing more, no traceback), with its exit code."""
    err = r.stderr.decode().strip()
    assert r.returncode == returncode, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err
