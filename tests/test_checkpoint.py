"""OpenAI's checkpoints without TensorFlow, specified against files written by real TensorFlow and logits
computed by an independent converter (../shared/fixtures/tf-gpt2-tiny/reference.npz)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minigpt2 import GPT2, Tokenizer
from minigpt2 import download as dl
from minigpt2.files import CONVERTED_FILE
from minigpt2.load import (
    convert,
    converted_dir,
    from_openai,
    load_converted,
)
from minigpt2.safetensors import read_safetensors, write_safetensors
from minigpt2.tf_checkpoint import CheckpointError, crc32c, read_checkpoint, read_index

DATA_FILE = "model.ckpt.data-00000-of-00001"


def assert_matches_reference(model, reference):
    for i in range(3):
        tokens = reference[f"tokens_{i}"]
        logits = model(tokens)
        assert logits.dtype == np.float32
        np.testing.assert_allclose(logits[reference[f"positions_{i}"]], reference[f"logits_{i}"], atol=1e-4, rtol=0)
        np.testing.assert_allclose(logits[:, reference["vocab_subset"]], reference[f"logits_sub_{i}"], atol=1e-4, rtol=0)
        np.testing.assert_array_equal(logits.argmax(-1), reference[f"argmax_{i}"])
        lse = np.log(np.exp(logits.astype(np.float64)).sum(-1))
        np.testing.assert_allclose(lse, reference[f"logsumexp_{i}"], atol=1e-4, rtol=0)


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


def test_directory_with_no_known_format(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(CheckpointError, match="holds no model minigpt2 knows.*notes.txt"):
        GPT2.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="model directory not found"):
        GPT2.from_pretrained(tmp_path / "nope")
    with pytest.raises(ValueError, match="unknown model name 'gpt5'"):
        GPT2.from_pretrained("gpt5")


# --- the converted format -------------------------------------------------------------------------


@pytest.mark.reference
def test_converted_copy_matches_and_is_memory_mapped(tiny_checkpoint, reference, tmp_path):
    dest = convert(tiny_checkpoint, tmp_path / "converted", progress=False)
    model = GPT2.from_pretrained(dest)
    assert_matches_reference(model, reference)
    assert isinstance(model.params["wte"].base, np.memmap) or isinstance(model.params["wte"], np.memmap)
    _, meta = read_safetensors(dest / CONVERTED_FILE)
    assert meta["format"] == "minigpt2" and meta["format_version"] == "1"
    assert Tokenizer.from_dir(dest).encode("Hello world") == [15496, 995]


def test_converted_copy_of_another_version_is_refused(tiny_checkpoint, tmp_path):
    dest = convert(tiny_checkpoint, tmp_path / "converted", progress=False)
    tensors, meta = read_safetensors(dest / CONVERTED_FILE)
    write_safetensors(dest / CONVERTED_FILE, {k: np.array(v) for k, v in tensors.items()}, dict(meta, format_version="0"))
    with pytest.raises(CheckpointError, match="format version 0"):
        load_converted(dest)


def test_interrupted_conversion_leaves_nothing_that_loads(tiny_checkpoint, tmp_path, monkeypatch):
    import minigpt2.save as saving

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(saving, "write_safetensors", crash)
    with pytest.raises(KeyboardInterrupt):
        convert(tiny_checkpoint, tmp_path / "converted", progress=False)
    assert not (tmp_path / "converted" / CONVERTED_FILE).exists()
    assert not [p for p in (tmp_path / "converted").iterdir() if p.name.endswith(".tmp")], "temporary files left"
    with pytest.raises(CheckpointError):
        GPT2.from_pretrained(tmp_path / "converted")


# --- downloading from a local server in OpenAI's URL layout ---------------------------------------


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


# --- Hugging Face directories ---------------------------------------------------------------------


@pytest.mark.reference
def test_hugging_face_directory_loads(tmp_path, tiny_checkpoint):
    from .reference import hf_forward, hf_model

    ours = GPT2.from_pretrained(tiny_checkpoint)
    hf = hf_model(ours)
    hf.save_pretrained(tmp_path)  # config.json + model.safetensors, as users have them
    assert (tmp_path / "model.safetensors").is_file()
    loaded = GPT2.from_pretrained(tmp_path)
    ids = np.arange(0, 50000, 997)
    np.testing.assert_allclose(loaded(ids), hf_forward(hf, ids).logits[0].numpy(), atol=1e-4, rtol=0)


@pytest.mark.reference
def test_safetensors_reader_agrees_with_the_safetensors_package(tmp_path):
    st = pytest.importorskip("safetensors.numpy", reason="safetensors is missing: pip install -e '.[reference]'")
    rng = np.random.default_rng(0)
    arrays = {"a": rng.standard_normal((3, 5)).astype(np.float32), "b": np.arange(7, dtype=np.int64),
              "c": rng.standard_normal(4).astype(np.float16), "scalar": np.array(2.5, dtype=np.float64)}
    st.save_file(arrays, str(tmp_path / "ref.safetensors"), metadata={"k": "v"})
    ours, meta = read_safetensors(tmp_path / "ref.safetensors")
    assert meta == {"k": "v"}
    for k, v in arrays.items():
        np.testing.assert_array_equal(ours[k], v)
        assert ours[k].dtype == v.dtype
    write_safetensors(tmp_path / "ours.safetensors", arrays, {"k": "v"})
    back = st.load_file(str(tmp_path / "ours.safetensors"))
    for k, v in arrays.items():
        np.testing.assert_array_equal(back[k], v)


def test_truncated_safetensors_is_named(tmp_path):
    write_safetensors(tmp_path / "m.safetensors", {"w": np.ones((100, 10), np.float32)})
    raw = (tmp_path / "m.safetensors").read_bytes()
    (tmp_path / "m.safetensors").write_bytes(raw[:-40])
    with pytest.raises(ValueError, match="tensor w .* truncated or corrupted"):
        read_safetensors(tmp_path / "m.safetensors")


# --- no TensorFlow, torch or protobuf -------------------------------------------------------------


def test_loading_imports_no_framework(tiny_checkpoint):
    code = (
        "import sys, minigpt2\n"
        f"m = minigpt2.GPT2.from_pretrained({str(tiny_checkpoint)!r})\n"
        "m([1, 2, 3])\n"
        "bad = [n for n in sys.modules if n.split('.')[0] in ('tensorflow', 'torch', 'google', 'transformers', 'safetensors')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1],
                   env=dict(os.environ, PYTHONWARNINGS="error"))


def test_save_and_load_round_trip(tmp_path):
    from minigpt2 import GPT2Config

    model = GPT2.init(GPT2Config(n_vocab=100, n_ctx=16, n_embd=8, n_head=2, n_layer=2), seed=0, std=0.3)
    model.save(tmp_path / "m")
    again = GPT2.from_pretrained(tmp_path / "m")
    assert again.config == model.config
    np.testing.assert_array_equal(again([1, 2, 3]), model([1, 2, 3]))


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


# --- Hugging Face files in every dtype and layout the loader accepts ------------------------------


def hf_tensors(model) -> dict:
    """Our params -> Hugging Face's GPT-2 names and layout (Conv1D weights [n_in, n_out]), as numpy."""
    from .reference import hf_state_dict

    return {k: v.numpy() for k, v in hf_state_dict(model.params).items()}


