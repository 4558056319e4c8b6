"""Bad input, misuse and faults: never silently wrong numbers, never a raw traceback from deep inside NumPy,
nothing written that cannot be read back. One section per class of defect."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minigpt2 import GPT2, GPT2Config, KVCache, Tokenizer
from minigpt2.params import flatten
from minigpt2.safetensors import SafetensorsError, read_safetensors, write_safetensors
from minigpt2.tf_checkpoint import CheckpointError

SMALL = GPT2Config(n_vocab=300, n_ctx=32, n_embd=16, n_head=2, n_layer=2)


@pytest.fixture(scope="module")
def small():
    return GPT2.init(SMALL, seed=0, std=0.3)


def run_cli(*args, module="minigpt2.generate", **env):
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, cwd=Path(__file__).parents[1],
                          env=dict(os.environ, PYTHONIOENCODING="utf-8", **env))


def one_line_error(r, returncode=2) -> str:
    err = r.stderr.decode().strip()
    assert r.returncode == returncode, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


# --- 1. Hugging Face options that change the maths ------------------------------------------------


def hf_named(params) -> dict:
    """Our params under Hugging Face's names and layout (Conv1D weights [n_in, n_out])."""
    out = {}
    for name, a in flatten(params).items():
        *path, leaf = name.replace("blocks.", "h.").split(".")
        if name in ("wte", "wpe"):
            out[f"transformer.{name}.weight"] = a
        else:
            out["transformer." + ".".join(path + [{"g": "weight", "b": "bias", "w": "weight"}[leaf]])] = \
                a.T.copy() if leaf == "w" else a
    return out


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
def test_hugging_face_options_minigpt2_does_not_implement_are_refused_by_name(tmp_path, small, option, value):
    hf_dir(tmp_path, small, **{option: value})
    with pytest.raises(CheckpointError, match=f"{option} .*{value!r}"):
        GPT2.from_pretrained(tmp_path)
    r = run_cli("Hi", "--model", str(tmp_path))
    assert option in one_line_error(r)


def test_hugging_face_options_at_gpt2s_values_load(tmp_path, small):
    hf_dir(tmp_path, small, scale_attn_weights=True, scale_attn_by_inverse_layer_idx=False, n_inner=None,
           tie_word_embeddings=True, activation_function="gelu_pytorch_tanh")
    np.testing.assert_array_equal(GPT2.from_pretrained(tmp_path)([1, 2]), small([1, 2]))


@pytest.mark.reference
def test_reorder_and_upcast_attn_is_honoured(tmp_path, small):
    """The one option loaded rather than refused: it reorders float32 work; transformers agrees."""
    from .reference import hf_forward, hf_model

    hf = hf_model(small)
    hf.config.reorder_and_upcast_attn = True
    for layer in hf.transformer.h:
        layer.attn.reorder_and_upcast_attn = True
    hf_dir(tmp_path, small, reorder_and_upcast_attn=True)
    ids = np.arange(1, 30)
    np.testing.assert_allclose(GPT2.from_pretrained(tmp_path)(ids), hf_forward(hf, ids).logits[0].numpy(), atol=1e-4)


# --- 2. hooks -------------------------------------------------------------------------------------


def test_a_hook_that_forgets_to_return_is_named(small):
    def zero_in_place(x):
        x[...] = 0  # edits in place, returns nothing

    for name in ("blocks.0.mlp.out", "logits", "blocks.0.attn.z"):
        with pytest.raises(ValueError, match=f"hook for '{name}' returned None at activation '{name}'.*return x"):
            small.run_with_activations([1, 2, 3], names=[], hooks={name: zero_in_place})


def test_a_hook_that_changes_the_shape_is_named(small):
    with pytest.raises(ValueError, match=r"hook for 'blocks.\*.attn.z' returned shape \(2, 3\) at activation "
                                         r"'blocks.0.attn.z', which has shape \(2, 3, 8\)"):
        small.run_with_activations([1, 2, 3], names=[], hooks={"blocks.*.attn.z": lambda z: z[..., 0]})
    with pytest.raises(ValueError, match="logits"):
        small.run_with_activations([1, 2, 3], names=[], hooks={"logits": lambda x: x[:, :10]})


@pytest.mark.parametrize("names, hooks", [([], {"blocks.0.attn.Z": lambda x: x}), ([], {"blocks.7.*": lambda x: x}),
                                          ("blocks.0.attn.patern", None), (["logits", "embeddings"], None)])
def test_a_pattern_that_matches_nothing_is_an_error(small, names, hooks):
    with pytest.raises(ValueError, match="matches no activation of this model"):
        small.run_with_activations([1, 2, 3], names=names, hooks=hooks)


# --- 4. the end-of-text id comes from the vocabulary ------------------------------------------------


