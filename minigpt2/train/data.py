"""files -> training data: texts as one array of ids (cached by hash), random windows of it; task files as
examples, in epochs; the batches of a step."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..download import cache_dir
from ..files import read_utf8, write_atomically
from ..tasks import Example, TaskFileError, encode_examples, examples_at, is_task_file, pad_batch, read_task_file
from ..tokenizer import Tokenizer
from ..vocab import ENDOFTEXT
from .settings import TrainConfig, TrainingError

def read_documents(path: str | os.PathLike, what: str = "--data") -> list[str]:
    """A UTF-8 text file, or every .txt file of a directory (sorted by name), as strings."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise TrainingError(f"{what} {path} holds no .txt files")
    elif path.is_file():
        files = [path]
    else:
        raise TrainingError(f"{what} {path} does not exist")
    docs = []
    for f in files:
        try:
            docs.append(read_utf8(f, f"{what} "))
        except (OSError, ValueError) as e:
            raise TrainingError(str(e)) from None
    if not any(d.strip() for d in docs):
        raise TrainingError(f"{what} {path} is empty")
    return docs


def tokenize(docs: list[str], tok: Tokenizer, progress: bool = True) -> np.ndarray:
    """Documents -> one array of ids, documents joined by <|endoftext|>, with a progress bar over the bytes.

    A literal "<|endoftext|>" inside a text separates documents too (many GPT-2 datasets are written so): it
    becomes the one end-of-text token, not seven ordinary ones."""
    eot = tok.special_tokens.get(ENDOFTEXT)
    dtype = np.uint16 if tok.n_vocab <= 2**16 else np.uint32
    pieces = []
    with tqdm(total=sum(len(d) for d in docs), unit="char", unit_scale=True, desc="tokenizing", disable=not progress,
              leave=False) as bar:
        parts = [part for doc in docs for part in (doc.split(ENDOFTEXT) if eot is not None else [doc])]
        for i, part in enumerate(parts):
            if i and eot is not None:
                pieces.append(np.array([eot], dtype))
                bar.update(len(ENDOFTEXT))
            for chunk in tok.chunks(part):
                pieces.append(np.array(tok.encode_ordinary(chunk), dtype))
                bar.update(len(chunk))
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype)


def load_tokens(path: str | os.PathLike, tok: Tokenizer, what: str = "--data", progress: bool = True) -> np.ndarray:
    """The ids of the text at `path`, cached in {cache}/tokens/ by the text's and the vocabulary's hashes, so a
    second run on the same data starts at once."""
    docs = read_documents(path, what)
    key = hashlib.sha256(b"documents joined and split at <|endoftext|>")  # the rule is part of the key
    for d in docs:
        key.update(hashlib.sha256(d.encode("utf-8")).digest())
    for name, data in sorted(tok.files().items()):
        key.update(name.encode() + hashlib.sha256(data).digest())
    cached = cache_dir() / "tokens" / f"{key.hexdigest()}.npy"
    if cached.is_file():
        try:
            tokens = np.load(cached)
            os.utime(cached)  # recently used: kept longest when the cache is trimmed
            return tokens
        except (OSError, ValueError):
            pass  # damaged: tokenize again
    tokens = tokenize(docs, tok, progress)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(cached, lambda f: np.save(f, tokens))
        trim_token_cache(cached.parent, TOKEN_CACHE_BYTES)
    except OSError:
        pass  # a read-only cache only costs the time to tokenize again
    return tokens


TOKEN_CACHE_BYTES = 2 * 10**9  # {cache}/tokens/ is trimmed to this, least recently used first


def trim_token_cache(directory: Path, limit: int) -> None:
    """Delete the least recently used token files of `directory` until the rest fit in `limit` bytes (the
    newest file always stays)."""
    files = []
    for p in directory.glob("*.npy"):
        try:
            st = p.stat()
        except OSError:
            continue  # removed by another process meanwhile
        files.append((st.st_mtime, st.st_size, p))
    files.sort(reverse=True)  # newest first
    total = 0
    for i, (_, size, p) in enumerate(files):
        total += size
        if total > limit and i > 0:
            p.unlink(missing_ok=True)


def random_windows(tokens: np.ndarray, block_size: int, batch_size: int, rng: np.random.Generator,
                   ) -> tuple[np.ndarray, np.ndarray]:
    """`batch_size` random windows of block_size + 1 tokens -> (inputs [B, T], targets [B, T]: shifted by one)."""
    starts = rng.integers(0, len(tokens) - block_size, size=batch_size)  # [B]: every window fits
    windows = tokens[starts[:, None] + np.arange(block_size + 1)].astype(np.int64)  # [B, T + 1]
    return windows[:, :-1], windows[:, 1:]


