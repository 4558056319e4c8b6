"""Saving a model: only minigpt2's own files are written, each atomically, and nothing else is ever lost."""

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import minigpt2.files as files
import minigpt2.save as saving
from minigpt2 import GPT2, GPT2Config, Tokenizer
from minigpt2.files import CONVERTED_FILE


def snapshot(directory: Path) -> dict[str, str]:
    """Every file under `directory` -> sha256 of its bytes."""
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def trained_tok():
    # its own pattern too, so that every one of the four files differs from GPT-2's
    return Tokenizer.train("the cat sat on the mat; the dog sat on the log " * 20, 257 + 17, pattern=r" ?\w+|\W",
                           progress=False)  # every merge the text allows


@pytest.fixture(scope="module")
def old_and_new(tok, trained_tok):
    """Two models with different vocabularies, so that any mixture of their files would show."""
    old = GPT2.init(GPT2Config(n_vocab=tok.n_vocab, n_ctx=16, n_embd=8, n_head=2, n_layer=1), seed=0, std=0.3)
    new = GPT2.init(GPT2Config(n_vocab=trained_tok.n_vocab, n_ctx=32, n_embd=16, n_head=4, n_layer=2), seed=1, std=0.3)
    return (old, tok), (new, trained_tok)


def assert_loads_as(directory, model, tok):
    loaded = GPT2.from_pretrained(directory)
    assert loaded.config == model.config
    ids = [1, 2, 3, 4]
    np.testing.assert_array_equal(loaded(ids), model(ids))
    text = "the cat sat on the log"
    assert Tokenizer.from_pretrained(directory).encode(text) == tok.encode(text)


def test_save_keeps_every_unrelated_file(tmp_path, old_and_new):
    (model, tok), _ = old_and_new
    work = tmp_path / "mywork"
    (work / "notes").mkdir(parents=True)
    (work / "thesis.txt").write_text("three years of work")
    (work / "notes" / "a.md").write_bytes(b"\x00\x01 binary too")
    (work / "encoder.json.bak").write_text("{}")
    before = snapshot(work)
    model.save(work, tok)
    after = snapshot(work)
    assert {k: after[k] for k in before} == before, "a file minigpt2 did not write was changed or removed"
    assert set(after) - set(before) == {CONVERTED_FILE, "encoder.json", "vocab.bpe", "minigpt2-tokenizer.json"}
    assert_loads_as(work, model, tok)


def test_saving_again_replaces_only_our_files(tmp_path, old_and_new):
    (old, old_tok), (new, new_tok) = old_and_new
    (tmp_path / "keep.txt").write_text("mine")
    old.save(tmp_path, old_tok)
    new.save(tmp_path, new_tok)
    assert_loads_as(tmp_path, new, new_tok)
    assert (tmp_path / "keep.txt").read_text() == "mine"
    assert Tokenizer.from_files(tmp_path / "encoder.json", tmp_path / "vocab.bpe").encode("the cat") == \
        new_tok.encode("the cat"), "the loose copies for other tools are the new vocabulary's"


def test_save_into_the_current_directory_keeps_it(tmp_path, monkeypatch, old_and_new):
    (model, _), _ = old_and_new
    (tmp_path / "data.csv").write_text("1,2,3")
    monkeypatch.chdir(tmp_path)
    model.save(".")
    assert (tmp_path / "data.csv").read_text() == "1,2,3"
    assert GPT2.from_pretrained(".").config == model.config


def failing_write_at(k):
    """A write_atomically that fails on its k-th call (0-based) after writing half of that file."""
    real = saving.write_atomically
    calls = []

    def write_atomically(path, write):
        calls.append(path)
        if len(calls) - 1 != k:
            return real(path, write)

        def half_then_fail(f):
            write(f)
            f.truncate(f.tell() // 2)
            raise OSError(28, "No space left on device")

        return real(path, half_then_fail)

    return write_atomically, calls


def failing_rename_at(k):
    """An os.replace that fails on its k-th call (0-based): the process died just before that rename."""

    real = os.replace
    calls = []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) - 1 == k:
            raise KeyboardInterrupt
        return real(src, dst)

    return replace, calls


@pytest.mark.parametrize("how", ["write", "rename"])
@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_interrupted_save_leaves_the_old_model_or_the_new_one(tmp_path, monkeypatch, old_and_new, how, k):
    (old, old_tok), (new, new_tok) = old_and_new
    old.save(tmp_path, old_tok)
    (tmp_path / "thesis.txt").write_text("keep me")
    before = snapshot(tmp_path)
    if how == "write":
        fake, calls = failing_write_at(k)
        monkeypatch.setattr(saving, "write_atomically", fake)
    else:
        fake, calls = failing_rename_at(k)
        monkeypatch.setattr(files.os, "replace", fake)
    with pytest.raises((OSError, KeyboardInterrupt)):
        new.save(tmp_path, new_tok)
    monkeypatch.undo()
    assert len(calls) == k + 1, "the save stopped where it was made to"
    assert (Path(calls[-1]).name == CONVERTED_FILE) == (k == 3), "the weights file is written last"
    assert (tmp_path / "thesis.txt").read_text() == "keep me"
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")], "temporary files left behind"
    assert_loads_as(tmp_path, old, old_tok)  # the weights file is renamed last: until then, the old model
    assert before["thesis.txt"] == snapshot(tmp_path)["thesis.txt"]
    new.save(tmp_path, new_tok)  # and a later save completes normally
    assert_loads_as(tmp_path, new, new_tok)


