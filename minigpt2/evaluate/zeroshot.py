r"""documents -> the zero-shot figures of GPT-2's paper, each scored as lm-evaluation-harness 0.4.13 scores it
(its task files lambada/lambada_openai.yaml, wikitext/wikitext.yaml, hellaswag/hellaswag.yaml and their Python).

    lambada     (the harness's lambada_openai) context = the passage without its last word, target = " " + the
                last word (words as text.split(" ") cuts them); acc = the share of passages whose every target
                token is the argmax, perplexity = exp(-mean over passages of log P(target | context))
    wikitext2   (wikitext) each article through the harness's WikiText detokenizer, scored whole in rolling
                windows of the model's context (loglikelihood.rolling_windows), summed over the articles with
                words counted as len(re.split(r"\s+", article)) and bytes as its UTF-8 bytes, both in the
                article *before* detokenizing (as the harness counts them):
                word_perplexity = exp(-ll / words), byte_perplexity = exp(-ll / bytes), bits_per_byte = -ll / bytes / ln 2
    hellaswag   (hellaswag) the query activity_label + ": " + ctx_a + " " + ctx_b.capitalize() and the four
                endings cleaned (datasets.hellaswag_clean), each ending scored as " " + ending after the query;
                acc = the share whose largest log P is the label's, acc_norm = the same with each log P divided by
                the ending's length in characters; ties go to the first ending

Every request is encoded as the harness encodes it (`harness_pair`): the context's trailing whitespace moved to
the continuation, then the continuation's ids are what encode(context + continuation) adds to encode(context).
A request longer than the model's context keeps its last n_ctx + 1 tokens (`truncated` counts the documents
with one); beyond the harness, which refuses them, a continuation longer than the context itself is scored on
its last n_ctx tokens (counted as truncated too). Every result reports n, the documents scored.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from ..checks import is_whole
from ..config import ArgumentError
from ..tokenizer import Tokenizer
from ..vocab import ENDOFTEXT, EOT_ID
from . import datasets
from .loglikelihood import check_batch_size, harness_row, loglikelihoods, rolling_loglikelihoods

BENCHMARKS = ("lambada", "wikitext2", "hellaswag")


@dataclass
class Result:
    """A benchmark's figures ({"acc": ..., "n": ...}) and one sample per document (lm-eval's --log_samples)."""

    task: str
    figures: dict
    samples: list[dict] = field(default_factory=list)


def zero_shot(model, tokenizer: Tokenizer, task: str, path: str | os.PathLike | None = None, limit: int | None = None,
              batch_size: int = 8, progress: bool = False) -> Result:
    """Score `task` (lambada, wikitext2, hellaswag) on the file at `path`, by default the published data (downloaded
    once into the cache), its first `limit` documents if given."""
    docs = read_benchmark(task, datasets.fetch(task, progress) if path is None else path, limit)
    return score_benchmark(model, tokenizer, task, docs, batch_size, progress)


def check_task(task: str) -> None:
    if task not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {task!r}: the known ones are {', '.join(BENCHMARKS)}")


def read_benchmark(task: str, path: str | os.PathLike, limit: int | None = None) -> list:
    """The documents of `task` in the file at `path` (datasets.py's readers), the first `limit` of them."""
    check_task(task)
    if limit is not None and (not is_whole(limit) or limit < 1):
        raise ArgumentError("limit", f"must be a positive number of documents, got {limit!r}")
    read = {"lambada": datasets.read_lambada, "wikitext2": datasets.read_wikitext,
            "hellaswag": datasets.read_hellaswag}[task]
    return read(path)[:limit]


def score_benchmark(model, tokenizer: Tokenizer, task: str, docs: list, batch_size: int = 8, progress: bool = False
                    ) -> Result:
    """Score the documents of `task` by its protocol (the module's docstring)."""
    check_task(task)
    check_batch_size(batch_size)
    score = {"lambada": score_lambada, "wikitext2": score_wikitext2, "hellaswag": score_hellaswag}[task]
    figures, samples = score(model, tokenizer, docs, batch_size, progress)
    return Result(task, figures, samples)


def harness_pair(tokenizer: Tokenizer, context: str, continuation: str,
                 context_ids: dict[str, list[int]] | None = None) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) as the harness encodes a loglikelihood request (its _encode_pair); an
    empty context is [<|endoftext|>]. `context_ids` memoizes the contexts' encodings (HellaSwag's query is the
    context of all four endings)."""
    if not context:
        return [tokenizer.special_tokens.get(ENDOFTEXT, EOT_ID)], tokenizer.encode_ordinary(continuation)
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = tokenizer.encode_ordinary(context + continuation)
    memo = {} if context_ids is None else context_ids
    if context not in memo:
        memo[context] = tokenizer.encode_ordinary(context)
    return memo[context], whole[len(memo[context]):]


def harness_pairs(tokenizer: Tokenizer, pairs: list[tuple[str, str]], progress: bool = False, desc: str = ""
                  ) -> list[tuple[list[int], list[int]]]:
    """harness_pair of every (context, continuation), each context encoded once, with a progress bar."""
    memo: dict[str, list[int]] = {}
    return [harness_pair(tokenizer, c, x, memo) for c, x in
            tqdm(pairs, desc=f"tokenizing {desc}".strip(), unit="request", disable=not progress, leave=False)]


def n_truncated(model, requests: list[tuple[list[int], list[int]]], per_document: int = 1) -> int:
    """How many documents (each `per_document` requests in a row) have a request longer than the model's context
    + 1 (its context loses its first tokens)."""
    long = [harness_row(c, x, model.config.n_ctx)[2] for c, x in requests]
    return sum(any(long[i : i + per_document]) for i in range(0, len(long), per_document))


# --- LAMBADA --------------------------------------------------------------------------------------


def lambada_split(text: str) -> tuple[str, str]:
    """(context, target): the passage cut at its last space, the target keeping the space.

    >>> lambada_split("He handed her the keys")
    ('He handed her the', ' keys')
    """
    words = text.split(" ")
    return " ".join(words[:-1]), " " + words[-1]


def score_lambada(model, tokenizer, texts: list[str], batch_size: int, progress: bool) -> tuple[dict, list[dict]]:
    pairs = [lambada_split(t) for t in texts]
    requests = harness_pairs(tokenizer, pairs, progress, "lambada")
    scores = loglikelihoods(model, requests, batch_size, progress, desc="lambada")
    figures = {"acc": float(np.mean([greedy for _, greedy in scores])),
               "perplexity": math.exp(-float(np.mean([ll for ll, _ in scores]))),
               "n": len(texts), "truncated": n_truncated(model, requests)}
    samples = [{"doc_id": i, "gold": target, "acc": greedy,
                "continuations": [{"text": target, "loglikelihood": ll, "tokens": len(ids), "is_greedy": greedy}]}
               for i, ((_, target), (_, ids), (ll, greedy)) in enumerate(zip(pairs, requests, scores))]
    return figures, samples


# --- WikiText-2 -----------------------------------------------------------------------------------


def wikitext_detokenize(text: str) -> str:
    """lm-evaluation-harness's WikiText detokenizer (tasks/wikitext/preprocess_wikitext.py), rule for rule: undo
    the release's spacing around punctuation, " @-@ " and the other number separators, brackets and quotes.

    >>> wikitext_detokenize(" = = Career = = \\n In 2000 , he had a guest @-@ starring role . \\n")
    ' == Career ==\\nIn 2000, he had a guest-starring role.\\n'
    """
    s = text.replace("s '", "s'")
    s = re.sub(r"/' [0-9]/", r"/'[0-9]/", s)
    for spaced, joined in ((" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", "."), (" : ", ": "), (" ; ", "; "),
                           (" . ", ". "), (" ! ", "! "), (" ? ", "? "), (" , ", ", ")):
        s = s.replace(spaced, joined)
    s = re.sub(r"\(\s*([^\)]*?)\s*\)", r"(\1)", s)
    s = re.sub(r"\[\s*([^\]]*?)\s*\]", r"[\1]", s)
    s = re.sub(r"{\s*([^}]*?)\s*}", r"{\1}", s)
    s = re.sub(r"\"\s*([^\"]*?)\s*\"", r'"\1"', s)
    s = re.sub(r"'\s*([^']*?)\s*'", r"'\1'", s)
    for spaced, joined in (("= = = =", "===="), ("= = =", "==="), ("= =", "=="), (" \N{DEGREE SIGN} ", "\N{DEGREE SIGN}"),
                           (" \n", "\n"), ("\n ", "\n"), (" N ", " 1 "), (" 's", "'s")):
        s = s.replace(spaced, joined)
    return s


def score_wikitext2(model, tokenizer, articles: list[str], batch_size: int, progress: bool
                    ) -> tuple[dict, list[dict]]:
    ids = [tokenizer.encode_ordinary(wikitext_detokenize(a))
           for a in tqdm(articles, desc="tokenizing wikitext2", unit="article", disable=not progress, leave=False)]
    lls = rolling_loglikelihoods(model, ids, tokenizer.special_tokens.get(ENDOFTEXT, EOT_ID), batch_size, progress,
                                 desc="wikitext2")
    words = [len(re.split(r"\s+", a)) for a in articles]  # the harness's count, empty ends included
    nbytes = [len(a.encode("utf-8")) for a in articles]
    ll = sum(lls)
    figures = {"word_perplexity": math.exp(-ll / sum(words)), "byte_perplexity": math.exp(-ll / sum(nbytes)),
               "bits_per_byte": -ll / sum(nbytes) / math.log(2), "n": len(articles)}
    samples = [{"doc_id": i, "words": w, "bytes": b,
                "continuations": [{"loglikelihood": x, "tokens": len(t), "is_greedy": None}]}
               for i, (x, t, w, b) in enumerate(zip(lls, ids, words, nbytes))]
    return figures, samples


# --- HellaSwag ------------------------------------------------------------------------------------


def score_hellaswag(model, tokenizer, items: list[datasets.Item], batch_size: int, progress: bool
                    ) -> tuple[dict, list[dict]]:
    requests = harness_pairs(tokenizer, [(item.query, " " + e) for item in items for e in item.endings], progress,
                             "hellaswag")
    scores = loglikelihoods(model, requests, batch_size, progress, desc="hellaswag")
    right = right_norm = 0
    samples = []
    for i, item in enumerate(items):
        mine = scores[4 * i : 4 * i + 4]
        lls = np.array([ll for ll, _ in mine])  # [4]
        lengths = np.array([float(len(e)) for e in item.endings])  # [4]: characters, as the harness's acc_norm
        acc, acc_norm = int(np.argmax(lls)) == item.label, int(np.argmax(lls / lengths)) == item.label
        right, right_norm = right + acc, right_norm + acc_norm
        samples.append({"doc_id": i, "gold": item.label, "acc": acc, "acc_norm": acc_norm, "continuations": [
            {"text": " " + e, "loglikelihood": ll, "tokens": len(requests[4 * i + j][1]), "is_greedy": greedy}
            for j, (e, (ll, greedy)) in enumerate(zip(item.endings, mine))]})
    figures = {"acc": right / len(items), "acc_norm": right_norm / len(items), "n": len(items),
               "truncated": n_truncated(model, requests, per_document=4)}
    return figures, samples
