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
from collections.abc import Callable

import numpy as np

from .dispatch import tunable
from .params import Params, flatten


def decays(p: np.ndarray) -> bool:
    """Whether weight decay applies to the parameter `p`: matrices and embeddings (2-D) yes; biases and
    layer-norm gains (1-D) no (nanoGPT's grouping)."""
    return p.ndim >= 2


@tunable
def adamw(params: dict[str, np.ndarray], grads: dict[str, np.ndarray], m: dict[str, np.ndarray],
          v: dict[str, np.ndarray], t: int, lr: float, betas: tuple[float, float], eps: float,
          weight_decay: float) -> None:
    """AdamW's step t (from 1) on every tensor named in `grads`, in place: params, first moments m and second
    moments v are dicts of arrays by the same flat names."""
    b1, b2 = betas
    for name, g in grads.items():
        p, mt, vt = params[name], m[name], v[name]
        assert g.shape == p.shape, f"gradient of {name} has shape {g.shape}, the parameter {p.shape}"
        mt[...] = b1 * mt + (1.0 - b1) * g  # first moment
        vt[...] = b2 * vt + (1.0 - b2) * g * g  # second moment
        if decays(p):
            p *= 1.0 - lr * weight_decay  # decoupled weight decay: shrink the weight, not the gradient
        m_hat = mt / (1.0 - b1**t)  # bias corrections: the moments start at zero
        v_hat = vt / (1.0 - b2**t)
        p -= lr * m_hat / (np.sqrt(v_hat) + eps)


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
        self.m = {k: np.zeros_like(p) for k, p in self.params.items()}  # first moments
        self.v = {k: np.zeros_like(p) for k, p in self.params.items()}  # second moments
        self.t = 0  # steps taken

    def step(self, grads: Params, lr: float | None = None) -> None:
        """One update of every parameter in place, with this step's learning rate (default self.lr)."""
        self.t += 1
        adamw(self.params, flatten(grads), self.m, self.v, self.t, self.lr if lr is None else lr, self.betas,
              self.eps, self.weight_decay)

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


def clip_grad_norm(grads: Params, max_norm: float, add_up: Callable[[float], float] | None = None) -> float:
    """Scale all gradients in place so that their global L2 norm is at most max_norm (as
    torch.nn.utils.clip_grad_norm_: by max_norm / (norm + 1e-6)); return the norm before clipping.
    `add_up`, when `grads` is one part of the gradient (an MPI rank's rows), adds the parts' sums of squares."""
    flat = flatten(grads)
    squares = sum(float(np.dot(g.ravel(), g.ravel())) for g in flat.values())
    norm = math.sqrt(add_up(squares) if add_up else squares)
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
