"""encoder.json + vocab.bpe <-> (token bytes -> id, merges): OpenAI's vocabulary files.

GPT-2's BPE works on bytes, but OpenAI stored its vocabulary as JSON text. To make every byte a visible
character, each of the 256 byte values is mapped to one printable unicode character (`bytes_to_unicode`):
printable Latin-1 bytes map to themselves, the rest (space, control bytes, ...) to U+0100 and up, so the
space byte appears as "Ġ" and newline as "Ċ". This module is the only place that knows about that mapping;
everything else in minigpt2 works on real bytes.

Files:
    encoder.json  {"!": 0, ..., "Ġthe": 262, ..., "<|endoftext|>": 50256}   token (mapped text) -> id
    vocab.bpe     "#version: 0.2" header, then one merge per line, "Ġ t", in priority (rank) order
Hugging Face ships the same two files as `vocab.json` and `merges.txt`. GPT-2's vocabulary also fixes its
pre-tokenizer (the regex that cuts text into words before BPE) and its one special token, <|endoftext|>.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache

ENDOFTEXT = "<|endoftext|>"
EOT_ID = 50256  # GPT-2's <|endoftext|>: its last id
VOCAB_BPE_HEADER = "#version: 0.2"


class VocabError(ValueError):
    """A vocabulary file that is not GPT-2's format (encoder.json / vocab.json, vocab.bpe / merges.txt); the
    message names the file and, where it can, the line and the token."""

# OpenAI's pre-tokenizer (encoder.py): contractions, letters, digits, other symbols, whitespace.
# subtle: `\s+(?!\S)` leaves the last space of a run to start the next word (" world"), so "a   b"
# splits as ["a", "  ", " b"].
GPT2_SPLIT_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


@lru_cache(maxsize=None)
def bytes_to_unicode() -> dict[int, str]:
    """The 256 byte values -> 256 printable characters, in OpenAI's order (also the order of ids 0..255).

    >>> m = bytes_to_unicode(); m[ord("a")], m[ord(" ")], m[ord("\\n")]
    ('a', 'Ġ', 'Ċ')
    """
    printable = [b for b in range(256) if chr(b).isprintable() and chr(b) != " "]  # 188 bytes shown as-is
    mapping = {b: chr(b) for b in printable}
    shifted = [b for b in range(256) if b not in mapping]  # the other 68, moved up to U+0100...
    mapping.update({b: chr(256 + n) for n, b in enumerate(shifted)})
    return mapping


@lru_cache(maxsize=None)
def unicode_to_bytes() -> dict[str, int]:
    """Inverse of `bytes_to_unicode`."""
    return {c: b for b, c in bytes_to_unicode().items()}


def byte_order() -> list[int]:
    """Byte values in the order OpenAI's encoder.json gives them ids 0..255."""
    return list(bytes_to_unicode())


def token_to_text(token: bytes) -> str:
    """Token bytes -> the printable form stored in encoder.json / vocab.bpe (b" the" -> "Ġthe")."""
    table = bytes_to_unicode()
    return "".join(table[b] for b in token)


def text_to_token(text: str, where: str = "vocabulary file") -> bytes:
    """The printable form in encoder.json / vocab.bpe -> token bytes ("Ġthe" -> b" the")."""
    table = unicode_to_bytes()
    try:
        return bytes(table[c] for c in text)
    except KeyError as e:
        raise VocabError(
            f"{where}: token {text!r} contains {e.args[0]!r}, which is not one of the 256 byte characters "
            "of GPT-2's byte-to-unicode mapping; is this a GPT-2 style byte-level BPE file?"
        ) from None


# --- reading ---------------------------------------------------------------------------------------


