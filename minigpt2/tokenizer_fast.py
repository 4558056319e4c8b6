"""The tokenizer's tuned forms, each equal to the reference it replaces (the tests hold them equal on every
input they try): `pretokenize` for regex.findall(GPT2_SPLIT_PATTERN, text), and `bpe`, the heap-based merge,
for tokenizer.bpe_reference. Measured gains are in docs/performance.md.
"""

from __future__ import annotations

import heapq
import re

import regex

from .vocab import GPT2_SPLIT_PATTERN

Pair = tuple[bytes, bytes]

# --- pre-tokenizing: replaces regex.findall(GPT2_SPLIT_PATTERN, text) ------------------------------
# Speed, not meaning: on ASCII text GPT-2's pattern is exactly this one, with \p{L} = [A-Za-z],
# \p{N} = [0-9] and \s = [\t\n\v\f\r ], and the standard library's `re` runs it about twice as fast as
# `regex` runs the Unicode one. `pretokenize` uses it on the ASCII stretches of a text and the full pattern
# around non-ASCII characters. Cutting is safe between a non-whitespace character and a whitespace one:
# no pre-token spans such a point, and matching restarts there as if the text began anew.
_ASCII_WS = "\t\n\x0b\x0c\r "
_ASCII_SPLIT = re.compile(
    rf"""'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^{_ASCII_WS}A-Za-z0-9]+|[{_ASCII_WS}]+(?![^{_ASCII_WS}])|[{_ASCII_WS}]+"""
).findall
_UNICODE_SPLIT = regex.compile(GPT2_SPLIT_PATTERN).findall
_NON_ASCII = re.compile(r"[^\x00-\x7f]+")
# Unicode's White_Space characters, which is what `regex` means by \s (a test checks all code points)
UNICODE_WS = frozenset("\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
                       "\u2009\u200a\u2028\u2029\u202f\u205f\u3000")


def pretokenize(text: str) -> list[str]:
    """GPT-2's pre-tokens of `text`, the same as regex.findall(GPT2_SPLIT_PATTERN, text), faster.

    >>> pretokenize("Hello  world's 42!")
    ['Hello', ' ', ' world', "'s", ' 42', '!']
    """
    if text.isascii():
        return _ASCII_SPLIT(text)
    pieces: list[str] = []
    done = 0  # text[:done] is pre-tokenized
    for run in _NON_ASCII.finditer(text):
        if run.end() <= done:
            continue  # already inside the previous Unicode window
        start, end = safe_cut_before(text, run.start(), done), safe_cut_after(text, run.end())
        pieces += _ASCII_SPLIT(text[done:start])
        pieces += _UNICODE_SPLIT(text[start:end])
        done = end
    pieces += _ASCII_SPLIT(text[done:])
    return pieces


def _is_safe_cut(text: str, i: int) -> bool:
    return text[i] in UNICODE_WS and text[i - 1] not in UNICODE_WS


def safe_cut_before(text: str, i: int, lo: int) -> int:
    """The last safe cut at or before i, not before lo (lo itself is one)."""
    i = max(i, lo)  # a run may begin inside the previous window
    while i > lo and not _is_safe_cut(text, i):
        i -= 1
    return i


def safe_cut_after(text: str, i: int) -> int:
    """The first safe cut at or after i (the end of the text is one)."""
    while i < len(text) and not _is_safe_cut(text, i):
        i += 1
    return i



# --- BPE on one pre-token: replaces tokenizer.bpe_reference -------------------------------------------


def bpe(word: bytes, ranks: dict[Pair, int], trace: list | None = None) -> list[bytes]:
    """Same result as `bpe_reference` in O(n log n): a heap of candidate pairs over a linked list.

    If `trace` is a list, one (rank, pair, None) tuple is appended per merge, in the order made.

    Heap entries are (rank, position of the pair's left symbol), so equal ranks pop left to right,
    exactly the order in which the reference merges all occurrences of its best pair. Entries made
    stale by an earlier merge are recognised (the pair now at that position has another rank) and dropped.
    """
    parts: list[bytes | None] = [word[i : i + 1] for i in range(len(word))]
    n = len(parts)
    nxt = list(range(1, n + 1))  # index of the next live symbol (n = end)
    prv = list(range(-1, n - 1))  # index of the previous live symbol (-1 = start)
    heap = [(r, i) for i in range(n - 1) if (r := ranks.get((parts[i], parts[i + 1]))) is not None]
    heapq.heapify(heap)
    while heap:
        rank, i = heapq.heappop(heap)
        j = nxt[i]
        if parts[i] is None or j >= n or ranks.get((parts[i], parts[j])) != rank:
            continue  # stale: this pair was changed by an earlier merge
        if trace is not None:
            trace.append((rank, (parts[i], parts[j]), None))
        parts[i] = parts[i] + parts[j]  # merge symbol j into symbol i
        parts[j] = None
        nxt[i] = nxt[j]
        if nxt[i] < n:
            prv[nxt[i]] = i
        # the merged symbol forms new pairs with its neighbours
        if prv[i] >= 0 and (r := ranks.get((parts[prv[i]], parts[i]))) is not None:
            heapq.heappush(heap, (r, prv[i]))
        if nxt[i] < n and (r := ranks.get((parts[i], parts[nxt[i]]))) is not None:
            heapq.heappush(heap, (r, i))
    return [p for p in parts if p is not None]