@pytest.fixture(scope="module")
def own_vocabulary_model(tmp_path_factory):
    """A model on a vocabulary of its own, whose <|endoftext|> is id 262, biased to end after one token."""
    tok = Tokenizer.train("to be or not to be " * 10, 263, progress=False)
    assert tok.eot_id == tok.n_vocab - 1 != 50256
    model = GPT2.init(GPT2Config(n_vocab=tok.n_vocab, n_ctx=32, n_embd=8, n_head=2, n_layer=1), seed=0)
    model.params["wte"][tok.eot_id] = 5.0 * model.params["ln_f"]["g"]
    model.params["ln_f"]["b"][:] = 1.0
    path = tmp_path_factory.mktemp("own-vocab")
    model.save(path, tok)
    return model, tok, path


def test_generation_stops_at_the_vocabularys_own_end_of_text(own_vocabulary_model):
    model, tok, _ = own_vocabulary_model
    full = model.generate([1, 2], 10, temperature=0, stop_at_eot=False, eot_id=tok.eot_id)
    assert tok.eot_id in full
    assert model.generate([1, 2], 10, temperature=0, eot_id=tok.eot_id) == full[: full.index(tok.eot_id)]
    steps = list(model.stream([1, 2], 10, temperature=0, eot_id=tok.eot_id))
    assert steps[-1] == tok.eot_id and len(steps) == full.index(tok.eot_id) + 1
    assert len(model.generate([1, 2], 10, temperature=0)) == 10, "no id 50256 in this vocabulary: no stop"
    with pytest.raises(ValueError, match="eot_id 50256 is outside the vocabulary"):
        model.generate([1, 2], 3, eot_id=50256)


def test_cli_on_a_model_with_its_own_vocabulary(own_vocabulary_model):
    model, tok, path = own_vocabulary_model
    r = run_cli("", "--model", str(path), "--temperature", "0", "--max-new-tokens", "10")
    assert r.returncode == 0, r.stderr.decode()
    expected = model.generate([tok.eot_id], 10, temperature=0, eot_id=tok.eot_id)
    assert r.stdout.decode() == tok.decode(expected) + "\n"


# --- 5. Tokenizer.save -> from_dir encodes identically ---------------------------------------------


@pytest.mark.parametrize("text, size, pattern", [
    ("hello world", 257, None),  # no merges at all
    ("a<|>b " * 50, 300, None),  # a learned token that looks like a special token
    ("x=1;y=22;" * 30, 280, r"\d+|[a-z]+|."),  # a pattern of its own
])
def test_a_saved_tokenizer_reads_back_identical(tmp_path, text, size, pattern):
    kwargs = {"pattern": pattern} if pattern else {}
    tok = Tokenizer.train(text, size, progress=False, **kwargs)
    tok.save(tmp_path)
    again = Tokenizer.from_dir(tmp_path)
    assert again.merges == tok.merges and again.special_tokens == tok.special_tokens
    assert again.pattern == tok.pattern
    for sample in (text, "a<|>b hello x=17; world", "<|endoftext|> x"):
        assert again.encode(sample) == tok.encode(sample)
        assert again.encode(sample, allowed_special="all") == tok.encode(sample, allowed_special="all")


# --- 6, 7, 17. the command line ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def ending_model_dir(tmp_path_factory, vocab_dir):
    """A model on GPT-2's vocabulary that ends its text after a few tokens, saved with that vocabulary."""
    model = GPT2.init(GPT2Config(n_vocab=50257, n_ctx=32, n_embd=8, n_head=2, n_layer=1), seed=0)
    model.params["wte"][50256] = 5.0 * model.params["ln_f"]["g"]
    model.params["ln_f"]["b"][:] = 1.0
    path = tmp_path_factory.mktemp("ending")
    model.save(path, Tokenizer.from_dir(vocab_dir))
    return path


def test_cli_never_prints_the_end_of_text_token(ending_model_dir):
    args = ("Hello", "--model", str(ending_model_dir), "--temperature", "0")
    streamed, at_once = run_cli(*args), run_cli(*args, "--no-stream")
    assert streamed.returncode == at_once.returncode == 0
    assert "<|endoftext|>" not in streamed.stdout.decode()
    assert streamed.stdout == at_once.stdout


def test_bad_seed(small, tiny_checkpoint):
    assert "--seed must be a non-negative integer" in one_line_error(run_cli("Hi", "--model", str(tiny_checkpoint),
                                                                             "--seed", "-1"))
    for seed in (-1, 1.5, "7"):
        with pytest.raises(ValueError, match="seed must be a non-negative integer"):
            small.generate([1], 3, seed=seed)


