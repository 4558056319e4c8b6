"""text <-> ids: GPT-2's byte-level BPE (encode, decode, stream, explain, train).

    text --regex--> pre-tokens --utf-8--> bytes --BPE merges by rank--> tokens --encoder--> ids

1. Pre-tokenize: OpenAI's regex cuts text into words, numbers, punctuation runs and whitespace, each
   with at most one leading space (" world"). Merges never cross these boundaries.
2. Each pre-token becomes its UTF-8 bytes, one symbol per byte; every byte is in the vocabulary, so any
   string can be encoded and nothing is ever "unknown".
3. BPE: repeatedly merge the adjacent pair of symbols with the lowest merge rank (the line number in
   vocab.bpe) until no pair can merge. The symbols left are tokens; encoder.json gives their ids.
"""

from __future__ import annotations

import codecs
import json
import os
import warnings
from collections import Counter
from itertools import chain
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import regex

from .bpe_train import learn_merges, merge_pair
from .bundled import bundled_dir
from .explain import EXPLAIN_STEPS_UP_TO, Explanation, PieceTrace
from .files import CONVERTED_FILE, names_a_path, read_utf8, write_atomically
from .safetensors import read_metadata
from .tokenizer_fast import bpe, pretokenize, safe_cut_after
from .vocab import (
    ENDOFTEXT,
    GPT2_SPLIT_PATTERN,
    VocabError,
    bytes_label,
    byte_order,
    encoder_json_text,
    parse_encoder_json,
    parse_vocab_bpe,
    token_to_text,
    vocab_bpe_text,
)

Pair = tuple[bytes, bytes]
ENCODER_FILE, MERGES_FILE = "encoder.json", "vocab.bpe"
HF_ENCODER_FILE, HF_MERGES_FILE = "vocab.json", "merges.txt"  # the same two formats under Hugging Face's names
PATTERN_FILE = "minigpt2-tokenizer.json"  # {"pattern": ...}: the pre-tokenizer, when saved by minigpt2

# --- BPE on one pre-token ---------------------------------------------------------------------------


def bpe_reference(word: bytes, ranks: dict[Pair, int], trace: list | None = None) -> list[bytes]:
    """OpenAI's merge loop, written for reading: find the lowest-rank adjacent pair, merge every
    occurrence of it left to right, repeat. Quadratic in len(word); `bpe` is the fast equivalent.

    If `trace` is a list, one (rank, pair, parts after the merge) tuple is appended per step.
    >>> bpe_reference(b"aaa", {(b"a", b"a"): 0})
    [b'aa', b'a']
    """
    parts = [word[i : i + 1] for i in range(len(word))]
    while len(parts) > 1:
        pairs = set(zip(parts, parts[1:]))
        best = min(pairs, key=lambda p: ranks.get(p, float("inf")))
        if best not in ranks:
            break
        parts = merge_pair(parts, best)  # every occurrence, left to right (as training merges)
        if trace is not None:
            trace.append((ranks[best], best, list(parts)))
    return parts


# --- the tokenizer ----------------------------------------------------------------------------------


class _Cache(dict):
    """pre-token -> tuple of ids, computed on first use (dict's __missing__ keeps the hit path in C)."""

    def __init__(self, compute, max_size: int):
        super().__init__()
        self.compute = compute
        self.max_size = max_size

    def __missing__(self, key: str) -> tuple[int, ...]:
        ids = self.compute(key)
        if len(self) >= self.max_size:
            self.clear()  # bounded memory on endless streams of new words
        self[key] = ids
        return ids


