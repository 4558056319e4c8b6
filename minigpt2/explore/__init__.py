"""ids -> one HTML page to look inside the model: attention (a head view and a model view), the logit lens, the
next-token distribution under temperature / top-k / top-p, and how surprising each token was. The page stands
alone: its data, style and script are all in the one file, and it asks nothing of any network.

    page = model.explore("The cat sat on the mat.", tok)   # a Jupyter cell shows it inline
    page.save("cat.html")                                 # open it in any browser, no server needed

This file computes the data in NumPy and packs it small; page.html, page.css and page.js beside it draw it
(plain JavaScript, written for this page). What the page keeps (124M at 128 tokens: about 2.5 MB):

- attention: each weight w in [0, 1] as the byte round(255 w) (error at most 1/510), the causal half only.
  Every key of every query up to 128 tokens, and beyond while the causal half fits in ATTENTION_BYTES;
  past that, each query keeps its largest `keys_kept` keys with their positions (124M at 1024 tokens: 8).
- logit lens: for each residual stream, blocks.L.resid_pre for L < n_layer and the last block's output for
  L = n_layer, and each position, the 5 most likely next tokens of softmax(ln_f(x) wte^T) (float32).
- next token: at each position the NEXT_KEPT most likely tokens' log-probabilities log p = logit - log Z (Z,
  the normaliser over the whole vocabulary), in 65,536 steps from 0 down to the least likely kept one, and
  the probability of all the others together (and log Z, so that logit = log p + log Z).
  The page's next-token view is thus exact (to that step) at temperature 1, and at any temperature when top-k
  keeps at most the stored tokens; otherwise the tokens not stored are taken to share their probability
  equally, and the page says its numbers are approximate (page.js, `choose`).
- loss: the surprise -log p(token i | the tokens before it) of each token after the first.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
from importlib import resources
from pathlib import Path

import numpy as np

from ..files import write_atomically
from ..ops import layer_norm, linear

DENSE_UP_TO = 128  # tokens up to which every key of every query is kept, whatever the model's size
ATTENTION_BYTES = 3_500_000  # beyond that, every key while the causal half fits in this; else the largest keys
MIN_KEYS = 8  # keys kept per query at the least, when not all are
LENS_TOP = 5  # tokens the logit lens shows per layer and position
NEXT_KEPT = 1000  # tokens whose probabilities the next-token view keeps per position


# --- the numbers ------------------------------------------------------------------------------------


def logit_lens(x: np.ndarray, params, config) -> np.ndarray:
    """Read a residual stream as if it were the last: x [T, C] -> logits [T, V] = ln_f(x) wte^T, the model's own
    final layer norm and tied head applied to an earlier layer (nostalgebraist's logit lens, 2020)."""
    return linear(layer_norm(x, **params["ln_f"], eps=config.layer_norm_epsilon), params["wte"])


def log_normaliser(logits: np.ndarray) -> np.ndarray:
    """log Z = log sum_v exp(logit_v) of each row: [T, V] -> [T] float64 (the sum taken in float64)."""
    top = logits.max(axis=-1, keepdims=True)  # [T, 1]
    e = logits - top  # [T, V], <= 0: the one new array, then in place
    np.exp(e, out=e)
    return top[:, 0].astype(np.float64) + np.log(e.sum(axis=-1, dtype=np.float64))


def most_likely(logits: np.ndarray, k: int, log_z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The k most likely tokens of each row and their log-probabilities, most likely first (ties: the lower id
    first, as a stable sort of -logits orders them): logits [T, V], log Z [T] -> (ids [T, k], log p [T, k])."""
    V = logits.shape[-1]
    k = min(k, V)
    ids = np.argpartition(logits, V - k, axis=-1)[:, V - k :]  # [T, k], unordered
    values = np.take_along_axis(logits, ids, axis=-1)  # [T, k]
    order = np.lexsort((ids, -values), axis=-1)  # by value, highest first, then by id
    ids, values = np.take_along_axis(ids, order, axis=-1), np.take_along_axis(values, order, axis=-1)
    return ids, values.astype(np.float64) - log_z[:, None]


def surprises(logits: np.ndarray, ids: np.ndarray, log_z: np.ndarray) -> np.ndarray:
    """-log p(ids[t + 1] | ids[:t + 1]) for t < T - 1: how surprised the model was by each actual next token,
    in nats. logits [T, V], ids [T], log Z [T] -> [T - 1] float64."""
    return log_z[:-1] - logits[np.arange(len(ids) - 1), ids[1:]].astype(np.float64)


def keys_kept(T: int, n_layer: int, n_head: int) -> int:
    """Keys kept per query: all T up to DENSE_UP_TO tokens, or while the causal half (one byte a weight) fits in
    ATTENTION_BYTES; else the largest K, with K such that K weights and their positions (3 bytes) a query fit in
    it, at least MIN_KEYS. 124M (144 heads): all up to 219 tokens; at 1024 tokens, 8."""
    if T <= DENSE_UP_TO or n_layer * n_head * T * (T + 1) // 2 <= ATTENTION_BYTES:
        return T
    return min(T, max(MIN_KEYS, ATTENTION_BYTES // (3 * n_layer * n_head * T)))


def quantize(w: np.ndarray) -> np.ndarray:
    """Weights in [0, 1] -> bytes round(255 w): 256 levels, error at most 1/510."""
    return np.rint(np.clip(w, 0.0, 1.0) * 255).astype(np.uint8)


def causal_half(pattern: np.ndarray) -> np.ndarray:
    """The weights each query can have, row by row: pattern [H, T, T] -> [H, T (T + 1) / 2] (query t's keys
    0..t start at t (t + 1) / 2)."""
    rows, cols = np.tril_indices(pattern.shape[-1])
    return pattern[:, rows, cols]


def largest_keys(pattern: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each query's k largest weights and their key positions: pattern [H, T, T] -> (positions [H, T, k], weights
    [H, T, k]). A query before position k - 1 has fewer keys: the rest are later positions of weight 0."""
    positions = np.argpartition(-pattern, k - 1, axis=-1)[..., :k]  # [H, T, k]
    return positions, np.take_along_axis(pattern, positions, axis=-1)


# --- the page's data --------------------------------------------------------------------------------


class Page:
    """What `explore` found, and the page that shows it: `page` in a Jupyter cell shows it inline (an iframe,
    so it runs without trusting the notebook), `page.save(path)` writes the one HTML file, `page.html` is its
    text. `attention`, `lens` and `losses` read the numbers back as the page has them."""

    def __init__(self, data: dict, arrays: dict[str, np.ndarray]):
        self.data, self.arrays = data, arrays  # arrays: the packed numbers; data: everything else the page needs
        self.tokens: list[str] = data["tokens"]  # the label of each token, as the tokenizer cut the text
        self.losses: list[float | None] = data["losses"]  # None for the first token, which nothing predicts

    def attention(self, layer: int, head: int) -> np.ndarray:
        """The attention pattern as stored: [T, T] float32, queries down, keys across, zero above the diagonal
        (and at keys not kept, past DENSE_UP_TO tokens)."""
        T, K = len(self.tokens), self.data["attention"]["keys"]
        out = np.zeros((T, T), dtype=np.float32)
        if K == T:
            out[np.tril_indices(T)] = self.arrays["attention"][layer, head] / 255
        else:
            rows = np.repeat(np.arange(T), K)  # [T K]
            np.add.at(out, (rows, self.arrays["positions"][layer, head].ravel()),
                      self.arrays["attention"][layer, head].ravel() / 255)
            out[np.triu_indices(T, 1)] = 0  # the padding of the first queries
        return out

    def lens(self, layer: int, position: int) -> list[tuple[str, float]]:
        """The logit lens at one residual stream (0..n_layer) and position: [(token label, probability)], top 5."""
        ids, probs = self.arrays["lens_ids"][layer, position], self.arrays["lens_probs"][layer, position]
        return [(self.data["vocab"][str(i)], float(p)) for i, p in zip(ids, probs)]

    @property
    def html(self) -> str:
        """The page: one HTML file with its style, script and data inside."""
        return render(self.data, self.arrays)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the page to `path` (atomically: an interruption leaves the old file or the new one)."""
        path = Path(path)
        text = self.html.encode("utf-8")
        write_atomically(path, lambda f: f.write(text))
        return path

    def _repr_html_(self) -> str:
        # subtle: inside an iframe's srcdoc the page's script runs even in a notebook that is not trusted, and its
        # style and ids cannot clash with the notebook's; sandboxed, it can reach nothing outside itself
        return (f'<iframe srcdoc="{html.escape(self.html, quote=True)}" sandbox="allow-scripts" '
                'style="width: 100%; height: 820px; border: 1px solid #ddd;" title="minigpt2 explorer"></iframe>')

    def __repr__(self) -> str:
        return f"<minigpt2 explorer page: {len(self.tokens)} tokens, {self.data['model']}>"


def explore(model, text_or_ids, tok=None, *, title: str | None = None, name: str | None = None,
            progress: bool = False) -> Page:
    """Run `model` on a text (cut by `tok`, exactly tok.encode(text)) or on ids [T], and gather what the page
    shows. `title` heads the page (default: the text's start), `name` says which model (default its size)."""
    config = model.config
    ids = ids_to_explore(text_or_ids, tok, config.n_ctx)
    L, H, T = config.n_layer, config.n_head, ids.size
    K = keys_kept(T, L, H)
    weights, positions = [None] * L, [None] * L

    def keep_attention(layer: int):
        def hook(pattern: np.ndarray) -> np.ndarray:  # [H, T, T], packed as it is made: never all layers at once
            if K == T:
                weights[layer] = quantize(causal_half(pattern))
            else:
                p, w = largest_keys(pattern, K)
                positions[layer], weights[layer] = p.astype(np.uint16), quantize(w)
            return pattern
        return hook

    logits, acts = model.run_with_activations(
        ids, names="blocks.*.resid_pre",
        hooks={f"blocks.{layer}.attn.pattern": keep_attention(layer) for layer in range(L)})
    text = text_or_ids if isinstance(text_or_ids, str) else tok.decode(ids.tolist()) if tok is not None else None
    log_z = log_normaliser(logits)  # [T]
    next_ids, next_logp = most_likely(logits, NEXT_KEPT, log_z)  # [T, k]
    lens_ids, lens_logp = lens_tops(model, acts, progress)
    # the last block's output read the same way is the model's own prediction: its top tokens are stored already
    lens_ids.append(next_ids[:, :LENS_TOP])
    lens_logp.append(next_logp[:, :LENS_TOP])
    rest = np.clip(1.0 - np.exp(next_logp).sum(axis=-1), 0.0, 1.0)  # [T]: the probability of all the others
    step = np.maximum(-next_logp[:, -1], 1e-30) / 65535  # [T]: 0 .. the least likely kept, in 65,536 steps
    id_type = np.uint16 if config.n_vocab <= 1 << 16 else np.uint32
    arrays = {
        "attention": np.stack(weights),  # [L, H, T (T + 1) / 2] all keys, or [L, H, T, K] the largest
        "lens_ids": np.stack(lens_ids).astype(id_type),  # [L + 1, T, 5]
        "lens_probs": np.exp(np.stack(lens_logp)).astype(np.float32),  # [L + 1, T, 5]
        "next_ids": next_ids.astype(id_type),  # [T, k], most likely first
        "next_logp": np.rint(-next_logp / step[:, None]).astype(np.uint16),  # [T, k]: log p = -value * step
    }
    if K != T:
        arrays["positions"] = np.stack(positions)  # [L, H, T, K]
    used = np.unique(np.concatenate([ids, next_ids.ravel(), arrays["lens_ids"].ravel()]))
    label = tok.token_label if tok is not None else (lambda i: f"#{i}")
    data = {
        "format": 1,
        "title": title if title is not None else headline(text, ids),
        "model": name or describe(model),
        "n_layer": L, "n_head": H, "n_vocab": config.n_vocab, "n_ctx": config.n_ctx,
        "ids": ids.tolist(),
        "tokens": [label(int(i)) for i in ids],
        "losses": [None] + [round(float(s), 5) for s in surprises(logits, ids, log_z)],
        "vocab": {str(i): label(int(i)) for i in used},
        "attention": {"keys": K},
        "lens": {"k": LENS_TOP},
        "next": {"k": next_ids.shape[1], "step": step.tolist(), "rest": rest.tolist(), "log_z": log_z.tolist(),
                 "ties": exact_ties(next_logp)},
    }
    return Page(data, arrays)


def ids_to_explore(text_or_ids, tok, n_ctx: int) -> np.ndarray:
    """The ids [T] of a text (tok.encode) or the ids given, checked: something to look at, within n_ctx."""
    if isinstance(text_or_ids, str):
        if tok is None:
            raise ValueError("explore(text) needs the tokenizer that cuts it: model.explore(text, tok)")
        if not text_or_ids:
            raise ValueError("the text is empty: there is nothing to look at")
        ids = np.asarray(tok.encode(text_or_ids), dtype=np.int64)
    else:
        ids = np.asarray(text_or_ids)
        if ids.size == 0:
            raise ValueError("no tokens: there is nothing to look at")
        if ids.ndim != 1:
            raise ValueError(f"explore looks at one text: ids of shape [T], got shape {ids.shape}")
    if ids.size > n_ctx:
        raise ValueError(f"the text is {ids.size} tokens, more than this model reads at once (n_ctx = "
                         f"{n_ctx}); explore a part of it, at most {n_ctx} tokens")
    return ids


def lens_tops(model, acts: dict, progress: bool) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The logit lens's LENS_TOP tokens and log-probabilities at the stream entering each block."""
    lens_ids, lens_logp = [], []
    layers = range(model.config.n_layer)
    if progress:
        from tqdm.auto import tqdm
        layers = tqdm(layers, desc="logit lens", unit="layer", delay=0.5)  # drawn only if it takes a while
    for layer in layers:
        read = logit_lens(acts[f"blocks.{layer}.resid_pre"], model.params, model.config)  # [T, V]
        top_ids, top_logp = most_likely(read, LENS_TOP, log_normaliser(read))
        lens_ids.append(top_ids)
        lens_logp.append(top_logp)
    return lens_ids, lens_logp


def exact_ties(logp: np.ndarray) -> dict[str, list[int]]:
    """Where a kept token's logit equals the one before it, {position: [index, ...]}: the page's top-k keeps
    tokens tied with the k-th (as sample.py does), which the rounded log-probabilities alone cannot tell."""
    t, j = np.nonzero(logp[:, 1:] == logp[:, :-1])
    out: dict[str, list[int]] = {}
    for position, index in zip(t.tolist(), (j + 1).tolist()):
        out.setdefault(str(position), []).append(index)
    return out


def headline(text: str | None, ids: np.ndarray) -> str:
    """The page's default title: the text's first line, cut at 60 characters."""
    if not text:
        return f"{ids.size} tokens"
    line = text.strip().split("\n")[0]
    return line if len(line) <= 60 else line[:59] + "…"


def describe(model) -> str:
    """A model in a few words: its shape and size (and its adapter)."""
    c = model.config
    adapter = f", LoRA r = {model.lora.r}" if getattr(model, "lora", None) is not None else ""
    return (f"GPT-2, {c.n_layer} layers x {c.n_head} heads, {c.n_embd} wide, {model.num_params / 1e6:.1f}M "
            f"parameters{adapter}")


# --- the page ---------------------------------------------------------------------------------------


def packed(a: np.ndarray) -> str:
    """An array's bytes (little-endian, C order) in base64, for the page to read into a typed array."""
    return base64.b64encode(np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes()).decode("ascii")


def render(data: dict, arrays: dict[str, np.ndarray]) -> str:
    """The HTML file: page.html with page.css, page.js and the data (JSON, its arrays in base64) put in."""
    full = {**data, "id_bytes": arrays["next_ids"].itemsize,
            "attention": {**data["attention"], "weights": packed(arrays["attention"]),
                          "positions": packed(arrays["positions"]) if "positions" in arrays else None},
            "lens": {**data["lens"], "ids": packed(arrays["lens_ids"]), "probs": packed(arrays["lens_probs"])},
            "next": {**data["next"], "ids": packed(arrays["next_ids"]), "logp": packed(arrays["next_logp"])}}
    # subtle: inside <script> only "</script" or "<!--" could end or bend the data; with every "<" escaped
    # (JSON's \u003c, the same string once parsed) neither can occur
    payload = json.dumps(full, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")
    parts = {"title": html.escape(data["title"]), "style": asset("page.css"), "script": asset("page.js"),
             "data": payload}
    return re.sub(r"@@(\w+)@@", lambda m: parts[m[1]], asset("page.html"))  # one pass: the data is never read


def asset(name: str) -> str:
    """One of the files the page is made of (page.html, page.css, page.js), as text."""
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")
