"""The NumPy forward pass, specified against Hugging Face transformers (eager attention, float32)."""


import numpy as np
import pytest

from minigpt2 import GPT2, GPT2Config, KVCache
from minigpt2.params import flatten, unflatten

from .reference import hf_forward, hf_model

SMALL = GPT2Config(n_vocab=300, n_ctx=1024, n_embd=32, n_head=4, n_layer=2)


@pytest.fixture(scope="module")
def small():
    # std 0.2: attention far from uniform, so a mistake in the mask or the heads shows
    return GPT2.init(SMALL, seed=1, std=0.2)


@pytest.fixture(scope="module")
def small_hf(small):
    return hf_model(small)


@pytest.fixture(scope="module")
def gpt2_124m_shape():
    return GPT2.init(GPT2Config.from_name("124M"), seed=2)


@pytest.fixture(scope="module")
def gpt2_124m_shape_hf(gpt2_124m_shape):
    return hf_model(gpt2_124m_shape)


def random_ids(n, vocab, seed=0, batch=None):
    shape = (n,) if batch is None else (batch, n)
    return np.random.default_rng(seed).integers(0, vocab, size=shape)


# --- against transformers -------------------------------------------------------------------------


@pytest.mark.reference
@pytest.mark.parametrize("T", [1, 7, 64, 1024])
def test_logits_equal_transformers_small(small, small_hf, T):
    ids = random_ids(T, SMALL.n_vocab, seed=T)
    logits = small(ids)
    assert logits.shape == (T, SMALL.n_vocab) and logits.dtype == np.float32
    ref = hf_forward(small_hf, ids).logits[0].numpy()
    np.testing.assert_allclose(logits, ref, atol=1e-4, rtol=0)


@pytest.mark.reference
def test_batch_equals_transformers(small, small_hf):
    ids = random_ids(20, SMALL.n_vocab, seed=5, batch=3)
    logits = small(ids)
    assert logits.shape == (3, 20, SMALL.n_vocab)
    np.testing.assert_allclose(logits, hf_forward(small_hf, ids).logits.numpy(), atol=1e-4, rtol=0)
    for b in range(3):  # a batch is the same as its rows one by one
        np.testing.assert_allclose(logits[b], small(ids[b]), atol=1e-5, rtol=0)


@pytest.mark.reference
@pytest.mark.slow
@pytest.mark.parametrize("T", [1, 7, 64, 1024])
def test_logits_equal_transformers_124m_shape(gpt2_124m_shape, gpt2_124m_shape_hf, T):
    hf = gpt2_124m_shape_hf
    ids = random_ids(T, 50257, seed=T)
    np.testing.assert_allclose(gpt2_124m_shape(ids), hf_forward(hf, ids).logits[0].numpy(), atol=1e-4, rtol=0)
    batch = random_ids(8, 50257, seed=T, batch=2)
    np.testing.assert_allclose(gpt2_124m_shape(batch), hf_forward(hf, batch).logits.numpy(), atol=1e-4, rtol=0)


@pytest.mark.reference
def test_recorded_attention_and_residuals_equal_transformers(small, small_hf):
    ids = random_ids(12, SMALL.n_vocab, seed=3)
    _, acts = small.run_with_activations(ids)
    out = hf_forward(small_hf, ids, output_attentions=True, output_hidden_states=True)
    for layer in range(SMALL.n_layer):
        pattern = acts[f"blocks.{layer}.attn.pattern"]
        assert pattern.shape == (SMALL.n_head, 12, 12)
        np.testing.assert_allclose(pattern, out.attentions[layer][0].numpy(), atol=1e-5, rtol=0)
        np.testing.assert_allclose(acts[f"blocks.{layer}.resid_pre"], out.hidden_states[layer][0].numpy(),
                                   atol=1e-5, rtol=0)
    # HF's last hidden state is after the final layer norm
    np.testing.assert_allclose(acts["ln_f"], out.hidden_states[-1][0].numpy(), atol=1e-5, rtol=0)


# --- KV cache -------------------------------------------------------------------------------------


def test_cache_equals_full_forward_at_every_step(small):
    ids = random_ids(130, SMALL.n_vocab, seed=4)
    full = small(ids)
    cache = small.new_cache()
    steps = [small(ids[:10], cache=cache)]  # the prompt in one call
    steps += [small(ids[t : t + 1], cache=cache) for t in range(10, 130)]  # then one token at a time
    np.testing.assert_allclose(np.concatenate(steps), full, atol=1e-5, rtol=0)
    assert cache.length == 130


