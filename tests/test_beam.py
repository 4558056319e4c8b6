"""Beam search and stop strings, token for token against transformers (GPT2LMHeadModel.generate on the same
weights, StopStringCriteria on the same vocabulary), and their bad input."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minigpt2 import GPT2, GPT2Config, Tokenizer
from minigpt2.beam import beam_search
from minigpt2.config import ArgumentError
from minigpt2.decoding import StopStrings

REPO = Path(__file__).resolve().parents[1]
EOT = 22  # a stand-in end of text that this model picks now and then: some beams end early, some run out


def require(name):
    return pytest.importorskip(name, reason=f"{name} is the reference here: pip install -e '.[reference]'")


@pytest.fixture(scope="module")
def peaked():
    """A small random GPT-2 with weights large enough that the beams' scores are not ties."""
    return GPT2.init(GPT2Config(n_vocab=64, n_ctx=64, n_embd=32, n_head=4, n_layer=2), seed=3, std=0.3)


@pytest.fixture(scope="module")
def hf(peaked):
    require("torch")
    require("transformers")
    from .reference import hf_model

    return hf_model(peaked)


def prompts(n=20, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 64, size=int(rng.integers(2, 9))).tolist() for _ in range(n)]


def transformers_beams(hf, prompt, new, settings):
    """transformers' finished hypotheses (new ids, through the end of text if one ended them) and scores."""
    import torch

    k = settings.get("num_return_sequences", 1)
    with torch.no_grad():
        out = hf.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                          max_new_tokens=new, do_sample=False, eos_token_id=EOT, pad_token_id=EOT,
                          output_scores=True, return_dict_in_generate=True, **settings)
    rows = []
    for i in range(k):
        ids = out.sequences[i, len(prompt):].tolist()
        rows.append((ids[: ids.index(EOT) + 1] if EOT in ids else ids, float(out.sequences_scores[i])))
    return rows


BEAM_SETTINGS = [
    dict(num_beams=2),
    dict(num_beams=4, length_penalty=0.6),
    dict(num_beams=4, length_penalty=2.0, early_stopping=True),
    dict(num_beams=5, early_stopping="never", num_return_sequences=3),
    dict(num_beams=4, length_penalty=2.0, early_stopping="never"),
    dict(num_beams=4, length_penalty=-1.0, num_return_sequences=4),
    dict(num_beams=4, no_repeat_ngram_size=2),
    dict(num_beams=5, no_repeat_ngram_size=3, early_stopping=True, num_return_sequences=2),
    dict(num_beams=4, min_new_tokens=20, repetition_penalty=1.3),
]


@pytest.mark.reference
@pytest.mark.parametrize("settings", BEAM_SETTINGS, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()))
def test_beam_search_finds_transformers_hypotheses(peaked, hf, settings):
    """20 prompts x 32 new tokens: the same hypotheses in the same order, the same scores (float32 sums)."""
    ended = 0
    for prompt in prompts():
        ours = beam_search(peaked, np.array(prompt), 32, eot_id=EOT,
                           **{"num_return_sequences": 1, **settings})
        theirs = transformers_beams(hf, prompt, 32, settings)
        assert [ids for ids, _ in ours] == [ids for ids, _ in theirs], prompt
        np.testing.assert_allclose([s for _, s in ours], [s for _, s in theirs], rtol=2e-5)
        ended += sum(ids[-1:] == [EOT] for ids, _ in ours)
    assert ended, "some hypothesis ends with the end of text, so that ending is tested too"


@pytest.mark.reference
def test_generate_with_beams_returns_the_ids_without_the_end_of_text(peaked, hf):
    for prompt in prompts(6, seed=1):
        theirs = transformers_beams(hf, prompt, 24, dict(num_beams=4, num_return_sequences=2))
        ours = peaked.generate(prompt, 24, temperature=0, num_beams=4, num_return_sequences=2, eot_id=EOT)
        assert ours == [ids[:-1] if ids[-1:] == [EOT] else ids for ids, _ in theirs]
        assert peaked.generate(prompt, 24, temperature=0, num_beams=4, eot_id=EOT) == ours[0]


