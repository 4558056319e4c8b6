"""text -> merges: learning a byte-level BPE vocabulary (as minbpe keeps its trainers apart from the tokenizer).

    pre-tokens with their counts --repeatedly merge the most frequent adjacent pair--> merges in rank order

The rule (`merges_reference`, written for reading): count every adjacent pair of symbols inside each
pre-token, weighted by how often the pre-token occurs; merge the most frequent pair everywhere, left to right
(ties: the smaller pair in byte order); repeat. A pair whose merge would make a token that already exists
(a+bc after ab+c made abc) is skipped, so that every merge adds exactly one token: OpenAI's files (and
tiktoken) rely on id = 256 + merge rank.

`learn_merges` follows the same rule fast enough for real corpora. The reference rebuilds every pre-token
that holds the merged pair; GPT-2's pattern makes each Chinese clause one long pre-token, so on Chinese news
text that is seconds per merge. `learn_merges` keeps every symbol of every distinct pre-token in one linked
list and, for each merge, visits only the places where the pair occurs, updating the counts of the two
neighbouring pairs at each (as the encoder's heap merge does for one word).
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict

from tqdm import tqdm

Pair = tuple[bytes, bytes]


# --- the rule, written for reading ------------------------------------------------------------------


def merges_reference(words: Counter[bytes], n_merges: int) -> list[Pair]:
    """The most frequent pair, merged everywhere, `n_merges` times (fewer if no pair is left). Slow: every
    step recounts every pre-token."""
    symbols = {w: [w[i : i + 1] for i in range(len(w))] for w in words}
    tokens = {bytes([b]) for b in range(256)}
    merges: list[Pair] = []
    banned: set[Pair] = set()  # pairs that would make an existing token
    while len(merges) < n_merges:
        counts: Counter[Pair] = Counter()
        for w, parts in symbols.items():
            for pair in zip(parts, parts[1:]):
                if pair not in banned:
                    counts[pair] += words[w]
        if not counts:
            break
        best = min(counts, key=lambda p: (-counts[p], p))  # most frequent; ties: the smaller pair
        if best[0] + best[1] in tokens:
            banned.add(best)
            continue
        merges.append(best)
        tokens.add(best[0] + best[1])
        symbols = {w: merge_pair(parts, best) for w, parts in symbols.items()}
    return merges


def merge_pair(parts: list[bytes], pair: Pair) -> list[bytes]:
    """Merge every occurrence of `pair` in `parts`, left to right (as encoding does)."""
    out, i = [], 0
    while i < len(parts):
        if i + 1 < len(parts) and parts[i] == pair[0] and parts[i + 1] == pair[1]:
            out.append(parts[i] + parts[i + 1])
            i += 2
        else:
            out.append(parts[i])
            i += 1
    return out


# --- the same, visiting only the pair's occurrences ---------------------------------------------------


def learn_merges(words: Counter[bytes], n_merges: int, progress: bool = True) -> list[Pair]:
    """`merges_reference`'s merges, in time proportional to the occurrences merged rather than to the corpus
    per merge.

    Every symbol of every distinct pre-token is a node of one linked list (`nxt`, `prv`; -1 ends a
    pre-token), holding a token id (`sym`) and its pre-token's count (`weight`). `counts[pair]` is the
    weighted number of adjacent occurrences; `where[pair]` lists the left nodes where the pair has formed
    (entries go stale when a neighbour merges; they are checked when used, never removed). A max-heap of
    (-count, pair bytes) finds the next merge; entries are pushed when a count changes and stale ones dropped
    when popped.
    """
    token: list[bytes] = [bytes([b]) for b in range(256)]  # id -> bytes
    ids = {t: i for i, t in enumerate(token)}  # bytes -> id
    nodes = SymbolList(words)
    counts, where = nodes.pair_counts()
    heap = [(-c, token[k >> 32], token[k & 0xFFFFFFFF], k) for k, c in counts.items()]
    heapq.heapify(heap)
    merges: list[Pair] = []
    banned: set[int] = set()  # pairs whose merge would make an existing token: never merged
    bar = tqdm(total=n_merges, desc="training BPE", unit="merge", disable=not progress)
    while len(merges) < n_merges and heap:
        negc, left, right, k = heapq.heappop(heap)
        if counts.get(k, 0) != -negc or k in banned:
            continue  # stale: the count changed since this entry was pushed
        if left + right in ids:
            banned.add(k)
            continue
        c = len(token)
        token.append(left + right)
        ids[left + right] = c
        merges.append((left, right))
        changed = nodes.merge(k, c, counts, where)
        del counts[k]
        changed.discard(k)
        for ck in changed:
            cnt = counts[ck]
            if cnt > 0:
                if ck not in banned:
                    heapq.heappush(heap, (-cnt, token[ck >> 32], token[ck & 0xFFFFFFFF], ck))
            else:  # no occurrence left (its stale places go too)
                del counts[ck]
                where.pop(ck, None)
        bar.update(1)
    bar.close()
    return merges


class SymbolList:
    """The symbols of every distinct pre-token as one linked list: node i holds token id sym[i] and its
    pre-token's count weight[i]; nxt[i] and prv[i] are its neighbours inside the pre-token (-1: none). A pair
    of ids (a, b) is one int key, a << 32 | b: a faster dict key than a tuple."""

    def __init__(self, words: Counter[bytes]):
        self.sym: list[int] = []
        self.weight: list[int] = []
        for w, f in words.items():
            self.sym.extend(w)  # a pre-token's bytes are its first symbols (ids 0..255)
            self.weight.extend([f] * len(w))
        n = len(self.sym)
        self.nxt = list(range(1, n + 1))
        self.prv = list(range(-1, n - 1))
        end = 0
        for w in words:  # cut the list between pre-tokens
            end += len(w)
            self.nxt[end - 1] = -1
            if end < n:
                self.prv[end] = -1
        if n:
            self.nxt[n - 1] = -1

    def pair_counts(self) -> tuple[dict[int, int], dict[int, list[int]]]:
        """(weighted count of each adjacent pair, the left nodes where each occurs)."""
        sym, nxt, weight = self.sym, self.nxt, self.weight
        counts: dict[int, int] = defaultdict(int)
        where: dict[int, list[int]] = defaultdict(list)
        for i in range(len(sym)):
            j = nxt[i]
            if j != -1:
                k = sym[i] << 32 | sym[j]
                counts[k] += weight[i]
                where[k].append(i)
        return counts, where

    def merge(self, k: int, c: int, counts: dict[int, int], where: dict[int, list[int]]) -> set[int]:
        """Merge pair `k` into the new id `c` at each of its places, left to right, updating the neighbouring
        pairs' counts and places; the keys whose counts changed."""
        sym, nxt, prv, weight = self.sym, self.nxt, self.prv, self.weight
        a, b = k >> 32, k & 0xFFFFFFFF
        changed: set[int] = set()
        for i in sorted(where.pop(k)):  # left to right, as merge_pair: "aaa" + (a, a) -> aa, a
            j = nxt[i]
            if sym[i] != a or j == -1 or sym[j] != b:
                continue  # stale: a neighbour was merged since the pair formed here
            f = weight[i]
            p, q = prv[i], nxt[j]
            if p != -1:  # the pair on the left: (x, a) -> (x, c)
                x = sym[p] << 32
                old, new = x | a, x | c  # key(x, a), key(x, c), written out: this loop is the trainer's time
                counts[old] -= f
                counts[new] += f
                where[new].append(p)
                changed.add(old)
                changed.add(new)
            if q != -1:  # the pair on the right: (b, y) -> (c, y)
                y = sym[q]
                old, new = b << 32 | y, c << 32 | y
                counts[old] -= f
                counts[new] += f
                where[new].append(i)
                changed.add(old)
                changed.add(new)
                prv[q] = i
            sym[i], nxt[i] = c, q  # node i becomes the merged symbol; node j leaves the list
            sym[j] = -1
        return changed