def test_batched_cache_equals_full_forward(small):
    ids = random_ids(40, SMALL.n_vocab, seed=6, batch=2)
    cache = small.new_cache(batch_size=2)
    steps = [small(ids[:, :5], cache=cache)] + [small(ids[:, t : t + 1], cache=cache) for t in range(5, 40)]
    np.testing.assert_allclose(np.concatenate(steps, axis=1), small(ids), atol=1e-5, rtol=0)


def test_long_chunk_on_a_cache_equals_full_forward(small):
    # 150 new tokens after 30 cached ones: attention runs in query blocks that end mid-block
    ids = random_ids(180, SMALL.n_vocab, seed=10, batch=2)
    cache = small.new_cache(batch_size=2)
    steps = [small(ids[:, :30], cache=cache), small(ids[:, 30:], cache=cache)]
    np.testing.assert_allclose(np.concatenate(steps, axis=1), small(ids), atol=1e-5, rtol=0)


def test_recording_a_long_input_gives_the_plain_logits(small):
    ids = random_ids(200, SMALL.n_vocab, seed=11)  # recording computes attention in one block, the plain forward in blocks
    logits, acts = small.run_with_activations(ids, names="blocks.0.attn.pattern")
    np.testing.assert_allclose(logits, small(ids), atol=1e-5, rtol=0)
    assert acts["blocks.0.attn.pattern"].shape == (SMALL.n_head, 200, 200)


def test_last_only_gives_the_last_row(small):
    ids = random_ids(9, SMALL.n_vocab)
    np.testing.assert_allclose(small(ids, last_only=True), small(ids)[-1:], atol=1e-6, rtol=0)


def test_cache_memory_is_as_documented():
    cfg = GPT2Config.from_name("124M")
    cache = GPT2.init(GPT2Config(n_vocab=10, n_ctx=8, n_embd=4, n_head=2, n_layer=1)).new_cache()
    assert cache.nbytes == 2 * 1 * 8 * 4 * 4
    assert 2 * cfg.n_layer * cfg.n_ctx * cfg.n_embd * 4 == 75_497_472


@pytest.mark.reference
def test_greedy_on_cache_equals_transformers_greedy(small_hf):
    torch = pytest.importorskip("torch")
    model = GPT2.init(SMALL, seed=7, std=0.5)  # large weights: greedy decoding does not repeat one token
    hf = hf_model(model)
    prompt = random_ids(6, SMALL.n_vocab, seed=8)
    cache = model.new_cache()
    logits = model(prompt, cache=cache, last_only=True)
    ours = []
    for _ in range(60):
        ours.append(int(logits[-1].argmax()))
        logits = model(np.array(ours[-1:]), cache=cache)
    with torch.no_grad():
        out = hf.generate(torch.from_numpy(prompt[None]), max_new_tokens=60, do_sample=False,
                          pad_token_id=0, attention_mask=torch.ones(1, 6, dtype=torch.long))
    assert ours == out[0, 6:].tolist()
    assert len(set(ours)) > 10, "the test needs varied tokens to mean something"


# --- properties -----------------------------------------------------------------------------------


def test_causality_later_tokens_do_not_change_earlier_logits(small):
    ids = random_ids(20, SMALL.n_vocab, seed=9)
    changed = ids.copy()
    changed[11] = (changed[11] + 1) % SMALL.n_vocab
    np.testing.assert_array_equal(small(ids)[:11], small(changed)[:11])
    assert not np.allclose(small(ids)[11:], small(changed)[11:])


def test_attention_rows_sum_to_one_and_every_array_is_float32(small):
    _, acts = small.run_with_activations(random_ids(10, SMALL.n_vocab))
    for layer in range(SMALL.n_layer):
        pattern = acts[f"blocks.{layer}.attn.pattern"]
        np.testing.assert_allclose(pattern.sum(-1), 1.0, atol=1e-6)
        assert np.all(np.triu(pattern, k=1) == 0), "no attention to later positions"
    assert {a.dtype for a in acts.values()} == {np.dtype(np.float32)}