def test_one_beam_is_greedy_and_beams_never_score_below_it(peaked):
    """Beam search's best hypothesis scores at least what greedy's continuation scores, when neither ends."""
    from minigpt2.ops import log_softmax

    for prompt in prompts(5, seed=2):
        greedy = peaked.generate(prompt, 10, temperature=0, stop_at_eot=False)
        (best, score), = beam_search(peaked, np.array(prompt), 10, 4, length_penalty=0.0)
        ids = np.array(prompt + greedy)
        logp = log_softmax(peaked(ids[None])[0].astype(np.float64))  # [T, V]
        greedy_score = sum(logp[len(prompt) - 1 + t, greedy[t]] for t in range(10))
        assert score >= greedy_score - 1e-4


def test_the_beams_run_as_one_batch_through_one_cache(peaked, monkeypatch):
    import minigpt2.beam as beam

    batches = []
    real = beam.gpt2

    def counting(ids, *args, **kwargs):
        batches.append(ids.shape)
        return real(ids, *args, **kwargs)

    monkeypatch.setattr(beam, "gpt2", counting)
    beam_search(peaked, np.array([1, 2, 3]), 6, 4, eot_id=None)
    assert batches[0] == (1, 3), "the prompt runs once"
    assert batches[1:] == [(4, 1)] * 5, "then one token per beam per step, all beams in one call"


@pytest.mark.parametrize("kwargs, name", [
    (dict(num_beams=0, temperature=0), "num_beams"),
    (dict(num_beams=2.5, temperature=0), "num_beams"),
    (dict(num_beams=4), "temperature"),
    (dict(num_beams=4, temperature=0.7), "temperature"),
    (dict(num_beams=2, temperature=0, num_return_sequences=3), "num_return_sequences"),
    (dict(num_return_sequences=2), "num_return_sequences"),
    (dict(num_beams=2, temperature=0, early_stopping="sometimes"), "early_stopping"),
    (dict(num_beams=2, temperature=0, length_penalty=float("nan")), "length_penalty"),
    (dict(num_beams=2, temperature=0, top_k=5), "top_k"),
    (dict(num_beams=2, temperature=0, num_samples=2), "num_samples"),
    (dict(num_beams=2, temperature=0, stop=["x"]), "stop"),
    (dict(stop=[""]), "stop"),
    (dict(stop="\n"), "stop"),
    (dict(stop=["\n"]), "stop"),  # no tokenizer to spell the ids with
    (dict(min_p=1.5), "min_p"),
])
def test_bad_decoding_arguments_are_named(peaked, kwargs, name):
    with pytest.raises(ArgumentError) as e:
        peaked.generate([1, 2, 3], 5, **kwargs)
    assert e.value.name == name


def test_beams_must_fit_in_the_context(peaked):
    with pytest.raises(ArgumentError, match="must fit in 64"):
        peaked.generate(list(range(40)), 30, temperature=0, num_beams=2)


# --- stop strings -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    return GPT2.from_pretrained("tiny"), Tokenizer.from_pretrained("tiny")


@pytest.fixture(scope="module")
def hf_tiny_tokenizer(tiny, tmp_path_factory):
    require("torch")
    transformers = require("transformers")
    d = tmp_path_factory.mktemp("tiny-hf")
    tiny[0].save(d, tiny[1], format="huggingface")
    return transformers.GPT2TokenizerFast.from_pretrained(d)


def crafted(tok):
    """(text, stop strings): a stop string split over two tokens, one inside a longer token, one reaching
    back into the prompt, one with no match, several, and one of Chinese text (bytes of a character split)."""
    return [
        ("The return value of the function is called", ["e fun"]),  # split: "the" + " function"
        ("The return value of the function is called", ["unct"]),  # inside " function"
        ("The return value of the function is called", ["lue of"]),
        ("The return value of the function is called", ["zebra"]),
        ("The return value of the function is called", ["is", "of the"]),
        ("The return value\n\nof the function", ["\n\n"]),
        ("返回值是函数的结果", ["函数"]),
    ]


