"""checkpoint files -> (GPT2Config, params): OpenAI's released checkpoints, Hugging Face directories, and
minigpt2's converted copies (written by save.py).

    OpenAI   hparams.json + model.ckpt.index + model.ckpt.data-*   (read by minigpt2.tf_checkpoint)
    HF       config.json + model.safetensors                       (as save_pretrained writes it)
    ours     minigpt2.safetensors (+ the vocabulary files)         memory-mapped, ready in milliseconds

A model name ("124M", "gpt2-xl", ...) is downloaded once into the cache, converted once to our format, and
from then on loaded from the converted copy without touching the network.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from .bundled import bundled_dir
from .config import GPT2Config, canonical_name
from .download import MODEL_FILES, cache_dir, download_openai_files
from .files import CONVERTED_FILE, names_a_path
from .params import (
    Params,
    iter_param_shapes,
    param_count,
    unflatten,
)
from .safetensors import read_safetensors
from .save import FORMAT, FORMAT_VERSION, models_in, save_converted
from .tf_checkpoint import CheckpointError, read_checkpoint


def converted_dir(name: str) -> Path:
    """Where the converted copy of a released model lives: {cache}/converted/{name}/."""
    return cache_dir() / "converted" / canonical_name(name)


# --- name mapping ---------------------------------------------------------------------------------

# model/h{i}/{ln_1|attn/c_attn|...}/{g|b|w}  ->  blocks.{i}.{ln_1|attn.c_attn|...}.{g|b|w}
OPENAI_BLOCK = re.compile(r"model/h(\d+)/(ln_1|ln_2|attn/c_attn|attn/c_proj|mlp/c_fc|mlp/c_proj)/([gbw])")


def openai_name(name: str) -> str:
    """Our parameter name -> OpenAI's variable name ("blocks.3.attn.c_attn.w" -> "model/h3/attn/c_attn/w")."""
    m = re.fullmatch(r"blocks\.(\d+)\.(.*)", name)
    return f"model/h{m[1]}/{m[2].replace('.', '/')}" if m else "model/" + name.replace(".", "/")


def from_openai(tensors: dict[str, np.ndarray], config: GPT2Config, where: str) -> dict[str, np.ndarray]:
    """OpenAI's variables -> our flat params. OpenAI stores weights [1, n_in, n_out] (a 1x1 convolution);
    we keep [n_out, n_in] (see ops.linear). Returns views: the transposes are copied where they are written."""
    flat = {}
    for name, a in tensors.items():
        m = OPENAI_BLOCK.fullmatch(name)
        if m:
            layer = int(m[1])  # subtle: take the layer from the name; sorted keys run h0, h1, h10, h11, h2, ...
            if layer >= config.n_layer:
                raise CheckpointError(f"{where}: tensor {name} is for layer {layer}, but hparams.json says "
                                      f"n_layer = {config.n_layer}")
            ours = f"blocks.{layer}.{m[2].replace('/', '.')}.{m[3]}"
        elif name in ("model/wte", "model/wpe", "model/ln_f/g", "model/ln_f/b"):
            ours = name[len("model/"):].replace("/", ".")
        else:
            continue  # not a weight of the model (e.g. an optimizer slot)
        if m and m[3] == "w":
            if a.ndim != 3 or a.shape[0] != 1:
                raise CheckpointError(f"{where}: tensor {name} has shape {a.shape}, expected [1, n_in, n_out]")
            a = a[0].T  # [1, n_in, n_out] -> [n_out, n_in]
        flat[ours] = a
    check_against_config(flat, config, where, openai_name)
    return flat


HF_NAME = re.compile(r"(wte|wpe)\.weight|ln_f\.(weight|bias)|h\.\d+\.(ln_1|ln_2|attn\.c_attn|attn\.c_proj|mlp\.c_fc|"
                     r"mlp\.c_proj)\.(weight|bias)")