def parse_encoder_json(text: str, merges: list[tuple[bytes, bytes]], where: str = "encoder.json",
                       ) -> tuple[dict[bytes, int], dict[str, int]]:
    """encoder.json's text -> ({token bytes: id} for ordinary tokens, {special token text: id}).

    Special tokens (`<|endoftext|>`) are the entries written as `<|...|>` that no merge makes; they are
    returned separately because they never come out of BPE. subtle: a learned token may look like `<|...|>`
    too (say "<|>"); it is the result of a merge, and so ordinary.
    """
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError) as e:  # bad JSON, absurd nesting, a number of 100,000 digits
        raise VocabError(f"{where} is not valid JSON ({str(e)[:200]}); expected GPT-2's encoder.json / vocab.json"
                         ) from None
    if not isinstance(raw, dict) or not raw:
        raise VocabError(f"{where}: expected a JSON object mapping tokens to ids, got {type(raw).__name__}")
    merged = {token_to_text(a + b) for a, b in merges}
    encoder: dict[bytes, int] = {}
    special: dict[str, int] = {}
    for token, idx in raw.items():
        if not isinstance(idx, int) or isinstance(idx, bool) or idx < 0:
            raise VocabError(f"{where}: token {token!r} has id {idx!r}; ids must be non-negative integers")
        if token.startswith("<|") and token.endswith("|>") and token not in merged:
            special[token] = idx
        else:
            encoder[text_to_token(token, where=where)] = idx
    return encoder, special


def parse_vocab_bpe(text: str, where: str = "vocab.bpe") -> list[tuple[bytes, bytes]]:
    """vocab.bpe's text -> merges in rank order, as pairs of token bytes (none is allowed: bytes only)."""
    lines = text.split("\n")
    # subtle: the first line is a "#version: 0.2" header, not a merge; the file ends with a newline.
    header = bool(lines) and lines[0].startswith("#version")
    if header:
        lines = lines[1:]
    merges = []
    for lineno, line in enumerate(lines, start=2 if header else 1):
        if not line:
            continue
        parts = line.split(" ")
        if len(parts) != 2 or not parts[0] or not parts[1]:
            raise VocabError(f"{where}, line {lineno}: expected two tokens separated by one space, got {line!r}")
        merges.append((text_to_token(parts[0], where=where), text_to_token(parts[1], where=where)))
    if not merges and not header:
        raise VocabError(f"{where} holds no merges and no '{VOCAB_BPE_HEADER}' header; expected GPT-2's "
                         "vocab.bpe / merges.txt")
    return merges


# --- writing --------------------------------------------------------------------------------------


def encoder_json_text(encoder: dict[bytes, int], special: dict[str, int]) -> str:
    """encoder.json exactly as OpenAI wrote it: one line, ", " and ": " separators, non-ASCII escaped."""
    items = {token_to_text(t): i for t, i in sorted(encoder.items(), key=lambda kv: kv[1])}
    items.update(special)
    return json.dumps(items)  # json's defaults are OpenAI's format


def vocab_bpe_text(merges: list[tuple[bytes, bytes]]) -> str:
    """vocab.bpe exactly as OpenAI wrote it: header line, one "left right" merge per line, final newline."""
    lines = [VOCAB_BPE_HEADER] + [f"{token_to_text(a)} {token_to_text(b)}" for a, b in merges]
    return "\n".join(lines) + "\n"


# --- showing a token ---------------------------------------------------------------------------------

# one UTF-8 character: the well-formed byte sequences of Unicode's table 3-7 (no surrogates, no overlongs)
UTF8_CHARACTER = re.compile(rb"[\x00-\x7f]|[\xc2-\xdf][\x80-\xbf]|\xe0[\xa0-\xbf][\x80-\xbf]|"
                            rb"[\xe1-\xec\xee\xef][\x80-\xbf]{2}|\xed[\x80-\x9f][\x80-\xbf]|"
                            rb"\xf0[\x90-\xbf][\x80-\xbf]{2}|[\xf1-\xf3][\x80-\xbf]{3}|\xf4[\x80-\x8f][\x80-\xbf]{2}")


def bytes_label(data: bytes) -> str:
    """Bytes as a readable label: whole UTF-8 characters as text (control characters escaped, "\\n"), the
    bytes of a partial character in hex between angle brackets.

    >>> bytes_label(" world".encode()), bytes_label("我".encode()[:2]), bytes_label("们".encode() + b"\\xe4")
    (' world', '<e6 88>', '们<e4>')
    """
    out, partial, i = [], [], 0
    while i < len(data):
        m = UTF8_CHARACTER.match(data, i)
        if m is None:  # a byte of a character this token holds only part of
            partial.append(f"{data[i]:02x}")
            i += 1
            continue
        if partial:
            out.append(f"<{' '.join(partial)}>")
            partial = []
        ch = m.group().decode("utf-8")
        out.append(ch.encode("unicode_escape").decode("ascii") if ch.isascii() and not ch.isprintable() else ch)
        i = m.end()
    if partial:
        out.append(f"<{' '.join(partial)}>")
    return "".join(out)
