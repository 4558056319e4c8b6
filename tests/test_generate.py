"""Sampling and the generation loop: statistics against exact distributions, greedy against transformers and
the TensorFlow-written fixture, the CLI as a user runs it."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minigpt2 import GPT2, GPT2Config, Tokenizer
from minigpt2.sample import apply_repetition_penalty, sample, top_k_filter, top_p_filter

from .conftest import one_line_error, run_module

REPO = Path(__file__).resolve().parents[1]
LOGITS = np.array([2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, 3.0, 0.2, 1.2], dtype=np.float32)


def exact_distribution(logits, temperature=1.0, top_k=None, top_p=None):
    """Worked out independently of minigpt2.sample: sort, cut, renormalise (float64, plain Python)."""
    z = np.exp(logits.astype(np.float64) / temperature)
    p = z / z.sum()
    order = sorted(range(len(p)), key=lambda i: -p[i])
    allowed = order[:top_k] if top_k else order
    if top_p is not None:
        q = np.array([p[i] for i in allowed]) / sum(p[i] for i in allowed)
        mass, nucleus = 0.0, []
        for i, qi in zip(allowed, q):
            nucleus.append(i)
            mass += qi
            if mass >= top_p:
                break
        allowed = nucleus
    out = np.zeros_like(p)
    out[allowed] = p[allowed]
    return out / out.sum()


@pytest.mark.parametrize("options", [
    dict(temperature=1.0), dict(temperature=0.5), dict(temperature=2.0), dict(top_k=3),
    dict(top_p=0.8), dict(temperature=0.7, top_k=5, top_p=0.9), dict(top_p=0.5), dict(top_p=0.3),
])
def test_draws_follow_the_exact_distribution(options):
    from scipy.stats import chisquare

    n = 40_000
    rng = np.random.default_rng(1234)
    ids = sample(np.tile(LOGITS, (n, 1)), rng, **options)  # n draws in one batch
    counts = np.bincount(ids, minlength=len(LOGITS))
    expected = exact_distribution(LOGITS, **options)
    assert np.all(counts[expected == 0] == 0), "filtered tokens are never drawn"
    support = expected > 0
    if support.sum() == 1:  # a single token left: it is always drawn
        assert counts[support] == n
        return
    result = chisquare(counts[support], n * expected[support])
    assert result.pvalue > 1e-3, (counts, n * expected)


def test_top_p_keeps_the_token_that_crosses_p():
    logits = np.log(np.array([0.5, 0.3, 0.2]))
    assert np.isfinite(top_p_filter(logits, 0.6)).tolist() == [True, True, False]  # 0.5 < 0.6: 0.3 crosses, kept
    assert np.isfinite(top_p_filter(logits, 0.5)).tolist() == [True, False, False]  # 0.5 reaches p on its own
    assert np.isfinite(top_p_filter(logits, 1.0)).all()


def test_top_k_keeps_ties_and_k_tokens():
    assert np.isfinite(top_k_filter(np.array([1.0, 3.0, 2.0, 3.0]), 2)).tolist() == [False, True, False, True]
    assert np.isfinite(top_k_filter(np.array([1.0, 3.0, 2.0, 2.0]), 2)).tolist() == [False, True, True, True]


def test_greedy_choices_equal_argmax():
    logits = np.random.default_rng(0).standard_normal((50, 100)).astype(np.float32)
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(sample(logits, rng, temperature=0), logits.argmax(-1))
    np.testing.assert_array_equal(sample(logits, rng, top_k=1), logits.argmax(-1))


def test_repetition_penalty_by_hand():
    out = apply_repetition_penalty(np.array([2.0, -2.0, 1.0], np.float32), [0, 1, 1], penalty=2.0)
    assert out.tolist() == [1.0, -4.0, 1.0]


@pytest.mark.parametrize("bad", [dict(temperature=-1), dict(top_p=0.0), dict(top_p=1.5), dict(top_k=0),
                                 dict(temperature=float("nan"))])
def test_bad_sampling_arguments(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        sample(LOGITS, np.random.default_rng(0), **bad)


# --- generation on models -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tiny_checkpoint):
    return GPT2.from_pretrained(tiny_checkpoint)


@pytest.mark.reference
def test_greedy_continuation_of_the_fixture(tiny, reference):
    out = tiny.generate(reference["greedy_prompt"], 20, temperature=0, stop_at_eot=False)
    assert out == reference["greedy_out"].tolist()
    assert list(tiny.stream(reference["greedy_prompt"], 20, temperature=0, stop_at_eot=False)) == out


def test_same_seed_same_tokens_other_seeds_differ(tiny):
    prompt = [464, 2068, 7586]
    a = tiny.generate(prompt, 30, seed=5, top_k=50)
    assert a == tiny.generate(prompt, 30, seed=5, top_k=50)
    assert a != tiny.generate(prompt, 30, seed=6, top_k=50)


def test_several_samples_run_as_a_batch(tiny):
    samples = tiny.generate([464, 2068], 25, seed=3, num_samples=4, stop_at_eot=False)
    assert len(samples) == 4 and all(len(s) == 25 for s in samples)
    assert len({tuple(s) for s in samples}) == 4, "samples are independent"
    greedy = tiny.generate([464, 2068], 25, temperature=0, num_samples=3, stop_at_eot=False)
    assert greedy[0] == greedy[1] == greedy[2] == tiny.generate([464, 2068], 25, temperature=0, stop_at_eot=False)


def test_generation_stops_at_endoftext():
    # a model whose every logit row favours <|endoftext|> after the first token: bias the LM head
    config = GPT2Config(n_vocab=50257, n_ctx=16, n_embd=8, n_head=2, n_layer=1)
    model = GPT2.init(config, seed=0)
    model.params["wte"][50256] = 5.0 * model.params["ln_f"]["g"]  # aligned with any normalised state
    model.params["ln_f"]["b"][:] = 1.0
    out = model.generate([1, 2], 10, temperature=0)
    full = model.generate([1, 2], 10, temperature=0, stop_at_eot=False)
    assert 50256 in full and out == full[: full.index(50256)]


def test_sliding_window_equals_recomputing_the_window(tiny):
    # Reference without a cache: the documented rule, position by position. The window starts at `start`;
    # when it holds n_ctx tokens and one more arrives, it restarts with the last n_ctx // 2 tokens.
    n_ctx = tiny.config.n_ctx
    context, start, expected = [464, 2068, 7586], 0, []
    for _ in range(150):
        if len(context) - start > n_ctx:
            start = len(context) - n_ctx // 2
        nxt = int(tiny(np.array(context[start:]))[-1].argmax())
        expected.append(nxt)
        context.append(nxt)
    assert tiny.generate([464, 2068, 7586], 150, temperature=0, stop_at_eot=False) == expected


def test_long_prompt_keeps_its_last_n_ctx_tokens(tiny):
    prompt = np.random.default_rng(0).integers(0, 50000, size=100)
    assert tiny.generate(prompt, 5, temperature=0) == tiny.generate(prompt[-64:], 5, temperature=0)


@pytest.mark.reference
def test_greedy_equals_transformers_generate():
    torch = pytest.importorskip("torch")
    from .reference import hf_model

    model = GPT2.init(GPT2Config(n_vocab=500, n_ctx=128, n_embd=48, n_head=4, n_layer=3), seed=3, std=0.5)
    hf = hf_model(model)
    prompt = np.array([5, 77, 300, 12])
    with torch.no_grad():
        ref = hf.generate(torch.from_numpy(prompt[None]), max_new_tokens=100, do_sample=False, pad_token_id=0,
                          attention_mask=torch.ones(1, 4, dtype=torch.long))
    ours = model.generate(prompt, 100, temperature=0, stop_at_eot=False)
    assert ours == ref[0, 4:].tolist()
    assert len(set(ours)) > 10


# --- streaming text -------------------------------------------------------------------------------


def test_streamed_text_equals_final_text_across_split_characters(tiny, tok):
    # random weights at temperature 1.5 produce many partial-UTF-8 tokens; find seeds that split characters
    split_seen = 0
    for seed in range(20):
        ids = tiny.generate(tok.encode("日本語"), 60, seed=seed, temperature=1.5, stop_at_eot=False)
        decoder = tok.stream_decoder()
        pieces = [decoder.push(i) for i in ids] + [decoder.flush()]
        assert "".join(pieces) == tok.decode(ids)
        split_seen += any(_is_partial_utf8(tok.token_bytes(i)) for i in ids)
    assert split_seen >= 3, "the test must exercise characters split across tokens"


def _is_partial_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return False
    except UnicodeDecodeError:
        return True


# --- the command line -----------------------------------------------------------------------------


def run_cli(*args, stdin=None, env=None):
    return subprocess.run([sys.executable, "-m", "minigpt2.generate", *args], input=stdin, capture_output=True,
                          cwd=REPO, env=dict(os.environ, **(env or {})), timeout=300)


@pytest.mark.reference
def test_cli_greedy_equals_reference(tiny_checkpoint, reference):
    tok = Tokenizer.from_dir(tiny_checkpoint)
    prompt = tok.decode(reference["greedy_prompt"])
    assert tok.encode(prompt) == reference["greedy_prompt"].tolist()
    r = run_cli(prompt, "--model", str(tiny_checkpoint), "--temperature", "0", "--max-new-tokens", "20", "--no-stop")
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode("utf-8") == tok.decode(reference["greedy_out"]) + "\n"


def test_cli_streams_the_same_text_as_the_api(tiny_checkpoint, tiny, tok):
    r = run_cli("-", "--model", str(tiny_checkpoint), "--seed", "4", "--temperature", "1.5", "--max-new-tokens", "60",
                "--top-k", "0", "--no-stop", stdin="日本語".encode())
    assert r.returncode == 0, r.stderr
    ids = tiny.generate(tok.encode("日本語"), 60, seed=4, temperature=1.5, stop_at_eot=False)
    assert r.stdout.decode("utf-8") == tok.decode(ids) + "\n"


def test_cli_on_a_console_that_is_not_utf8(tiny_checkpoint):
    r = run_cli("日本語", "--model", str(tiny_checkpoint), "--seed", "4", "--temperature", "1.5",
                "--max-new-tokens", "40", env={"PYTHONIOENCODING": "ascii"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.isascii() and len(r.stdout) > 20


def test_cli_several_samples(tiny_checkpoint):
    r = run_cli("Hello", "--model", str(tiny_checkpoint), "--num-samples", "3", "--max-new-tokens", "5", "--seed", "1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().count("sample ") == 3


@pytest.mark.parametrize("args, message", [
    (["--temperature", "-1"], "--temperature must be a finite number >= 0"),
    (["--temperature", "inf"], "--temperature must be a finite number >= 0"),
    (["--max-new-tokens", "99999999999999999999"], "--max-new-tokens must be at most 1,000,000"),
    (["--min-p", "1.5"], "--min-p must be in [0, 1]"),
    (["--typical-p", "0"], "--typical-p must be in (0, 1]"),
    (["--no-repeat-ngram-size", "-1"], "--no-repeat-ngram-size must be a whole number >= 0"),
    (["--min-new-tokens", "-2"], "--min-new-tokens must be a whole number >= 0"),
    (["--model", "README.md"], "README.md is a file; a model is a directory"),
    (["--num-samples", "100000000", "--model", "tiny"], "--num-samples 100,000,000 samples need about"),
    (["--top-p", "1.5"], "--top-p must be in (0, 1]"),
    (["--top-p", "0"], "--top-p must be in (0, 1]"),
    (["--temperature", "hot"], "invalid float value"),
    (["--model", "gpt5"], "unknown model name 'gpt5'"),
    (["--model", "/no/such/dir"], "model directory not found"),
    (["--max-new-tokens", "-3"], "--max-new-tokens must be >= 0"),
])
def test_cli_bad_arguments_exit_2_with_one_line(args, message):
    r = run_cli("Hello", *args)
    assert r.returncode == 2
    err = r.stderr.decode().strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("args, message", [
    (dict(ids=[1, 2], max_new_tokens=-1), "max_new_tokens"),
    (dict(ids=[], max_new_tokens=3), "non-empty"),
    (dict(ids=[1, 60000], max_new_tokens=3), "outside the vocabulary"),
    (dict(ids=[1, 2], max_new_tokens=3, top_p=2.0), "top_p"),
    (dict(ids=[1, 2], max_new_tokens=3, num_samples=0), "num_samples"),
])
def test_bad_generation_arguments_fail_at_the_call(tiny, args, message):
    with pytest.raises(ValueError, match=message):
        tiny.stream(**args)  # not only when the first token is asked for
    with pytest.raises(ValueError, match=message):
        tiny.generate(**args)


def test_cli_output_into_a_closed_pipe_is_quiet(tiny_checkpoint):
    cmd = [sys.executable, "-m", "minigpt2.generate", "Hello", "--model", str(tiny_checkpoint), "--max-new-tokens", "300",
           "--no-stop", "--seed", "0"]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO) as p:
        p.stdout.read(5)
        p.stdout.close()  # like `| head -c 5`
        err = p.stderr.read().decode()
        assert p.wait(timeout=120) == 0
    assert "Traceback" not in err


def test_stream_yields_python_ints_or_lists(tiny):
    one = list(tiny.stream([1, 2], 3, seed=0, stop_at_eot=False))
    assert all(type(i) is int for i in one)
    several = list(tiny.stream([1, 2], 3, seed=0, stop_at_eot=False, num_samples=2))
    assert all(isinstance(step, list) and len(step) == 2 for step in several)


# --- every sampling option through generate, stream and the command line --------------------------


def test_top_p_of_one_is_allowed_and_filters_nothing(tiny):
    sample(LOGITS, np.random.default_rng(0), top_p=1.0)  # documented as allowed: (0, 1]
    prompt = [464, 2068]
    assert tiny.generate(prompt, 15, seed=4, top_p=1.0) == tiny.generate(prompt, 15, seed=4)
    assert list(tiny.stream(prompt, 15, seed=4, top_p=1.0)) == tiny.generate(prompt, 15, seed=4)


def test_cli_top_p_of_one(tiny_checkpoint):
    a = run_cli("Hello", "--model", str(tiny_checkpoint), "--max-new-tokens", "8", "--seed", "1", "--top-p", "1")
    b = run_cli("Hello", "--model", str(tiny_checkpoint), "--max-new-tokens", "8", "--seed", "1")
    assert a.returncode == 0 and a.stdout == b.stdout


def eot_model():
    """A model that, from its second new token on, always prefers <|endoftext|>."""
    config = GPT2Config(n_vocab=50257, n_ctx=32, n_embd=8, n_head=2, n_layer=1)
    model = GPT2.init(config, seed=0)
    model.params["wte"][50256] = 5.0 * model.params["ln_f"]["g"]
    model.params["ln_f"]["b"][:] = 1.0
    return model


def test_stream_stops_once_every_sample_has_ended():
    model = eot_model()
    steps = list(model.stream([1, 2], 20, temperature=0))
    assert steps[-1] == 50256 and steps.count(50256) == 1, "one <|endoftext|>, then the stream ends"
    batch = list(model.stream([1, 2], 20, temperature=0, num_samples=3))
    assert len(batch) == len(steps) < 20 and batch[-1] == [50256] * 3
    assert len(list(model.stream([1, 2], 20, temperature=0, stop_at_eot=False))) == 20


def test_each_sample_is_penalised_with_its_own_history(tiny):
    """generate(num_samples=3, repetition_penalty) equals a loop written from the definition: every step
    recomputes each sample's logits from its own tokens and penalises the tokens that sample has seen."""
    prompt, n, penalty = [464, 2068, 7586], 12, 3.0
    out = tiny.generate(prompt, n, seed=7, top_k=5, repetition_penalty=penalty, num_samples=3, stop_at_eot=False)
    rng = np.random.default_rng(7)
    contexts = [list(prompt) for _ in range(3)]
    for _ in range(n):
        logits = np.stack([apply_repetition_penalty(tiny(ctx)[-1], ctx, penalty) for ctx in contexts])
        for ctx, i in zip(contexts, sample(logits, rng, 1.0, 5, None)):
            ctx.append(int(i))
    assert out == [ctx[len(prompt):] for ctx in contexts]
    assert len({tuple(s) for s in out}) > 1, "the samples differ, so their histories do"