def test_activation_names_and_filter(small):
    names = small.activation_names()
    assert names[0] == "embed" and names[-1] == "logits"
    for n in ["blocks.1.resid_pre", "blocks.0.attn.q", "blocks.0.attn.k", "blocks.0.attn.v",
              "blocks.0.attn.scores", "blocks.0.attn.pattern", "blocks.0.attn.z", "blocks.1.mlp.pre",
              "blocks.1.mlp.post", "blocks.1.resid_mid", "blocks.1.resid_post", "ln_f"]:
        assert n in names
    _, acts = small.run_with_activations(random_ids(5, SMALL.n_vocab), names="blocks.*.attn.pattern")
    assert sorted(acts) == ["blocks.0.attn.pattern", "blocks.1.attn.pattern"]
    assert acts["blocks.0.attn.pattern"].shape == (4, 5, 5)  # [H, T, T]


def test_recorded_q_k_v_are_per_head(small):
    ids = random_ids(6, SMALL.n_vocab)
    _, acts = small.run_with_activations(ids, names=["blocks.0.*"])
    H, D = SMALL.n_head, SMALL.head_dim
    assert acts["blocks.0.attn.q"].shape == (H, 6, D)
    # by hand: q is the first third of the c_attn projection (w is [3C, C]), head h in columns h*D:(h+1)*D
    p = small.params["blocks"][0]["attn"]["c_attn"]
    q = acts["blocks.0.ln_1"] @ p["w"][: SMALL.n_embd].T + p["b"][: SMALL.n_embd]
    np.testing.assert_allclose(acts["blocks.0.attn.q"][2], q[:, 2 * D : 3 * D], atol=1e-5)


def test_head_ablation_through_hook_equals_ablation_by_hand(small):
    ids = random_ids(8, SMALL.n_vocab, seed=10)
    layer, head, D = 1, 2, SMALL.head_dim

    def zero_head(z):  # z [H, T, D]
        z = z.copy()
        z[head] = 0.0
        return z

    hooked, _ = small.run_with_activations(ids, names=[], hooks={f"blocks.{layer}.attn.z": zero_head})
    # by hand: head h's output only reaches the residual through columns h*D:(h+1)*D of c_proj.w [C_out, C_in]
    flat = {k: v.copy() for k, v in flatten(small.params).items()}
    flat[f"blocks.{layer}.attn.c_proj.w"][:, head * D : (head + 1) * D] = 0.0
    by_hand = GPT2(SMALL, unflatten(flat))(ids)
    np.testing.assert_allclose(hooked, by_hand, atol=1e-5, rtol=0)
    assert not np.allclose(hooked, small(ids), atol=1e-3), "the ablation changes the output"


def test_init_follows_gpt2():
    model = GPT2.init(GPT2Config(n_vocab=1000, n_ctx=64, n_embd=64, n_head=4, n_layer=8), seed=0)
    p = model.params
    assert abs(p["wte"].std() - 0.02) < 1e-3 and abs(p["wpe"].std() - 0.01) < 1e-3
    assert abs(p["blocks"][0]["attn"]["c_proj"]["w"].std() - 0.02 / 4) < 5e-4  # 1/sqrt(2 * 8)
    assert np.all(p["blocks"][0]["ln_1"]["g"] == 1) and np.all(p["blocks"][0]["attn"]["c_attn"]["b"] == 0)
    assert model.num_params == sum(a.size for a in flatten(p).values())


def test_124m_has_124m_parameters():
    cfg = GPT2Config.from_name("gpt2")
    from minigpt2.params import param_shapes

    assert sum(int(np.prod(s)) for s in param_shapes(cfg).values()) == 124_439_808


# --- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize("ids, message", [
    (np.zeros(1025, dtype=np.int64), "sequence too long"),
    (np.array([1, 300]), "outside the vocabulary"),
    (np.array([-1]), "outside the vocabulary"),
    (np.array([1.0, 2.0]), "must be integers"),
    (np.array([True]), "must be integers"),
    (np.zeros((2, 2, 2), dtype=np.int64), "shape"),
    (np.zeros(0, dtype=np.int64), "shape"),
])
def test_bad_ids_are_rejected(small, ids, message):
    with pytest.raises(ValueError, match=message):
        small(ids)


def test_cache_overflow_is_rejected(small):
    cache = small.new_cache()
    small(np.zeros(1000, dtype=np.int64), cache=cache)
    with pytest.raises(ValueError, match="1000 cached \\+ 30 new tokens > n_ctx = 1024"):
        small(np.zeros(30, dtype=np.int64), cache=cache)


