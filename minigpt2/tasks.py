"""prompt/completion pairs -> token rows whose completion alone is scored: task files, batches, their NLL.

Fine-tuning on a task maximises sum_i log P(y_i | x_i): the likelihood of each completion y given its prompt
x, never of the prompt itself. A task file (`.jsonl`) holds one JSON object per line, of one of two kinds:

    {"prompt": "2 0 1 =", "completion": " 0 1 2"}                        trained on and scored
    {"prompt": "Review: dull. Sentiment:", "choices": [" good", " bad"], "answer": 1}     scored (the evaluate package)

The rule for a prompt/completion example:

    tokens = encode(prompt) + encode(completion) + [<|endoftext|>]
    inputs = tokens[:-1], targets = tokens[1:]; the targets that are prompt tokens are -1 (no loss)

so the scored tokens are every completion token and the final <|endoftext|> (the model learns to stop),
each conditioned on everything before it. An empty prompt becomes [<|endoftext|>], so that the first
completion token has something to be conditioned on (as GPT-2 starts a document). Prompt and completion are
encoded separately, as the model will see them when it is prompted; text is always ordinary text (a literal
"<|endoftext|>" in a field is seven ordinary tokens), the end-of-text is the rule's own.

A batch right-pads its rows to the longest one with targets -1: causal attention means the padding after a
row's last token can never change the row's real positions, and it gets no loss.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .backward import lm_head_and_loss
from .checks import is_whole
from .config import GPT2Config
from .files import read_utf8
from .model import transformer
from .params import Params
from .tokenizer import Tokenizer
from .vocab import ENDOFTEXT

TASK_SUFFIX = ".jsonl"


class TaskFileError(ValueError):
    """A task file that cannot be used; the message names the file, the line and the problem."""


def is_task_file(path: str | os.PathLike) -> bool:
    """Whether `path` is a task file rather than text: its name ends in .jsonl, or its first non-empty line is a
    JSON object with a "prompt" (JSON lines under another name). A .json file that is not JSON lines is
    refused (TaskFileError), never read as text."""
    if str(path).lower().endswith(TASK_SUFFIX):
        return True
    if not os.path.isfile(path):
        return False  # a directory of texts, or nothing (the reader says so)
    first = first_line(path)
    try:
        row = json.loads(first) if first is not None else None
    except ValueError:
        row = None
    if isinstance(row, dict) and "prompt" in row:
        return True
    if str(path).lower().endswith(".json"):
        raise TaskFileError(f"{path} is a .json file but not a task file: a task file holds one JSON object per line "
                            "({\"prompt\": ..., \"completion\": ...}), named .jsonl; to train on its text as it is, "
                            "rename it .txt")
    return False


def first_line(path: str | os.PathLike, limit: int = 1 << 20) -> str | None:
    """The first non-empty line of a file (read from its first `limit` bytes), or None."""
    try:
        with open(path, "rb") as f:
            head = f.read(limit)
    except OSError:
        return None  # unreadable: the reader of the file says why
    for line in head.decode("utf-8", errors="replace").splitlines():
        if line.strip():
            return line
    return None


# --- reading -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskRow:
    """One line of a task file: a prompt with a completion, or with choices and the index of the answer."""

    line: int  # 1-based line number in its file
    prompt: str
    completion: str | None = None
    choices: tuple[str, ...] | None = None
    answer: int | None = None


def read_task_file(path: str | os.PathLike, what: str = "task file") -> list[TaskRow]:
    """Every row of a .jsonl task file, checked; TaskFileError names the file, the line and the problem.

    Blank lines are skipped; fields other than the ones above are ignored. A file holds one kind of row.
    """
    path = Path(path)
    try:
        text = read_utf8(path, f"{what} ")
    except (OSError, ValueError) as e:
        raise TaskFileError(str(e)) from None
    rows: list[TaskRow] = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        row = parse_row(line, n, f"{what} {path} line {n}")
        if rows and (row.choices is None) != (rows[0].choices is None):
            kinds = {True: "prompt + completion", False: "prompt + choices + answer"}
            raise TaskFileError(f"{what} {path} line {n}: a {kinds[row.choices is None]} row, but line {rows[0].line} "
                                f"is a {kinds[rows[0].choices is None]} row; a task file holds one kind")
        rows.append(row)
    if not rows:
        raise TaskFileError(f"{what} {path} is empty: it holds no examples (one JSON object per line)")
    return rows


def parse_row(line: str, n: int, where: str) -> TaskRow:
    """One JSON line -> TaskRow; `where` ("FILE line N") starts every error."""
    try:
        obj = json.loads(line)
    except ValueError as e:
        raise TaskFileError(f"{where}: not JSON ({e})") from None
    if not isinstance(obj, dict):
        raise TaskFileError(f"{where}: a JSON {type(obj).__name__}, expected an object with \"prompt\" and "
                            "\"completion\" (or \"choices\" and \"answer\")")
    if "prompt" not in obj:
        raise TaskFileError(f"{where}: no \"prompt\" field")
    if not isinstance(obj["prompt"], str):
        raise TaskFileError(f"{where}: \"prompt\" is a {json_type(obj['prompt'])}, expected a string")
    if "choices" in obj or "answer" in obj:
        for field in ("choices", "answer"):
            if field not in obj:
                raise TaskFileError(f"{where}: no \"{field}\" field (a multiple-choice row has both)")
        choices, answer = obj["choices"], obj["answer"]
        if not isinstance(choices, list) or not choices:
            raise TaskFileError(f"{where}: \"choices\" must be a non-empty list of strings")
        for i, c in enumerate(choices):
            if not isinstance(c, str):
                raise TaskFileError(f"{where}: choice {i} is a {json_type(c)}, expected a string")
            if not c:
                raise TaskFileError(f"{where}: choice {i} is empty")
        if not is_whole(answer):
            raise TaskFileError(f"{where}: \"answer\" is a {json_type(answer)}, expected the index of a choice")
        if not 0 <= answer < len(choices):
            raise TaskFileError(f"{where}: \"answer\" {answer} is out of range for {len(choices)} choices "
                                f"(0 .. {len(choices) - 1})")
        return TaskRow(n, obj["prompt"], choices=tuple(choices), answer=answer)
    if "completion" not in obj:
        raise TaskFileError(f"{where}: no \"completion\" field")
    if not isinstance(obj["completion"], str):
        raise TaskFileError(f"{where}: \"completion\" is a {json_type(obj['completion'])}, expected a string")
    if not obj["completion"]:
        raise TaskFileError(f"{where}: the completion is empty (nothing to learn or score)")
    return TaskRow(n, obj["prompt"], completion=obj["completion"])


def json_type(x) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}.get(
        type(x), "number")


# --- examples ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Example:
    """One prompt/completion pair as ids: tokens [n] and the number of prompt tokens (never scored)."""

    tokens: np.ndarray  # [n] int64: prompt + completion + <|endoftext|>
    n_prompt: int  # >= 1
    line: int = 0  # the task file's line, for messages

    @property
    def n_scored(self) -> int:
        return len(self.tokens) - self.n_prompt


def eot_id_of(tok: Tokenizer) -> int:
    eot = tok.special_tokens.get(ENDOFTEXT)
    if eot is None:
        raise TaskFileError(f"the tokenizer has no {ENDOFTEXT} token, which ends every task example")
    return eot


def encode_example(tok: Tokenizer, prompt: str, completion: str, line: int = 0) -> Example:
    """The module's rule: encode(prompt) + encode(completion) + [<|endoftext|>], the prompt unscored.

    >>> from minigpt2 import Tokenizer
    >>> tok = Tokenizer.train("ab ab ba", 258, progress=False)
    >>> encode_example(tok, "", "ab").n_prompt  # an empty prompt is <|endoftext|>
    1
    """
    eot = eot_id_of(tok)
    prompt_ids = tok.encode_ordinary(prompt) or [eot]
    ids = prompt_ids + tok.encode_ordinary(completion) + [eot]
    return Example(np.array(ids, dtype=np.int64), len(prompt_ids), line)


def encode_examples(rows: list[TaskRow], tok: Tokenizer, progress: bool = False) -> list[Example]:
    """The prompt/completion rows of a task file as Examples, with a progress bar."""
    return [encode_example(tok, r.prompt, r.completion, r.line)
            for r in tqdm(rows, desc="tokenizing", unit="example", disable=not progress, leave=False)]


def pad_batch(examples: list[Example], pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Examples -> (inputs [B, T], targets [B, T]), right-padded to the longest; targets -1 on the prompt
    and the padding, so only completion tokens and the final <|endoftext|> are scored."""
    T = max(len(e.tokens) for e in examples) - 1
    inputs = np.full((len(examples), T), pad_id, dtype=np.int64)  # [B, T]
    targets = np.full((len(examples), T), -1, dtype=np.int64)  # [B, T]
    for b, e in enumerate(examples):
        n = len(e.tokens) - 1
        inputs[b, :n] = e.tokens[:-1]
        targets[b, e.n_prompt - 1 : n] = e.tokens[e.n_prompt :]  # the target at position t is token t + 1
    return inputs, targets