def test_a_tiny_temperature_is_greedy_not_token_zero(tiny):
    prompt = [464, 2068, 7586]
    greedy = tiny.generate(prompt, 5, temperature=0, stop_at_eot=False)
    for t in (1e-40, 5e-324, 1e-30):
        assert tiny.generate(prompt, 5, temperature=t, seed=0, stop_at_eot=False) == greedy
        assert tiny.generate(prompt, 5, temperature=t, top_k=3, top_p=0.5, seed=0, stop_at_eot=False) == greedy
    for penalty in (1e-40, 1e40):  # extreme penalties: some logits overflow, the distribution must not be NaN
        out = tiny.generate(prompt, 5, repetition_penalty=penalty, seed=0, stop_at_eot=False)
        assert len(out) == 5 and out != [0] * 5
    row = apply_repetition_penalty(np.array([2.0, -1.0, 3.0], np.float32), [0, 1], 1e-40)
    assert np.isfinite(row).all() and row.argmax() == 0


def test_cli_tiny_temperature_is_greedy(tiny_checkpoint):
    args = ("Hello", "--model", str(tiny_checkpoint), "--max-new-tokens", "6", "--no-stop")
    assert run_cli(*args, "--temperature", "1e-45").stdout == run_cli(*args, "--temperature", "0").stdout