def from_hf(tensors: dict[str, np.ndarray], config: GPT2Config, where: str) -> dict[str, np.ndarray]:
    """Hugging Face's GPT2 names ("transformer.h.3.attn.c_attn.weight") -> our flat params."""
    leaf = {"weight": "w", "bias": "b"}
    flat = {}
    for name, a in tensors.items():
        key = name.removeprefix("transformer.")
        if key == "lm_head.weight" or re.fullmatch(r"h\.\d+\.attn\.(masked_)?bias", key):
            continue  # the tied head (checked below) and causal-mask buffers older versions saved
        if not HF_NAME.fullmatch(key):
            raise CheckpointError(f"{where}: tensor {name} is not a weight of GPT-2")
        if key.startswith("h.") and int(key.split(".")[1]) >= config.n_layer:
            raise CheckpointError(f"{where}: tensor {name} is for layer {key.split('.')[1]}, but the config says "
                                  f"n_layer = {config.n_layer}")
        *path, last = key.split(".")
        if path and path[0] == "h":
            path[0] = "blocks"
        if path and path[-1] in ("ln_1", "ln_2", "ln_f"):
            last = {"weight": "g", "bias": "b"}[last]
        ours = ".".join(path) if path in (["wte"], ["wpe"]) else ".".join(path + [leaf.get(last, last)])
        flat[ours] = a.T if ours.endswith(".w") else a  # HF's Conv1D is [n_in, n_out]; ours [n_out, n_in]
    head = tensors.get("lm_head.weight")
    if head is not None and "wte" in flat and not np.array_equal(head, flat["wte"]):
        raise CheckpointError(f"{where}: lm_head.weight differs from wte; GPT-2 ties them and minigpt2 assumes so")
    check_against_config(flat, config, where, lambda n: n)
    return flat


def check_against_config(flat: dict[str, np.ndarray], config: GPT2Config, where: str, show) -> None:
    """Every tensor the config implies is present, with the right shape and a float dtype.

    subtle: a config read from a file may claim 10^8 layers. Its implied parameter count is held against the
    elements the file holds first, and the names are then made one at a time (iter_param_shapes), so that
    no more of them exist than it takes to find the first missing one.
    """
    implied, held = param_count(config), sum(int(a.size) for a in flat.values())
    if implied > 4 * held + 10**6:
        raise CheckpointError(f"{where}: the config ({config}) implies {implied:,} parameters, but the file holds "
                              f"{held:,}; the config does not describe these weights")
    for name, shape in iter_param_shapes(config):
        if name not in flat:
            raise CheckpointError(f"{where}: tensor {show(name)} is missing")
        a = flat[name]
        if tuple(a.shape) != shape:
            raise CheckpointError(f"{where}: tensor {show(name)} has shape {tuple(a.shape)}, but the config "
                                  f"({config}) implies {shape}")
        if not np.issubdtype(a.dtype, np.floating):
            raise CheckpointError(f"{where}: tensor {show(name)} has dtype {a.dtype}, expected float32")


# --- the three formats ----------------------------------------------------------------------------


def checkpoint_prefix(directory: Path) -> Path:
    """model.ckpt, or whatever the `checkpoint` file names."""
    state = directory / "checkpoint"
    if state.is_file():
        m = re.search(r'^model_checkpoint_path:\s*"([^"]+)"', state.read_text(encoding="utf-8", errors="replace"), re.M)
        if m:
            if "\0" in m[1]:
                raise CheckpointError(f"{state}: model_checkpoint_path {m[1]!r} holds a NUL byte; no file has such "
                                      "a name (the file is corrupted)")
            return directory / m[1]
    return directory / "model.ckpt"


def load_openai(directory: str | os.PathLike, verify_crc: bool = False) -> tuple[GPT2Config, dict[str, np.ndarray]]:
    """OpenAI's files (hparams.json + model.ckpt.*) -> (config, flat params memory-mapped from the data file);
    `verify_crc` checks every tensor's checksum (reads every byte)."""
    directory = Path(directory)
    config = GPT2Config.from_hparams(directory / "hparams.json")
    prefix = checkpoint_prefix(directory)
    return config, from_openai(read_checkpoint(prefix, verify_crc=verify_crc), config, str(prefix))