# --- the order of a run: every example once per epoch ---------------------------------------------


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order in which epoch `epoch` visits n examples: a permutation drawn from (seed, epoch) alone."""
    return np.random.default_rng([seed, 2, epoch]).permutation(n)


def examples_at(start: int, count: int, n: int, seed: int) -> list[int]:
    """Indices of examples start .. start + count - 1 of the run's stream: epoch 0's order, then epoch 1's, ...

    A function of the position alone (no generator state), so a resumed run draws exactly what it would have.
    """
    out: list[int] = []
    while len(out) < count:
        epoch, i = divmod(start + len(out), n)
        out.extend(epoch_order(n, seed, epoch)[i : i + count - len(out)].tolist())
    return out


# --- scoring: the NLL of the scored tokens ----------------------------------------------------------


def length_batches(examples: list[Example], batch_size: int) -> list[list[Example]]:
    """Examples grouped `batch_size` at a time in order of length, so that each batch pads little."""
    ordered = sorted(examples, key=lambda e: len(e.tokens))
    return [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]


def completion_nll(examples: list[Example], params: Params, config: GPT2Config, batch_size: int = 8,
                   progress: bool = False, desc: str = "validating") -> tuple[float, int]:
    """(total NLL in nats, scored tokens) of every example's completion + <|endoftext|>, forward only,
    batched by length; the mean per scored token is the first over the second."""
    total, count = 0.0, 0
    batches = length_batches(examples, batch_size)
    for batch in tqdm(batches, desc=desc, unit="batch", disable=not progress, leave=False):
        inputs, targets = pad_batch(batch)  # [B, T] each
        h = transformer(inputs, params, config)  # [B, T, C]
        mean = lm_head_and_loss(h, params["wte"], targets, with_grads=False)[0]
        n = int((targets >= 0).sum())
        total += mean * n
        count += n
    return total, count
