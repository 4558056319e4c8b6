"""The backward pass, specified against PyTorch autograd (float64) and central finite differences."""

from contextlib import nullcontext

import numpy as np
import pytest

from minigpt2 import GPT2, GPT2Config, reference_mode
from minigpt2.backward import (
    attention_backward,
    embedding_backward,
    loss,
    loss_and_grads,
)
from minigpt2.model import Dropout, attention, causal_mask
from minigpt2.ops import (
    cross_entropy,
    cross_entropy_backward,
    dropout,
    dropout_backward,
    gelu,
    gelu_backward,
    layer_norm,
    layer_norm_backward,
    linear,
    linear_backward,
    softmax,
    softmax_backward,
)
from minigpt2.params import flatten, init_params, unflatten

from .reference import torch_loss_and_grads

TINY = GPT2Config(n_vocab=23, n_ctx=16, n_embd=8, n_head=2, n_layer=2)


def numerical_grad(f, x, eps=1e-6, entries=None):
    """Central differences of the scalar f() with respect to x (float64, perturbed in place) at `entries`."""
    grad = np.zeros_like(x)
    for i in entries if entries is not None else np.ndindex(x.shape):
        old = x[i]
        x[i] = old + eps
        up = f()
        x[i] = old - eps
        down = f()
        x[i] = old
        grad[i] = (up - down) / (2 * eps)
    return grad


def check_against_finite_differences(f, inputs: dict, analytic: dict, rtol=1e-6, atol=1e-8):
    """f(): a scalar of the arrays in `inputs`; analytic: their gradients by our backward."""
    for name, x in inputs.items():
        np.testing.assert_allclose(analytic[name], numerical_grad(f, x), rtol=rtol, atol=atol, err_msg=name)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# --- every op's backward, by finite differences in float64 ----------------------------------------


def test_gelu_backward(rng):
    x = rng.standard_normal((3, 5)) * 3
    w = rng.standard_normal((3, 5))  # the loss sum(w * y) has dy = w
    check_against_finite_differences(lambda: (w * gelu(x)).sum(), {"x": x}, {"x": gelu_backward(w, x)})


def test_softmax_backward(rng):
    x, w = rng.standard_normal((2, 3, 7)) * 2, rng.standard_normal((2, 3, 7))
    y = softmax(x)
    check_against_finite_differences(lambda: (w * softmax(x)).sum(), {"x": x}, {"x": softmax_backward(w, y)})


def test_layer_norm_backward(rng):
    x, g, b = rng.standard_normal((2, 4, 6)) * 3 + 1, rng.standard_normal(6), rng.standard_normal(6)
    w = rng.standard_normal((2, 4, 6))
    dx, dg, db = layer_norm_backward(w, x, g, eps=1e-5)
    check_against_finite_differences(lambda: (w * layer_norm(x, g, b, eps=1e-5)).sum(),
                                     {"x": x, "g": g, "b": b}, {"x": dx, "g": dg, "b": db})


def test_linear_backward(rng):
    x, wt, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((5, 4)), rng.standard_normal(5)
    w = rng.standard_normal((2, 3, 5))
    dx, dw, db = linear_backward(w, x, wt)
    check_against_finite_differences(lambda: (w * linear(x, wt, b)).sum(), {"x": x, "w": wt, "b": b},
                                     {"x": dx, "w": dw, "b": db})


def test_cross_entropy_is_stable_and_its_backward_exact(rng):
    logits, targets = rng.standard_normal((4, 9)) * 5, np.array([0, 8, 3, 3])
    nll, probs = cross_entropy(logits + 1000.0, targets)  # a shift that would overflow a naive exp
    expected = -np.log(np.exp(logits) / np.exp(logits).sum(-1, keepdims=True))[np.arange(4), targets]
    np.testing.assert_allclose(nll, expected, rtol=1e-12)
    w = rng.standard_normal(4)
    dlogits = cross_entropy_backward(w, probs, targets)
    check_against_finite_differences(lambda: (w * cross_entropy(logits, targets)[0]).sum(), {"logits": logits},
                                     {"logits": dlogits})