@pytest.fixture(scope="module")
def own_vocabulary_model(tmp_path_factory):
    """A model on a vocabulary of its own, whose <|endoftext|> is id 262, biased to end after one token."""
    tok = Tokenizer.train("to be or not to be " * 10, 263, progress=False)
    assert tok.eot_id == tok.n_vocab - 1 != 50256
    model = GPT2.init(GPT2Config(n_vocab=tok.n_vocab, n_ctx=32, n_embd=8, n_head=2, n_layer=1), seed=0)
    model.params["wte"][tok.eot_id] = 5.0 * model.params["ln_f"]["g"]
    model.params["ln_f"]["b"][:] = 1.0
    path = tmp_path_factory.mktemp("own-vocab")
    model.save(path, tok)
    return model, tok, path


def test_generation_stops_at_the_vocabularys_own_end_of_text(own_vocabulary_model):
    model, tok, _ = own_vocabulary_model
    full = model.generate([1, 2], 10, temperature=0, stop_at_eot=False, eot_id=tok.eot_id)
    assert tok.eot_id in full
    assert model.generate([1, 2], 10, temperature=0, eot_id=tok.eot_id) == full[: full.index(tok.eot_id)]
    steps = list(model.stream([1, 2], 10, temperature=0, eot_id=tok.eot_id))
    assert steps[-1] == tok.eot_id and len(steps) == full.index(tok.eot_id) + 1
    assert len(model.generate([1, 2], 10, temperature=0)) == 10, "no id 50256 in this vocabulary: no stop"
    with pytest.raises(ValueError, match="eot_id 50256 is outside the vocabulary"):
        model.generate([1, 2], 3, eot_id=50256)


