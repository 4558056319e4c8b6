"""files -> the documents of the three zero-shot benchmarks, and where each one's data comes from.

    lambada     LAMBADA as OpenAI prepared it for GPT-2: lambada_test.jsonl, one {"text": passage} a line
                (5,153 passages; the passage's last word is what the model must guess)
    wikitext2   WikiText-2: a WikiText file (wiki.test.raw from the raw release, or the tokenized release's
                test file), cut into articles at their " = Title = " lines as lm-evaluation-harness's dataset
                (EleutherAI/wikitext_document_level) cuts it; the downloaded .zip is read in place
    hellaswag   HellaSwag's validation set: its original JSON lines (activity_label, ctx_a, ctx_b, endings,
                label; 10,042 items) or llama.cpp's text layout, six lines an item (the context, the label 0-3,
                the four endings); a .bz2 file of either is read as it is

Readers check what they read: a file that is not the benchmark's format is one error naming the file, the line
and what was expected (BenchmarkFileError). Downloads go through download.py into {cache}/data/, each checked
against the sha256 below before it gets its name.
"""

from __future__ import annotations

import bz2
import json
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..download import base_url, cache_dir, download_checked
from ..files import decode_utf8, read_utf8


class BenchmarkFileError(ValueError):
    """A benchmark's file that is not in its format; the message names the file, the line and what was expected."""


@dataclass(frozen=True)
class Source:
    """Where a benchmark's data is published: the file, its sha256, and (for an archive) the member read."""

    file: str
    url: str
    sha256: str
    member: str | None = None

    @property
    def path(self) -> Path:
        return cache_dir() / "data" / self.file


# LAMBADA from beside GPT-2's checkpoints (so $MINIGPT2_BASE_URL mirrors it too), with the hash
# lm-evaluation-harness's lambada_openai checks; WikiText-2 raw v1 from its authors' site, with the archive's hash
# as the Hugging Face datasets library records it; HellaSwag from its authors' repository, with the hash other
# projects pin (docs/results.md says where each comes from).
LAMBADA_SHA256 = "4aa8d02cd17c719165fc8a7887fddd641f43fcafa4b1c806ca8abc31fabdb226"
WIKITEXT2_URL = "https://wikitext.smerity.com/wikitext-2-raw-v1.zip"
WIKITEXT2_SHA256 = "ef7edb566e3e2b2d31b29c1fdb0c89a4cc683597484c3dc2517919c615435a11"
HELLASWAG_URL = "https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl"
HELLASWAG_SHA256 = "0aa3b88843990f3f10a97b9575c94d7b71fb2205240ba04ae4884d9e9c992588"


def source(name: str) -> Source:
    """The published data of benchmark `name` (lambada, wikitext2, hellaswag)."""
    if name == "lambada":
        return Source("lambada_test.jsonl", f"{base_url()}/data/lambada_test.jsonl", LAMBADA_SHA256)
    if name == "wikitext2":
        return Source("wikitext-2-raw-v1.zip", WIKITEXT2_URL, WIKITEXT2_SHA256, member="wikitext-2-raw/wiki.test.raw")
    if name == "hellaswag":
        return Source("hellaswag_val.jsonl", HELLASWAG_URL, HELLASWAG_SHA256)
    raise KeyError(name)


def fetch(name: str, progress: bool = True) -> Path:
    """The benchmark's data file in the cache, downloaded (and checked) the first time."""
    src = source(name)
    return download_checked(src.url, src.path, src.sha256, progress=progress)


# --- reading ---------------------------------------------------------------------------------------


def read_lines(path: str | os.PathLike, member: str | None = None) -> list[str]:
    """A UTF-8 text file's lines (a .bz2 file decompressed, a .zip file's `member`), named errors."""
    label = os.fspath(path)
    if not zipfile.is_zipfile(path) and not label.endswith(".bz2"):
        return read_utf8(path).split("\n")
    try:
        if label.endswith(".bz2"):
            with bz2.open(path, "rb") as f:
                raw = f.read()
        else:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
                member = member if member in names else next((n for n in names if n.endswith("wiki.test.raw")), None)
                if member is None:
                    raise BenchmarkFileError(f"{label} is a .zip without a wiki.test.raw inside")
                raw, label = z.read(member), f"{label}:{member}"
    except FileNotFoundError:
        raise FileNotFoundError(f"{label} does not exist") from None
    except IsADirectoryError:
        raise IsADirectoryError(f"{label} is a directory, not a file") from None
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise BenchmarkFileError(f"{label} cannot be read: {e}") from None
    return decode_utf8(raw, label).split("\n")


def read_lambada(path: str | os.PathLike) -> list[str]:
    """LAMBADA's passages: one JSON object with a "text" string per line (blank lines skipped)."""
    texts = []
    for n, line in enumerate(read_lines(path), 1):
        if not line.strip():
            continue
        obj = json_line(path, n, line, 'a LAMBADA passage {"text": ...}')
        if not isinstance(obj.get("text"), str) or not obj["text"].strip():
            raise BenchmarkFileError(f"{os.fspath(path)} line {n}: expected a LAMBADA passage {{\"text\": ...}} "
                                     "with a non-empty text")
        texts.append(obj["text"])
    return nonempty(texts, path, "LAMBADA passages")


