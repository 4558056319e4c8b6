"""grads -> new params: AdamW, gradient clipping, and the learning-rate schedule.

    g      = grads, scaled down if their global norm exceeds max_norm        (clip_grad_norm)
    m      = b1 m + (1 - b1) g                 first moment: a running mean of the gradient
    v      = b2 v + (1 - b2) g^2               second moment: a running mean of its square
    p      = p - lr wd p                       decoupled weight decay (2-D tensors only)
    p      = p - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)      bias-corrected step

As torch.optim.AdamW computes it (Loshchilov & Hutter, "Decoupled Weight Decay Regularization"). Weight
decay applies to weight matrices and embeddings, never to biases or layer-norm gains (nanoGPT's grouping).
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .model import Params, flatten


# entries updated together: p, g, m, v and the scratch slice, 512 KB each in float32, about one core's L2 cache
# in all. Measured over the 124M shape's 124M entries (Intel Xeon, 2 threads): 1 << 16: 0.38 s, 1 << 17: 0.34 s,
# 1 << 18: 0.39 s; smaller slices cost more, each thread waiting for the GIL between NumPy's short loops.
SLICE = 1 << 17
THREADS = 2  # AdamW is bound by memory: a second thread helps, more hardly do


def decays(name: str, p: np.ndarray) -> bool:
    """Whether weight decay applies: matrices and embeddings (2-D) yes; biases and layer-norm gains no."""
    return p.ndim >= 2


class AdamW:
    """AdamW over nested params, updated in place: `opt.step(grads)`; the moments are preallocated.

    >>> p = {"w": np.ones((2, 2), np.float32), "b": np.ones(2, np.float32)}
    >>> opt = AdamW(p, lr=0.1, weight_decay=0.0)
    >>> opt.step({"w": np.ones((2, 2), np.float32), "b": -np.ones(2, np.float32)})
    >>> p["w"][0, 0], p["b"][0]  # the first step moves every entry by about lr, against its gradient
    (np.float32(0.9), np.float32(1.1))
    """

    def __init__(self, params: Params, lr: float, betas: tuple[float, float] = (0.9, 0.95), eps: float = 1e-8,
                 weight_decay: float = 0.1):
        if not lr > 0 or not 0 <= betas[0] < 1 or not 0 <= betas[1] < 1 or not eps >= 0 or not weight_decay >= 0:
            raise ValueError(f"AdamW needs lr > 0, 0 <= betas < 1, eps >= 0, weight_decay >= 0; got lr={lr}, "
                             f"betas={betas}, eps={eps}, weight_decay={weight_decay}")
        self.params = flatten(params)  # name -> the very arrays of `params`, updated in place
        self.lr, self.betas, self.eps, self.weight_decay = lr, betas, eps, weight_decay
        threads = min(THREADS, os.cpu_count() or 1)
        self.scratch = [np.empty(SLICE, dtype=np.result_type(*self.params.values())) for _ in range(threads)]
        self.pool = ThreadPoolExecutor(threads) if threads > 1 else None
        self.m = {k: np.zeros_like(p) for k, p in self.params.items()}  # first moments
        self.v = {k: np.zeros_like(p) for k, p in self.params.items()}  # second moments
        self.t = 0  # steps taken

    def step(self, grads: Params, lr: float | None = None) -> None:
        """One update of every parameter in place, with this step's learning rate (default self.lr)."""
        lr = self.lr if lr is None else lr
        self.t += 1
        # the same arithmetic slice by slice: each slice's p, g, m, v and scratch stay in the CPU's cache while
        # all the steps of `update` run over them, instead of streaming 500 MB arrays a dozen times. Slices are
        # independent, so THREADS threads take turns (NumPy lets go of the GIL inside its loops): the same
        # numbers, in less time.
        work = []
        for name, g in flatten(grads).items():
            p = self.params[name]
            assert g.shape == p.shape, f"gradient of {name} has shape {g.shape}, the parameter {p.shape}"
            decay = self.weight_decay if decays(name, p) else 0.0
            p, g, m, v = (a.reshape(-1) for a in (p, g, self.m[name], self.v[name]))
            work += [(p[i : i + SLICE], g[i : i + SLICE], m[i : i + SLICE], v[i : i + SLICE], decay)
                     for i in range(0, p.size, SLICE)]

        def run(k: int) -> None:
            for p, g, m, v, decay in work[k :: len(self.scratch)]:
                self.update(p, g, m, v, lr, decay, self.scratch[k])

        if self.pool is None:
            run(0)
        else:
            list(self.pool.map(run, range(len(self.scratch))))

    def update(self, p: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray, lr: float, decay: float,
               scratch: np.ndarray) -> None:
        """AdamW on one slice, in place; `scratch` holds the intermediate values."""
        b1, b2 = self.betas
        tmp = scratch[: p.size]
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
        tmp *= 1.0 / math.sqrt(1.0 - b2**self.t)
        tmp += self.eps  # sqrt(v / (1 - b2^t)) + eps
        np.divide(m, tmp, out=tmp)
        tmp *= lr / (1.0 - b1**self.t)
        p -= tmp  # p -= lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)

    def state_dict(self) -> tuple[dict[str, np.ndarray], dict]:
        """(arrays {"m.<name>", "v.<name>"}, scalars) to save; `load_state_dict` restores them exactly."""
        arrays = {**{f"m.{k}": a for k, a in self.m.items()}, **{f"v.{k}": a for k, a in self.v.items()}}
        return arrays, {"t": self.t, "lr": self.lr, "betas": list(self.betas), "eps": self.eps,
                        "weight_decay": self.weight_decay}

    def load_state_dict(self, arrays: dict[str, np.ndarray], scalars: dict) -> None:
        for k in self.params:
            for moments, prefix in ((self.m, "m"), (self.v, "v")):
                a = arrays.get(f"{prefix}.{k}")
                if a is None or a.shape != self.params[k].shape:
                    raise ValueError(f"optimizer state lacks {prefix}.{k} of shape {self.params[k].shape}")
                moments[k][...] = a
        self.t = int(scalars["t"])
        self.lr, self.betas = float(scalars["lr"]), tuple(scalars["betas"])
        self.eps, self.weight_decay = float(scalars["eps"]), float(scalars["weight_decay"])


def clip_grad_norm(grads: Params, max_norm: float) -> float:
    """Scale all gradients in place so that their global L2 norm is at most max_norm (as
    torch.nn.utils.clip_grad_norm_: by max_norm / (norm + 1e-6)); return the norm before clipping."""
    flat = flatten(grads)
    norm = math.sqrt(sum(float(np.dot(g.ravel(), g.ravel())) for g in flat.values()))
    scale = max_norm / (norm + 1e-6)
    if scale < 1.0:
        for g in flat.values():
            g *= scale
    return norm


def learning_rate(step: int, lr: float, warmup_steps: int, max_steps: int, min_lr: float | None = None) -> float:
    """The schedule at `step` (0-based): linear warmup to lr over warmup_steps, then cosine decay to min_lr
    (default lr / 10) at the last step.

    >>> [round(learning_rate(s, 1.0, 2, 6), 3) for s in range(6)]
    [0.5, 1.0, 1.0, 0.775, 0.325, 0.1]
    """
    min_lr = lr / 10 if min_lr is None else min_lr
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    decay_steps = max_steps - 1 - warmup_steps
    if decay_steps <= 0:
        return lr
    progress = min(1.0, (step - warmup_steps) / decay_steps)  # 0 after warmup .. 1 at the last step
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))
