"""A tokenizer's work shown: `Tokenizer.explain`'s result, one pre-token at a time, every merge in rank order."""

from __future__ import annotations

from dataclasses import dataclass, field

from .vocab import bytes_label, token_to_text

EXPLAIN_STEPS_UP_TO = 256  # bytes: explain shows every step of words up to this long, only the merges of longer ones

@dataclass
class PieceTrace:
    """One pre-token's way through BPE."""

    text: str  # the pre-token, e.g. " world"
    bytes: bytes  # its UTF-8 bytes
    merges: list  # (rank, (left, right), parts after the merge, or None for a long word), in the order applied
    tokens: list[bytes]  # the final tokens
    ids: list[int]  # their ids


@dataclass
class Explanation:
    """`Tokenizer.explain`'s result: print it (or show it in a notebook) to see every step."""

    text: str
    pattern: str
    pieces: list[PieceTrace] = field(default_factory=list)

    @property
    def ids(self) -> list[int]:
        return [i for p in self.pieces for i in p.ids]

    def __str__(self) -> str:
        def show(parts):
            return " ".join(token_to_text(p) for p in parts)

        lines = [f"text: {self.text!r}", f"pre-tokens ({len(self.pieces)}): {[p.text for p in self.pieces]}"]
        for p in self.pieces:
            lines.append("")
            lines.append(f"{p.text!r}  bytes {list(p.bytes)}")
            lines.append(f"    start        {show([p.bytes[i:i + 1] for i in range(len(p.bytes))])}")
            for rank, (left, right), parts in p.merges:
                after = show(parts) if parts is not None else "..."
                lines.append(f"    rank {rank:>6}  {token_to_text(left)} + {token_to_text(right)}  ->  {after}")
            lines.append(f"    tokens       {' '.join(repr(bytes_label(t)) for t in p.tokens)}")
            lines.append(f"    ids          {p.ids}")
        lines.append("")
        lines.append(f"ids: {self.ids}")
        return "\n".join(lines)

    __repr__ = __str__