def test_cli_on_a_model_with_its_own_vocabulary(own_vocabulary_model):
    model, tok, path = own_vocabulary_model
    r = run_module("", "--model", str(path), "--temperature", "0", "--max-new-tokens", "10")
    assert r.returncode == 0, r.stderr.decode()
    expected = model.generate([tok.eot_id], 10, temperature=0, eot_id=tok.eot_id)
    assert r.stdout.decode() == tok.decode(expected) + "\n"


@pytest.fixture(scope="module")
def ending_model_dir(tmp_path_factory, vocab_dir):
    """A model on GPT-2's vocabulary that ends its text after a few tokens, saved with that vocabulary."""
    model = GPT2.init(GPT2Config(n_vocab=50257, n_ctx=32, n_embd=8, n_head=2, n_layer=1), seed=0)
    model.params["wte"][50256] = 5.0 * model.params["ln_f"]["g"]
    model.params["ln_f"]["b"][:] = 1.0
    path = tmp_path_factory.mktemp("ending")
    model.save(path, Tokenizer.from_dir(vocab_dir))
    return path


def test_cli_never_prints_the_end_of_text_token(ending_model_dir):
    args = ("Hello", "--model", str(ending_model_dir), "--temperature", "0")
    streamed, at_once = run_module(*args), run_module(*args, "--no-stream")
    assert streamed.returncode == at_once.returncode == 0
    assert "<|endoftext|>" not in streamed.stdout.decode()
    assert streamed.stdout == at_once.stdout


