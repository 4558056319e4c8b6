"""TensorFlow checkpoint bytes -> {name: array}: the bundle format (V2) OpenAI released GPT-2 in, read
without TensorFlow or protobuf. Knows the file format, nothing of GPT-2.

A checkpoint `model.ckpt` is two kinds of files:

  model.ckpt.index                   a LevelDB-style sorted table: tensor name -> BundleEntryProto
  model.ckpt.data-00000-of-00001     raw little-endian tensor bytes, one shard per file

The table (LevelDB's format): data blocks of key/value entries, an index block pointing at them, and a
48-byte footer at the end: two BlockHandles (varint offset, varint size) for the metaindex and index blocks,
padding, and the magic number 0xdb4775248b80fb57. Every block is followed by a 1-byte compression type and
a masked CRC-32C of block + type. Inside a block, keys are prefix-compressed: each entry is
varint(shared) varint(non_shared) varint(value_len) key_delta value; a trailer of uint32 restart offsets
and their count ends the block.

Values are protobuf messages, parsed here by hand: a field is a varint key (number << 3 | wire type) then
a varint (type 0), 8 bytes (1), a varint length + bytes (2) or 4 bytes (5). proto3 leaves out fields equal
to zero, so a missing field means 0. The entry with the empty key is the BundleHeaderProto
(1 num_shards, 2 endianness, 3 version); every other key is a tensor name with a BundleEntryProto
(1 dtype, 2 shape, 3 shard_id, 4 offset, 5 size, 6 crc32c, 7 slices).
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass

import numpy as np

from .crc32c import crc32c_array, mask, masked_crc32c

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48  # two BlockHandles padded to 40 bytes + 8-byte magic
BLOCK_TRAILER_SIZE = 5  # compression type (1 byte) + masked crc32c (4 bytes)

# TensorFlow's DataType enum (types.proto) -> NumPy, for the types a checkpoint of weights can hold
DTYPES = {
    1: np.dtype("<f4"), 2: np.dtype("<f8"), 3: np.dtype("<i4"), 4: np.dtype("u1"), 5: np.dtype("<i2"),
    6: np.dtype("i1"), 9: np.dtype("<i8"), 10: np.dtype("?"), 17: np.dtype("<u2"), 19: np.dtype("<f2"),
}


class CheckpointError(ValueError):
    """The checkpoint files are missing, truncated, corrupted or not what was expected."""


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lives: BundleEntryProto's fields."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int


# --- primitives -----------------------------------------------------------------------------------


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Little-endian base-128 varint at buf[pos:] -> (value, position after it)."""
    value, shift = 0, 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise CheckpointError("truncated or overlong varint")
        byte = buf[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if byte < 0x80:
            return value, pos
        shift += 7


def parse_proto(buf: bytes) -> dict[int, list]:
    """Protobuf wire format -> {field number: [values]}; sub-messages stay bytes for the caller to parse."""
    fields: dict[int, list] = {}
    pos = 0
    while pos < len(buf):
        key, pos = read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = read_varint(buf, pos)
        elif wire == 1:
            value, pos = int.from_bytes(buf[pos : pos + 8], "little"), pos + 8  # past the end: caught below
        elif wire == 2:
            length, pos = read_varint(buf, pos)
            value, pos = bytes(buf[pos : pos + length]), pos + length
        elif wire == 5:
            value, pos = int.from_bytes(buf[pos : pos + 4], "little"), pos + 4
        else:
            raise CheckpointError(f"unsupported protobuf wire type {wire} (field {number})")
        if pos > len(buf):
            raise CheckpointError(f"protobuf field {number} runs past the end of its message")
        fields.setdefault(number, []).append(value)
    return fields


# --- the table ------------------------------------------------------------------------------------


def read_block(table: bytes, handle: tuple[int, int], path: str) -> bytes:
    """The contents of the block at `handle` (offset, size), after checking its type byte and CRC."""
    offset, size = handle
    if offset + size + BLOCK_TRAILER_SIZE > len(table) - FOOTER_SIZE:  # blocks all lie before the footer
        raise CheckpointError(f"{path}: block at offset {offset} (size {size}) runs past the end of the file")
    block, kind = table[offset : offset + size], table[offset + size]
    (stored_crc,) = struct.unpack_from("<I", table, offset + size + 1)
    if masked_crc32c(table[offset : offset + size + 1]) != stored_crc:
        raise CheckpointError(f"{path}: checksum mismatch in the block at offset {offset}; the index file is "
                              "corrupted (delete it and download it again)")
    if kind != 0:
        raise CheckpointError(f"{path}: block at offset {offset} is compressed (type {kind}); only "
                              "uncompressed tables, as TensorFlow writes checkpoints, are supported")
    return block


MAX_KEY = 4096  # bytes: a tensor name; TensorFlow's are a few dozen


def block_entries(block: bytes, path: str, budget: list[int] | None = None) -> list[tuple[bytes, bytes]]:
    """A block's (key, value) entries, undoing the prefix compression of keys.

    subtle: an entry costs a few bytes of file but materialises its whole key (shared prefix + delta), so a
    crafted table could build gigabytes of keys from kilobytes. Keys longer than MAX_KEY are refused, and
    `budget` ([bytes left]) bounds the key bytes materialised over the whole table.
    """
    if len(block) < 4:
        raise CheckpointError(f"{path}: block too short to hold its restart count")
    (num_restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    limit = len(block) - 4 * (num_restarts + 1)  # the entries end where the restart array begins
    if limit < 0:
        raise CheckpointError(f"{path}: block claims {num_restarts} restarts, more than fit in it")
    entries, key, pos = [], b"", 0
    while pos < limit:
        shared, pos = read_varint(block, pos)
        non_shared, pos = read_varint(block, pos)
        value_len, pos = read_varint(block, pos)
        if shared > len(key) or pos + non_shared + value_len > limit:
            raise CheckpointError(f"{path}: malformed entry at byte {pos} of a block")
        if shared + non_shared > MAX_KEY:
            raise CheckpointError(f"{path}: a key of {shared + non_shared} bytes (longer than any tensor name); the "
                                  "index is corrupted")
        if budget is not None:
            budget[0] -= shared + non_shared
            if budget[0] < 0:
                raise CheckpointError(f"{path}: its keys add up to far more bytes than the file holds; the index "
                                      "is corrupted")
        key = key[:shared] + block[pos : pos + non_shared]  # shared prefix of the previous key + delta
        pos += non_shared
        entries.append((key, block[pos : pos + value_len]))
        pos += value_len
    return entries


def read_table(path: str) -> list[tuple[bytes, bytes]]:
    """All (key, value) entries of a LevelDB-style table file, in key order."""
    try:
        with open(path, "rb") as f:
            table = f.read()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint index not found: {path}") from None
    except (OSError, ValueError) as e:  # unreadable, or a path no file can have (a NUL byte)
        raise CheckpointError(f"cannot read the checkpoint index {path!r}: {e}") from None
    if len(table) < FOOTER_SIZE:
        raise CheckpointError(f"{path} is {len(table)} bytes, too short to be a checkpoint index")
    footer = table[-FOOTER_SIZE:]
    if int.from_bytes(footer[-8:], "little") != TABLE_MAGIC:
        raise CheckpointError(f"{path} is not a TensorFlow checkpoint index (bad magic number at the end)")
    meta_offset, pos = read_varint(footer, 0)
    meta_size, pos = read_varint(footer, pos)
    index_offset, pos = read_varint(footer, pos)
    index_size, pos = read_varint(footer, pos)
    read_block(table, (meta_offset, meta_size), path)  # unused (no filters), but checked like every block
    budget = [16 * len(table) + 65536]  # key bytes: a small multiple of the file, whatever its prefixes claim
    entries = []
    for _, handle in block_entries(read_block(table, (index_offset, index_size), path), path, budget):
        offset, p = read_varint(handle, 0)
        size, _ = read_varint(handle, p)
        entries += block_entries(read_block(table, (offset, size), path), path, budget)
    return entries


# --- the bundle -----------------------------------------------------------------------------------


def number(fields: dict[int, list], n: int, what: str) -> int:
    """A varint or fixed-width field (0 when absent, as proto3 leaves zeros out); bytes there is an error."""
    value = fields.get(n, [0])[-1]
    if not isinstance(value, int):
        raise CheckpointError(f"{what}: field {n} holds bytes where a number belongs; the index is corrupted")
    return value


def message(fields: dict[int, list], n: int, what: str) -> bytes:
    """A length-delimited field (b"" when absent); a number there is an error."""
    value = fields.get(n, [b""])[-1]
    if not isinstance(value, bytes):
        raise CheckpointError(f"{what}: field {n} holds a number where a message belongs; the index is corrupted")
    return value


MAX_SHARDS = 100_000  # model.ckpt.data-NNNNN-of-NNNNN has five digits
MAX_DIMS = 32  # NumPy allows 64; a weight has 1 to 3


def parse_entry(name: str, value: bytes, path: str) -> TensorEntry:
    """BundleEntryProto bytes -> TensorEntry, checking field types, dtype, shape and size agree (the element
    count is computed in Python integers, so no shape can overflow into a small number)."""
    what = f"{path}: tensor {name}"
    f = parse_proto(value)
    if 7 in f:
        raise CheckpointError(f"{what} is partitioned into slices, which is not supported")
    code = number(f, 1, what)
    if code not in DTYPES:
        raise CheckpointError(f"{what} has TensorFlow dtype {code}, not a supported numeric type")
    dims = parse_proto(message(f, 2, what)).get(2, [])  # TensorShapeProto: repeated Dim (field 2)
    if len(dims) > MAX_DIMS:
        raise CheckpointError(f"{what} has {len(dims)} dimensions; the index is corrupted")
    if not all(isinstance(d, bytes) for d in dims):
        raise CheckpointError(f"{what}: a dimension is a number where a message belongs; the index is corrupted")
    shape = tuple(number(parse_proto(d), 1, what) for d in dims)  # Dim.size (field 1)
    if any(d >= 2**62 for d in shape):
        raise CheckpointError(f"{what} has shape {shape} (a negative or absurd dimension); the index is corrupted")
    entry = TensorEntry(name, DTYPES[code], shape, number(f, 3, what), number(f, 4, what), number(f, 5, what),
                        number(f, 6, what))
    expected = math.prod(shape) * entry.dtype.itemsize
    if entry.size != expected:
        raise CheckpointError(f"{path}: tensor {name} of shape {shape} ({entry.dtype}) should hold {expected} "
                              f"bytes, its entry says {entry.size}; the index is corrupted")
    return entry


def read_index(prefix: str | os.PathLike) -> tuple[int, dict[str, TensorEntry]]:
    """`{prefix}.index` -> (number of data shards, {tensor name: TensorEntry})."""
    path = f"{os.fspath(prefix)}.index"
    num_shards, entries = None, {}
    for key, value in read_table(path):
        if key == b"":  # the BundleHeaderProto
            header = parse_proto(value)
            num_shards = number(header, 1, f"{path}: the bundle header")
            if not 0 < num_shards <= MAX_SHARDS:
                raise CheckpointError(f"{path}: the bundle header names {num_shards} data shards; the index is "
                                      "corrupted")
            if number(header, 2, f"{path}: the bundle header") != 0:
                raise CheckpointError(f"{path}: big-endian checkpoints are not supported")
            continue
        try:
            name = key.decode("utf-8")
        except UnicodeDecodeError:
            raise CheckpointError(f"{path}: a tensor name is not UTF-8 ({key[:40]!r}); the index is corrupted") from None
        try:
            entries[name] = parse_entry(name, value, path)
        except CheckpointError as e:  # a varint error from deep inside does not know the file
            raise (e if path in str(e) else CheckpointError(f"{path}: tensor {name}: {e}; the index is corrupted")) \
                from None
    if not num_shards:
        raise CheckpointError(f"{path} has no bundle header; it is not a TensorFlow V2 checkpoint index")
    return num_shards, entries


def data_path(prefix: str | os.PathLike, shard: int, num_shards: int) -> str:
    """Name of one data shard: model.ckpt.data-00000-of-00001."""
    return f"{os.fspath(prefix)}.data-{shard:05d}-of-{num_shards:05d}"


def check_data_files(prefix: str | os.PathLike, num_shards: int, entries: dict[str, TensorEntry]) -> None:
    """Every data shard exists and every tensor's bytes lie inside it (catches truncated downloads)."""
    sizes = {}
    for e in entries.values():
        if e.shard_id >= num_shards:
            raise CheckpointError(f"tensor {e.name} is in shard {e.shard_id}, but the index names {num_shards} shards")
    for shard in sorted({e.shard_id for e in entries.values()}):  # only the shards tensors live in
        path = data_path(prefix, shard, num_shards)
        if not os.path.isfile(path):
            raise CheckpointError(f"checkpoint data file not found: {path}")
        sizes[shard] = os.path.getsize(path)
    for e in entries.values():
        if e.offset + e.size > sizes[e.shard_id]:
            raise CheckpointError(
                f"{data_path(prefix, e.shard_id, num_shards)} is truncated: tensor {e.name} needs bytes "
                f"{e.offset}..{e.offset + e.size}, the file has {sizes[e.shard_id]}; download it again")


def read_checkpoint(prefix: str | os.PathLike, verify_crc: bool = False) -> dict[str, np.ndarray]:
    """`model.ckpt` -> {tensor name: read-only array memory-mapped from the data file}.

    Validated before anything is allocated: every index block's CRC, keys bounded (MAX_KEY, and in total by a
    multiple of the file's size), protobuf fields of the expected wire types, dtypes known, shapes of at most
    MAX_DIMS dimensions whose byte count (in Python integers) equals the entry's size, and every tensor's bytes
    inside its data file. `verify_crc=True` also checks every tensor's CRC-32C (crc32c_array: every byte is
    read, about 3 s for the 124M model).
    """
    num_shards, entries = read_index(prefix)
    check_data_files(prefix, num_shards, entries)
    shards = {s: np.memmap(data_path(prefix, s, num_shards), dtype=np.uint8, mode="r")
              for s in sorted({e.shard_id for e in entries.values() if e.size})}
    tensors = {}
    for e in entries.values():
        raw = shards[e.shard_id][e.offset : e.offset + e.size] if e.size else np.zeros(0, np.uint8)
        if verify_crc and mask(crc32c_array(raw)) != e.crc32c:
            raise CheckpointError(f"{data_path(prefix, e.shard_id, num_shards)}: tensor {e.name} fails its checksum; "
                                  "the data file is corrupted (delete it and download it again)")
        tensors[e.name] = raw.view(e.dtype).reshape(e.shape)
    return tensors