class Tokenizer:
    """GPT-2's byte-level BPE tokenizer: `Tokenizer.from_pretrained("124M")` for OpenAI's vocabulary.

    >>> tok = Tokenizer.train("hug pug hugs bun", vocab_size=262, progress=False)
    >>> tok.merges[:2]  # "ug" is the most frequent pair, then "h" + "ug"
    [(b'u', b'g'), (b'h', b'ug')]
    """

    def __init__(
        self,
        encoder: dict[bytes, int],
        merges: list[Pair],
        special_tokens: dict[str, int] | None = None,
        pattern: str = GPT2_SPLIT_PATTERN,
        cache_size: int = 200_000,
    ):
        check_vocabulary(encoder, merges, special_tokens or {})
        self.encoder = dict(encoder)  # token bytes -> id
        self.merges = list(merges)  # in rank order
        self.ranks = {pair: rank for rank, pair in enumerate(self.merges)}  # (left, right) -> rank
        self.special_tokens = dict(special_tokens or {})  # "<|endoftext|>" -> 50256
        self.pattern = pattern
        # text -> pre-tokens (GPT-2's pattern has a faster, equivalent path)
        self._split = pretokenize if pattern == GPT2_SPLIT_PATTERN else regex.compile(pattern).findall
        self._decoder = {i: t for t, i in self.encoder.items()}  # id -> token bytes
        self._decoder.update({i: s.encode("utf-8") for s, i in self.special_tokens.items()})
        self._cache = _Cache(self._encode_piece, cache_size)  # pre-token -> ids

    # --- loading and saving ---

    @classmethod
    def from_files(cls, encoder_json: str | os.PathLike, vocab_bpe: str | os.PathLike,
                   pattern: str = GPT2_SPLIT_PATTERN) -> Tokenizer:
        """Load OpenAI's `encoder.json` + `vocab.bpe` (or Hugging Face's `vocab.json` + `merges.txt`)."""
        return cls.from_texts(read_utf8(encoder_json, "encoder file "), read_utf8(vocab_bpe, "merges file "),
                              pattern, where=(os.fspath(encoder_json), os.fspath(vocab_bpe)))

    @classmethod
    def from_texts(cls, encoder_json: str, vocab_bpe: str, pattern: str = GPT2_SPLIT_PATTERN,
                   where: tuple[str, str] = ("encoder.json", "vocab.bpe")) -> Tokenizer:
        """Build from the two files' contents (`where` names them in errors)."""
        merges = parse_vocab_bpe(vocab_bpe, where[1])
        encoder, special = parse_encoder_json(encoder_json, merges, where[0])
        try:
            return cls(encoder, merges, special, pattern=pattern)
        except ValueError as e:
            raise VocabError(f"{where[0]} and {where[1]} do not belong together: {e}") from None

    @classmethod
    def from_dir(cls, path: str | os.PathLike) -> Tokenizer:
        """Load from a directory: a model saved by minigpt2 (its vocabulary is inside the weights file), or
        encoder.json + vocab.bpe (OpenAI) or vocab.json + merges.txt (HF), with minigpt2's pattern file if any."""
        path = os.fspath(path)
        weights = os.path.join(path, CONVERTED_FILE)
        if os.path.isfile(weights):
            meta = read_metadata(weights)
            if f"file:{ENCODER_FILE}" in meta and f"file:{MERGES_FILE}" in meta:
                return cls.from_texts(meta[f"file:{ENCODER_FILE}"], meta[f"file:{MERGES_FILE}"],
                                      read_pattern(meta.get(f"file:{PATTERN_FILE}"), weights),
                                      where=(f"{weights} ({ENCODER_FILE})", f"{weights} ({MERGES_FILE})"))
        pattern_file = os.path.join(path, PATTERN_FILE)
        pattern = read_pattern(read_utf8(pattern_file), pattern_file) if os.path.isfile(pattern_file) \
            else GPT2_SPLIT_PATTERN
        for encoder_name, merges_name in ((ENCODER_FILE, MERGES_FILE), ("vocab.json", "merges.txt")):
            e, m = os.path.join(path, encoder_name), os.path.join(path, merges_name)
            if os.path.isfile(e) and os.path.isfile(m):
                return cls.from_files(e, m, pattern)
        if not os.path.isdir(path):
            raise FileNotFoundError(f"tokenizer directory not found: {path}")
        found = sorted(os.listdir(path))
        raise FileNotFoundError(
            f"no GPT-2 vocabulary in {path}: expected encoder.json + vocab.bpe (OpenAI) or vocab.json + "
            f"merges.txt (Hugging Face); found {found[:10]}"
        )

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike = "124M") -> Tokenizer:
        """A vocabulary from a directory, or from a model name: "124M" (GPT-2's, downloaded once), "tiny" (the
        bundled model's, 1,024 ids)."""
        if os.path.isdir(name_or_path):
            return cls.from_dir(name_or_path)
        if names_a_path(name_or_path):
            raise FileNotFoundError(f"{os.fspath(name_or_path)} is not a directory with a GPT-2 vocabulary")
        bundled = bundled_dir(os.fspath(name_or_path))
        if bundled is not None:
            return cls.from_dir(bundled)
        from .download import (  # network code lives in download
            VOCAB_FILES,
            download_openai_files,
        )

        return cls.from_dir(download_openai_files(name_or_path, VOCAB_FILES))

    def files(self) -> dict[str, bytes]:
        """The files that hold this tokenizer: encoder.json and vocab.bpe in OpenAI's exact formats, and
        minigpt2-tokenizer.json with the pre-tokenizer pattern."""
        return {ENCODER_FILE: encoder_json_text(self.encoder, self.special_tokens).encode("utf-8"),
                MERGES_FILE: vocab_bpe_text(self.merges).encode("utf-8"),
                PATTERN_FILE: json.dumps({"pattern": self.pattern}).encode("utf-8")}

    def save(self, path: str | os.PathLike) -> None:
        """Write `encoder.json` + `vocab.bpe` in OpenAI's exact formats (tiktoken reads them), the same two under
        Hugging Face's names `vocab.json` + `merges.txt` (GPT2TokenizerFast.from_pretrained(path) reads them) and
        minigpt2-tokenizer.json (the pattern), each file replaced atomically; `from_dir` reads them back."""
        os.makedirs(path, exist_ok=True)
        files = self.files()
        files.update({HF_ENCODER_FILE: files[ENCODER_FILE], HF_MERGES_FILE: files[MERGES_FILE]})
        for name, data in files.items():
            write_atomically(Path(path) / name, lambda f: f.write(data))

    # --- sizes ---

    @property
    def n_vocab(self) -> int:
        """Number of ids (50257 for GPT-2)."""
        return max(self._decoder) + 1

    @property
    def eot_id(self) -> int:
        """Id of `<|endoftext|>` (50256 for GPT-2)."""
        return self.special_tokens[ENDOFTEXT]

    def __repr__(self) -> str:
        return f"Tokenizer(n_vocab={self.n_vocab}, merges={len(self.merges)}, special={sorted(self.special_tokens)})"

    # --- encoding ---

    def _encode_piece(self, piece: str) -> tuple[int, ...]:
        """One pre-token -> its ids (the cache calls this once per distinct pre-token)."""
        word = piece.encode("utf-8")
        if word in self.encoder:  # most words are one token: skip the merge loop
            return (self.encoder[word],)
        return tuple(self.encoder[t] for t in bpe(word, self.ranks))

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode, treating special-token text such as `<|endoftext|>` as ordinary text."""
        if not isinstance(text, str):
            raise TypeError(f"encode() takes str, got {type(text).__name__}" + (
                "; decode the bytes to str first (bytes.decode('utf-8'))" if isinstance(text, (bytes, bytearray)) else ""))
        try:
            return list(chain.from_iterable(map(self._cache.__getitem__, self._split(text))))
        except UnicodeEncodeError:
            raise ValueError(_surrogate_message(text)) from None

    def chunks(self, text: str, size: int = 1 << 20) -> Iterator[str]:
        """`text` in pieces of about `size` characters that encode, one by one, to exactly encode_ordinary(text):
        cut only where a pre-token cannot span (whitespace after non-whitespace). With a pattern other than
        GPT-2's, where that is not known, the whole text is one piece."""
        if self.pattern != GPT2_SPLIT_PATTERN:
            yield text
            return
        start = 0
        while len(text) - start > size:
            cut = safe_cut_after(text, start + size)
            yield text[start:cut]
            start = cut
        if start < len(text):
            yield text[start:]

    def encode(self, text: str, allowed_special: str | Iterable[str] = ()) -> list[int]:
        """text -> ids. Special-token text is ordinary text unless named in `allowed_special` (or "all")."""
        if isinstance(allowed_special, str) and allowed_special != "all":
            if allowed_special not in self.special_tokens:
                raise ValueError(f"allowed_special must be 'all' or a collection of special tokens such as "
                                 f"{{'<|endoftext|>'}}, got {allowed_special!r}")
            allowed_special = (allowed_special,)  # one special token, named alone
        allowed = set(self.special_tokens) if allowed_special == "all" else set(allowed_special)
        if not allowed:
            return self.encode_ordinary(text)
        unknown = allowed - set(self.special_tokens)
        if unknown:
            raise ValueError(f"allowed_special names {sorted(unknown)}, which are not special tokens of this "
                             f"vocabulary ({sorted(self.special_tokens)})")
        if not isinstance(text, str):
            return self.encode_ordinary(text)  # raises the TypeError
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:  # before splitting, so that the index named is the whole text's
                raise ValueError(_surrogate_message(text)) from None
        # split around the allowed special tokens, keeping them (the capture group)
        splitter = "(" + "|".join(regex.escape(s) for s in sorted(allowed, key=len, reverse=True)) + ")"
        ids: list[int] = []
        for i, chunk in enumerate(regex.split(splitter, text)):
            if i % 2:  # odd chunks are the separators
                ids.append(self.special_tokens[chunk])
            elif chunk:
                ids.extend(self.encode_ordinary(chunk))
        return ids

    # --- decoding ---

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """ids -> the raw bytes they stand for (may end in the middle of a UTF-8 character).

        ids may be any iterable of ints (a list, a NumPy integer array, a generator); a float, a bool or an id
        outside the vocabulary is a ValueError, however the ids are passed.
        """
        ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)  # numpy -> Python ints; a generator, once
        try:
            if all(type(i) is int for i in ids):  # the fast path; `1.0` and `True` would find ids in the dict
                return b"".join(map(self._decoder.__getitem__, ids))
        except KeyError:
            pass
        for pos, i in enumerate(ids):
            if type(i) is not int and not isinstance(i, np.integer) or i not in self._decoder:
                raise ValueError(f"decode: id {i!r} at position {pos} is not in the vocabulary "
                                 f"(valid ids are integers 0..{self.n_vocab - 1})")
        return b"".join(self._decoder[int(i)] for i in ids)

    def decode(self, ids: Iterable[int]) -> str:
        """ids -> text. Bytes that are not valid UTF-8 (half a character) become U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def stream_decoder(self) -> StreamDecoder:
        """An incremental decoder: feed ids one at a time, get text that never holds half a character."""
        return StreamDecoder(self)

    def decode_stream(self, ids: Iterable[int]) -> Iterator[str]:
        """Decode an iterable of ids lazily, yielding text as soon as whole characters are complete."""
        decoder = self.stream_decoder()
        for i in ids:
            text = decoder.push(i)
            if text:
                yield text
        text = decoder.flush()
        if text:
            yield text

    def token_bytes(self, i: int) -> bytes:
        """The bytes of one id (useful for showing a token: tok.token_bytes(995) == b' world')."""
        return self.decode_bytes([i])

    def token_label(self, i: int) -> str:
        """One id as a person can read it, never '�': its text where its bytes are whole UTF-8 characters, its
        bytes in hex where they are part of one (GPT-2 splits most Chinese characters over two tokens).

        >>> tok = Tokenizer.train("我 我 我 们 们 我们 我们", 264, progress=False)  # 7 merges: 我 and 们 whole
        >>> [tok.token_label(i) for i in tok.encode("你们")]  # 你 was never seen: its three bytes apart
        ['<e4>', '<bd>', '<a0>', '们']
        """
        return bytes_label(self.token_bytes(i))

    # --- teaching ---

    def explain(self, text: str) -> Explanation:
        """The work shown: pre-tokens, their bytes, every merge in rank order, the resulting ids."""
        if not isinstance(text, str):
            self.encode_ordinary(text)  # raises the TypeError
        pieces = []
        for piece in self._split(text):
            try:
                word = piece.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(_surrogate_message(text)) from None
            trace: list = []
            if len(word) <= EXPLAIN_STEPS_UP_TO:
                tokens = bpe_reference(word, self.ranks, trace)  # every step, with the parts after it
            else:  # subtle: a long word's snapshots would cost O(n^2); list its merges, parts only at the end
                tokens = bpe(word, self.ranks, trace)
            pieces.append(PieceTrace(piece, word, trace, tokens, [self.encoder[t] for t in tokens]))
        return Explanation(text, self.pattern, pieces)

    # --- training ---

    @classmethod
    def train(cls, text: str, vocab_size: int, *, pattern: str = GPT2_SPLIT_PATTERN,
              progress: bool = True) -> Tokenizer:
        """Learn a byte-level BPE vocabulary of `vocab_size` ids (256 bytes + merges + `<|endoftext|>`).

        Same pre-tokenizer as GPT-2; each step merges the most frequent adjacent pair (ties: the smaller
        pair in byte order). Stops early if no pair is left. The result saves in OpenAI's formats.
        """
        if not isinstance(text, str):
            raise TypeError(f"train() takes str, got {type(text).__name__}")
        if not isinstance(vocab_size, int) or vocab_size < 257:
            raise ValueError(f"vocab_size must be an int >= 257 (256 bytes + <|endoftext|>), got {vocab_size!r}")
        try:
            words = Counter(p.encode("utf-8") for p in regex.findall(pattern, text))
        except UnicodeEncodeError:
            raise ValueError(_surrogate_message(text)) from None
        merges = learn_merges(words, vocab_size - 257, progress=progress)
        if len(merges) < vocab_size - 257:
            warnings.warn(f"Tokenizer.train: the text allowed {len(merges):,} merges, so the vocabulary has "
                          f"{len(merges) + 257:,} ids, not vocab_size={vocab_size:,} (every pair of adjacent symbols "
                          "inside a pre-token was merged); train on more text for a larger vocabulary", stacklevel=2)
        encoder = {bytes([b]): i for i, b in enumerate(byte_order())}  # ids 0..255 in OpenAI's byte order
        for left, right in merges:
            encoder[left + right] = len(encoder)
        return cls(encoder, merges, {ENDOFTEXT: len(encoder)}, pattern=pattern)


class StreamDecoder:
    """Incremental ids -> text. Holds back the bytes of an unfinished UTF-8 character until it completes,
    so an emoji spread over three tokens comes out once, whole."""

    def __init__(self, tokenizer: Tokenizer):
        self._decode_bytes = tokenizer.decode_bytes
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, ids: int | Iterable[int]) -> str:
        """Add one id (or several); return the text completed by them (possibly "")."""
        ids = ids.tolist() if hasattr(ids, "tolist") else ids  # numpy scalar or array -> Python int(s)
        ids = [ids] if not isinstance(ids, Iterable) else ids
        return self.push_bytes(self._decode_bytes(ids))

    def push_bytes(self, data: bytes) -> str:
        """Add raw bytes of text (e.g. part of a token); return the text completed by them (possibly "")."""
        return self._utf8.decode(data)

    def flush(self) -> str:
        """End of stream: any unfinished character becomes U+FFFD."""
        return self._utf8.decode(b"", final=True)


def read_pattern(text: str | None, where: str) -> str:
    """minigpt2-tokenizer.json's text (None: no such file) -> the pre-tokenizer pattern."""
    if text is None:
        return GPT2_SPLIT_PATTERN
    try:
        pattern = json.loads(text)["pattern"]
        regex.compile(pattern)
    except (ValueError, KeyError, TypeError, regex.error) as e:
        raise VocabError(f"{where}: expected {{\"pattern\": <a regular expression>}} ({e})") from None
    return pattern