def test_bad_seed(short_model, tiny_checkpoint):
    assert "--seed must be a non-negative integer" in one_line_error(run_module("Hi", "--model", str(tiny_checkpoint),
                                                                             "--seed", "-1"))
    for seed in (-1, 1.5, "7"):
        with pytest.raises(ValueError, match="seed must be a non-negative integer"):
            short_model.generate([1], 3, seed=seed)


def test_cli_on_a_saved_model_without_a_vocabulary_uses_gpt2s_and_says_so(tmp_path, tiny_checkpoint, vocab_dir):
    import shutil

    cache = tmp_path / "cache"  # GPT-2's vocabulary in the cache, as a first download leaves it
    (cache / "models" / "124M").mkdir(parents=True)
    for f in ("encoder.json", "vocab.bpe"):
        shutil.copyfile(vocab_dir / f, cache / "models" / "124M" / f)
    GPT2.from_pretrained(tiny_checkpoint).save(tmp_path / "m")  # no tokenizer given
    r = run_module("Hello", "--model", str(tmp_path / "m"), "--max-new-tokens", "3", "--seed", "0",
                MINIGPT2_HOME=str(cache))
    assert r.returncode == 0 and "holds no vocabulary; using GPT-2's" in r.stderr.decode()
    with_vocab = tmp_path / "v"
    GPT2.from_pretrained(tiny_checkpoint).save(with_vocab, Tokenizer.from_dir(vocab_dir))
    r2 = run_module("Hello", "--model", str(with_vocab), "--max-new-tokens", "3", "--seed", "0")
    assert r2.returncode == 0 and r2.stderr == b"" and r2.stdout == r.stdout