@pytest.mark.parametrize("T, S", [(5, 5), (3, 7), (1, 6)])
def test_causal_attention_backward(rng, T, S):
    q, k, v = (rng.standard_normal((2, 3, n, 4)) * 2 for n in (T, S, S))
    mask = causal_mask(T, S)
    w = rng.standard_normal((2, 3, T, 4))
    dq, dk, dv = attention_backward(w, q, k, v, attention(q, k, v, mask), mask)
    check_against_finite_differences(lambda: (w * attention(q, k, v, mask)).sum(), {"q": q, "k": k, "v": v},
                                     {"q": dq, "k": dk, "v": dv})


def test_embedding_backward_accumulates_repeated_ids(rng):
    params = init_params(TINY)
    ids = np.array([[3, 5, 3], [3, 0, 5]])
    dx = rng.standard_normal((2, 3, TINY.n_embd)).astype(np.float32)
    dwte, dwpe = embedding_backward(dx, ids, params)
    np.testing.assert_allclose(dwte[3], dx[0, 0] + dx[0, 2] + dx[1, 0], rtol=1e-6)
    np.testing.assert_allclose(dwte[5], dx[0, 1] + dx[1, 2], rtol=1e-6)
    assert not dwte[[1, 2, 4]].any()
    np.testing.assert_allclose(dwpe[:3], dx.sum(0), rtol=1e-6)
    assert not dwpe[3:].any()


# --- the whole model ------------------------------------------------------------------------------


def float64_params(seed=0, std=0.3):
    return unflatten({k: v.astype(np.float64) for k, v in flatten(init_params(TINY, seed, std)).items()})


def test_whole_model_against_finite_differences(rng):
    """Sampled entries of every parameter tensor of a tiny GPT-2, in float64."""
    params = float64_params()
    ids = rng.integers(0, TINY.n_vocab, (2, 7))
    targets = rng.integers(0, TINY.n_vocab, (2, 7))
    targets[0, :3] = -1
    _, grads = loss_and_grads(ids, targets, params, TINY)
    flat, flat_grads = flatten(params), flatten(grads)
    assert flat_grads.keys() == flat.keys()
    for name, x in flat.items():
        entries = [tuple(rng.integers(0, n) for n in x.shape) for _ in range(4)]
        numeric = numerical_grad(lambda: loss(ids, targets, params, TINY), x, entries=entries)
        for e in entries:
            np.testing.assert_allclose(flat_grads[name][e], numeric[e], rtol=1e-5, atol=1e-9, err_msg=f"{name}{e}")


@pytest.mark.reference
@pytest.mark.slow
@pytest.mark.parametrize("std", [0.02, 0.1])  # GPT-2's init; and attention far from uniform (max weight ~0.7)
def test_gradients_equal_torch_autograd_at_the_124m_shape(std):
    model = GPT2.init(GPT2Config.from_name("124M"), seed=1, std=std)
    rng = np.random.default_rng(std == 0.1)
    ids = rng.integers(0, 50257, (2, 128))
    targets = np.concatenate([ids[:, 1:], rng.integers(0, 50257, (2, 1))], axis=1)
    targets[0, :40] = -1  # a prompt prefix that is not scored
    targets[1, 100:] = -1  # padding
    loss_value, grads = model.loss_and_grads(ids, targets)
    ref_loss, ref_grads = torch_loss_and_grads(model, ids, targets)  # float64
    assert isinstance(loss_value, float)
    assert abs(loss_value - ref_loss) <= 1e-5 * abs(ref_loss)
    flat = flatten(grads)
    assert flat.keys() == ref_grads.keys() and len(flat) == 148
    for name, ref in ref_grads.items():
        assert flat[name].dtype == np.float32 and flat[name].shape == ref.shape, name
        scale = np.abs(ref).max()
        err = np.abs(flat[name] - ref).max()
        assert err <= 2e-4 * scale, f"{name}: max error {err:.3g} is {err / scale:.3g} of the tensor's scale"


