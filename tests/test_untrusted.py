"""Model files are untrusted input: crafted files are refused with the reader's own error, in bounded memory,
and a mutation fuzzer finds no foreign exception, hang or memory blow-up."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minigpt2 import GPT2
from minigpt2.load import convert
from minigpt2.safetensors import write_safetensors
from minigpt2.crc32c import crc32c, crc32c_array
from minigpt2.tf_checkpoint import CheckpointError, read_checkpoint, read_table

from . import fuzz

REPO = Path(__file__).resolve().parents[1]
needs_fork = pytest.mark.skipif(not hasattr(os, "fork") or not Path("/proc/self/statm").exists(),
                                reason="the memory-limited children need fork and /proc (Linux)")


def rewrite_entry(directory: Path, name: bytes, value: bytes) -> None:
    """Replace one tensor's BundleEntryProto in the index, with every block CRC valid again."""
    entries = read_table(str(directory / "model.ckpt.index"))
    entries = [(k, value if k == name else v) for k, v in entries]
    (directory / "model.ckpt.index").write_bytes(fuzz.table_of(entries))


# --- memory stays proportional to the input ---------------------------------------------------------


def limited(load):
    """Run load() in a child allowed 1 GB more address space than it starts with."""
    return fuzz.run_in_child(load)


@needs_fork
def test_prefix_compressed_keys_cannot_amplify_memory(copy_of_fixture):
    # 10,000 entries of ~6 bytes each, every one sharing 4,000 bytes with the key before it
    first = (0, b"a" * 4000, b"")
    rest = [(4000, bytes([65 + i % 26]), b"") for i in range(10_000)]
    (copy_of_fixture / "model.ckpt.index").write_bytes(fuzz.table([fuzz.block([first] + rest)]))
    assert (copy_of_fixture / "model.ckpt.index").stat().st_size < 100_000
    out = limited(lambda: read_checkpoint(copy_of_fixture / "model.ckpt"))
    assert out == {"outcome": "refused", "error": "CheckpointError"}
    with pytest.raises(CheckpointError, match="keys add up to far more bytes than the file holds"):
        read_checkpoint(copy_of_fixture / "model.ckpt")
    (copy_of_fixture / "model.ckpt.index").write_bytes(fuzz.table([fuzz.block([(0, b"k" * 300_000, b"")])]))
    with pytest.raises(CheckpointError, match="a key of 300000 bytes"):
        read_checkpoint(copy_of_fixture / "model.ckpt")


@needs_fork
def test_overlapping_bfloat16_entries_cannot_amplify_memory(tmp_path):
    header = {f"t{i}": {"dtype": "BF16", "shape": [512, 1024], "data_offsets": [0, 1 << 20]} for i in range(2000)}
    raw = json.dumps(header).encode()
    (tmp_path / "model.safetensors").write_bytes(len(raw).to_bytes(8, "little") + raw + bytes(1 << 20))
    (tmp_path / "config.json").write_text('{"vocab_size": 10, "n_positions": 8, "n_embd": 4, "n_head": 2, "n_layer": 1}')
    out = limited(lambda: GPT2.from_pretrained(tmp_path))
    assert out == {"outcome": "refused", "error": "SafetensorsError"}


@needs_fork
def test_unknown_tensors_are_refused_before_any_work(tmp_path):
    tensors = {f"transformer.extra{i}.weight": np.zeros((256, 1024), np.float32) for i in range(4)}
    write_safetensors(tmp_path / "model.safetensors", tensors)
    (tmp_path / "config.json").write_text('{"vocab_size": 10, "n_positions": 8, "n_embd": 4, "n_head": 2, "n_layer": 1}')
    with pytest.raises(CheckpointError, match="tensor transformer.extra0.weight is not a weight of GPT-2"):
        GPT2.from_pretrained(tmp_path)
    write_safetensors(tmp_path / "model.safetensors", {"transformer.h.0.ln_1.foo": np.zeros(4, np.float32)})
    with pytest.raises(CheckpointError, match="h.0.ln_1.foo is not a weight of GPT-2"):
        GPT2.from_pretrained(tmp_path)


@needs_fork
def test_a_config_claiming_a_hundred_million_layers_is_refused_at_once(copy_of_fixture):
    (copy_of_fixture / "hparams.json").write_text('{"n_vocab": 50257, "n_ctx": 64, "n_embd": 32, "n_head": 4, "n_layer": 100000000}')
    out = limited(lambda: GPT2.from_pretrained(copy_of_fixture))
    assert out == {"outcome": "refused", "error": "CheckpointError"}
    with pytest.raises(CheckpointError, match="implies .* parameters, but the file holds"):
        GPT2.from_pretrained(copy_of_fixture)


# --- exact validation: no silently wrong numbers ---------------------------------------------------


def test_a_flipped_data_byte_fails_its_checksum_where_checksums_are_read(copy_of_fixture, tmp_path):
    data = copy_of_fixture / "model.ckpt.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    data.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="model.ckpt.data-00000-of-00001: tensor .* fails its checksum"):
        convert(copy_of_fixture, tmp_path / "converted", progress=False)
    assert not (tmp_path / "converted" / "minigpt2.safetensors").exists()
    with pytest.raises(CheckpointError, match="fails its checksum"):
        GPT2.from_pretrained(copy_of_fixture, verify_crc=True)
    GPT2.from_pretrained(copy_of_fixture)  # a direct load reads only what it touches: no checksum, as documented