def test_cli_on_a_saved_model_without_a_vocabulary_uses_gpt2s_and_says_so(tmp_path, tiny_checkpoint, vocab_dir):
    import shutil

    cache = tmp_path / "cache"  # GPT-2's vocabulary in the cache, as a first download leaves it
    (cache / "models" / "124M").mkdir(parents=True)
    for f in ("encoder.json", "vocab.bpe"):
        shutil.copyfile(vocab_dir / f, cache / "models" / "124M" / f)
    GPT2.from_pretrained(tiny_checkpoint).save(tmp_path / "m")  # no tokenizer given
    r = run_cli("Hello", "--model", str(tmp_path / "m"), "--max-new-tokens", "3", "--seed", "0",
                MINIGPT2_HOME=str(cache))
    assert r.returncode == 0 and "holds no vocabulary; using GPT-2's" in r.stderr.decode()
    with_vocab = tmp_path / "v"
    GPT2.from_pretrained(tiny_checkpoint).save(with_vocab, Tokenizer.from_dir(vocab_dir))
    r2 = run_cli("Hello", "--model", str(with_vocab), "--max-new-tokens", "3", "--seed", "0")
    assert r2.returncode == 0 and r2.stderr == b"" and r2.stdout == r.stdout


# --- 8. ids and caches ------------------------------------------------------------------------------


@pytest.mark.parametrize("ids, message", [(np.zeros((0, 3), int), "B, T >= 1"), (np.zeros((2, 0), int), "B, T >= 1"),
                                          (np.zeros(0, int), "B, T >= 1")])
def test_empty_ids_are_named(small, ids, message):
    with pytest.raises(ValueError, match=message):
        small(ids)


def test_cache_misuse_is_named(small):
    other = GPT2Config(n_vocab=300, n_ctx=32, n_embd=16, n_head=4, n_layer=2)
    with pytest.raises(ValueError, match="made for another model"):
        small([1, 2], cache=KVCache(other))
    for length in (-1, 33, 2.5):
        cache = small.new_cache()
        cache.length = length
        with pytest.raises(ValueError, match=f"the cache's length is {length!r}"):
            small([1], cache=cache)
    with pytest.raises(ValueError, match="must be a KVCache"):
        small([1], cache={"k": 0})


# --- 9. malformed safetensors files ------------------------------------------------------------------


def raw_safetensors(header, data: bytes = b"") -> bytes:
    raw = json.dumps(header).encode() if not isinstance(header, bytes) else header
    return len(raw).to_bytes(8, "little") + raw + data


