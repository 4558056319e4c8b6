"""Downloading OpenAI's files into the cache, against a local server in OpenAI's URL layout: resume, retries,
short answers, no network, two processes at once, the cache's environment variables."""

import os
import subprocess
import sys

import numpy as np
import pytest

from minigpt2 import GPT2, Tokenizer
from minigpt2 import download as dl
from minigpt2.files import CONVERTED_FILE
from minigpt2.load import (
    converted_dir,
)
from minigpt2.tf_checkpoint import CheckpointError

from .reference import DATA_FILE, assert_matches_reference


def test_two_processes_downloading_the_same_model_wait_for_each_other(bucket, tmp_path):
    bucket.seconds_per_body = 1.0  # a slow mirror: the second process starts while the first is mid-file
    code = "from minigpt2 import GPT2; GPT2.from_pretrained('124M'); print('ok')"
    env = dict(os.environ)
    procs = []
    for _ in range(2):
        procs.append(subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE))
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0 and out == b"ok\n", err.decode()
    data = "/models/124M/model.ckpt.data-00000-of-00001"
    assert [p for p, _ in bucket.requests].count(data) == 1, "the data file was fetched once, not once per process"


@pytest.mark.parametrize("var, value, expected", [("MINIGPT2_HOME", "~/models", "models"),
                                                  ("XDG_CACHE_HOME", "~/.cache", ".cache/minigpt2")])
