"""bytes -> CRC-32C (Castagnoli), the checksum TensorFlow writes beside every index block and tensor: the byte
loop written plainly (`crc32c`), and the same at NumPy speed for tensor data (`crc32c_array`), tested equal."""

from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=1)
def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1  # Castagnoli polynomial, reflected
        table.append(c)
    return table


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) in pure Python: fine for index blocks, too slow for tensor data.

    >>> hex(crc32c(b"123456789"))
    '0xe3069283'
    """
    table, crc = _crc32c_table(), 0xFFFFFFFF
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


# --- CRC-32C at NumPy speed -------------------------------------------------------------------------
# The CRC register update, r -> table[(r ^ byte) & 0xFF] ^ (r >> 8), is linear over GF(2) in (r, byte). So:
#   crc over A || B, starting from state s   =   Z^len(B) (state after A)  xor  (crc over B starting from 0)
# where Z is "feed one zero byte", a linear map of the 32-bit state. Cut the data into many equal chunks, run
# the byte loop over all of them at once (one NumPy operation per byte position, from state 0), then fold the
# chunk results left to right with Z^L. Leading zero bytes leave state 0 at 0, so the data is padded in front
# to a whole number of chunks; the initial state 0xFFFFFFFF is added back as Z^n(0xFFFFFFFF).


def _feed_zeros(state: int, n: int) -> int:
    """Z^n applied to a 32-bit state: the byte loop over n zero bytes (n small: used to build the maps)."""
    table = _crc32c_table()
    for _ in range(n):
        state = table[state & 0xFF] ^ (state >> 8)
    return state


def _apply(columns: list[int], x: int) -> int:
    """A linear map of 32-bit states, given by the images of the 32 unit vectors, applied to x."""
    out = 0
    for i in range(32):
        if x >> i & 1:
            out ^= columns[i]
    return out


@lru_cache(maxsize=64)
def _zeros_map(n: int) -> tuple[int, ...]:
    """Z^n as the images of the 32 unit vectors, by repeated squaring of Z."""
    result = [1 << i for i in range(32)]  # the identity
    power = [_feed_zeros(1 << i, 1) for i in range(32)]  # Z
    while n:
        if n & 1:
            result = [_apply(power, c) for c in result]
        power = [_apply(power, c) for c in power]
        n >>= 1
    return tuple(result)


@lru_cache(maxsize=64)
def _zeros_tables(n: int) -> np.ndarray:
    """Z^n as four 256-entry tables, one per byte of the state: Z^n(x) = T0[x0] ^ T1[x1] ^ T2[x2] ^ T3[x3]."""
    cols = _zeros_map(n)
    return np.array([[_apply(cols, b << (8 * k)) for b in range(256)] for k in range(4)], dtype=np.uint32)


@lru_cache(maxsize=1)
def _slicing_tables() -> np.ndarray:
    """[4, 256]: T_k[b] = the register after byte b then k zero bytes, from state 0 (slicing-by-4)."""
    tables = [np.array(_crc32c_table(), dtype=np.uint32)]
    for _ in range(3):
        prev = tables[-1]
        tables.append(tables[0][prev & 0xFF] ^ (prev >> 8))
    return np.stack(tables)


def crc32c_array(data: np.ndarray, chunks: int = 16384) -> int:
    """CRC-32C of a uint8 array, the same number as `crc32c`, at NumPy speed (vectorised over chunks).

    The data is cut into `chunks` equal pieces whose registers advance together, four bytes per NumPy step
    (slicing-by-4: byte k of a word goes through the table for "then 3 - k more bytes").
    >>> hex(crc32c_array(np.frombuffer(b"123456789", np.uint8)))
    '0xe3069283'
    """
    data = np.asarray(data, dtype=np.uint8).reshape(-1)
    n = len(data)
    chunk = -(-n // chunks) if n else 4
    chunk += -chunk % 4  # whole 32-bit words
    m = -(-n // chunk) or 1
    padded = np.zeros(m * chunk, np.uint8)
    padded[m * chunk - n :] = data  # leading zeros: state 0 stays 0
    words = padded.view("<u4").reshape(m, chunk // 4)  # [m, chunk / 4]: chunk i in row i
    t = _slicing_tables()
    state, x, tmp = np.zeros(m, np.uint32), np.empty(m, np.uint32), np.empty(m, np.uint32)  # [m] registers
    for j in range(chunk // 4):
        np.bitwise_xor(state, words[:, j], out=x)
        np.take(t[3], x & 0xFF, out=state)
        np.take(t[2], (x >> 8) & 0xFF, out=tmp)
        state ^= tmp
        np.take(t[1], (x >> 16) & 0xFF, out=tmp)
        state ^= tmp
        np.take(t[0], x >> 24, out=tmp)
        state ^= tmp
    t0, t1, t2, t3 = (a.tolist() for a in _zeros_tables(chunk))
    crc = 0
    for r in state.tolist():  # crc over chunks 0..k = Z^chunk(crc over chunks 0..k-1) ^ r_k
        crc = (t0[crc & 0xFF] ^ t1[crc >> 8 & 0xFF] ^ t2[crc >> 16 & 0xFF] ^ t3[crc >> 24]) ^ r
    return (crc ^ _apply(_zeros_map(n), 0xFFFFFFFF)) ^ 0xFFFFFFFF


def mask(crc: int) -> int:
    """LevelDB stores CRCs rotated and offset ("masked") so that CRCs of CRCs stay well distributed."""
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """The masked CRC-32C of `data` (the byte loop: for index blocks, which are small)."""
    return mask(crc32c(data))