def test_ids_a_long_prompt_drops_are_checked_too(short_model):
    with pytest.raises(ValueError, match="token id -5 at prompt position 0 is outside the vocabulary"):
        short_model.generate([-5] * 100 + [1] * 32, 3)


# --- messages for learners ---------------------------------------------------------------------------


def test_text_where_ids_belong_says_to_encode_first(tiny):
    with pytest.raises(TypeError, match=r"takes token ids, not text; encode the text first: "
                                        r"model.generate\(tok.encode\('hello'\), 5\)"):
        tiny.generate("hello", 5)


@pytest.mark.parametrize("options, message", [
    (dict(temperature="hot"), "temperature must be a number, got 'hot'"),
    (dict(top_p="most"), "top_p must be a number, got 'most'"),
    (dict(temperature=float("inf")), "temperature must be a finite number >= 0"),
    (dict(repetition_penalty=float("inf")), "repetition_penalty must be a finite number > 0"),
])
def test_sampling_settings_that_are_not_numbers_are_named(tiny, options, message):
    with pytest.raises(ValueError, match=message):
        tiny.generate([1, 2], 3, **options)


def test_a_batch_of_samples_that_cannot_fit_is_refused_before_allocating(tiny):
    with pytest.raises(ValueError, match=r"num_samples 100,000,000 samples need about [\d,.]+ GB .* at most"):
        tiny.generate([1, 2], 3, num_samples=10**8)


def test_a_prompt_that_is_not_utf8_gets_one_message_from_stdin_or_the_argument(tiny_checkpoint):
    r = run_cli("-", "--model", str(tiny_checkpoint), stdin=b"caf\xe9")
    assert one_line_error(r).endswith("standard input is not UTF-8 text: byte 0xe9 at byte offset 3 (line 1) is invalid")
    r = subprocess.run([sys.executable, "-m", "minigpt2.generate", os.fsdecode(b"caf\xe9"), "--model",
                        str(tiny_checkpoint)], capture_output=True, cwd=REPO)
    assert one_line_error(r).endswith("the prompt is not UTF-8 text: byte 0xe9 at byte offset 3 (line 1) is invalid")