def test_tilde_in_cache_variables_is_the_home_directory(monkeypatch, tmp_path, var, value, expected):
    from minigpt2.download import cache_dir

    monkeypatch.delenv("MINIGPT2_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv(var, value)
    assert cache_dir() == tmp_path / expected


@pytest.mark.reference
def test_download_convert_load_then_no_network(bucket, reference):
    model = GPT2.from_pretrained("124M")
    assert_matches_reference(model, reference)
    assert sorted(p for p, _ in bucket.requests) == sorted(f"/models/124M/{f}" for f in dl.MODEL_FILES)
    raw = dl.openai_dir("124M")
    for f in dl.MODEL_FILES:
        assert (raw / f).read_bytes() == bucket.files[f"/models/124M/{f}"]
    assert (converted_dir("124M") / CONVERTED_FILE).is_file()
    n = len(bucket.requests)
    again = GPT2.from_pretrained("gpt2")  # the alias, from the converted copy
    Tokenizer.from_pretrained("124M")
    assert len(bucket.requests) == n, "a second load makes no request"
    np.testing.assert_array_equal(again(reference["tokens_1"]), model(reference["tokens_1"]))


def test_dropped_connection_resumes_with_range(bucket):
    path = f"/models/124M/{DATA_FILE}"
    bucket.faults[path] = ["drop_half"]
    dl.download_openai_files("124M")
    ranges = [r for p, r in bucket.requests if p == path]
    assert ranges[0] is None and ranges[1].startswith("bytes=")
    resumed_at = int(ranges[1][len("bytes="):-1])
    assert 0 < resumed_at <= len(bucket.files[path]) // 2, "resumed from what the first attempt saved"
    assert (dl.openai_dir("124M") / DATA_FILE).read_bytes() == bucket.files[path]


def test_503_then_success(bucket):
    bucket.faults["/models/124M/hparams.json"] = ["503", "503"]
    dl.download_openai_files("124M")
    assert [p for p, _ in bucket.requests].count("/models/124M/hparams.json") == 3


def test_404_is_a_clear_error_and_leaves_nothing(bucket):
    del bucket.files[f"/models/124M/{DATA_FILE}"]
    with pytest.raises(dl.DownloadError, match=f"/models/124M/{DATA_FILE} answered HTTP 404"):
        GPT2.from_pretrained("124M")
    raw = dl.openai_dir("124M")
    assert not (raw / DATA_FILE).exists() and not (raw / f"{DATA_FILE}.part").exists()
    assert not converted_dir("124M").exists()


def test_short_body_is_retried_and_completed(bucket):
    path = f"/models/124M/{DATA_FILE}"
    bucket.faults[path] = ["short"]
    dl.download_openai_files("124M")
    assert (dl.openai_dir("124M") / DATA_FILE).read_bytes() == bucket.files[path]
    assert [r for p, r in bucket.requests if p == path][1] is not None  # resumed, not restarted


def test_server_that_always_sends_too_little_fails_clearly(bucket, monkeypatch):
    monkeypatch.setattr(dl, "RETRIES", 2)
    path = "/models/124M/encoder.json"
    bucket.faults[path] = ["short"] * 3
    with pytest.raises(dl.DownloadError, match="could not download .*encoder.json after 3 attempts"):
        dl.download_openai_files("124M", ("encoder.json",))
    raw = dl.openai_dir("124M")
    assert not (raw / "encoder.json").exists(), "an incomplete file never gets the final name"
    assert (raw / "encoder.json.part").stat().st_size < len(bucket.files[path])


def test_complete_earlier_download_is_never_fetched_again(bucket):
    dl.download_openai_files("124M", ("vocab.bpe",))
    target = dl.openai_dir("124M") / "vocab.bpe"
    target.write_bytes(b"user's copy")
    dl.download_openai_files("124M")
    assert target.read_bytes() == b"user's copy"
    assert [p for p, _ in bucket.requests].count("/models/124M/vocab.bpe") == 1


def test_no_network_names_the_url_and_the_manual_way(tmp_path, monkeypatch):
    monkeypatch.setattr(dl, "BACKOFF_SECONDS", 0.0)
    monkeypatch.setattr(dl, "RETRIES", 1)
    monkeypatch.setenv("MINIGPT2_HOME", str(tmp_path))
    monkeypatch.setenv("MINIGPT2_BASE_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(dl.DownloadError) as e:
        GPT2.from_pretrained("355M")
    msg = str(e.value)
    assert "http://127.0.0.1:9/models/355M/checkpoint" in msg and "place the file at" in msg


def test_inconsistent_download_is_reported_and_kept(bucket, tiny_checkpoint):
    bucket.files["/models/124M/hparams.json"] = b'{"n_vocab": 50257, "n_ctx": 64, "n_embd": 64, "n_head": 4, "n_layer": 2}'
    with pytest.raises(CheckpointError, match="do not fit together"):
        GPT2.from_pretrained("124M")
    assert (dl.openai_dir("124M") / DATA_FILE).is_file(), "nothing the user downloaded is deleted"


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("MINIGPT2_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert dl.cache_dir() == tmp_path / "minigpt2"
    monkeypatch.setenv("MINIGPT2_HOME", str(tmp_path / "here"))
    assert dl.cache_dir() == tmp_path / "here"
    monkeypatch.delenv("MINIGPT2_BASE_URL", raising=False)
    assert dl.base_url() == "https://openaipublic.blob.core.windows.net/gpt-2"


def test_a_partial_answer_shorter_than_its_range_is_never_taken_as_complete(bucket):
    """A 206 whose Content-Range promises the rest of the file but whose body (with a matching
    Content-Length, so the HTTP layer sees nothing wrong) holds half of it: the size check must catch it."""
    path = f"/models/124M/{DATA_FILE}"
    bucket.faults[path] = ["drop_half", "short_range", "ok"]
    dl.download_openai_files("124M", (DATA_FILE,))
    ranges = [r for p, r in bucket.requests if p == path]
    assert len(ranges) == 3 and ranges[1] is not None and ranges[2] is not None, "resumed twice"
    assert (dl.openai_dir("124M") / DATA_FILE).read_bytes() == bucket.files[path]


def test_a_server_whose_ranges_always_fall_short_fails_and_keeps_the_part(bucket, monkeypatch):
    monkeypatch.setattr(dl, "RETRIES", 2)
    path = "/models/124M/encoder.json"
    bucket.faults[path] = ["drop_half"] + ["short_range"] * 2
    with pytest.raises(dl.DownloadError, match="encoder.json after 3 attempts"):
        dl.download_openai_files("124M", ("encoder.json",))
    raw = dl.openai_dir("124M")
    assert not (raw / "encoder.json").exists() and (raw / "encoder.json.part").is_file()
