"""A small mutation fuzzer for minigpt2's readers, and the crafted files it starts from.

    python -m tests.fuzz --seed 0 --mutants 300      # prints one JSON summary line

Each mutant (a TensorFlow index rebuilt with valid block CRCs around mutated entries, a flipped data file,
hparams.json, config.json, both safetensors layouts, encoder.json, vocab.bpe) is loaded in a forked child
under an address-space limit and an alarm. An outcome is "ok" (loaded), "refused" (minigpt2's own error, a
plain ValueError or an OSError: something with a message that names the problem), or a defect: "foreign"
(any other exception), "hang" (the alarm) or "memory" (MemoryError, or killed).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import struct
import sys
import tempfile
import traceback
from pathlib import Path

from minigpt2.crc32c import masked_crc32c
from minigpt2.tf_checkpoint import TABLE_MAGIC, read_table

ALLOWED = {"CheckpointError", "SafetensorsError", "FormatVersionError", "VocabError", "ValueError", "OSError",
           "FileNotFoundError", "FileExistsError", "IsADirectoryError", "TrainingError"}
MEMORY_LIMIT = 1 << 30  # bytes of address space a child may add to what it inherits
SECONDS = 20


# --- LevelDB tables, written by hand --------------------------------------------------------------


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def block(entries: list[tuple[int, bytes, bytes]]) -> bytes:
    """A block of (shared, key delta, value) entries, one restart point."""
    body = b"".join(varint(shared) + varint(len(delta)) + varint(len(value)) + delta + value
                    for shared, delta, value in entries)
    return body + struct.pack("<II", 0, 1)


def table(data_blocks: list[bytes], index_keys: list[bytes] | None = None) -> bytes:
    """A table file: data blocks, a metaindex block, an index block, the footer; every block CRC valid."""
    out, handles = bytearray(), []

    def put(b: bytes) -> tuple[int, int]:
        offset = len(out)
        out.extend(b + b"\x00" + struct.pack("<I", masked_crc32c(b + b"\x00")))
        return offset, len(b)

    for b in data_blocks:
        handles.append(put(b))
    meta = put(block([]))
    keys = index_keys or [b"\xff" * 8] * len(handles)
    index = put(block([(0, k, varint(o) + varint(s)) for k, (o, s) in zip(keys, handles)]))
    footer = varint(meta[0]) + varint(meta[1]) + varint(index[0]) + varint(index[1])
    out.extend(footer.ljust(40, b"\x00") + TABLE_MAGIC.to_bytes(8, "little"))
    return bytes(out)


def field(number: int, wire: int, value) -> bytes:
    """One protobuf field: wire 0 a varint, 2 length-delimited bytes, 5 four bytes."""
    key = varint(number << 3 | wire)
    if wire == 0:
        return key + varint(value)
    if wire == 2:
        return key + varint(len(value)) + value
    return key + struct.pack("<I", value)


def entry_proto(shape, offset: int, size: int, dtype: int = 1, crc: int = 0) -> bytes:
    """A BundleEntryProto: dtype, shape (TensorShapeProto of Dim messages), offset, size, crc32c."""
    dims = b"".join(field(2, 2, field(1, 0, d)) for d in shape)
    return field(1, 0, dtype) + field(2, 2, dims) + field(4, 0, offset) + field(5, 0, size) + field(6, 5, crc)


def table_of(entries: list[tuple[bytes, bytes]]) -> bytes:
    """A table holding these (key, value) entries, keys stored whole."""
    return table([block([(0, k, v) for k, v in entries])])


# --- mutations ------------------------------------------------------------------------------------

EXTREMES = [0, -1, 1, 2**31, 2**32, 2**63, 2**64 + 5, 10**30, 1e308, -1e308, 0.5, "x", "", None, True, [], {},
            [[[[1]]]], {"a": {"b": 1}}, "F32", [2**62, 2**62], [-3, 4], [1] * 70]


def mutate_bytes(raw: bytes, rng: random.Random) -> bytes:
    b = bytearray(raw)
    op = rng.randrange(6)
    if op == 0 and b:  # flip bits
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
    elif op == 1 and b:  # a random byte
        b[rng.randrange(len(b))] = rng.randrange(256)
    elif op == 2:  # truncate
        del b[rng.randrange(len(b) + 1):]
    elif op == 3:  # insert random bytes
        i = rng.randrange(len(b) + 1)
        b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    elif op == 4 and len(b) >= 8:  # an extreme 32- or 64-bit word
        i = rng.randrange(len(b) - 7)
        b[i : i + 8] = rng.choice([b"\xff" * 8, b"\x7f" + b"\xff" * 7, b"\x00" * 8, b"\xff\xff\xff\xff\x00\x00\x00\x00"])
    else:  # duplicate a slice
        i = rng.randrange(len(b) + 1)
        b[i:i] = b[i : i + rng.randint(1, 64)]
    return bytes(b)


def mutate_json_value(obj, rng: random.Random):
    """Replace, delete or add one value somewhere in a JSON document."""
    if isinstance(obj, dict) and obj and rng.random() < 0.7:
        key = rng.choice(list(obj))
        op = rng.randrange(4)
        if op == 0:
            del obj[key]
        elif op == 1:
            obj[key] = rng.choice(EXTREMES)
        elif op == 2:
            obj[key] = mutate_json_value(obj[key], rng)
        else:
            obj[rng.choice(["extra", "__metadata__", "n_layer", "dtype"])] = rng.choice(EXTREMES)
        return obj
    if isinstance(obj, list) and obj and rng.random() < 0.7:
        i = rng.randrange(len(obj))
        obj[i] = rng.choice(EXTREMES) if rng.random() < 0.6 else mutate_json_value(obj[i], rng)
        return obj
    return rng.choice(EXTREMES)


def mutate_json_text(text: str, rng: random.Random) -> str:
    r = rng.random()
    if r < 0.1:
        return "[" * 5000 + "]" * 5000
    if r < 0.15:
        return '{"n_layer": ' + "9" * 5000 + "}"
    if r < 0.25:
        return mutate_bytes(text.encode(), rng).decode("utf-8", "surrogateescape")
    try:
        doc = json.loads(text)
    except ValueError:
        return text
    return json.dumps(mutate_json_value(doc, rng))


def mutate_safetensors(raw: bytes, rng: random.Random) -> bytes:
    n = int.from_bytes(raw[:8], "little")
    header, data = raw[8 : 8 + n].decode(), raw[8 + n :]
    r = rng.random()
    if r < 0.2:
        return mutate_bytes(raw, rng)
    if r < 0.3:  # the length off by a little: the JSON may still parse on its padding
        return (n + rng.choice([-2, -1, 1, 2])).to_bytes(8, "little") + raw[8:]
    new = mutate_json_text(header, rng).encode("utf-8", "surrogateescape")
    return len(new).to_bytes(8, "little") + new + data


# --- the harness ----------------------------------------------------------------------------------


def run_in_child(load) -> dict:
    """Call load() in a forked child with a memory limit and an alarm; its outcome as a dict."""
    import resource  # POSIX only, as fork is

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(r)
        try:
            soft, hard = resource.getrlimit(resource.RLIMIT_AS)
            with open("/proc/self/statm") as f:
                vm = int(f.read().split()[0]) * resource.getpagesize()
            resource.setrlimit(resource.RLIMIT_AS, (vm + MEMORY_LIMIT, hard))
            signal.alarm(SECONDS)
            load()
            out = {"outcome": "ok"}
        except MemoryError:
            out = {"outcome": "memory"}
        except BaseException as e:  # noqa: BLE001  (judging every exception is the point)
            name = type(e).__name__
            if name in ALLOWED:
                out = {"outcome": "refused", "error": name}
            else:
                out = {"outcome": "foreign", "error": name, "message": str(e)[:300],
                       "where": traceback.format_exc(limit=-2)[-600:]}
        os.write(w, json.dumps(out).encode())
        os.close(w)
        os._exit(0)
    os.close(w)
    chunks = []
    while True:
        chunk = os.read(r, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return {"outcome": "hang" if sig == signal.SIGALRM else "memory", "signal": sig}
    return json.loads(b"".join(chunks) or b'{"outcome": "memory"}')


def fixtures(tf_dir: Path, work: Path) -> dict[str, Path]:
    """The originals: the TensorFlow checkpoint, the same model in both safetensors layouts, a small vocabulary."""
    from minigpt2 import GPT2, Tokenizer

    model = GPT2.from_pretrained(tf_dir)
    tok = Tokenizer.train("the readers must refuse what they cannot read " * 40, 300, progress=False)
    model.save(work / "ours", tok)
    model.save(work / "hf", False, format="huggingface")
    tok.save(work / "vocab")
    return {"tf": tf_dir, "ours": work / "ours", "hf": work / "hf", "vocab": work / "vocab"}


def mutant_dir(original: Path, work: Path, name: str, data: bytes) -> Path:
    """A directory linking to `original`'s files, with `name` replaced by `data`."""
    d = Path(tempfile.mkdtemp(dir=work))
    for f in original.iterdir():
        if f.name != name and f.is_file():
            os.symlink(f.resolve(), d / f.name)
    (d / name).write_bytes(data)
    return d


