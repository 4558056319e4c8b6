"""The equations GPT-2 is made of, one function each, float32 in -> float32 out; each backward beside its forward.

A backward takes the gradient of the loss with respect to the forward's output (`dy`) and what the forward
saw, and returns the gradients with respect to its inputs and parameters (`dx`, `dw`, `db`, ...), same names,
same shapes. Every function works in float64 too, so that finite differences can check it.

subtle: NumPy 2 promotes float32 arrays to float64 when mixed with NumPy float64 scalars (np.sqrt(64.0),
np.pi); Python floats keep float32. Every constant here is a Python float for that reason.
"""

from __future__ import annotations

import math

import numpy as np


CHUNK = 1 << 16  # elements of element-wise work done at a time: its temporaries stay in the CPU's cache


def row_chunks(x: np.ndarray) -> list[slice]:
    """Slices of x's rows (x [N, D]) of about CHUNK elements each: arrays larger than the cache are worked on a
    piece at a time, so that a formula's dozen passes do not each stream the whole array through memory."""
    step = max(1, CHUNK // max(1, x.shape[-1]))
    return [slice(i, i + step) for i in range(0, x.shape[0], step)]


def gelu(x: np.ndarray) -> np.ndarray:
    """GPT-2's GELU, the tanh approximation: 0.5 x (1 + tanh(u)) with u = sqrt(2/pi) (x + 0.044715 x^3).

    Computed as x / (1 + exp(-2u)), the same number (0.5 (1 + tanh(u)) = sigmoid(2u)), because exp is about
    twice as fast as tanh in NumPy; in place in one buffer instead of seven temporaries, a row chunk at a time.
    """
    x2 = x.reshape(-1, x.shape[-1])  # [N, D]
    y = np.empty_like(x2)
    for rows in row_chunks(x2):
        xs, ys = x2[rows], y[rows]
        one_plus_exp_minus_2u(xs, out=ys)
        np.divide(xs, ys, out=ys)  # x / (1 + exp(-2u))
    return y.reshape(x.shape)


def one_plus_exp_minus_2u(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """1 + exp(-2u), u = sqrt(2/pi) (x + 0.044715 x^3): GELU's denominator, written into `out` (x's shape)."""
    np.multiply(x, x, out=out)  # x^2
    out *= -2.0 * 0.044715 * math.sqrt(2.0 / math.pi)
    out -= 2.0 * math.sqrt(2.0 / math.pi)
    out *= x  # -2u
    np.minimum(out, 80.0, out=out)  # exp(80) still fits in float32; the result is 0 to float precision there
    np.exp(out, out=out)
    out += 1.0
    return out


def gelu_backward(dy: np.ndarray, x: np.ndarray) -> np.ndarray:
    """d gelu(x) / dx, chained with dy. In the forward's sigmoid form, y = x sig(2u) with
    u = sqrt(2/pi) (x + 0.044715 x^3), so dy/dx = sig + x sig' 2 du/dx = sig (1 + (1 - sig) g), where
    g = 2 x du/dx = 2 sqrt(2/pi) x (1 + 3 * 0.044715 x^2). A row chunk at a time, as the forward."""
    s, a = math.sqrt(2.0 / math.pi), 0.044715
    x2, dy2 = x.reshape(-1, x.shape[-1]), dy.reshape(-1, x.shape[-1])  # [N, D]
    dx = np.empty_like(x2)
    for rows in row_chunks(x2):
        xs, g = x2[rows], dx[rows]
        sig = one_plus_exp_minus_2u(xs, out=np.empty_like(xs))
        np.reciprocal(sig, out=sig)  # sig(2u) = 1 / (1 + exp(-2u)), as in the forward
        np.multiply(xs, xs, out=g)  # x^2
        g *= 3.0 * a
        g += 1.0
        g *= xs
        g *= 2.0 * s  # g = 2 x du/dx
        g_sig = g * sig
        g -= g_sig  # (1 - sig) g
        g += 1.0
        g *= sig  # dy/dx
        g *= dy2[rows]
    return dx.reshape(x.shape)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """exp(x) / sum(exp(x)) along `axis`, shifted by the max so exp never overflows.

    >>> softmax(np.array([1.0, 1.0], dtype=np.float32))
    array([0.5, 0.5], dtype=float32)
    """
    e = x - x.max(axis=axis, keepdims=True)  # the one new array; the rest works in place in it
    np.exp(e, out=e)
    e *= 1.0 / e.sum(axis=axis, keepdims=True)  # multiply by the reciprocal: cheaper than dividing every entry
    return e


def softmax_backward(dy: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Through y = softmax(x): dx = y * (dy - sum(dy * y)), the Jacobian diag(y) - y y^T applied to dy."""
    return y * (dy - (dy * y).sum(axis=axis, keepdims=True))


def layer_norm(x: np.ndarray, g: np.ndarray, b: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """Normalize each row of x [..., C] to mean 0 and variance 1, then scale by g [C] and shift by b [C]."""
    n = x.shape[-1]  # .sum / n: the same as .mean, without its Python-level overhead (this runs 25x per token)
    y = x - x.sum(axis=-1, keepdims=True) / n  # [..., C] centered; the one new [..., C] array, then in place
    var = (y * y).sum(axis=-1, keepdims=True) / n  # [..., 1] (biased variance, as in GPT-2)
    y /= np.sqrt(var + eps)  # [..., C] normalized
    y *= g
    y += b
    return y


def layer_norm_backward(dy: np.ndarray, x: np.ndarray, g: np.ndarray, eps: float = 1e-5,
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Through y = g * xhat + b, xhat = (x - mean) / sqrt(var + eps): (dx [..., C], dg [C], db [C]).

    dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), with dxhat = dy * g: the two means
    remove what flows into the row's mean and variance. dg and db sum over every row (all rows share the
    parameters). A row chunk at a time (see row_chunks): up to 2x faster than whole arrays (2048 rows).
    """
    x2, dy2 = x.reshape(-1, x.shape[-1]), dy.reshape(-1, x.shape[-1])  # [N, C]
    n = x2.shape[1]
    dx = np.empty_like(x2)  # [N, C]
    dg, db = np.zeros(n, dtype=dx.dtype), np.zeros(n, dtype=dx.dtype)  # [C]: each chunk adds its rows' share
    for rows in row_chunks(x2):
        xs, dys, dxs = x2[rows], dy2[rows], dx[rows]
        xc = xs - xs.sum(axis=-1, keepdims=True) / n  # [n, C] centered
        rstd = 1.0 / np.sqrt((xc * xc).sum(axis=-1, keepdims=True) / n + eps)  # [n, 1]
        xhat = np.multiply(xc, rstd, out=xc)  # [n, C]
        dg += (dys * xhat).sum(axis=0)
        db += dys.sum(axis=0)
        dxhat = dys * g  # [n, C]
        np.multiply(xhat, (dxhat * xhat).sum(axis=-1, keepdims=True) / n, out=dxs)  # xhat mean(dxhat xhat)
        np.subtract(dxhat, dxs, out=dxs)
        dxs -= dxhat.sum(axis=-1, keepdims=True) / n
        dxs *= rstd
    return dx.reshape(x.shape), dg, db


def dropout(x: np.ndarray, keep: np.ndarray, p: float) -> np.ndarray:
    """Inverted dropout: zero the entries where `keep` [x's shape, bool] is False and scale the rest by
    1 / (1 - p), so that every entry keeps its expected value. In evaluation there is no dropout at all."""
    return x * keep * (1.0 / (1.0 - p))  # [...]: x's shape and dtype


def dropout_backward(dy: np.ndarray, keep: np.ndarray, p: float) -> np.ndarray:
    """Through y = x * keep / (1 - p): dx = dy * keep / (1 - p), the same mask (dropped entries get none)."""
    return dy * keep * (1.0 / (1.0 - p))


FEW_ROWS = 8  # inputs of 2..FEW_ROWS rows (decoding a few samples at once) take matmul_few_rows
WEIGHT_BLOCK = 4 << 20  # bytes of w that matmul_few_rows keeps in cache while every row uses them


def matmul_few_rows(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x @ w.T for a few rows (x [N, n_in], w [n_out, n_in] -> [N, n_out]), the same numbers by another route.

    Why: decoding N samples together reads every weight once per step, but BLAS's matrix product repacks w for
    such a skinny x on every call, which made 4 rows cost 3x one row. Instead, one matrix-vector product per
    row over a block of w's rows small enough to stay in the CPU's cache: w streams from memory once, and rows
    2..N read it from cache (4 rows: 33 instead of 55 ms over the 124M matrices; 1 row: 18 ms).
    """
    y = np.empty((x.shape[0], w.shape[0]), dtype=np.result_type(x, w))  # [N, n_out]
    step = max(1, WEIGHT_BLOCK // max(1, w.shape[1] * w.itemsize))  # rows of w per block
    for i in range(0, w.shape[0], step):
        block = w[i : i + step]  # [step, n_in]
        for r in range(x.shape[0]):
            np.dot(block, x[r], out=y[r, i : i + step])  # [step]: one row's outputs for this block
    return y


def linear(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """x [..., n_in] @ w.T + b -> [..., n_out], with w stored [n_out, n_in] (GPT-2's "Conv1D", transposed).

    Why [n_out, n_in]: for one token, x @ w.T is a matrix-vector product that reads w row after row, the
    order memory streams fastest (about 15% faster than [n_in, n_out] here); decoding is bound by that read.
    """
    x2 = x.reshape(-1, x.shape[-1])  # [N, n_in]: batch and time folded into rows, so w is read once
    y = matmul_few_rows(x2, w) if 1 < len(x2) <= FEW_ROWS else x2 @ w.T  # [N, n_out]
    if b is not None:
        y += b  # in place: no second [N, n_out] array
    return y.reshape(*x.shape[:-1], w.shape[0])


def linear_backward(dy: np.ndarray, x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Through y = x @ w.T + b: (dx = dy @ w [..., n_in], dw = dy^T x [n_out, n_in], db = sum of dy [n_out])."""
    dy2 = dy.reshape(-1, dy.shape[-1])  # [N, n_out]: batch and time folded into rows, as in the forward
    x2 = x.reshape(-1, x.shape[-1])  # [N, n_in]
    dx = (dy2 @ w).reshape(*dy.shape[:-1], w.shape[1])  # [..., n_in]
    dw = dy2.T @ x2  # [n_out, n_in]: every row's outer product, summed
    db = dy2.sum(axis=0)  # [n_out]
    return dx, dw, db


def cross_entropy(logits: np.ndarray, targets: np.ndarray, overwrite: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Per-row negative log-likelihood of the targets: logits [N, V], targets [N] -> (nll [N], probs [N, V]).

    Stable: log softmax(x)[t] = x[t] - max(x) - log(sum(exp(x - max(x)))). The probabilities come back too,
    because the backward is made of them. `overwrite=True` computes them in the logits' own array (no
    second [N, V] array; the logits are gone afterwards).
    """
    shifted = logits if overwrite else logits.copy()
    shifted -= logits.max(axis=-1, keepdims=True)  # [N, V], <= 0
    picked = shifted[np.arange(len(targets)), targets]  # [N]: x[t] - max(x), taken before exp overwrites it
    probs = np.exp(shifted, out=shifted)  # [N, V], unnormalized
    total = probs.sum(axis=-1, keepdims=True)  # [N, 1]
    nll = np.log(total[:, 0]) - picked  # [N]
    probs *= 1.0 / total  # [N, V]: softmax(logits)
    return nll, probs


def cross_entropy_backward(dnll: np.ndarray, probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Through nll = -log softmax(logits)[target]: dlogits = dnll * (softmax(logits) - onehot(target)) [N, V].
    Overwrites `probs` (the forward's softmax), which is not needed afterwards."""
    probs[np.arange(len(targets)), targets] -= 1.0
    probs *= dnll[:, None]
    return probs
