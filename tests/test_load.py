"""Model directories -> (config, params): OpenAI's, Hugging Face's (every dtype and option), minigpt2's
converted copies; bad ones refused by name."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minigpt2 import GPT2, GPT2Config, Tokenizer
from minigpt2.files import CONVERTED_FILE
from minigpt2.load import (
    convert,
    load_converted,
)
from minigpt2.params import flatten
from minigpt2.safetensors import read_safetensors, write_safetensors
from minigpt2.tf_checkpoint import CheckpointError

from .conftest import one_line_error, run_module
from .reference import assert_matches_reference, hf_named


def hf_dir(path: Path, model, **options) -> Path:
    c = model.config
    path.mkdir(parents=True, exist_ok=True)
    config = {"model_type": "gpt2", "vocab_size": c.n_vocab, "n_positions": c.n_ctx, "n_embd": c.n_embd,
              "n_layer": c.n_layer, "n_head": c.n_head, "activation_function": "gelu_new", **options}
    (path / "config.json").write_text(json.dumps(config))
    write_safetensors(path / "model.safetensors", hf_named(model.params))
    return path


@pytest.mark.parametrize("option, value", [
    ("scale_attn_weights", False), ("scale_attn_by_inverse_layer_idx", True), ("n_inner", 48),
    ("activation_function", "relu"), ("add_cross_attention", True), ("tie_word_embeddings", False),
    ("model_type", "gpt_neo"),
])
def test_hugging_face_options_minigpt2_does_not_implement_are_refused_by_name(tmp_path, short_model, option, value):
    hf_dir(tmp_path, short_model, **{option: value})
    with pytest.raises(CheckpointError, match=f"{option} .*{value!r}"):
        GPT2.from_pretrained(tmp_path)
    r = run_module("Hi", "--model", str(tmp_path))
    assert option in one_line_error(r)


def test_hugging_face_options_at_gpt2s_values_load(tmp_path, short_model):
    hf_dir(tmp_path, short_model, scale_attn_weights=True, scale_attn_by_inverse_layer_idx=False, n_inner=None,
           tie_word_embeddings=True, activation_function="gelu_pytorch_tanh")
    np.testing.assert_array_equal(GPT2.from_pretrained(tmp_path)([1, 2]), short_model([1, 2]))


@pytest.mark.reference
def test_reorder_and_upcast_attn_is_honoured(tmp_path, short_model):
    """The one option loaded rather than refused: it reorders float32 work; transformers agrees."""
    from .reference import hf_forward, hf_model

    hf = hf_model(short_model)
    hf.config.reorder_and_upcast_attn = True
    for layer in hf.transformer.h:
        layer.attn.reorder_and_upcast_attn = True
    hf_dir(tmp_path, short_model, reorder_and_upcast_attn=True)
    ids = np.arange(1, 30)
    np.testing.assert_allclose(GPT2.from_pretrained(tmp_path)(ids), hf_forward(hf, ids).logits[0].numpy(), atol=1e-4)


@pytest.mark.parametrize("meta, message", [
    ({"format": "minigpt2", "format_version": "1"}, "holds no config"),
    ({"format": "minigpt2", "format_version": "1", "config": "{not json"}, "not a GPT2Config"),
    ({"format": "minigpt2", "format_version": "1", "config": '{"n_vocab": 10, "colour": 3}'}, "not a GPT2Config"),
    ({"format": "minigpt2", "format_version": "1", "config": "[1]"}, "not a GPT2Config"),
])
def test_malformed_minigpt2_metadata_is_named(tmp_path, short_model, meta, message):
    write_safetensors(tmp_path / "minigpt2.safetensors", flatten(short_model.params), meta)
    with pytest.raises(CheckpointError, match=message):
        GPT2.from_pretrained(tmp_path)
    assert message.split()[0] in one_line_error(run_module("Hi", "--model", str(tmp_path)))


def test_directory_with_no_known_format(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(CheckpointError, match="holds no model minigpt2 knows.*notes.txt"):
        GPT2.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="model directory not found"):
        GPT2.from_pretrained(tmp_path / "nope")
    with pytest.raises(ValueError, match="unknown model name 'gpt5'"):
        GPT2.from_pretrained("gpt5")


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