# --- checks -----------------------------------------------------------------------------------------


def check_vocabulary(encoder: dict[bytes, int], merges: list[Pair], special: dict[str, int]) -> None:
    """Raise VocabError unless the encoder and merges describe one byte-level BPE vocabulary."""
    missing = [b for b in range(256) if bytes([b]) not in encoder]
    if missing:
        raise VocabError(f"the vocabulary lacks single-byte tokens for bytes {missing[:8]}; byte-level BPE "
                         "needs all 256")
    for rank, (left, right) in enumerate(merges):
        for t in (left, right, left + right):
            if t not in encoder:
                raise VocabError(f"merge #{rank} {token_to_text(left)!r} + {token_to_text(right)!r} uses or makes "
                                 f"token {token_to_text(t)!r}, which is not in the encoder")
    ids = list(encoder.values()) + list(special.values())
    if len(set(ids)) != len(ids):
        dup = [i for i, c in Counter(ids).items() if c > 1][:5]
        raise VocabError(f"ids {dup} are given to more than one token")


def _surrogate_message(text: str) -> str:
    m = regex.search(r"[\ud800-\udfff]", text)
    where = f"U+{ord(m.group()):04X} at index {m.start()}" if m else "a character that UTF-8 cannot encode"
    return (f"text contains a lone surrogate ({where}), which is not valid Unicode and has no UTF-8 bytes; "
            "clean it, e.g. text.encode('utf-8', 'replace').decode('utf-8')")