def test_wrong_params_are_named():
    model = GPT2.init(GPT2Config(n_vocab=10, n_ctx=8, n_embd=4, n_head=2, n_layer=1))
    flat = flatten(model.params)
    bad = dict(flat, **{"blocks.0.attn.c_attn.w": np.zeros((4, 4), np.float32)})
    with pytest.raises(ValueError, match=r"blocks.0.attn.c_attn.w has shape \(4, 4\), expected \(12, 4\)"):
        GPT2(model.config, unflatten(bad))
    missing = {k: v for k, v in flat.items() if k != "ln_f.g"}
    with pytest.raises(ValueError, match="lack 1 tensors"):
        GPT2(model.config, unflatten(missing))
    with pytest.raises(ValueError, match="dtype int64"):
        GPT2(model.config, unflatten(dict(flat, wte=np.zeros((10, 4), np.int64))))


def test_config_validates():
    with pytest.raises(ValueError, match="divisible"):
        GPT2Config(n_embd=10, n_head=3)
    with pytest.raises(ValueError, match="unknown model name"):
        GPT2Config.from_name("gpt3")
    assert GPT2Config.from_name("gpt2-xl") == GPT2Config(n_embd=1600, n_head=25, n_layer=48)


@pytest.mark.parametrize("name, n_params", [("124M", 124_439_808), ("355M", 354_823_168),
                                            ("774M", 774_030_080), ("1558M", 1_557_611_200)])
def test_every_released_size_has_its_published_parameter_count(name, n_params):
    from minigpt2.params import param_shapes

    config = GPT2Config.from_name(name)
    assert sum(int(np.prod(s)) for s in param_shapes(config).values()) == n_params
    assert config.n_vocab == 50257 and config.n_ctx == 1024 and config.n_embd % config.n_head == 0
    assert config.head_dim == 64


def test_a_hook_that_forgets_to_return_is_named(short_model):
    def zero_in_place(x):
        x[...] = 0  # edits in place, returns nothing

    for name in ("blocks.0.mlp.out", "logits", "blocks.0.attn.z"):
        with pytest.raises(ValueError, match=f"hook for '{name}' returned None at activation '{name}'.*return x"):
            short_model.run_with_activations([1, 2, 3], names=[], hooks={name: zero_in_place})


def test_a_hook_that_changes_the_shape_is_named(short_model):
    with pytest.raises(ValueError, match=r"hook for 'blocks.\*.attn.z' returned shape \(2, 3\) at activation "
                                         r"'blocks.0.attn.z', which has shape \(2, 3, 8\)"):
        short_model.run_with_activations([1, 2, 3], names=[], hooks={"blocks.*.attn.z": lambda z: z[..., 0]})
    with pytest.raises(ValueError, match="logits"):
        short_model.run_with_activations([1, 2, 3], names=[], hooks={"logits": lambda x: x[:, :10]})


@pytest.mark.parametrize("names, hooks", [([], {"blocks.0.attn.Z": lambda x: x}), ([], {"blocks.7.*": lambda x: x}),
                                          ("blocks.0.attn.patern", None), (["logits", "embeddings"], None)])
def test_a_pattern_that_matches_nothing_is_an_error(short_model, names, hooks):
    with pytest.raises(ValueError, match="matches no activation of this model"):
        short_model.run_with_activations([1, 2, 3], names=names, hooks=hooks)


@pytest.mark.parametrize("ids, message", [(np.zeros((0, 3), int), "B, T >= 1"), (np.zeros((2, 0), int), "B, T >= 1"),
                                          (np.zeros(0, int), "B, T >= 1")])
def test_empty_ids_are_named(short_model, ids, message):
    with pytest.raises(ValueError, match=message):
        short_model(ids)


def test_cache_misuse_is_named(short_model):
    other = GPT2Config(n_vocab=300, n_ctx=32, n_embd=16, n_head=4, n_layer=2)
    with pytest.raises(ValueError, match="made for another model"):
        short_model([1, 2], cache=KVCache(other))
    for length in (-1, 33, 2.5):
        cache = short_model.new_cache()
        cache.length = length
        with pytest.raises(ValueError, match=f"the cache's length is {length!r}"):
            short_model([1], cache=cache)
    with pytest.raises(ValueError, match="must be a KVCache"):
        short_model([1], cache={"k": 0})
