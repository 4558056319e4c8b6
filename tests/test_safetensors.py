"""The .safetensors reader and writer: equal to the safetensors package, and malformed files refused as the
format's own error."""

import json

import numpy as np
import pytest

from minigpt2.safetensors import SafetensorsError, read_safetensors, write_safetensors


def raw_safetensors(header, data: bytes = b"") -> bytes:
    raw = json.dumps(header).encode() if not isinstance(header, bytes) else header
    return len(raw).to_bytes(8, "little") + raw + data


@pytest.mark.parametrize("header, data, message", [
    ([1, 2], b"", "the header is a JSON list"),
    ("text", b"", "the header is a JSON str"),
    ({"__metadata__": [1]}, b"", "__metadata__ must be an object of strings"),
    ({"__metadata__": {"a": 1}}, b"", "__metadata__ must be an object of strings"),
    ({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"1234", "malformed header entry"),
    ({"w": {"dtype": "F32", "shape": [1.0], "data_offsets": [0, 4]}}, b"1234", "malformed header entry"),
    ({"w": {"dtype": "F32", "shape": [1], "data_offsets": ["0", 4]}}, b"1234", "malformed header entry"),
    ({"w": {"dtype": "F32", "shape": [2**64, 2**64], "data_offsets": [0, 4]}}, b"1234", "do not fit its size"),
    ({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
      "v": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"1234", "overlaps the tensor before it"),
    ({"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"12345678", "leaves a hole of 4 bytes"),
    ({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"12345678", "cover 4 of the 8 data bytes"),
    ({"w": {"dtype": "X9", "shape": [1], "data_offsets": [0, 4]}}, b"1234", "malformed header entry"),
    (b"[" * 100000 + b"]" * 100000, b"", "not valid JSON"),
    (b'{"a": ' + b"9" * 5000 + b"}", b"", "not valid JSON"),
])
def test_malformed_safetensors_headers_are_the_formats_own_error(tmp_path, header, data, message):
    path = tmp_path / "model.safetensors"
    path.write_bytes(raw_safetensors(header, data))
    with pytest.raises(SafetensorsError, match=message) as e:
        read_safetensors(path)
    assert str(path) in str(e.value)


def test_a_header_one_byte_short_is_refused_not_shifted(tmp_path):
    write_safetensors(tmp_path / "m.safetensors", {"w": np.arange(6, dtype=np.float32)})
    raw = bytearray((tmp_path / "m.safetensors").read_bytes())
    n = int.from_bytes(raw[:8], "little")
    assert raw[8 + n - 1 : 8 + n] == b" ", "the writer pads the header with spaces"
    raw[:8] = (n - 1).to_bytes(8, "little")  # the JSON still parses; the data would start one byte early
    (tmp_path / "m.safetensors").write_bytes(bytes(raw))
    with pytest.raises(SafetensorsError, match="cover 24 of the 25 data bytes"):
        read_safetensors(tmp_path / "m.safetensors")


@pytest.mark.reference
def test_safetensors_reader_agrees_with_the_safetensors_package(tmp_path):
    st = pytest.importorskip("safetensors.numpy", reason="safetensors is missing: pip install -e '.[reference]'")
    rng = np.random.default_rng(0)
    arrays = {"a": rng.standard_normal((3, 5)).astype(np.float32), "b": np.arange(7, dtype=np.int64),
              "c": rng.standard_normal(4).astype(np.float16), "scalar": np.array(2.5, dtype=np.float64)}
    st.save_file(arrays, str(tmp_path / "ref.safetensors"), metadata={"k": "v"})
    ours, meta = read_safetensors(tmp_path / "ref.safetensors")
    assert meta == {"k": "v"}
    for k, v in arrays.items():
        np.testing.assert_array_equal(ours[k], v)
        assert ours[k].dtype == v.dtype
    write_safetensors(tmp_path / "ours.safetensors", arrays, {"k": "v"})
    back = st.load_file(str(tmp_path / "ours.safetensors"))
    for k, v in arrays.items():
        np.testing.assert_array_equal(back[k], v)


def test_truncated_safetensors_is_named(tmp_path):
    write_safetensors(tmp_path / "m.safetensors", {"w": np.ones((100, 10), np.float32)})
    raw = (tmp_path / "m.safetensors").read_bytes()
    (tmp_path / "m.safetensors").write_bytes(raw[:-40])
    with pytest.raises(ValueError, match="tensor w .* truncated or corrupted"):
        read_safetensors(tmp_path / "m.safetensors")