@pytest.mark.parametrize("header, data, message", [
    ([1, 2], b"", "the header is a JSON list"),
    ("text", b"", "the header is a JSON str"),
    ({"__metadata__": [1]}, b"", "__metadata__ must be an object of strings"),
    ({"__metadata__": {"a": 1}}, b"", "__metadata__ must be an object of strings"),
    ({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"1234", "malformed header entry"),
    ({"w": {"dtype": "F32", "shape": [1.0], "data_offsets": [0, 4]}}, b"1234", "malformed header entry"),
    ({"w": {"dtype": "F32", "shape": [1], "data_offsets": ["0", 4]}}, b"1234", "malformed header entry"),
    ({"w": {"dtype": "F32", "shape": [2**64, 2**64], "data_offsets": [0, 4]}}, b"1234", "do not fit its size"),
    ({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
      "v": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"1234", "overlaps the tensor before it"),
    ({"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"12345678", "leaves a hole of 4 bytes"),
    ({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"12345678", "cover 4 of the 8 data bytes"),
    ({"w": {"dtype": "X9", "shape": [1], "data_offsets": [0, 4]}}, b"1234", "malformed header entry"),
    (b"[" * 100000 + b"]" * 100000, b"", "not valid JSON"),
    (b'{"a": ' + b"9" * 5000 + b"}", b"", "not valid JSON"),
])
def test_malformed_safetensors_headers_are_the_formats_own_error(tmp_path, header, data, message):
    path = tmp_path / "model.safetensors"
    path.write_bytes(raw_safetensors(header, data))
    with pytest.raises(SafetensorsError, match=message) as e:
        read_safetensors(path)
    assert str(path) in str(e.value)


def test_a_header_one_byte_short_is_refused_not_shifted(tmp_path):
    write_safetensors(tmp_path / "m.safetensors", {"w": np.arange(6, dtype=np.float32)})
    raw = bytearray((tmp_path / "m.safetensors").read_bytes())
    n = int.from_bytes(raw[:8], "little")
    assert raw[8 + n - 1 : 8 + n] == b" ", "the writer pads the header with spaces"
    raw[:8] = (n - 1).to_bytes(8, "little")  # the JSON still parses; the data would start one byte early
    (tmp_path / "m.safetensors").write_bytes(bytes(raw))
    with pytest.raises(SafetensorsError, match="cover 24 of the 25 data bytes"):
        read_safetensors(tmp_path / "m.safetensors")


@pytest.mark.parametrize("meta, message", [
    ({"format": "minigpt2", "format_version": "1"}, "holds no config"),
    ({"format": "minigpt2", "format_version": "1", "config": "{not json"}, "not a GPT2Config"),
    ({"format": "minigpt2", "format_version": "1", "config": '{"n_vocab": 10, "colour": 3}'}, "not a GPT2Config"),
    ({"format": "minigpt2", "format_version": "1", "config": "[1]"}, "not a GPT2Config"),
])
def test_malformed_minigpt2_metadata_is_named(tmp_path, small, meta, message):
    write_safetensors(tmp_path / "minigpt2.safetensors", flatten(small.params), meta)
    with pytest.raises(CheckpointError, match=message):
        GPT2.from_pretrained(tmp_path)
    assert message.split()[0] in one_line_error(run_cli("Hi", "--model", str(tmp_path)))


# --- 10, 11. ids into decode, surrogates ----------------------------------------------------------------


@pytest.mark.parametrize("ids", [iter([15496, 10**9]), (i for i in [-1]), [15496.0, True], [True],
                                 np.array([15496.0]), [None]])
def test_decode_has_one_rule_for_every_way_of_passing_ids(tok, ids):
    with pytest.raises(ValueError, match="is not in the vocabulary"):
        tok.decode(ids)


def test_stream_decoder_rejects_bad_ids_the_same_way(tok):
    decoder = tok.stream_decoder()
    for bad in (10**9, 1.0, True, [5, -3]):
        with pytest.raises(ValueError, match="is not in the vocabulary"):
            decoder.push(bad)
    assert decoder.push(np.int64(15496)) + decoder.push(np.array([995])) == "Hello world"


def test_decode_accepts_every_integer_container(tok):
    for ids in ([15496, 995], (15496, 995), np.array([15496, 995], dtype=np.int32), iter([15496, 995])):
        assert tok.decode(ids) == "Hello world"


def test_the_lone_surrogate_error_names_its_index_in_the_whole_text(tok):
    with pytest.raises(ValueError, match="U\\+DC80 at index 15"):
        tok.encode("ab<|endoftext|>\udc80", allowed_special="all")


# --- 12. the config -------------------------------------------------------------------------------------


@pytest.mark.parametrize("eps", [-1.0, 0.0, float("nan"), float("inf"), "1e-5", True, None])
def test_every_config_field_is_checked(eps):
    with pytest.raises(ValueError, match="layer_norm_epsilon must be a positive finite number"):
        GPT2Config(layer_norm_epsilon=eps)
    assert GPT2Config(layer_norm_epsilon=1).layer_norm_epsilon == 1.0


@pytest.mark.parametrize("text, message", [
    ('{"n_vocab": 10, "n_ctx": 8, "n_embd": 4, "n_head": 2, "n_layer": 1, "layer_norm_epsilon": "tiny"}',
     "layer_norm_epsilon"),
    ("[1, 2]", "holds a JSON list"), ("7", "holds a JSON int"), ("[" * 10000, "not valid JSON"),
])
def test_bad_hparams_json_is_named(tmp_path, text, message):
    (tmp_path / "hparams.json").write_text(text)
    with pytest.raises(ValueError, match=message):
        GPT2Config.from_hparams(tmp_path / "hparams.json")


# --- 13. every prompt id is checked -------------------------------------------------------------------


def test_ids_a_long_prompt_drops_are_checked_too(small):
    with pytest.raises(ValueError, match="token id -5 at prompt position 0 is outside the vocabulary"):
        small.generate([-5] * 100 + [1] * 32, 3)


# --- 14. two processes loading the same model for the first time --------------------------------------


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


# --- 15. ~ in the cache's environment variables ----------------------------------------------------


@pytest.mark.parametrize("var, value, expected", [("MINIGPT2_HOME", "~/models", "models"),
                                                  ("XDG_CACHE_HOME", "~/.cache", ".cache/minigpt2")])
def test_tilde_in_cache_variables_is_the_home_directory(monkeypatch, tmp_path, var, value, expected):
    from minigpt2.download import cache_dir

    monkeypatch.delenv("MINIGPT2_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv(var, value)
    assert cache_dir() == tmp_path / expected


# --- 16. explain on a long word --------------------------------------------------------------------


def test_explain_of_a_long_word_lists_its_merges_without_a_snapshot_each(tok):
    word = "".join(np.random.default_rng(0).choice(list("abcdefghij"), 8000))
    explanation = tok.explain(word)
    (piece,) = explanation.pieces
    assert explanation.ids == tok.encode(word)
    assert len(piece.merges) == len(word) - len(piece.tokens), "one entry per merge"
    assert all(parts is None for _, _, parts in piece.merges), "no O(n^2) snapshots"
    assert "..." in str(explanation)
    short = tok.explain("Hello world").pieces[1]
    assert short.merges[-1][2] == [b" world"], "short words still show every step"
