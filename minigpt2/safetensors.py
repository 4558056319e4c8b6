"""model.safetensors bytes <-> {name: array}: Hugging Face's weight format, read and written with NumPy.

Layout: 8 bytes (little-endian u64) N, then N bytes of JSON header, then the raw tensor bytes. The header
maps each tensor name to {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]} (offsets into the
byte buffer after the header), plus an optional "__metadata__": {str: str}. Reading memory-maps the file,
so a tensor costs nothing until its pages are touched. Knows the format, nothing of GPT-2.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
from tqdm import tqdm

DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U8": np.dtype("u1"), "BOOL": np.dtype("?"),
}
NAMES = {np.dtype(v): k for k, v in DTYPES.items() if k != "BF16"}
MAX_HEADER = 100 * 1024 * 1024


class SafetensorsError(ValueError):
    """The file is not a valid safetensors file."""


def read_header(path: str | os.PathLike) -> tuple[dict, int, int]:
    """(the JSON header, its length N, the file's size) of a .safetensors file; the header is checked to be
    an object whose "__metadata__", if any, maps strings to strings."""
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if size < 8 or n > min(size - 8, MAX_HEADER):
                raise SafetensorsError(f"{path}: header length {n} does not fit in a {size}-byte file; "
                                       "not a safetensors file, or truncated")
            header = json.loads(f.read(n))
    except FileNotFoundError:
        raise FileNotFoundError(f"safetensors file not found: {path}") from None
    except (ValueError, RecursionError) as e:  # bad JSON, bad UTF-8, absurd nesting or number literals
        raise SafetensorsError(f"{path}: the header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path}: the header is a JSON {type(header).__name__}, expected an object")
    meta = header.get("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise SafetensorsError(f"{path}: __metadata__ must be an object of strings")
    return header, n, size


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The "__metadata__" of a .safetensors file ({} if none), without touching the tensors."""
    return read_header(path)[0].get("__metadata__", {})


def is_count(x) -> bool:
    """A JSON non-negative integer (not a bool, not a float)."""
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Memory-map a .safetensors file -> ({name: read-only array}, metadata). bfloat16 becomes float32.

    Validated before anything is read: every entry has a known dtype, a shape of non-negative integers and
    two offsets; each tensor's byte count (computed in Python integers, no overflow) equals its offsets'
    span; and the entries, sorted by offset, tile the data buffer exactly: no holes, no overlaps, no byte
    left over (as the format requires). So a shifted header, overlapping entries or a truncated file are
    refused, never read as other numbers.
    """
    path = os.fspath(path)
    header, n, size = read_header(path)
    metadata = header.pop("__metadata__", {})
    data_size = size - 8 - n
    spans = []
    for name, info in header.items():
        ok = (isinstance(info, dict) and isinstance(info.get("dtype"), str) and info["dtype"] in DTYPES and isinstance(info.get("shape"), list)
              and all(map(is_count, info["shape"])) and isinstance(info.get("data_offsets"), list)
              and len(info["data_offsets"]) == 2 and all(map(is_count, info["data_offsets"])))
        if not ok:
            raise SafetensorsError(f"{path}: tensor {name} has a malformed header entry {str(info)[:200]}; expected "
                                   '{"dtype": "F32", "shape": [non-negative ints], "data_offsets": [begin, end]}')
        begin, end = info["data_offsets"]
        nbytes = math.prod(info["shape"]) * DTYPES[info["dtype"]].itemsize
        if not begin <= end <= data_size or end - begin != nbytes:
            raise SafetensorsError(f"{path}: tensor {name} ({info['dtype']} {info['shape']}) has data_offsets "
                                   f"[{begin}, {end}] that do not fit its size or the file ({data_size} data "
                                   "bytes); the file is truncated or corrupted")
        spans.append((begin, end, name))
    at = 0
    for begin, end, name in sorted(spans):
        if begin != at:
            what = "overlaps the tensor before it" if begin < at else f"leaves a hole of {begin - at} bytes before it"
            raise SafetensorsError(f"{path}: tensor {name} at data_offsets [{begin}, {end}] {what}; the header "
                                   "does not describe the data (a corrupted or crafted file)")
        at = end
    if at != data_size:
        raise SafetensorsError(f"{path}: the tensors cover {at} of the {data_size} data bytes; the header does "
                               "not describe the data (a corrupted or crafted file)")
    buf = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n) if data_size else np.zeros(0, np.uint8)
    tensors = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        a = buf[begin:end].view(DTYPES[info["dtype"]]).reshape(info["shape"])
        if info["dtype"] == "BF16":  # bfloat16 is the top half of a float32
            a = (a.astype(np.uint32) << 16).view(np.float32)
        tensors[name] = a
    return tensors, metadata


def write_safetensors(path_or_file, tensors: dict[str, np.ndarray],
                      metadata: dict[str, str] | None = None, progress: bool = False) -> None:
    """Write {name: array} as safetensors (tensors in the given order, back to back) to a path or a binary file."""
    header: dict = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for name, a in tensors.items():
        if a.dtype not in NAMES:
            raise SafetensorsError(f"tensor {name}: dtype {a.dtype} cannot be stored in safetensors")
        header[name] = {"dtype": NAMES[a.dtype], "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-(8 + len(raw)) % 8)  # pad so the data starts 8-byte aligned
    if isinstance(path_or_file, (str, os.PathLike)):
        with open(path_or_file, "wb") as f:
            return write_safetensors(f, tensors, metadata, progress)
    f = path_or_file
    with tqdm(total=offset, unit="B", unit_scale=True, unit_divisor=1024, desc="writing weights",
              disable=not progress, leave=False) as bar:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        for a in tensors.values():
            f.write(np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).data)
            bar.update(a.nbytes)