@pytest.mark.reference
def test_gradients_equal_torch_autograd_small_long_input():
    """A small model on 150 tokens: the query-blocked attention's backward (blocks of 64) against torch."""
    model = GPT2.init(GPT2Config(n_vocab=300, n_ctx=256, n_embd=32, n_head=4, n_layer=2), seed=3, std=0.2)
    rng = np.random.default_rng(1)
    ids, targets = rng.integers(0, 300, (2, 150)), rng.integers(0, 300, (2, 150))
    loss_value, grads = model.loss_and_grads(ids, targets)
    ref_loss, ref_grads = torch_loss_and_grads(model, ids, targets)
    assert abs(loss_value - ref_loss) <= 1e-5 * abs(ref_loss)
    for name, g in flatten(grads).items():
        np.testing.assert_allclose(g, ref_grads[name], atol=2e-4 * np.abs(ref_grads[name]).max(), rtol=0, err_msg=name)


# --- properties -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small():
    return GPT2.init(GPT2Config(n_vocab=50, n_ctx=32, n_embd=16, n_head=2, n_layer=2), seed=0, std=0.2)


def test_grads_have_the_structure_shapes_and_dtype_of_params(small):
    _, grads = small.loss_and_grads([1, 2, 3], [2, 3, 4])
    flat, params = flatten(grads), flatten(small.params)
    assert list(flat) == list(params)
    for name, g in flat.items():
        assert g.shape == params[name].shape and g.dtype == np.float32, name


def test_a_position_gets_no_gradient_from_later_positions(small):
    ids = np.arange(10)
    targets = np.full(10, -1)
    targets[4] = 7  # only position 4 is scored: positions 5.. cannot have influenced it
    _, grads = small.loss_and_grads(ids, targets)
    assert not grads["wpe"][5:].any()
    assert grads["wpe"][:5].any()


def test_a_batch_gradient_is_the_token_weighted_sum_of_its_rows(small):
    rng = np.random.default_rng(2)
    ids, targets = rng.integers(0, 50, (3, 12)), rng.integers(0, 50, (3, 12))
    targets[1, :9] = -1  # rows with 12, 3 and 12 scored tokens
    loss_value, grads = small.loss_and_grads(ids, targets)
    counts = (targets >= 0).sum(1)
    rows = [small.loss_and_grads(ids[b], targets[b]) for b in range(3)]
    assert loss_value == pytest.approx(sum(n * l for n, (l, _) in zip(counts, rows)) / counts.sum(), rel=1e-6)
    expected = {name: sum(n * flatten(g)[name] for n, (_, g) in zip(counts, rows)) / counts.sum()
                for name in flatten(grads)}
    for name, g in flatten(grads).items():
        np.testing.assert_allclose(g, expected[name], atol=1e-6 * max(1.0, np.abs(expected[name]).max()), err_msg=name)


@pytest.mark.parametrize("reference", [True, False], ids=["textbook", "fast"])
def test_grad_scale_scales_the_gradient_not_the_loss(small, reference):
    rng = np.random.default_rng(4)
    ids, targets = rng.integers(0, 50, (2, 9)), rng.integers(-1, 50, (2, 9))
    with reference_mode() if reference else nullcontext():
        loss1, g1 = loss_and_grads(ids, targets, small.params, small.config)
        loss3, g3 = loss_and_grads(ids, targets, small.params, small.config, grad_scale=0.375)
    assert loss3 == loss1
    for name, g in flatten(g1).items():
        np.testing.assert_allclose(flatten(g3)[name], 0.375 * g, rtol=1e-5, atol=1e-7, err_msg=name)


def test_a_single_sequence_scores_only_its_own_targets(small):
    ids, targets = np.array([5, 6, 7, 8]), np.array([-1, 7, 8, -1])
    loss_value, _ = small.loss_and_grads(ids, targets)
    logits = small(ids).astype(np.float64)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    assert loss_value == pytest.approx(-(logp[1, 7] + logp[2, 8]) / 2, rel=1e-6)
    assert small.loss(ids, targets) == pytest.approx(loss_value, rel=1e-7)