def is_title(line: str) -> bool:
    """Whether a WikiText line is an article's title (" = Title = "), after closing up subheadings' "= =" runs."""
    r = line.replace("= = =", "===").replace("= =", "==").strip()
    return r.startswith("= ") and r.endswith(" =")


def split_articles(lines: list[str]) -> list[str]:
    """WikiText's lines -> its articles, each its title line and what follows, joined by newlines: a new article
    begins at every line that reads " = Title = " (" = = Section = = " lines stay inside), as the harness's
    dataset (wikitext_document_level) cuts them, text before the first title dropped when it is blank."""
    articles: list[str] = []
    current: list[str] = []
    for line in lines:
        if is_title(line):
            page = "\n".join(current)
            if page.strip():
                articles.append(page)
            current = []
        current.append(line)
    articles.append("\n".join(current))
    return articles


def read_wikitext(path: str | os.PathLike) -> list[str]:
    """WikiText's articles (split_articles) from a WikiText file or the raw release's .zip."""
    lines = read_lines(path, source("wikitext2").member)
    if not any(is_title(line) for line in lines):
        raise BenchmarkFileError(f"{os.fspath(path)}: expected WikiText, articles each starting with a ' = Title = ' "
                                 "line, and found no such line")
    return split_articles(lines)


@dataclass(frozen=True)
class Item:
    """One HellaSwag item as the harness scores it: the query, the four endings, the right one's index."""

    query: str
    endings: tuple[str, ...]
    label: int


def hellaswag_clean(text: str) -> str:
    """lm-evaluation-harness's HellaSwag preprocessing: strip, " [title]" -> ". ", other [bracketed] markers
    removed (WikiHow's artifacts), double spaces made single."""
    text = text.strip().replace(" [title]", ". ")
    return re.sub(r"\[.*?\]", "", text).replace("  ", " ")


def read_hellaswag(path: str | os.PathLike) -> list[Item]:
    """HellaSwag's items from its JSON lines or llama.cpp's six-line layout (told apart by the first line)."""
    lines = read_lines(path)
    while lines and not lines[-1].strip():
        lines.pop()
    if lines and lines[0].lstrip().startswith("{"):
        return nonempty([hellaswag_json(path, n, line) for n, line in enumerate(lines, 1) if line.strip()], path,
                        "HellaSwag items")
    if len(lines) % 6:
        raise BenchmarkFileError(f"{os.fspath(path)}: expected HellaSwag in JSON lines, or llama.cpp's layout of six "
                                 f"lines an item, and it has {len(lines)} lines, not a multiple of 6")
    items = []
    for n in range(0, len(lines), 6):
        label = lines[n + 1].strip()
        if label not in ("0", "1", "2", "3"):
            raise BenchmarkFileError(f"{os.fspath(path)} line {n + 2}: expected the label of the item starting on "
                                     f"line {n + 1}, 0 to 3, in llama.cpp's six-line layout, found {label[:40]!r}")
        # the context line is already activity_label + ": " + ctx; the harness's cleaning is applied as to JSON
        items.append(Item(hellaswag_clean(lines[n]), tuple(hellaswag_clean(e) for e in lines[n + 2 : n + 6]),
                          int(label)))
    return nonempty(items, path, "HellaSwag items")


def hellaswag_json(path, n: int, line: str) -> Item:
    """One line of HellaSwag's own JSON -> an Item, as the harness's process_docs builds its query."""
    what = "a HellaSwag item with activity_label, ctx_a, ctx_b, four endings and a label 0-3"
    obj = json_line(path, n, line, what)
    ok = all(isinstance(obj.get(k), str) for k in ("activity_label", "ctx_a", "ctx_b"))
    ok = ok and isinstance(obj.get("endings"), list) and len(obj["endings"]) == 4
    ok = ok and all(isinstance(e, str) for e in obj["endings"]) and str(obj.get("label")) in ("0", "1", "2", "3")
    if not ok:
        raise BenchmarkFileError(f"{os.fspath(path)} line {n}: expected {what} (the test split has no labels)")
    query = hellaswag_clean(obj["activity_label"] + ": " + obj["ctx_a"] + " " + obj["ctx_b"].capitalize())
    return Item(query, tuple(hellaswag_clean(e) for e in obj["endings"]), int(obj["label"]))


def json_line(path, n: int, line: str, what: str) -> dict:
    """Line n parsed as a JSON object, or an error naming the file, the line and `what` was expected."""
    try:
        obj = json.loads(line)
    except ValueError:
        obj = None
    if not isinstance(obj, dict):
        raise BenchmarkFileError(f"{os.fspath(path)} line {n}: expected {what} as one JSON object, found "
                                 f"{line.strip()[:40]!r}")
    return obj


def nonempty(docs: list, path, what: str) -> list:
    if not docs:
        raise BenchmarkFileError(f"{os.fspath(path)} holds no {what}")
    return docs