def write_hf_dir(directory: Path, model, tensors: dict, writer=None) -> Path:
    import json

    c = model.config
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps({
        "model_type": "gpt2", "vocab_size": c.n_vocab, "n_positions": c.n_ctx, "n_embd": c.n_embd,
        "n_layer": c.n_layer, "n_head": c.n_head, "layer_norm_epsilon": c.layer_norm_epsilon,
        "activation_function": "gelu_new"}))
    (writer or write_safetensors)(tensors, str(directory / "model.safetensors"))
    return directory


@pytest.fixture(scope="module")
def small_model():
    from minigpt2 import GPT2Config

    return GPT2.init(GPT2Config(n_vocab=300, n_ctx=32, n_embd=16, n_head=2, n_layer=2), seed=4, std=0.3)


@pytest.mark.reference
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_hugging_face_files_load_in_every_dtype(tmp_path, small_model, dtype):
    """Written by the safetensors package from torch tensors; what loads must be exactly torch's own widening
    of those tensors to float32 (bfloat16 is the top half of a float32, float16 its own format)."""
    torch = pytest.importorskip("torch")
    st = pytest.importorskip("safetensors.torch", reason="safetensors is missing: pip install -e '.[reference]'")
    from .reference import hf_state_dict

    sd = {k: v.to(getattr(torch, dtype)).contiguous() for k, v in hf_state_dict(small_model.params).items()}
    del sd["lm_head.weight"]  # tied: save_pretrained leaves it out
    directory = tmp_path / dtype
    directory.mkdir()
    write_hf_dir(directory, small_model, sd, writer=lambda t, path: st.save_file(t, path))
    loaded = GPT2.from_pretrained(directory)
    expected = {k: v.float().numpy() for k, v in sd.items()}
    np.testing.assert_array_equal(loaded.params["wte"], expected["transformer.wte.weight"])
    np.testing.assert_array_equal(loaded.params["blocks"][1]["mlp"]["c_fc"]["w"],
                                  expected["transformer.h.1.mlp.c_fc.weight"].T)
    np.testing.assert_array_equal(loaded.params["ln_f"]["g"], expected["transformer.ln_f.weight"])
    assert loaded.params["wte"].dtype == np.float32
    if dtype != "float32":
        assert not np.array_equal(loaded.params["wte"], small_model.params["wte"]), "really stored narrower"
    np.testing.assert_allclose(loaded([1, 2, 3]), small_model([1, 2, 3]), atol={"float32": 1e-5}.get(dtype, 0.5))


@pytest.mark.reference
def test_an_untied_lm_head_is_refused(tmp_path, small_model):
    tensors = hf_tensors(small_model)
    tensors["lm_head.weight"] = tensors["lm_head.weight"] * 1.5  # no longer the token embedding
    write_hf_dir(tmp_path, small_model, tensors, writer=lambda t, path: write_safetensors(path, t))
    with pytest.raises(CheckpointError, match="lm_head.weight differs from wte"):
        GPT2.from_pretrained(tmp_path)


@pytest.mark.reference
def test_a_tied_lm_head_saved_with_the_weights_loads(tmp_path, small_model):
    write_hf_dir(tmp_path, small_model, hf_tensors(small_model), writer=lambda t, path: write_safetensors(path, t))
    np.testing.assert_allclose(GPT2.from_pretrained(tmp_path)([5, 6]), small_model([5, 6]), atol=1e-6)
