"""(GPT2Config, params) -> files: minigpt2's own format and Hugging Face's layout, written atomically, never
over another model or a file minigpt2 did not write unless told to.

    ours     minigpt2.safetensors (+ encoder.json, vocab.bpe)    memory-mapped by load.py, ready in milliseconds
    HF       config.json + model.safetensors (+ vocab.json, merges.txt), as save_pretrained writes them
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .config import GPT2Config
from .files import CONVERTED_FILE, write_atomically
from .params import Params, check_params, flatten
from .safetensors import read_metadata, read_safetensors, write_safetensors

FORMAT = "minigpt2"
FORMAT_VERSION = "1"  # bump when the converted layout changes; older copies are then converted again


def save_converted(config: GPT2Config, params: Params, dest: str | os.PathLike, files: dict[str, bytes] | None = None,
                   *, overwrite: bool = False, progress: bool = True, metadata: dict[str, str] | None = None) -> Path:
    """Write (config, params) in minigpt2's format into the directory `dest`, plus companion `files`
    ({name: bytes}, e.g. the vocabulary's encoder.json and vocab.bpe). Returns `dest`.

    Safe in a directory that holds other things: only minigpt2's own files are written, and a file that
    minigpt2 did not write is never removed or rewritten. A directory holding another kind of model (OpenAI's
    or Hugging Face's files) is refused unless `overwrite=True`, which adds our files beside theirs (ours are
    the ones that load) and still removes nothing.

    Atomic: every file is written beside its final name, flushed to disk, and renamed into place. The weights
    file is renamed last and is the model: it carries the format version, the config and the companion
    files' contents, and the loaders (also `Tokenizer.from_pretrained`) read those from it. So an
    interruption at any instant leaves the previous model or the new one, never a mixture, even though the
    loose companion copies (for other tools) may already be the new ones.
    """
    dest = Path(dest)
    files = dict(files or {})
    flat = flatten(check_params(params, config))  # float32, in a fixed order
    make_dir(dest)
    changed = check_writable(dest, files, overwrite, writing="converted")
    meta = {**(metadata or {}), "format": FORMAT, "format_version": FORMAT_VERSION,
            "config": json.dumps(config.to_dict()), "files": json.dumps(sorted(files))}
    meta.update({f"file:{name}": data.decode("utf-8") for name, data in files.items()})
    write_model(dest, changed, CONVERTED_FILE, lambda f: write_safetensors(f, flat, meta, progress=progress))
    return dest


def write_model(dest: Path, files: dict[str, bytes], weights: str, write_weights) -> None:
    """Write the companion `files`, then the weights file (the commit point), each atomically."""
    for name, data in files.items():
        write_atomically(dest / name, lambda f, data=data: f.write(data))
    write_atomically(dest / weights, write_weights)


MODEL_KINDS = {
    "openai": "OpenAI's checkpoint files (hparams.json, model.ckpt.*)",
    "hf": "a Hugging Face model (config.json, model.safetensors)",
    "converted": f"a model saved by minigpt2 ({CONVERTED_FILE})",
}


def models_in(directory: Path) -> set[str]:
    """The kinds of model `directory` holds: "openai", "hf", "converted"."""
    kinds = set()
    if (directory / "hparams.json").is_file() or any(directory.glob("*.ckpt.index")):
        kinds.add("openai")
    if (directory / "model.safetensors").is_file() and (directory / "config.json").is_file():
        kinds.add("hf")
    if (directory / CONVERTED_FILE).is_file():
        kinds.add("converted")
    return kinds


class OverwriteRefused(FileExistsError):
    """Saving would replace or shadow another model; `reason` says what, `overwrite_does` what allowing it does."""

    def __init__(self, reason: str, overwrite_does: str):
        super().__init__(f"{reason}. Save into another directory, or pass overwrite=True to {overwrite_does}")
        self.reason, self.overwrite_does = reason, overwrite_does


def make_dir(dest: Path) -> None:
    """Create the directory `dest` (and its parents); a clear error if it is a file."""
    if dest.exists() and not dest.is_dir():
        raise NotADirectoryError(f"{dest} is a file, not a directory; give a directory to save the model into")
    dest.mkdir(parents=True, exist_ok=True)


def check_writable(dest: Path, files: dict[str, bytes], overwrite: bool, writing: str) -> dict[str, bytes]:
    """Refuse to save a `writing` ("converted" or "hf") model where it would change what another model's
    directory loads as, or rewrite a file minigpt2 did not write. Returns the `files` to write: those not
    already there with these very bytes (never rewritten)."""
    kinds = models_in(dest)
    others = sorted(kinds - {writing})
    if others and not overwrite:
        raise OverwriteRefused(f"{dest} holds {MODEL_KINDS[others[0]]}; saving this model there would change what "
                               "the directory loads as", "add minigpt2's files beside them (nothing is removed)")
    ours = set()
    if writing == "hf" and "hf" in kinds:
        if is_our_export(dest):
            ours = {"vocab.json", "merges.txt"}  # written by an earlier export: ours to replace
        elif not overwrite:
            raise OverwriteRefused(f"{dest} holds a Hugging Face model that minigpt2 did not export; exporting there "
                                   "would replace its config.json and model.safetensors", "replace them")
    if writing == "converted" and (dest / CONVERTED_FILE).is_file():
        try:
            ours = set(json.loads(read_safetensors(dest / CONVERTED_FILE)[1].get("files", "[]")))
        except (OSError, ValueError):
            raise FileExistsError(f"{dest / CONVERTED_FILE} exists but is not a readable minigpt2 model; "
                                  "remove or move it first") from None
    changed = {}
    for name, data in files.items():
        path = dest / name
        if path.is_file() and path.read_bytes() == data:
            continue
        if path.exists() and name not in ours:
            raise FileExistsError(f"{path} was not written by minigpt2 and differs from the file this model "
                                  f"would write there; move it away, or save into another directory")
        changed[name] = data
    return changed


EXPORT_MARK = {"format": "pt", "written_by": "minigpt2"}  # the metadata of an exported model.safetensors


def is_our_export(directory: Path) -> bool:
    """Whether directory/model.safetensors was written by minigpt2's Hugging Face export (its metadata says so)."""
    try:
        return read_metadata(directory / "model.safetensors").get("written_by") == "minigpt2"
    except (OSError, ValueError):
        return False


def to_hf(flat: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Our flat params -> Hugging Face's GPT-2 names and layout (Conv1D weights [n_in, n_out]); `from_hf`'s inverse."""
    leaf = {"g": "weight", "b": "bias", "w": "weight"}
    out = {}
    for name, a in flat.items():
        if name in ("wte", "wpe"):
            out[f"transformer.{name}.weight"] = a
            continue
        *path, last = name.split(".")
        if path[0] == "blocks":
            path[0] = "h"
        out["transformer." + ".".join(path + [leaf[last]])] = a.T if last == "w" else a  # [n_out, n_in] -> [n_in, n_out]
    return out


def hf_config_json(config: GPT2Config, eot_id: int | None) -> dict:
    """A config.json that transformers' GPT2LMHeadModel reads as exactly this model."""
    return {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": config.n_vocab,
        "n_positions": config.n_ctx, "n_ctx": config.n_ctx, "n_embd": config.n_embd, "n_layer": config.n_layer,
        "n_head": config.n_head, "n_inner": None, "activation_function": "gelu_new",
        "layer_norm_epsilon": config.layer_norm_epsilon, "resid_pdrop": 0.1, "embd_pdrop": 0.1, "attn_pdrop": 0.1,
        "initializer_range": 0.02, "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False, "tie_word_embeddings": True, "bos_token_id": eot_id, "eos_token_id": eot_id,
    }


def save_huggingface(config: GPT2Config, params: Params, dest: str | os.PathLike, files: dict[str, bytes] | None = None,
                     *, eot_id: int | None = None, overwrite: bool = False, progress: bool = True) -> Path:
    """Write (config, params) as Hugging Face's GPT-2 layout into `dest`: config.json and model.safetensors
    (transformers' names, Conv1D layout, the head tied to wte), with the vocabulary `files` (encoder.json and
    vocab.bpe) as HF names them, vocab.json and merges.txt. The same rules as `save_converted`: only these
    files are written, each atomically, model.safetensors last; another kind of model, or a Hugging Face model
    minigpt2 did not export (its metadata has no written_by: minigpt2), is refused unless `overwrite=True`."""
    dest = Path(dest)
    hf_names = {"encoder.json": "vocab.json", "vocab.bpe": "merges.txt"}
    files = {hf_names[k]: v for k, v in (files or {}).items() if k in hf_names}
    config_json = (json.dumps(hf_config_json(config, eot_id), indent=2) + "\n").encode()
    flat = to_hf(flatten(check_params(params, config)))
    make_dir(dest)
    changed = check_writable(dest, files, overwrite, writing="hf")
    if not ((dest / "config.json").is_file() and (dest / "config.json").read_bytes() == config_json):
        changed["config.json"] = config_json  # the model's own file, like model.safetensors
    write_model(dest, changed, "model.safetensors",
                lambda f: write_safetensors(f, flat, EXPORT_MARK, progress=progress))
    return dest
