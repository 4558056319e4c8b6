"""OpenAI's TensorFlow checkpoints read without TensorFlow, specified against files written by real TensorFlow
and logits computed by an independent converter (../shared/fixtures/tf-gpt2-tiny/reference.npz)."""

from pathlib import Path

import numpy as np
import pytest

from minigpt2 import GPT2
from minigpt2.load import (
    from_openai,
)
from minigpt2.crc32c import crc32c
from minigpt2.tf_checkpoint import CheckpointError, read_checkpoint, read_index

from .reference import DATA_FILE, assert_matches_reference


def greedy(model, prompt, n):
    cache = model.new_cache()
    logits, out = model(prompt, cache=cache, last_only=True), []
    for _ in range(n):
        out.append(int(logits[-1].argmax()))
        logits = model(np.array(out[-1:]), cache=cache)
    return out


# --- reading the TensorFlow-written files ---------------------------------------------------------


@pytest.mark.reference
def test_tensorflow_checkpoint_matches_independent_reference(tiny_checkpoint, reference):
    model = GPT2.from_pretrained(tiny_checkpoint)
    assert model.config.n_embd == 32 and model.config.n_layer == 2
    assert_matches_reference(model, reference)
    assert greedy(model, reference["greedy_prompt"], 20) == reference["greedy_out"].tolist()


def test_index_entries_describe_the_data_file(tiny_checkpoint):
    num_shards, entries = read_index(tiny_checkpoint / "model.ckpt")
    assert num_shards == 1 and len(entries) == 2 + 2 + 2 * 12
    e = entries["model/h1/attn/c_attn/w"]
    assert e.shape == (1, 32, 96) and e.dtype == np.float32 and e.size == 32 * 96 * 4
    assert entries["model/h0/attn/c_attn/b"].offset == 0  # a zero field is absent from the record, yet read as 0
    end = max(x.offset + x.size for x in entries.values())
    assert end == (tiny_checkpoint / DATA_FILE).stat().st_size


def test_tensor_checksums_verify(tiny_checkpoint):
    assert crc32c(b"123456789") == 0xE3069283  # the standard CRC-32C check value
    tensors = read_checkpoint(tiny_checkpoint / "model.ckpt", verify_crc=True)
    assert tensors["model/wte"].shape == (50257, 32)


def test_layers_are_taken_from_names_not_sort_order(tiny_checkpoint):
    tensors = read_checkpoint(tiny_checkpoint / "model.ckpt")
    model = GPT2.from_pretrained(tiny_checkpoint)
    for layer in range(2):
        np.testing.assert_array_equal(model.params["blocks"][layer]["mlp"]["c_fc"]["w"],
                                      tensors[f"model/h{layer}/mlp/c_fc/w"][0].T)


# --- corrupted copies -----------------------------------------------------------------------------


def test_truncated_data_file_is_named(copy_of_fixture):
    data = copy_of_fixture / DATA_FILE
    data.write_bytes(data.read_bytes()[:-1000])
    with pytest.raises(CheckpointError, match=f"{DATA_FILE} is truncated: tensor model/wte"):
        GPT2.from_pretrained(copy_of_fixture)


def test_missing_data_file_is_named(copy_of_fixture):
    (copy_of_fixture / DATA_FILE).unlink()
    with pytest.raises(CheckpointError, match="checkpoint data file not found"):
        GPT2.from_pretrained(copy_of_fixture)


@pytest.mark.parametrize("where", [100, 500, 900])
def test_flipped_bytes_in_index_are_caught(copy_of_fixture, where):
    index = copy_of_fixture / "model.ckpt.index"
    raw = bytearray(index.read_bytes())
    raw[where] ^= 0x5A
    index.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="model.ckpt.index"):
        GPT2.from_pretrained(copy_of_fixture)


def test_index_that_is_not_a_table(copy_of_fixture):
    (copy_of_fixture / "model.ckpt.index").write_bytes(b"<Error>BlobNotFound</Error>" * 3)
    with pytest.raises(CheckpointError, match="bad magic number"):
        GPT2.from_pretrained(copy_of_fixture)


def test_hparams_that_disagree_are_named(copy_of_fixture):
    (copy_of_fixture / "hparams.json").write_text('{"n_vocab": 50257, "n_ctx": 64, "n_embd": 48, "n_head": 4, "n_layer": 2}')
    with pytest.raises(CheckpointError, match=r"tensor model/wte has shape \(50257, 32\).*implies \(50257, 48\)"):
        GPT2.from_pretrained(copy_of_fixture)
    (copy_of_fixture / "hparams.json").write_text('{"n_vocab": 50257, "n_ctx": 64, "n_embd": 32, "n_head": 4, "n_layer": 1}')
    with pytest.raises(CheckpointError, match="model/h1/.* is for layer 1, but hparams.json says n_layer = 1"):
        GPT2.from_pretrained(copy_of_fixture)


def test_missing_tensor_and_wrong_dtype_are_named(tiny_checkpoint):
    from minigpt2.config import GPT2Config

    config = GPT2Config.from_hparams(tiny_checkpoint / "hparams.json")
    tensors = read_checkpoint(tiny_checkpoint / "model.ckpt")
    with pytest.raises(CheckpointError, match="tensor model/ln_f/g is missing"):
        from_openai({k: v for k, v in tensors.items() if k != "model/ln_f/g"}, config, "ckpt")
    bad = dict(tensors, **{"model/wpe": tensors["model/wpe"].astype(np.int32)})
    with pytest.raises(CheckpointError, match="tensor model/wpe has dtype int32"):
        from_openai(bad, config, "ckpt")


def test_full_size_openai_index_written_by_tensorflow():
    # tests/data/tf-124m-layout.ckpt.index: TensorFlow's index of a checkpoint in OpenAI's 124M layout
    from minigpt2 import GPT2Config
    from minigpt2.load import openai_name
    from minigpt2.params import param_shapes

    prefix = Path(__file__).parent / "data" / "tf-124m-layout.ckpt"
    num_shards, entries = read_index(prefix)
    assert num_shards == 1 and len(entries) == 148
    assert list(entries)[:3] == ["model/h0/attn/c_attn/b", "model/h0/attn/c_attn/w", "model/h0/attn/c_proj/b"]
    for name, shape in param_shapes(GPT2Config.from_name("124M")).items():
        e = entries[openai_name(name)]
        stored = (1, shape[1], shape[0]) if name.endswith(".w") and name not in ("wte", "wpe") else shape
        assert e.shape == stored and e.dtype == np.float32, name
    spans = sorted((e.offset, e.offset + e.size) for e in entries.values())
    assert spans[0][0] == 0 and all(a[1] == b[0] for a, b in zip(spans, spans[1:])), "tensors tile the data file"
    assert spans[-1][1] == 124_439_808 * 4
