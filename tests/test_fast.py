"""The tuned forms (fast.py) give the textbook forms' numbers: float64 to 1e-12, float32 within its rounding
(1e-5 relative and 1e-6 of the array's scale absolute, unless stated); and a whole model gives the same
logits, loss, gradients and AdamW steps in both modes."""

import numpy as np
import pytest

from minigpt2 import GPT2, GPT2Config, dispatch, fast, reference_mode
from minigpt2.backward import attention_backward, lm_head_and_loss, loss_and_grads
from minigpt2.model import Dropout, attention, causal_mask
from minigpt2.ops import gelu, gelu_backward, layer_norm_backward, linear
from minigpt2.optim import AdamW
from minigpt2.params import flatten

from .test_backward import check_against_finite_differences


def both(f, *args):
    """(f in reference mode, f in fast mode)."""
    with reference_mode():
        assert not dispatch.tuned()
        ref = f(*args)
    assert dispatch.tuned()
    return ref, f(*args)


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_gelu_and_its_backward(dtype, rtol):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((300, 257)) * 3).astype(dtype)  # several row chunks, one of them short
    dy = rng.standard_normal(x.shape).astype(dtype)
    for ref, tuned in (both(gelu, x), both(gelu_backward, dy, x)):
        assert tuned.dtype == ref.dtype == dtype
        np.testing.assert_allclose(tuned, ref, rtol=rtol, atol=rtol * 0.1 * np.abs(ref).max())


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_layer_norm_backward(dtype, rtol):
    rng = np.random.default_rng(1)
    x, dy = (rng.standard_normal((3, 700, 96)).astype(dtype) for _ in range(2))
    g = rng.standard_normal(96).astype(dtype)
    ref, tuned = both(layer_norm_backward, dy, x, g)
    for a, b in zip(ref, tuned):
        assert a.dtype == b.dtype == dtype
        np.testing.assert_allclose(b, a, rtol=rtol, atol=rtol * np.abs(a).max())


@pytest.mark.parametrize("rows", [1, 2, 3, fast.FEW_ROWS, fast.FEW_ROWS + 1])
def test_linear_on_a_few_rows_is_the_same_product(rows, monkeypatch):
    # small blocks of w (7 rows, the last one short) so that a small w crosses several of them
    monkeypatch.setattr(fast, "WEIGHT_BLOCK", 7 * 33 * 4)
    rng = np.random.default_rng(rows)
    x, w, b = (rng.standard_normal(s, dtype=np.float32) for s in ((rows, 1, 33), (52, 33), (52,)))
    ref, tuned = both(linear, x, w, b)
    assert tuned.shape == (rows, 1, 52) and tuned.dtype == np.float32
    np.testing.assert_allclose(tuned, ref, rtol=1e-5, atol=1e-5)
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    np.testing.assert_allclose(linear(x64, w64), np.einsum("btc,oc->bto", x64, w64), rtol=1e-13)


@pytest.mark.parametrize("T, S, block", [(200, 200, 64), (150, 180, 64), (65, 65, 64), (7, 30, 3)])
def test_attention_in_blocks_equals_attention_in_one_block(T, S, block):
    rng = np.random.default_rng(T)
    q, k, v = (rng.standard_normal((2, 3, n, 8), dtype=np.float32) * 2 for n in (T, S, S))  # [B, H, T|S, D]
    mask = causal_mask(T, S)
    np.testing.assert_allclose(fast.attention_in_blocks(q, k, v, mask, block=block),
                               attention.textbook(q, k, v, mask), atol=1e-5, rtol=0)