# Hugging Face config options that change GPT-2's maths, and the value that keeps it GPT-2. A file that sets
# one otherwise is refused, never loaded as if it did not (its logits would silently differ from transformers').
# reorder_and_upcast_attn is absent: it only reorders float32 work that minigpt2 already does in float32.
HF_OPTIONS_THAT_CHANGE_THE_MATHS = {
    "scale_attn_weights": True,  # scores divided by sqrt(D)
    "scale_attn_by_inverse_layer_idx": False,  # no extra 1 / (layer + 1)
    "add_cross_attention": False,  # a decoder only
    "tie_word_embeddings": True,  # the LM head is wte
}


def hf_config(path: Path) -> GPT2Config:
    """Hugging Face's config.json (vocab_size, n_positions, ...) -> GPT2Config; options minigpt2 does not
    implement are refused by name."""
    try:
        hf = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError, RecursionError) as e:  # unreadable, not UTF-8, not JSON, absurdly nested
        raise CheckpointError(f"{path}: cannot read the config ({e})") from None
    if not isinstance(hf, dict):
        raise CheckpointError(f"{path} holds a JSON {type(hf).__name__}; expected a GPT-2 config.json (an object)")
    if hf.get("model_type", "gpt2") != "gpt2":
        raise CheckpointError(f"{path}: model_type {hf['model_type']!r}; minigpt2 loads GPT-2 models only")
    act = hf.get("activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh"):
        raise CheckpointError(f"{path}: activation_function {act!r}; GPT-2 (and minigpt2) uses the tanh GELU")
    for option, gpt2_value in HF_OPTIONS_THAT_CHANGE_THE_MATHS.items():
        if option in hf and hf[option] != gpt2_value:
            raise CheckpointError(f"{path}: {option} is {hf[option]!r}; GPT-2 (and minigpt2) has {gpt2_value!r}, "
                                  "so this model would give other logits than transformers does")
    try:
        n_inner = hf.get("n_inner")
        if n_inner is not None and n_inner != 4 * hf["n_embd"]:
            raise CheckpointError(f"{path}: n_inner is {n_inner!r}; GPT-2 (and minigpt2) has an MLP of 4 x n_embd "
                                  f"= {4 * hf['n_embd']}")
        return GPT2Config(n_vocab=hf["vocab_size"], n_ctx=hf.get("n_positions", hf.get("n_ctx")), n_embd=hf["n_embd"],
                          n_head=hf["n_head"], n_layer=hf["n_layer"],
                          layer_norm_epsilon=hf.get("layer_norm_epsilon", 1e-5))
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path} is not a GPT-2 config: {type(e).__name__} {e}") from None


def load_hf(directory: str | os.PathLike) -> tuple[GPT2Config, dict[str, np.ndarray]]:
    """A Hugging Face GPT-2 directory (config.json + model.safetensors) -> (config, flat params)."""
    directory = Path(directory)
    config = hf_config(directory / "config.json")
    tensors, _ = read_safetensors(directory / "model.safetensors")
    return config, from_hf(tensors, config, str(directory / "model.safetensors"))