@dataclass
class TextData:
    """Tokens of a text run: random windows are drawn from `train`; `val` is scored on fixed windows."""

    train: np.ndarray  # [N] ids
    val: np.ndarray  # [M] ids


@dataclass
class TaskData:
    """Examples of a task run: every training example once per epoch; all of `val` at each validation."""

    train: list[Example]
    val: list[Example]


def load_data(cfg: TrainConfig, tok: Tokenizer, progress: bool) -> TextData | TaskData:
    """--data (and --val-data) as a text run's tokens or a task run's examples."""
    task = is_task_file(cfg.data)
    if cfg.val_data is not None and is_task_file(cfg.val_data) != task:
        kind = "a .jsonl task file" if task else "text"
        raise TrainingError(f"--val-data {cfg.val_data} must be of --data's kind ({kind})")
    return task_data(cfg, tok, progress) if task else TextData(*split_data(cfg, tok, progress))


def task_data(cfg: TrainConfig, tok: Tokenizer, progress: bool) -> TaskData:
    """(training examples, validation examples): --val-data, else the file's last 10% of examples."""
    def examples(path: str, what: str) -> list[Example]:
        try:
            rows = read_task_file(path, what)
            if rows[0].completion is None:
                raise TrainingError(f"{what} {path}: multiple-choice rows (choices, answer) are for "
                                    "minigpt2.evaluate; training needs \"prompt\" and \"completion\"")
            out = encode_examples(rows, tok, progress)
        except TaskFileError as e:
            raise TrainingError(str(e)) from None
        for e in out:
            if len(e.tokens) > cfg.block_size + 1:
                raise TrainingError(f"{what} {path} line {e.line}: the example is {len(e.tokens)} tokens (prompt + "
                                    f"completion + <|endoftext|>), more than --block-size + 1 = {cfg.block_size + 1}"
                                    " (raise --block-size or shorten it)")
        return out

    train_examples = examples(cfg.data, "--data")
    if cfg.val_data is not None:
        return TaskData(train_examples, examples(cfg.val_data, "--val-data"))
    if len(train_examples) < 2:
        raise TrainingError(f"--data {cfg.data} has {len(train_examples)} example: too few to hold out a "
                            "validation example (give --val-data)")
    n_val = max(1, len(train_examples) // 10)
    return TaskData(train_examples[:-n_val], train_examples[-n_val:])


def split_data(cfg: TrainConfig, tok: Tokenizer, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """(training tokens, validation tokens): --val-data, else the last 10% of the training text."""
    tokens = load_tokens(cfg.data, tok, "--data", progress)
    need = cfg.block_size + 1
    if cfg.val_data is not None:
        val = load_tokens(cfg.val_data, tok, "--val-data", progress)
        if len(val) < need:
            raise TrainingError(f"--val-data {cfg.val_data} has {len(val)} tokens, fewer than one window of "
                                f"--block-size + 1 = {need}")
    else:
        n_val = max(need, len(tokens) // 10)
        tokens, val = tokens[:-n_val], tokens[-n_val:]
    if len(tokens) < need:
        raise TrainingError(f"--data {cfg.data} has too few tokens for one training window of --block-size + 1 = "
                            f"{need} (and a held-out tail for validation, unless --val-data is given)")
    return tokens, val


def step_examples(data: TaskData, cfg: TrainConfig, step: int) -> list[Example]:
    """The training examples of step `step` (0-based): the next batch_size x grad_accum of the epoch stream."""
    per_step = cfg.batch_size * cfg.grad_accum
    return [data.train[i] for i in examples_at(step * per_step, per_step, len(data.train), cfg.seed)]


def step_batches(data: TextData | TaskData, cfg: TrainConfig, step: int, rng: np.random.Generator,
                 ) -> tuple[list[tuple[np.ndarray, np.ndarray]], int]:
    """(the step's grad_accum micro-batches (inputs [B, T], targets [B, T]), the tokens they hold, padding not
    counted): random windows of the text, or the next examples of the epoch (task files: right-padded, the
    prompt and padding with target -1)."""
    if isinstance(data, TextData):
        batches = [random_windows(data.train, cfg.block_size, cfg.batch_size, rng) for _ in range(cfg.grad_accum)]
        return batches, sum(int(x.size) for x, _ in batches)
    examples = step_examples(data, cfg, step)
    batches = [pad_batch(examples[i : i + cfg.batch_size]) for i in range(0, len(examples), cfg.batch_size)]
    return batches, sum(len(e.tokens) - 1 for e in examples)