@pytest.mark.parametrize("T, S, block", [(9, 9, 4), (7, 11, 3), (8, 8, 8)])
def test_attention_in_blocks_backward_against_finite_differences(T, S, block):
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((3, n, 4)) * 2 for n in (T, S, S))
    mask = causal_mask(T, S)
    w = rng.standard_normal((3, T, 4))
    dq, dk, dv = fast.attention_in_blocks_backward(w, q, k, v, attention(q, k, v, mask), mask, block=block)
    check_against_finite_differences(lambda: (w * fast.attention_in_blocks(q, k, v, mask, block=block)).sum(),
                                     {"q": q, "k": k, "v": v}, {"q": dq, "k": dk, "v": dv})


@pytest.mark.parametrize("with_dropout", [False, True])
def test_attention_backward(with_dropout):
    rng = np.random.default_rng(2)
    q, k, v = (rng.standard_normal((2, 3, 9, 4)) * 2 for _ in range(3))
    mask = causal_mask(9, 9)
    drop = rng.random((2, 3, 9, 9)) > 0.3 if with_dropout else None
    z = attention(q, k, v, mask, drop=drop, p=0.3)
    dz = rng.standard_normal(z.shape)
    ref, tuned = both(attention_backward, dz, q, k, v, z, mask, drop, 0.3)
    for a, b in zip(ref, tuned):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("head_rows", [4, 512])
def test_lm_head_in_row_chunks(head_rows, monkeypatch):
    monkeypatch.setattr(fast, "HEAD_ROWS", head_rows)
    rng = np.random.default_rng(3)
    h, wte = rng.standard_normal((3, 10, 8)), rng.standard_normal((23, 8))
    targets = rng.integers(-1, 23, (3, 10))
    for backward in (True, False):
        ref, tuned = both(lm_head_and_loss, h, wte, targets, backward)
        assert ref[0] == pytest.approx(tuned[0], rel=1e-12)
        for a, b in zip(ref[1:], tuned[1:]):
            assert (a is None) == (b is None) == (not backward)
            if a is not None:
                np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-14)


@pytest.fixture(scope="module")
def model():
    return GPT2.init(GPT2Config(n_vocab=97, n_ctx=160, n_embd=48, n_head=4, n_layer=2), seed=4, std=0.2)


def test_a_model_gives_the_same_logits_loss_and_gradients_in_both_modes(model):
    """150 tokens (blocked attention in fast mode), two samples, dropout on, a few decoded rows."""
    rng = np.random.default_rng(5)
    ids, targets = rng.integers(0, 97, (2, 150)), rng.integers(-1, 97, (2, 150))
    ref_logits, fast_logits = both(model, ids)
    np.testing.assert_allclose(fast_logits, ref_logits, atol=2e-5, rtol=0)

    def grads():
        return loss_and_grads(ids, targets, model.params, model.config, Dropout(0.1, np.random.default_rng(0)))

    (ref_loss, ref_grads), (fast_loss, fast_grads) = both(grads)
    assert fast_loss == pytest.approx(ref_loss, rel=1e-5)
    for name, g in flatten(ref_grads).items():
        np.testing.assert_allclose(flatten(fast_grads)[name], g, atol=1e-4 * np.abs(g).max(), rtol=0, err_msg=name)
    ref_new, fast_new = both(lambda: model.generate(ids[0, :5], 8, temperature=0, num_samples=3))
    assert ref_new == fast_new


def test_adamw_in_slices_equals_the_textbook_update(model, monkeypatch):
    monkeypatch.setattr(fast, "SLICE", 1000)  # many slices per tensor, the last one short
    rng = np.random.default_rng(6)
    params = [{k: np.array(v) for k, v in flatten(model.params).items()} for _ in range(2)]
    opts = [AdamW(p, lr=1e-2, weight_decay=0.1) for p in params]
    for _ in range(3):
        g = {k: rng.standard_normal(v.shape, dtype=np.float32) for k, v in params[0].items()}
        with reference_mode():
            opts[0].step(g, 3e-3)
        opts[1].step(g, 3e-3)
    for k in params[0]:
        np.testing.assert_allclose(params[1][k], params[0][k], rtol=1e-6, atol=1e-7, err_msg=k)
