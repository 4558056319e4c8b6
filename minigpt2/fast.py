"""The tuned forms: equations of ops, model, backward and optim rearranged for speed, each tested equal to the
textbook form it replaces (tests/test_fast.py). A reader can skip this file.

Each function marked `@tunes(ops.gelu)` replaces that textbook function whenever it is called (dispatch.py,
the one place the choice is made); `with minigpt2.reference_mode():` runs the textbook forms everywhere.
This module imports the textbook modules, never the other way round; where a tuned form runs a textbook
piece itself, it calls `f.textbook`. Measured gains and the hosts they were measured on are in
docs/performance.md.

What they do differently, in general: work on arrays larger than the CPU's cache a piece at a time (row
chunks, slices), so that a formula's dozen passes do not each stream the whole array through memory; reuse
buffers instead of making new arrays; skip work whose result is known (the masked half of causal attention).
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import backward, model, ops, optim
from .dispatch import tunes

# --- element-wise work in cache-sized row chunks ----------------------------------------------------

CHUNK = 1 << 16  # elements of element-wise work done at a time: its temporaries stay in the CPU's cache


def row_chunks(x: np.ndarray) -> list[slice]:
    """Slices of x's rows (x [N, D]) of about CHUNK elements each."""
    step = max(1, CHUNK // max(1, x.shape[-1]))
    return [slice(i, i + step) for i in range(0, x.shape[0], step)]


def one_plus_exp_minus_2u(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """1 + exp(-2u), u = sqrt(2/pi) (x + 0.044715 x^3): GELU's denominator in its sigmoid form, into `out`."""
    np.multiply(x, x, out=out)  # x^2
    out *= -2.0 * 0.044715 * math.sqrt(2.0 / math.pi)
    out -= 2.0 * math.sqrt(2.0 / math.pi)
    out *= x  # -2u
    np.minimum(out, 80.0, out=out)  # exp(80) still fits in float32; the result is 0 to float precision there
    np.exp(out, out=out)
    out += 1.0
    return out


@tunes(ops.gelu)
def gelu(x: np.ndarray) -> np.ndarray:
    """ 0.5 (1 + tanh(u)) = sigmoid(2u), so gelu(x) = x / (1 + exp(-2u)): exp is about twice
    as fast as tanh in NumPy; one buffer, a row chunk at a time, instead of seven whole temporaries."""
    x2 = x.reshape(-1, x.shape[-1])  # [N, D]
    y = np.empty_like(x2)
    for rows in row_chunks(x2):
        xs, ys = x2[rows], y[rows]
        one_plus_exp_minus_2u(xs, out=ys)
        np.divide(xs, ys, out=ys)  # x / (1 + exp(-2u))
    return y.reshape(x.shape)


@tunes(ops.gelu_backward)
def gelu_backward(dy: np.ndarray, x: np.ndarray) -> np.ndarray:
    """In the sigmoid form y = x sig(2u): dy/dx = sig (1 + (1 - sig) g) with
    g = 2 x du/dx = 2 sqrt(2/pi) x (1 + 3 * 0.044715 x^2); a row chunk at a time."""
    s, a = math.sqrt(2.0 / math.pi), 0.044715
    x2, dy2 = x.reshape(-1, x.shape[-1]), dy.reshape(-1, x.shape[-1])  # [N, D]
    dx = np.empty_like(x2)
    for rows in row_chunks(x2):
        xs, g = x2[rows], dx[rows]
        sig = one_plus_exp_minus_2u(xs, out=np.empty_like(xs))
        np.reciprocal(sig, out=sig)  # sig(2u)
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


@tunes(ops.layer_norm_backward)
def layer_norm_backward(dy: np.ndarray, x: np.ndarray, g: np.ndarray, eps: float = 1e-5,
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The same formula a row chunk at a time, dg and db summed chunk by
    chunk in the gradient's dtype."""
    x2, dy2 = x.reshape(-1, x.shape[-1]), dy.reshape(-1, x.shape[-1])  # [N, C]
    n = x2.shape[1]
    dx = np.empty_like(x2)  # [N, C]
    dg, db = np.zeros(n, dtype=dx.dtype), np.zeros(n, dtype=dx.dtype)  # [C]
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


# --- matrix products of a few rows ----------------------------------------------------------------------

FEW_ROWS = 8  # inputs of 2..FEW_ROWS rows (decoding a few samples at once) take matmul_few_rows
WEIGHT_BLOCK = 4 << 20  # bytes of w that matmul_few_rows keeps in cache while every row uses them


@tunes(ops.linear)
def linear(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """x @ w.T + b with matmul_few_rows for inputs of 2..FEW_ROWS rows; the textbook form for any other."""
    x2 = x.reshape(-1, x.shape[-1])  # [N, n_in]
    if not 1 < len(x2) <= FEW_ROWS:
        return ops.linear.textbook(x, w, b)
    y = matmul_few_rows(x2, w)  # [N, n_out]
    if b is not None:
        y += b
    return y.reshape(*x.shape[:-1], w.shape[0])


def matmul_few_rows(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x @ w.T for 2..FEW_ROWS rows (x [N, n_in], w [n_out, n_in] -> [N, n_out]).

    BLAS repacks w for such a skinny x on every call, which made 4 rows cost 3x one row. Instead, one
    matrix-vector product per row over a block of w's rows small enough to stay in cache: w streams from
    memory once, rows 2..N read it from cache.
    """
    y = np.empty((x.shape[0], w.shape[0]), dtype=np.result_type(x, w))  # [N, n_out]
    step = max(1, WEIGHT_BLOCK // max(1, w.shape[1] * w.itemsize))  # rows of w per block
    for i in range(0, w.shape[0], step):
        block = w[i : i + step]  # [step, n_in]
        for r in range(x.shape[0]):
            np.dot(block, x[r], out=y[r, i : i + step])  # [step]: one row's outputs for this block
    return y


# --- causal attention a block of queries at a time ----------------------------------------------------

QUERY_BLOCK = 64  # queries per attention block: small enough to skip most of the masked half, big enough for BLAS


@tunes(model.attention)
def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray | None, record=model.keep,
              name: str = "attn", drop: np.ndarray | None = None, p: float = 0.0) -> np.ndarray:
    """Long inputs whose scores and patterns nobody records, in blocks of queries; anything else textbook."""
    if q.shape[-2] <= QUERY_BLOCK or mask is None or model.records_patterns(record):
        return model.attention.textbook(q, k, v, mask, record, name, drop, p)
    return attention_in_blocks(q, k, v, mask, drop, p)  # the same z, skipping the masked half


def attention_in_blocks(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray,
                        drop: np.ndarray | None = None, p: float = 0.0, block: int = QUERY_BLOCK) -> np.ndarray:
    """The textbook attention on `block` queries at a time, each block reading only the keys up to its own
    last position, so the masked upper triangle of the scores is mostly never computed (for a long prompt
    nearly half the work and memory)."""
    T, S = q.shape[-2], k.shape[-2]
    z = np.empty(q.shape, dtype=q.dtype)  # [..., H, T, D]
    for i in range(0, T, block):
        j = min(i + block, T)
        end = S - T + j  # queries i..j-1 sit at positions up to end-1; later keys are all masked
        drop_ij = None if drop is None else drop[..., i:j, :end]
        z[..., i:j, :] = model.attention.textbook(q[..., i:j, :], k[..., :end, :], v[..., :end, :], mask[i:j, :end],
                                                  drop=drop_ij, p=p)
    return z


@tunes(backward.attention_backward)
def attention_backward(dz: np.ndarray, q: np.ndarray, k: np.ndarray, v: np.ndarray, z: np.ndarray,
                       mask: np.ndarray | None, drop: np.ndarray | None = None, p: float = 0.0,
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Long inputs by blocks of queries (as the tuned forward), each block's softmax backward by row sums."""
    if q.shape[-2] <= QUERY_BLOCK or mask is None:
        return attention_backward_by_row_sums(dz, q, k, v, z, mask, drop, p)
    return attention_in_blocks_backward(dz, q, k, v, z, mask, drop, p)


def attention_in_blocks_backward(dz: np.ndarray, q: np.ndarray, k: np.ndarray, v: np.ndarray, z: np.ndarray,
                                 mask: np.ndarray, drop: np.ndarray | None = None, p: float = 0.0,
                                 block: int = QUERY_BLOCK) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`attention_in_blocks` mirrored: each block of queries sends gradient to the keys and values it read."""
    T, S = q.shape[-2], k.shape[-2]
    dq = np.empty_like(q)  # [..., H, T, D]
    dk, dv = np.zeros_like(k), np.zeros_like(v)  # [..., H, S, D]: several blocks read the same keys
    for i in range(0, T, block):
        j = min(i + block, T)
        end = S - T + j
        drop_ij = None if drop is None else drop[..., i:j, :end]
        dq_i, dk_i, dv_i = attention_backward_by_row_sums(dz[..., i:j, :], q[..., i:j, :], k[..., :end, :],
                                                          v[..., :end, :], z[..., i:j, :], mask[i:j, :end], drop_ij, p)
        dq[..., i:j, :] = dq_i
        dk[..., :end, :] += dk_i
        dv[..., :end, :] += dv_i
    return dq, dk, dv


def attention_backward_by_row_sums(dz: np.ndarray, q: np.ndarray, k: np.ndarray, v: np.ndarray, z: np.ndarray,
                                   mask: np.ndarray | None, drop: np.ndarray | None = None, p: float = 0.0,
                                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """backward.attention_backward, but the softmax backward's row sums, sum_j dP_ij P_ij, come from the
    forward's output instead of [T, S] arrays: = sum_j (dz_i . v_j) P_ij = dz_i . z_i (as FlashAttention
    computes it; with dropout, sum_j dP'_ij P'_ij = dz_i . z_i too); [T, S] work is done in place."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    pattern = ops.softmax(model.attention_scores(q, k, mask))  # [..., H, T, S], as in the forward
    dropped = pattern if drop is None else ops.dropout(pattern, drop, p)  # [..., H, T, S]: what multiplied v
    dv = dropped.swapaxes(-1, -2) @ dz  # [..., H, S, D]
    dscores = dz @ v.swapaxes(-1, -2)  # [..., H, T, S]: d pattern, made d scores in place below
    if drop is not None:
        dscores = ops.dropout_backward(dscores, drop, p)
    dscores -= (dz * z).sum(axis=-1, keepdims=True)  # dP - sum_j dP_j P_j
    dscores *= pattern
    dscores *= scale
    dq = dscores @ k  # [..., H, T, D]
    dk = dscores.swapaxes(-1, -2) @ q  # [..., H, S, D]
    return dq, dk, dv


# --- the LM head and its loss, a chunk of rows at a time ----------------------------------------------

HEAD_ROWS = 512  # rows of logits made at a time in the LM head: 103 MB at V = 50257, instead of [B*T, V]


@tunes(backward.lm_head_and_loss)
def lm_head_and_loss(h: np.ndarray, wte: np.ndarray, targets: np.ndarray, with_grads: bool = True,
                     grad_scale: float = 1.0, head_grad: bool = True,
                     ) -> tuple[float, np.ndarray | None, np.ndarray | None]:
    """Only rows with a target go through the head, HEAD_ROWS at a time,
    into one reused [HEAD_ROWS, V] buffer whose softmax and gradient are made in place; dwte is accumulated
    into one [V, C] array. At most one [HEAD_ROWS, V] array is alive, never [B*T, V]."""
    C = h.shape[-1]
    h2, t2 = h.reshape(-1, C), targets.reshape(-1)  # [B*T, C], [B*T]
    rows = np.flatnonzero(t2 >= 0)  # [N] positions that are scored
    n = len(rows)
    total = 0.0
    dh = np.zeros_like(h2) if with_grads else None  # [B*T, C]: ignored positions get no gradient
    dwte = np.empty_like(wte) if with_grads and head_grad else None  # [V, C], written by the first chunk's product
    scratch = None  # [V, C] for the later chunks' products
    buffer = np.empty((min(n, HEAD_ROWS), len(wte)), dtype=h.dtype)  # [HEAD_ROWS, V]: every chunk's logits
    for i in range(0, n, HEAD_ROWS):
        r = rows[i : i + HEAD_ROWS]
        x, t = h2[r], t2[r]  # [n, C], [n]
        z = np.matmul(x, wte.T, out=buffer[: len(r)])  # [n, V] logits, then in place their softmax
        z -= z.max(axis=-1, keepdims=True)
        picked = z[np.arange(len(t)), t]  # [n]: logit - max at the target, before exp overwrites it
        np.exp(z, out=z)
        sums = z.sum(axis=-1, keepdims=True)  # [n, 1]
        total += float((np.log(sums[:, 0]) - picked).sum(dtype=np.float64))  # the chunk's NLL
        if with_grads:
            z *= 1.0 / sums  # softmax(logits)
            z[np.arange(len(t)), t] -= 1.0
            z *= np.full((len(t), 1), grad_scale / n, dtype=z.dtype)  # (softmax - onehot) / n: d loss / d logits
            dh[r] = z @ wte  # [n, C]
            if not head_grad:
                continue
            if i == 0:
                np.matmul(z.T, x, out=dwte)  # [V, C]
            else:
                scratch = np.empty_like(wte) if scratch is None else scratch
                dwte += np.matmul(z.T, x, out=scratch)
    loss = total / n
    return (loss, dh.reshape(h.shape), dwte) if with_grads else (loss, None, None)


# --- AdamW in cache-sized slices on two threads --------------------------------------------------------

SLICE = 1 << 17  # entries updated together: p, g, m, v and a scratch slice, 512 KB each in float32
THREADS = 2  # AdamW is bound by memory: a second thread helps, more hardly do
_pool: ThreadPoolExecutor | None = None


@tunes(optim.adamw)
def adamw(params: dict[str, np.ndarray], grads: dict[str, np.ndarray], m: dict[str, np.ndarray],
          v: dict[str, np.ndarray], t: int, lr: float, betas: tuple[float, float], eps: float,
          weight_decay: float) -> None:
    """Every tensor updated in place slice by slice, so each slice's five arrays (p, g, m, v and a scratch
    slice) stay in cache for all of the update's passes; the slices are independent, so THREADS threads take
    turns (NumPy lets go of the GIL inside its loops)."""
    global _pool
    tensors = [(params[k].reshape(-1), g.reshape(-1), m[k].reshape(-1), v[k].reshape(-1),
                weight_decay if optim.decays(params[k]) else 0.0) for k, g in grads.items()]  # flat views
    slices = [tuple(a[i : i + SLICE] for a in arrays) + (decay,)
              for *arrays, decay in tensors for i in range(0, arrays[0].size, SLICE)]
    threads = max(1, min(THREADS, len(slices)))
    dtype = np.result_type(*(s[0] for s in slices)) if slices else np.float32
    scratch = [np.empty(SLICE, dtype=dtype) for _ in range(threads)]

    def run(k: int) -> None:
        for p, g, mt, vt, decay in slices[k::threads]:
            adamw_update(p, g, mt, vt, decay, t, lr, betas, eps, scratch[k][: p.size])

    if threads == 1:
        run(0)
        return
    if _pool is None:
        _pool = ThreadPoolExecutor(THREADS)
    list(_pool.map(run, range(threads)))


def adamw_update(p: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray, decay: float, t: int, lr: float,
                 betas: tuple[float, float], eps: float, tmp: np.ndarray) -> None:
    """AdamW on one slice, in place, every intermediate in `tmp` (the slice's scratch)."""
    b1, b2 = betas
    m *= b1
    np.multiply(g, 1.0 - b1, out=tmp)
    m += tmp  # m = b1 m + (1 - b1) g
    v *= b2
    np.multiply(g, g, out=tmp)
    tmp *= 1.0 - b2
    v += tmp  # v = b2 v + (1 - b2) g^2
    if decay:
        p *= 1.0 - lr * decay  # decoupled: shrink the weight, not the gradient
    np.sqrt(v, out=tmp)
    tmp *= 1.0 / math.sqrt(1.0 - b2**t)
    tmp += eps  # sqrt(v / (1 - b2^t)) + eps
    np.divide(m, tmp, out=tmp)
    tmp *= lr / (1.0 - b1**t)
    p -= tmp  # p -= lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