@pytest.mark.reference
def test_stop_strings_end_where_transformers_stop_string_criteria_does(tiny, hf_tiny_tokenizer):
    import torch
    from transformers.generation.stopping_criteria import StopStringCriteria

    _, tok = tiny
    for text, stops in crafted(tok):
        ids = tok.encode(text)
        criteria = StopStringCriteria(hf_tiny_tokenizer, stops)
        theirs = [bool(criteria(torch.tensor([ids[: n + 1]]), None)[0]) for n in range(1, len(ids))]
        matcher = StopStrings(stops, tok, 1, np.array(ids[:1]))
        ours = [matcher.push(0, i) is not None for i in ids[1:]]
        first = theirs.index(True) if True in theirs else len(theirs)
        assert ours[: first + 1] == theirs[: first + 1], (text, stops)  # the same first stop, nothing before


def test_generate_with_stop_keeps_the_token_that_completes_it_and_nothing_after(tiny):
    model, tok = tiny
    prompt = tok.encode("The return value of the function is")
    free = model.generate(prompt, 40, temperature=0, stop_at_eot=False)
    text = tok.decode(free)
    stop = text[text.index(".") - 2 : text.index(".") + 1]  # ends inside the text's first sentence
    ids = model.generate(prompt, 40, temperature=0, stop=[stop], tokenizer=tok)
    assert ids == free[: len(ids)]
    assert stop in tok.decode(ids) and stop not in tok.decode(ids[:-1])
    samples = model.generate(prompt, 40, seed=0, num_samples=3, stop=["."], tokenizer=tok)
    for s in samples:
        assert "." not in tok.decode(s[:-1])


def run_generate(*args):
    return subprocess.run([sys.executable, "-m", "minigpt2.generate", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=120, env={"MINIGPT2_BASE_URL": "http://127.0.0.1:9/", "PATH": ""})


def test_the_command_line_prints_through_the_stop_string_and_never_past_it(tiny):
    model, tok = tiny
    prompt = "The return value of the function is"
    text = tok.decode(model.generate(tok.encode(prompt), 40, temperature=0, stop_at_eot=False))
    stop = "unc"  # inside a token (" function"): the token's rest is not printed
    assert stop in text
    for flags in ([], ["--no-stream"]):
        r = run_generate(prompt, "--model", "tiny", "--temperature", "0", "--max-new-tokens", "40", "--stop", stop,
                         *flags)
        assert r.returncode == 0, r.stderr
        assert r.stdout == text[: text.index(stop) + len(stop)] + "\n"


def test_the_command_line_runs_beam_search_as_the_library_does(tiny):
    model, tok = tiny
    prompt = "The return value of the function is"
    best = model.generate(tok.encode(prompt), 20, temperature=0, num_beams=3, num_return_sequences=2,
                          no_repeat_ngram_size=3)
    r = run_generate(prompt, "--model", "tiny", "--num-beams", "3", "--num-return-sequences", "2",
                     "--no-repeat-ngram-size", "3", "--max-new-tokens", "20")
    assert r.returncode == 0, r.stderr
    assert [tok.decode(b) for b in best] == [block.split("\n", 1)[1].rstrip("\n")
                                             for block in r.stdout.split("=" * 30 + " beam ")[1:]]


@pytest.mark.parametrize("flags, named", [
    (["--num-beams", "0"], "--num-beams"),
    (["--num-beams", "2", "--num-return-sequences", "3"], "--num-return-sequences"),
    (["--num-beams", "2", "--temperature", "0.7"], "--temperature"),
    (["--num-beams", "2", "--top-p", "0.9"], "--top-p"),
    (["--stop", ""], "--stop"),
    (["--min-p", "2"], "--min-p"),
    (["--early-stopping", "maybe"], "--early-stopping"),
])
def test_bad_decoding_flags_get_one_line(flags, named):
    r = run_generate("Hello", "--model", "tiny", "--max-new-tokens", "3", *flags)
    assert r.returncode == 2
    lines = [x for x in r.stderr.splitlines() if x.strip() and "%|" not in x]
    assert len(lines) == 1 and named in lines[0], r.stderr
    json.dumps(lines)  # printable
