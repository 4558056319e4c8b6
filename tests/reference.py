"""Bridges to the independent reference implementations (Hugging Face transformers on torch)."""

from __future__ import annotations

import numpy as np

from minigpt2.params import flatten

from .conftest import require


def hf_name(name: str) -> tuple[str, bool]:
    """Our flat parameter name -> (Hugging Face's name, whether HF stores it transposed: Conv1D's [n_in, n_out])."""
    if name in ("wte", "wpe"):
        return f"transformer.{name}.weight", False
    *path, leaf = name.replace("blocks.", "h.").split(".")
    return "transformer." + ".".join(path + [{"g": "weight", "b": "bias", "w": "weight"}[leaf]]), leaf == "w"


def hf_named(params) -> dict:
    """Our params as NumPy arrays under Hugging Face's names and in its layout."""
    out = {}
    for name, a in flatten(params).items():
        hf, transposed = hf_name(name)
        out[hf] = np.ascontiguousarray(a.T) if transposed else a
    return out


def hf_state_dict(params) -> dict:
    """minigpt2 params -> GPT2LMHeadModel state dict (float32 torch tensors, the head tied to wte)."""
    torch = require("torch")
    sd = {k: torch.from_numpy(np.array(a, dtype=np.float32)) for k, a in hf_named(params).items()}
    sd["lm_head.weight"] = sd["transformer.wte.weight"]
    return sd


def hf_model(model, attn_implementation: str = "eager"):
    """A transformers GPT2LMHeadModel (float32, no dropout) holding `model`'s weights.

    Eager attention by default: it is the one that can return attention patterns (output_attentions).
    """
    torch = require("torch")
    transformers = require("transformers")
    c = model.config
    hf_config = transformers.GPT2Config(
        vocab_size=c.n_vocab, n_positions=c.n_ctx, n_embd=c.n_embd, n_layer=c.n_layer, n_head=c.n_head,
        layer_norm_epsilon=c.layer_norm_epsilon, activation_function="gelu_new",
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None, eos_token_id=None,
    )
    hf = transformers.GPT2LMHeadModel(hf_config).to(torch.float32)
    hf.config._attn_implementation = attn_implementation
    missing, unexpected = hf.load_state_dict(hf_state_dict(model.params), strict=False)
    assert not unexpected, unexpected
    assert all(m.endswith("attn.bias") or m.endswith("masked_bias") for m in missing), missing
    hf.eval()
    return hf


def hf_forward(hf, ids, **kwargs):
    """Run the HF model on numpy ids [T] or [B, T] without gradients."""
    torch = require("torch")
    ids = np.asarray(ids)
    batch = ids if ids.ndim == 2 else ids[None]
    with torch.no_grad():
        return hf(torch.from_numpy(batch.astype(np.int64)), **kwargs)


def torch_loss_and_grads(model, ids, targets, dtype="float64"):
    """Loss and gradients of `model`'s weights from transformers + torch autograd (in float64 by default),
    as (loss, {our flat name: gradient in our layout}). Targets of -1 are ignored, as ours."""
    torch = require("torch")
    hf = hf_model(model).to(getattr(torch, dtype))
    ids, targets = np.atleast_2d(ids), np.atleast_2d(targets)
    logits = hf(torch.from_numpy(ids.astype(np.int64))).logits  # [B, T, V]
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                             torch.from_numpy(targets.astype(np.int64)).reshape(-1), ignore_index=-1)
    loss.backward()
    grads = {}
    hf_params = dict(hf.named_parameters())
    for name in flatten(model.params):
        hf, transposed = hf_name(name)
        g = hf_params[hf].grad.numpy()
        grads[name] = g.T if transposed else g  # Conv1D [in, out] -> ours
    return loss.item(), grads


DATA_FILE = "model.ckpt.data-00000-of-00001"  # the TensorFlow-written fixture's one data shard


def assert_matches_reference(model, reference):
    """`model`'s logits on the fixture's three prompts equal reference.npz (an independent converter's), to 1e-4."""
    for i in range(3):
        tokens = reference[f"tokens_{i}"]
        logits = model(tokens)
        assert logits.dtype == np.float32
        np.testing.assert_allclose(logits[reference[f"positions_{i}"]], reference[f"logits_{i}"], atol=1e-4, rtol=0)
        np.testing.assert_allclose(logits[:, reference["vocab_subset"]], reference[f"logits_sub_{i}"], atol=1e-4, rtol=0)
        np.testing.assert_array_equal(logits.argmax(-1), reference[f"argmax_{i}"])
        lse = np.log(np.exp(logits.astype(np.float64)).sum(-1))
        np.testing.assert_allclose(lse, reference[f"logsumexp_{i}"], atol=1e-4, rtol=0)