@pytest.fixture
def openai_dir_copy(tiny_checkpoint, tmp_path):
    d = tmp_path / "openai"
    shutil.copytree(tiny_checkpoint, d)
    return d


@pytest.fixture
def hf_dir(tmp_path, old_and_new):
    """A Hugging Face directory (as save_pretrained writes it: config.json + model.safetensors)."""
    d = tmp_path / "hf"
    d.mkdir()
    (d / "config.json").write_text('{"model_type": "gpt2"}')
    (d / "model.safetensors").write_bytes(b"stand-in for Hugging Face's weights")
    return d


@pytest.mark.parametrize("kind, words", [("openai_dir_copy", "OpenAI's checkpoint files"),
                                         ("hf_dir", "a Hugging Face model")])
def test_saving_over_another_kind_of_model_is_refused(request, kind, words, old_and_new):
    (model, tok), _ = old_and_new
    directory = request.getfixturevalue(kind)
    before = snapshot(directory)
    with pytest.raises(FileExistsError, match=f"{directory}.* holds {words}.*overwrite=True"):
        model.save(directory, tok)
    assert snapshot(directory) == before


def test_overwrite_adds_our_files_and_removes_nothing(openai_dir_copy, old_and_new):
    (model, tok), _ = old_and_new  # GPT-2's own vocabulary: the same bytes as OpenAI's encoder.json
    before = snapshot(openai_dir_copy)
    model.save(openai_dir_copy, tok, overwrite=True)
    after = snapshot(openai_dir_copy)
    assert {k: after[k] for k in before} == before
    assert_loads_as(openai_dir_copy, model, tok)


def test_a_foreign_file_under_one_of_our_names_is_never_rewritten(openai_dir_copy, old_and_new):
    _, (model, tok) = old_and_new  # another vocabulary than the encoder.json OpenAI put there
    before = snapshot(openai_dir_copy)
    with pytest.raises(FileExistsError, match="encoder.json was not written by minigpt2"):
        model.save(openai_dir_copy, tok, overwrite=True)
    assert snapshot(openai_dir_copy) == before


def test_exporting_over_a_hugging_face_model_minigpt2_did_not_write_is_refused(hf_dir, old_and_new):
    (model, tok), _ = old_and_new
    before = snapshot(hf_dir)
    with pytest.raises(FileExistsError, match=f"{hf_dir} holds a Hugging Face model that minigpt2 did not export.*"
                                              "overwrite=True"):
        model.save(hf_dir, tok, format="huggingface")
    assert snapshot(hf_dir) == before
    model.save(hf_dir, tok, format="huggingface", overwrite=True)  # asked for: replaced
    assert snapshot(hf_dir)["model.safetensors"] != before["model.safetensors"]


def test_an_earlier_export_is_replaced_by_the_next_one(tmp_path, old_and_new):
    (model, tok), (other, other_tok) = old_and_new
    model.save(tmp_path, tok, format="huggingface")
    other.save(tmp_path, other_tok, format="huggingface")  # our own files, the vocabulary's included
    first = snapshot(tmp_path)
    other.save(tmp_path, other_tok, format="huggingface")  # the same export again: nothing rewritten
    assert snapshot(tmp_path) == first
    model.save(tmp_path, tok, format="huggingface")
    assert snapshot(tmp_path) != first


def test_a_tokenizer_larger_than_the_model_is_refused(tmp_path, tok, trained_tok):
    small = GPT2.init(GPT2Config(n_vocab=trained_tok.n_vocab, n_ctx=8, n_embd=4, n_head=2, n_layer=1))
    with pytest.raises(ValueError, match=f"50257 ids but the model only n_vocab = {trained_tok.n_vocab}"):
        small.save(tmp_path, tok)
    assert list(tmp_path.iterdir()) == []


def test_save_and_load_round_trip(tmp_path):
    from minigpt2 import GPT2Config

    model = GPT2.init(GPT2Config(n_vocab=100, n_ctx=16, n_embd=8, n_head=2, n_layer=2), seed=0, std=0.3)
    model.save(tmp_path / "m")
    again = GPT2.from_pretrained(tmp_path / "m")
    assert again.config == model.config
    np.testing.assert_array_equal(again([1, 2, 3]), model([1, 2, 3]))