def load_converted(directory: str | os.PathLike) -> tuple[GPT2Config, dict[str, np.ndarray]]:
    """minigpt2's converted format -> (config, flat params memory-mapped)."""
    path = Path(directory) / CONVERTED_FILE
    tensors, meta = read_safetensors(path)
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} was not written by minigpt2 (metadata format {meta.get('format')!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise FormatVersionError(f"{path} has format version {meta.get('format_version')}, this minigpt2 reads "
                                 f"version {FORMAT_VERSION}; convert it again")
    try:
        fields = json.loads(meta["config"])
        config = GPT2Config(**fields)
    except KeyError:
        raise CheckpointError(f"{path}: the metadata holds no config") from None
    except (ValueError, TypeError, RecursionError) as e:  # not JSON, not an object, unknown or invalid fields
        raise CheckpointError(f"{path}: the metadata's config is not a GPT2Config ({e})") from None
    check_against_config(tensors, config, str(path), lambda n: n)
    return config, tensors


class FormatVersionError(CheckpointError):
    """A converted copy from another version of minigpt2."""


def convert(source: str | os.PathLike, dest: str | os.PathLike, progress: bool = True) -> Path:
    """Convert a model directory (OpenAI's or HF's) into minigpt2's format at `dest`, with its vocabulary.
    Conversion reads every byte anyway, so a TensorFlow checkpoint's tensor checksums are verified on the way."""
    source = Path(source)
    config, flat = read_dir(source, verify_crc=True)  # views: each tensor is made contiguous only as it is written
    files = {}
    for encoder, merges in (("encoder.json", "vocab.bpe"), ("vocab.json", "merges.txt")):
        if (source / encoder).is_file() and (source / merges).is_file():  # HF's names hold the same formats
            files = {"encoder.json": (source / encoder).read_bytes(), "vocab.bpe": (source / merges).read_bytes()}
            break
    return save_converted(config, unflatten(flat), dest, files=files, progress=progress)


# --- entry point ----------------------------------------------------------------------------------


def detect_format(directory: Path) -> str:
    """ "converted", "hf" or "openai": the model `directory` loads as (save.models_in sniffs its files; ours
    first, as a directory holding several loads ours)."""
    kinds = models_in(directory)
    for kind in ("converted", "hf", "openai"):
        if kind in kinds:
            return kind
    found = sorted(p.name for p in directory.iterdir())[:12]
    raise CheckpointError(
        f"{directory} holds no model minigpt2 knows: expected OpenAI's files (hparams.json + model.ckpt.index + "
        f"model.ckpt.data-*), Hugging Face's (config.json + model.safetensors) or {CONVERTED_FILE}; found {found}")


def read_dir(directory: str | os.PathLike, verify_crc: bool = False) -> tuple[GPT2Config, dict[str, np.ndarray]]:
    """Any of the three formats -> (config, flat params as views of the files; weights maybe transposed views).
    `verify_crc`: check a TensorFlow checkpoint's tensor checksums (the other formats carry none)."""
    directory = Path(directory)
    kind = detect_format(directory)
    if kind == "openai":
        return load_openai(directory, verify_crc=verify_crc)
    return {"converted": load_converted, "hf": load_hf}[kind](directory)


def load_dir(directory: str | os.PathLike, verify_crc: bool = False) -> tuple[GPT2Config, dict[str, np.ndarray]]:
    """Any of the three formats -> (config, flat params ready to run: contiguous, [n_out, n_in])."""
    config, flat = read_dir(directory, verify_crc)
    return config, {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in flat.items()}  # no copy for ours


def load_model(name_or_path: str | os.PathLike, progress: bool = True, verify_crc: bool = False,
               ) -> tuple[GPT2Config, Params]:
    """A model name (downloaded and converted once, checksums verified, then loaded from the cache; "tiny" is
    bundled with the package) or a directory -> (config, params). A directory wins over a name it shares. `verify_crc`: also verify a TensorFlow checkpoint directory's checksums."""
    path = Path(name_or_path)
    if path.is_dir():
        config, flat = load_dir(path, verify_crc)
        return config, unflatten(flat)
    if path.exists():
        raise NotADirectoryError(f"{path} is a file; a model is a directory (OpenAI's, Hugging Face's or "
                                 "minigpt2's files), or a name such as 124M or tiny")
    if names_a_path(name_or_path):
        raise FileNotFoundError(f"model directory not found: {path}")
    bundled = bundled_dir(str(name_or_path))
    if bundled is not None:  # shipped inside the package: never downloaded
        config, flat = load_converted(bundled)
        return config, unflatten(flat)
    name = canonical_name(str(name_or_path))  # ValueError for unknown names
    dest = converted_dir(name)
    if (dest / CONVERTED_FILE).is_file():
        try:
            config, flat = load_converted(dest)
            return config, unflatten(flat)
        except FormatVersionError:
            pass  # converted by another version: convert again from the downloaded files
    raw = download_openai_files(name, MODEL_FILES, progress=progress)
    try:  # convert reads and checks everything (index, data file sizes, shapes vs hparams) before writing
        convert(raw, dest, progress=progress)
    except (CheckpointError, ValueError) as e:
        raise CheckpointError(f"the downloaded files of {name} in {raw} do not fit together: {e}; delete the file "
                              "named to download it again") from None
    config, flat = load_converted(dest)
    return config, unflatten(flat)
