"""bytes on disk <-> Python: text read as UTF-8 with errors that name the file, files written atomically,
and the name of minigpt2's own model file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO, Callable

CONVERTED_FILE = "minigpt2.safetensors"  # a model saved by minigpt2 (its vocabulary's files inside)


def names_a_path(name_or_path: str | os.PathLike) -> bool:
    """The one rule for "a model or vocabulary name, or a path?": a path if something is there or it holds a
    directory separator ("my-run", "./124M", "runs/a"); else a name ("124M", "gpt2-xl", "tiny"), which a directory
    of that name beside you overrides (it exists)."""
    s = os.fspath(name_or_path)
    return os.path.exists(s) or os.sep in s or (os.altsep is not None and os.altsep in s)


def read_utf8(path: str | os.PathLike, what: str = "") -> str:
    """The text of the file at `path`. Errors name it (after `what`, e.g. "--data ") and, for bytes that are
    not UTF-8, the first bad byte, its offset and its line."""
    label = f"{what}{os.fspath(path)}"
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"{label} does not exist") from None
    except IsADirectoryError:
        raise IsADirectoryError(f"{label} is a directory, not a file") from None
    return decode_utf8(raw, label)


def decode_utf8(raw: bytes, label: str) -> str:
    """`raw` as UTF-8 text; a ValueError that names `label` (a file, "standard input") and the first bad byte,
    its offset and its line."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ValueError(f"{label} is not UTF-8 text: byte 0x{raw[e.start]:02x} at byte offset {e.start} (line "
                         f"{line}) is invalid") from None


def write_atomically(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Call write(file) on a temporary file beside `path`, flush it to disk, then rename it to `path`: a kill
    at any instant leaves the old file or the new one, never half of either."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable (POSIX)
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