def cases(sources: dict[str, Path], n: int, rng: random.Random):
    """(label, directory kind, file name, mutated bytes) for n mutants over every reader."""
    index_entries = read_table(str(sources["tf"] / "model.ckpt.index"))
    plan = [("tf-index", 0.25), ("tf-data", 0.05), ("hparams", 0.1), ("hf-safetensors", 0.15), ("hf-config", 0.1),
            ("ours-safetensors", 0.15), ("encoder", 0.1), ("merges", 0.1)]
    for label, share in plan:
        for _ in range(max(1, round(n * share))):
            if label == "tf-index":
                entries = [(k, v) for k, v in index_entries]
                i = rng.randrange(len(entries))
                k, v = entries[i]
                entries[i] = (mutate_bytes(k, rng), v) if rng.random() < 0.2 else (k, mutate_bytes(v, rng))
                yield label, "tf", "model.ckpt.index", table_of(entries)
            elif label == "tf-data":
                raw = bytearray((sources["tf"] / "model.ckpt.data-00000-of-00001").read_bytes())
                raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
                yield label, "tf", "model.ckpt.data-00000-of-00001", bytes(raw)
            elif label == "hparams":
                text = (sources["tf"] / "hparams.json").read_text()
                yield label, "tf", "hparams.json", mutate_json_text(text, rng).encode("utf-8", "surrogateescape")
            elif label == "hf-safetensors":
                yield label, "hf", "model.safetensors", mutate_safetensors((sources["hf"] / "model.safetensors").read_bytes(), rng)
            elif label == "hf-config":
                text = (sources["hf"] / "config.json").read_text()
                yield label, "hf", "config.json", mutate_json_text(text, rng).encode("utf-8", "surrogateescape")
            elif label == "ours-safetensors":
                raw = (sources["ours"] / "minigpt2.safetensors").read_bytes()
                yield label, "ours", "minigpt2.safetensors", mutate_safetensors(raw, rng)
            elif label == "encoder":
                text = (sources["vocab"] / "encoder.json").read_text()
                yield label, "vocab", "encoder.json", mutate_json_text(text, rng).encode("utf-8", "surrogateescape")
            else:
                raw = (sources["vocab"] / "vocab.bpe").read_bytes()
                yield label, "vocab", "vocab.bpe", mutate_bytes(raw, rng)


