"""The equations GPT-2 is made of, one function each, float32 in -> float32 out; each backward beside its forward.

A backward takes the gradient of the loss with respect to the forward's output (`dy`) and what the forward
saw, and returns the gradients with respect to its inputs and parameters (`dx`, `dw`, `db`, ...), same names,
same shapes. Every function works in float64 too, so that finite differences can check it.

subtle: NumPy 2 promotes float32 arrays to float64 when mixed with NumPy float64 scalars (np.sqrt(64.0),
np.pi); Python floats keep float32. Every constant here is a Python float for that reason.

`@tunable` marks the few functions that fast.py has a tuned form of (the same numbers, faster; see dispatch.py).
"""

from __future__ import annotations

import math

import numpy as np

from .dispatch import tunable


@tunable
def gelu(x: np.ndarray) -> np.ndarray:
    """GPT-2's GELU, the tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).

    >>> gelu(np.array([-1.0, 0.0, 1.0], dtype=np.float32)).round(4)
    array([-0.1588,  0.    ,  0.8412], dtype=float32)
    """
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


@tunable
def gelu_backward(dy: np.ndarray, x: np.ndarray) -> np.ndarray:
    """d gelu(x) / dx, chained with dy: with u = sqrt(2/pi) (x + 0.044715 x^3),
    d/dx [0.5 x (1 + tanh(u))] = 0.5 (1 + tanh(u)) + 0.5 x (1 - tanh(u)^2) du/dx."""
    u = math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)
    du = math.sqrt(2.0 / math.pi) * (1.0 + 3.0 * 0.044715 * x**2)
    th = np.tanh(u)
    return dy * (0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * du)


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


@tunable
def layer_norm_backward(dy: np.ndarray, x: np.ndarray, g: np.ndarray, eps: float = 1e-5,
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Through y = g * xhat + b, xhat = (x - mean) / sqrt(var + eps): (dx [..., C], dg [C], db [C]).

    dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), with dxhat = dy * g: the two means
    remove what flows into the row's mean and variance. dg and db sum over every row (all rows share them).
    """
    xc = x - x.mean(axis=-1, keepdims=True)  # [..., C] centered
    rstd = 1.0 / np.sqrt((xc * xc).mean(axis=-1, keepdims=True) + eps)  # [..., 1]
    xhat = xc * rstd  # [..., C]
    dg = (dy * xhat).reshape(-1, x.shape[-1]).sum(axis=0)  # [C]
    db = dy.reshape(-1, x.shape[-1]).sum(axis=0)  # [C]
    dxhat = dy * g  # [..., C]
    dx = rstd * (dxhat - dxhat.mean(axis=-1, keepdims=True) - xhat * (dxhat * xhat).mean(axis=-1, keepdims=True))
    return dx, dg, db


def dropout(x: np.ndarray, keep: np.ndarray, p: float) -> np.ndarray:
    """Inverted dropout: zero the entries where `keep` [x's shape, bool] is False and scale the rest by
    1 / (1 - p), so that every entry keeps its expected value. In evaluation there is no dropout at all."""
    return x * keep * (1.0 / (1.0 - p))  # [...]: x's shape and dtype


def dropout_backward(dy: np.ndarray, keep: np.ndarray, p: float) -> np.ndarray:
    """Through y = x * keep / (1 - p): dx = dy * keep / (1 - p), the same mask (dropped entries get none)."""
    return dy * keep * (1.0 / (1.0 - p))


@tunable
def linear(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """x [..., n_in] @ w.T + b -> [..., n_out], with w stored [n_out, n_in] (GPT-2's "Conv1D", transposed).

    Why [n_out, n_in]: for one token, x @ w.T is a matrix-vector product that reads w row after row, the
    order memory streams fastest; decoding is bound by that read (docs/performance.md).
    """
    x2 = x.reshape(-1, x.shape[-1])  # [N, n_in]: batch and time folded into rows, so w is read once
    y = x2 @ w.T  # [N, n_out]
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


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log P over the last axis, stable: x - max - log(sum(exp(x - max))). [..., V] -> [..., V]."""
    shifted = logits - logits.max(axis=-1, keepdims=True)  # [..., V]
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def cross_entropy(logits: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row negative log-likelihood of the targets: logits [N, V], targets [N] -> (nll [N], probs [N, V]).

    Stable: log softmax(x)[t] = x[t] - max(x) - log(sum(exp(x - max(x)))). The probabilities come back too,
    because the backward is made of them.
    """
    shifted = logits - logits.max(axis=-1, keepdims=True)  # [N, V], <= 0
    total = np.exp(shifted).sum(axis=-1)  # [N]
    nll = np.log(total) - shifted[np.arange(len(targets)), targets]  # [N]
    probs = np.exp(shifted) / total[:, None]  # [N, V]: softmax(logits)
    return nll, probs


def cross_entropy_backward(dnll: np.ndarray, probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Through nll = -log softmax(logits)[target]: dlogits = dnll * (softmax(logits) - onehot(target)) [N, V].
    Overwrites `probs` (the forward's softmax), which is not needed afterwards."""
    probs[np.arange(len(targets)), targets] -= 1.0
    probs *= dnll[:, None]
    return probs