def test_loss_and_grads_leaves_the_params_unchanged(small):
    before = {k: v.copy() for k, v in flatten(small.params).items()}
    small.loss_and_grads(np.arange(20), np.arange(1, 21))
    for name, value in flatten(small.params).items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)


@pytest.mark.parametrize("targets, message", [
    ([-1, -1, -1], "every target is -1"),
    ([1, 2], r"targets have shape \(2,\) but ids have shape \(3,\)"),
    ([1, 2, 50], r"target 50 is outside \[-1, 50\)"),
    ([1, -2, 3], r"target -2 is outside"),
    ([1.0, 2.0, 3.0], "targets must be integers"),
])
def test_bad_targets_are_named(small, targets, message):
    with pytest.raises(ValueError, match=message):
        small.loss_and_grads([1, 2, 3], targets)
    with pytest.raises(ValueError, match=message):
        small.loss([1, 2, 3], targets)


# --- dropout --------------------------------------------------------------------------------------


def test_dropout_keeps_the_mean_and_drops_the_stated_share(rng):
    x = np.ones((400, 500), dtype=np.float32)
    keep = Dropout(0.25, np.random.default_rng(1)).mask("x", x.shape)
    y = dropout(x, keep, 0.25)
    assert y.dtype == np.float32
    assert abs((y == 0).mean() - 0.25) < 0.005, "a quarter of the entries dropped"
    assert abs(y.mean() - 1.0) < 0.01, "inverted scaling: the expected value is unchanged"
    np.testing.assert_array_equal(np.unique(y), np.array([0, 1 / 0.75], dtype=np.float32))
    dy = rng.standard_normal(x.shape)
    np.testing.assert_allclose(dropout_backward(dy, keep, 0.25), np.where(keep, dy / 0.75, 0), rtol=1e-15)


@pytest.mark.parametrize("shape, n_ctx", [((2, 7), 16), ((1, 70), 80)])  # 70 > QUERY_BLOCK: blocked attention
def test_whole_model_with_dropout_against_finite_differences(rng, shape, n_ctx):
    """With the masks fixed (the same seed for every forward), the gradient is exact for the masks drawn."""
    config = GPT2Config(n_vocab=23, n_ctx=n_ctx, n_embd=8, n_head=2, n_layer=2)
    params = unflatten({k: v.astype(np.float64) for k, v in flatten(init_params(config, 0, 0.3)).items()})
    ids, targets = rng.integers(0, 23, shape), rng.integers(0, 23, shape)
    targets[0, :3] = -1

    def dropped(seed=7):
        return Dropout(0.3, np.random.default_rng(seed))

    value, grads = loss_and_grads(ids, targets, params, config, dropped())
    assert value != loss(ids, targets, params, config), "dropout changed the loss"
    flat, flat_grads = flatten(params), flatten(grads)
    for name, x in flat.items():
        entries = [tuple(rng.integers(0, n) for n in x.shape) for _ in range(3)]
        f = lambda: loss_and_grads(ids, targets, params, config, dropped())[0]  # noqa: E731
        numeric = numerical_grad(f, x, entries=entries)
        for e in entries:
            np.testing.assert_allclose(flat_grads[name][e], numeric[e], rtol=1e-5, atol=1e-9, err_msg=f"{name}{e}")


def test_the_dropout_masks_are_drawn_where_gpt2_drops(small):
    d = Dropout(0.1, np.random.default_rng(0))
    loss_and_grads(np.array([[1, 2, 3]]), np.array([[2, 3, 4]]), small.params, small.config, d)
    names = {"embed"} | {f"blocks.{i}.{n}" for i in range(2) for n in ("attn.pattern", "attn.out", "mlp.out")}
    assert set(d.keep) == names
    assert d.keep["blocks.0.attn.pattern"].shape == (1, 2, 3, 3)  # [B, H, T, S]