def loader(kind: str, d: Path, work: Path):
    from minigpt2 import GPT2, Tokenizer
    from minigpt2.load import convert

    if kind == "tf":  # the conversion a first from_pretrained("124M") runs: checksums verified
        return lambda: GPT2.from_pretrained(convert(d, work / f"{d.name}-converted", progress=False))
    if kind == "vocab":
        return lambda: Tokenizer.from_dir(d).encode("the readers must refuse")
    return lambda: GPT2.from_pretrained(d)([1, 2, 3])


def fuzz(tf_dir: Path, n: int, seed: int) -> dict:
    rng = random.Random(seed)
    results = {"mutants": 0, "outcomes": {}, "defects": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sources = fixtures(tf_dir, work)
        for label, kind, name, data in cases(sources, n, rng):
            d = mutant_dir(sources[kind], work, name, data)
            out = run_in_child(loader(kind, d, work))
            results["mutants"] += 1
            key = f"{label}:{out['outcome']}"
            results["outcomes"][key] = results["outcomes"].get(key, 0) + 1
            if out["outcome"] in ("foreign", "hang", "memory") or (label == "tf-data" and out["outcome"] == "ok"):
                results["defects"].append({"label": label, **out})  # a flipped data byte must fail its checksum
            shutil.rmtree(d, ignore_errors=True)
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tf", required=True, help="the TensorFlow-written fixture directory")
    p.add_argument("--mutants", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    print(json.dumps(fuzz(Path(args.tf), args.mutants, args.seed)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