def test_the_fixture_passes_every_checksum(tiny_checkpoint):
    tensors = read_checkpoint(tiny_checkpoint / "model.ckpt", verify_crc=True)
    assert len(tensors) == 28


@pytest.mark.parametrize("n", [0, 1, 3, 4, 5, 4095, 4096, 4097, 16384 * 4 + 3, 100_003])
def test_crc32c_at_numpy_speed_equals_the_byte_loop(n):
    data = np.random.default_rng(n).integers(0, 256, n, dtype=np.uint8)
    assert crc32c_array(data) == crc32c(data.tobytes())
    assert crc32c_array(data, chunks=7) == crc32c(data.tobytes())


@pytest.mark.parametrize("value, message", [
    (fuzz.field(1, 0, 1) + fuzz.field(2, 0, 5), "number where a message belongs"),  # shape as a varint
    (fuzz.field(1, 0, 1) + fuzz.field(2, 2, b"") + fuzz.field(4, 2, b"abc"), "bytes where a number belongs"),
    (fuzz.entry_proto([2**64, 1], 0, 0), "absurd dimension"),
    (fuzz.entry_proto([2**32, 2**32], 0, 0), r"should hold 73786976294838206464 bytes"),  # no int64 wrap to 0
    (fuzz.entry_proto([1] * 65, 0, 4), "65 dimensions"),
    (fuzz.entry_proto([4], 0, 16, dtype=99), "dtype 99"),
    (b"\x0a\xff\xff\xff\xff\x0f", "runs past the end|truncated"),
])
def test_malformed_index_entries_are_the_readers_own_errors(copy_of_fixture, value, message):
    rewrite_entry(copy_of_fixture, b"model/ln_f/b", value)
    with pytest.raises(CheckpointError, match=message) as e:
        read_checkpoint(copy_of_fixture / "model.ckpt")
    assert "model.ckpt.index" in str(e.value)


def test_an_absurd_shard_count_is_refused(copy_of_fixture):
    rewrite_entry(copy_of_fixture, b"", fuzz.field(1, 0, 10**9))
    with pytest.raises(CheckpointError, match="names 1000000000 data shards"):
        read_checkpoint(copy_of_fixture / "model.ckpt")


@pytest.mark.parametrize("text", ["7", "[1]", "\"x\"", b"\xff\xfe{}", "{" * 3000])
def test_config_json_that_is_not_an_object_is_named(tmp_path, text):
    (tmp_path / "config.json").write_bytes(text if isinstance(text, bytes) else text.encode())
    write_safetensors(tmp_path / "model.safetensors", {"transformer.wte.weight": np.zeros((2, 2), np.float32)})
    with pytest.raises(CheckpointError, match="config.json"):
        GPT2.from_pretrained(tmp_path)


# --- the fuzzer ------------------------------------------------------------------------------------


@needs_fork
@pytest.mark.slow
def test_a_mutation_fuzzer_finds_no_foreign_exception_hang_or_memory_blow_up(tiny_checkpoint):
    r = subprocess.run([sys.executable, "-m", "tests.fuzz", "--tf", str(tiny_checkpoint), "--mutants", "300",
                        "--seed", "0"], capture_output=True, cwd=REPO, timeout=300, env=dict(os.environ,
                                                                                            PYTHONWARNINGS="ignore"))
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    result = json.loads(r.stdout)
    assert result["mutants"] == 300
    assert result["defects"] == []
    labels = {k.split(":")[0] for k, v in result["outcomes"].items() if k.endswith(":refused")}
    assert labels == {"tf-index", "tf-data", "hparams", "hf-safetensors", "hf-config", "ours-safetensors", "encoder",
                      "merges"}, "every reader was reached and refused something"


@pytest.mark.parametrize("dtype", [{"F32": 1}, ["F32"], None, 32])
def test_a_dtype_that_is_not_a_string_is_the_readers_own_error(tmp_path, dtype):
    from minigpt2.safetensors import SafetensorsError, read_safetensors

    raw = json.dumps({"t": {"dtype": dtype, "shape": [1], "data_offsets": [0, 4]}}).encode()
    (tmp_path / "x.safetensors").write_bytes(len(raw).to_bytes(8, "little") + raw + bytes(4))
    with pytest.raises(SafetensorsError, match="tensor t has a malformed header entry"):
        read_safetensors(tmp_path / "x.safetensors")


def test_a_checkpoint_file_naming_a_path_with_a_nul_byte_is_the_readers_own_error(copy_of_fixture):
    (copy_of_fixture / "checkpoint").write_text('model_checkpoint_path: "model\x00.ckpt"\n')
    with pytest.raises(CheckpointError, match="holds a NUL byte"):
        GPT2.from_pretrained(copy_of_fixture)
    with pytest.raises(CheckpointError, match="cannot read the checkpoint index"):
        read_table(str(copy_of_fixture / "model\x00.ckpt.index"))


def test_an_encoder_json_with_a_hundred_thousand_digit_id_is_the_vocabulary_reader_s_own_error(vocab_dir, tmp_path):
    from minigpt2 import Tokenizer
    from minigpt2.vocab import VocabError

    (tmp_path / "encoder.json").write_text('{"a": ' + "9" * 100_000 + "}")
    with pytest.raises(VocabError, match=r"encoder.json is not valid JSON \(Exceeds the limit"):
        Tokenizer.from_files(tmp_path / "encoder.json", vocab_dir / "vocab.bpe")
