"""The tokenizer, specified against OpenAI's vocabulary files and tiktoken (an independent implementation)."""

import json
import shutil
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minigpt2 import Tokenizer
from minigpt2.tokenizer import bpe_reference
from minigpt2.tokenizer_fast import bpe

from .conftest import require

CORPUS = {
    "english": "The quick brown fox jumps over the lazy dog. It's 5 o'clock; we'll see what they've done!",
    "contractions": "I'M sure YOU'RE right, they'D go. Don't won't can't shan't ISN'T it's IT'S 'tis",
    "code": 'def f(x: int) -> dict[str, int]:\n    return {"a": x ** 2}  # comment\n\tif x != 0:\n',
    "c_code": "int main(void) {\r\n    printf(\"%d\\n\", a[i++]);\r\n    return 0;\r\n}\r\n",
    "chinese": "我们在北京的天安门广场看日出，然后去吃烤鸭。",
    "japanese": "東京都は日本の首都です。ひらがなとカタカナ、ｶﾀｶﾅ。",
    "korean": "안녕하세요, 세계! 한국어 문장입니다.",
    "arabic": "مرحبا بالعالم، هذه جملة عربية.",
    "hebrew": "שלום עולם, זה משפט בעברית.",
    "emoji_zwj": "family: 👨‍👩‍👧‍👦 flags 🇺🇸🇯🇵 skin 👍🏽 hug 🤗 rainbow 🏳️‍🌈",
    "combining": "e\u0301 a\u0308 n\u0303 Zalgo: Z\u0351\u036b\u0343a\u0310\u0305l",
    "control": "bell\x07 nul\x00 esc\x1b[31m del\x7f fs\x1c gs\x1d us\x1f nbsp\xa0x",
    "whitespace": "a  b   c    d\n\n\ne\t\t\tf \n \n g   \t\n  h         ",
    "crlf": "line one\r\nline two\r\n\r\n  indented\r\n",
    "digits": "3.14159 1,000,000 2024-11-23 0x1F 007 1e-10 ½ ² ٣ ①",
    "mixed_scripts": "Ελληνικά кириллица ไทย हिन्दी ქართული",
    "special_looking": "<|endoftext|> is text here <|startoftext|>",
    "long_word": "a" * 3000 + "b" * 1000 + "ab" * 500,
    "only_spaces": "     ",
    "empty": "",
}


def test_golden_vectors(tok):
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.encode(" the") == [262]
    assert tok.encode("<|endoftext|>", allowed_special="all") == [50256]
    assert tok.n_vocab == 50257 and tok.eot_id == 50256


@pytest.mark.reference
@pytest.mark.parametrize("name", sorted(CORPUS))
def test_equals_tiktoken_on_corpus(tok, tiktoken_gpt2, name):
    text = CORPUS[name]
    assert tok.encode(text) == tiktoken_gpt2.encode_ordinary(text)
    assert tok.decode(tok.encode(text)) == text


@pytest.mark.reference
def test_equals_tiktoken_on_whole_corpus(tok, tiktoken_gpt2):
    text = "\n".join(CORPUS.values()) * 3
    assert tok.encode(text) == tiktoken_gpt2.encode_ordinary(text)


@pytest.mark.reference
@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200))
def test_equals_tiktoken_on_arbitrary_text(tok, tiktoken_gpt2, text):
    assert tok.encode(text) == tiktoken_gpt2.encode_ordinary(text)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200))
def test_decode_inverts_encode(tok, text):
    assert tok.decode(tok.encode(text)) == text


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=40))
def test_fast_bpe_equals_openai_merge_loop(tok, word):
    assert bpe(word, tok.ranks) == bpe_reference(word, tok.ranks)


def test_bpe_merges_left_to_right_on_ties():
    ranks = {(b"a", b"a"): 0, (b"aa", b"aa"): 1}
    assert bpe(b"aaa", ranks) == bpe_reference(b"aaa", ranks) == [b"aa", b"a"]
    assert bpe(b"aaaaa", ranks) == bpe_reference(b"aaaaa", ranks) == [b"aaaa", b"a"]


@pytest.mark.reference
def test_long_word_without_spaces(tok, tiktoken_gpt2):
    # OpenAI's encoder.py is quadratic here; the heap merge is O(n log n), so this takes well under a second
    import random

    rng = random.Random(0)
    word = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(100_000))
    assert tok.encode(word) == tiktoken_gpt2.encode_ordinary(word)
    assert tok.encode("z" * 100_000) == tiktoken_gpt2.encode_ordinary("z" * 100_000)


# --- special tokens -------------------------------------------------------------------------------


def test_special_tokens_are_text_by_default(tok):
    ids = tok.encode("a<|endoftext|>b")
    assert 50256 not in ids
    assert tok.decode(ids) == "a<|endoftext|>b"


def test_allowed_special_maps_to_its_id(tok):
    assert tok.encode("a<|endoftext|>b", allowed_special={"<|endoftext|>"}) == [64, 50256, 65]
    assert tok.encode("<|endoftext|><|endoftext|>", allowed_special="all") == [50256, 50256]
    assert tok.decode([64, 50256, 65]) == "a<|endoftext|>b"


def test_unknown_allowed_special_is_an_error(tok):
    with pytest.raises(ValueError, match="not special tokens"):
        tok.encode("x", allowed_special={"<|im_start|>"})


# --- decoding and streaming -----------------------------------------------------------------------


def test_decode_replaces_broken_utf8(tok):
    ids = tok.encode("🤗")
    assert len(ids) > 1, "the emoji should span several tokens for this test to mean something"
    assert tok.decode(ids[:1]) == "\ufffd"
    assert tok.decode_bytes(ids) == "🤗".encode()


def test_stream_decoder_never_emits_half_a_character(tok):
    text = "hug 🤗 and 👨‍👩‍👧 and 東京"
    ids = tok.encode(text)
    decoder = tok.stream_decoder()
    pieces = [decoder.push(i) for i in ids] + [decoder.flush()]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)
    emoji_pieces = [p for p in pieces if "🤗" in p]
    assert len(emoji_pieces) == 1, "the emoji appears once, whole"


def test_decode_stream_equals_decode(tok):
    ids = tok.encode("naïve café 🤗🤗 ok")
    assert "".join(tok.decode_stream(iter(ids))) == tok.decode(ids)
    assert "".join(tok.decode_stream(ids[:-1] + [tok.encode("🤗")[0]])).endswith("\ufffd")


def test_decode_accepts_numpy_ids(tok):
    np = pytest.importorskip("numpy")
    assert tok.decode(np.array([15496, 995], dtype=np.int64)) == "Hello world"


@pytest.mark.parametrize("bad", [[50257], [-1], [10**9], [1.5], ["a"], [None]])
def test_decode_rejects_ids_outside_the_vocabulary(tok, bad):
    with pytest.raises(ValueError, match="not in the vocabulary"):
        tok.decode([15496] + bad)


# --- explain --------------------------------------------------------------------------------------


def test_explain_shows_the_work_and_agrees_with_encode(tok):
    text = "Hello world, héllo 🤗!"
    ex = tok.explain(text)
    assert ex.ids == tok.encode(text)
    assert [p.text for p in ex.pieces] == ["Hello", " world", ",", " héllo", " 🤗!"]
    hello = ex.pieces[0]
    assert hello.bytes == b"Hello"
    ranks = [rank for rank, _, _ in hello.merges]
    assert ranks == sorted(ranks), "merges are applied in rank order"
    assert hello.merges[0][1] == (b"l", b"l")  # "ll" is the best-ranked pair in "Hello"
    shown = str(ex)
    assert "Ġworld" in shown and "l + l" in shown and "15496" in shown


# --- loading --------------------------------------------------------------------------------------


def test_from_dir_accepts_hugging_face_names(vocab_dir, tmp_path, tok):
    shutil.copy(vocab_dir / "encoder.json", tmp_path / "vocab.json")
    shutil.copy(vocab_dir / "vocab.bpe", tmp_path / "merges.txt")
    assert Tokenizer.from_dir(tmp_path).encode("Hello world") == [15496, 995]


def test_save_writes_openai_files_byte_for_byte(tok, vocab_dir, tmp_path):
    tok.save(tmp_path)
    assert (tmp_path / "encoder.json").read_bytes() == (vocab_dir / "encoder.json").read_bytes()
    assert (tmp_path / "vocab.bpe").read_bytes() == (vocab_dir / "vocab.bpe").read_bytes()


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no GPT-2 vocabulary in"):
        Tokenizer.from_dir(tmp_path)
    with pytest.raises(FileNotFoundError, match="encoder file .* does not exist"):
        Tokenizer.from_files(tmp_path / "encoder.json", tmp_path / "vocab.bpe")


def test_malformed_encoder_json_is_named(vocab_dir, tmp_path):
    (tmp_path / "encoder.json").write_text('{"a": 0, ')
    with pytest.raises(ValueError, match="encoder.json is not valid JSON"):
        Tokenizer.from_files(tmp_path / "encoder.json", vocab_dir / "vocab.bpe")


def test_malformed_vocab_bpe_is_named(vocab_dir, tmp_path):
    (tmp_path / "vocab.bpe").write_text("#version: 0.2\nĠ t\nthis line has three\n")
    with pytest.raises(ValueError, match=r"vocab.bpe, line 3"):
        Tokenizer.from_files(vocab_dir / "encoder.json", tmp_path / "vocab.bpe")


def test_files_that_do_not_belong_together(vocab_dir, tmp_path):
    small = Tokenizer.train("hello hello world wide web " * 20, vocab_size=270, progress=False)
    small.save(tmp_path)
    with pytest.raises(ValueError, match="do not belong together"):
        Tokenizer.from_files(tmp_path / "encoder.json", vocab_dir / "vocab.bpe")


@pytest.mark.parametrize("bad", [b"bytes", 42, None, ["a"]])
def test_non_str_input_is_a_type_error(tok, bad):
    with pytest.raises(TypeError, match="encode\\(\\) takes str"):
        tok.encode(bad)


def test_lone_surrogate_is_named(tok):
    with pytest.raises(ValueError, match=r"lone surrogate \(U\+D800 at index 3\)"):
        tok.encode("abc\ud800def")


# --- training -------------------------------------------------------------------------------------


def test_training_reproduces_the_hand_worked_merges():
    # "aaabdaaabac" (one pre-token). Pair counts: aa 4, ab 2, ... -> merge a+a, giving "aa a b d aa a b a c".
    # Then aa+a and a+b both occur twice; the tie goes to the smaller pair in byte order: a+b.
    # Then "aa ab d aa ab a c": aa+ab occurs twice. Then every pair occurs once: the smallest is a+c.
    trained = Tokenizer.train("aaabdaaabac", vocab_size=257 + 4, progress=False)
    assert trained.merges == [(b"a", b"a"), (b"a", b"b"), (b"aa", b"ab"), (b"a", b"c")]
    assert trained.n_vocab == 261 and trained.eot_id == 260
    assert [trained.token_bytes(i) for i in trained.encode("aaabdaaabac")] == [b"aaab", b"d", b"aaab", b"ac"]


def test_training_never_merges_across_pre_tokens():
    trained = train_all_it_allows("ab ab ab ab, ab!", vocab_size=300)
    assert all(b" " not in right and b"," not in left + right[:0] for left, right in trained.merges)
    assert (b"b", b" ") not in trained.merges and (b"b", b",") not in trained.merges


def train_all_it_allows(text, vocab_size, **kwargs):
    """Tokenizer.train where the text may allow fewer merges than asked (which it warns about)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return Tokenizer.train(text, vocab_size, progress=False, **kwargs)


def test_training_stops_when_nothing_is_left_to_merge_and_says_so():
    with pytest.warns(UserWarning, match=r"the text allowed 2 merges, so the vocabulary has 259 ids, not "
                                         r"vocab_size=10,000,000"):
        trained = Tokenizer.train("abc", vocab_size=10**7, progress=False)
    assert trained.merges == [(b"a", b"b"), (b"ab", b"c")]


@pytest.mark.parametrize("size", [0, 256, 10.5])
def test_training_rejects_impossible_sizes(size):
    with pytest.raises(ValueError, match="vocab_size"):
        Tokenizer.train("abc", vocab_size=size, progress=False)


TRAIN_TEXT = (CORPUS["english"] + CORPUS["code"] + CORPUS["chinese"] + CORPUS["emoji_zwj"]) * 5


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tok = Tokenizer.train(TRAIN_TEXT, vocab_size=400, progress=False)
    path = tmp_path_factory.mktemp("trained")
    tok.save(path)
    return tok, path


def test_trained_tokenizer_round_trips_and_reloads(trained):
    tok, path = trained
    assert len(tok.merges) == 400 - 257
    for text in [TRAIN_TEXT, "unseen words 🙂 and ümlauts"]:
        assert tok.decode(tok.encode(text)) == text
    reloaded = Tokenizer.from_dir(path)
    assert reloaded.merges == tok.merges and reloaded.encode(TRAIN_TEXT) == tok.encode(TRAIN_TEXT)


@pytest.mark.reference
def test_trained_files_load_in_tiktoken(trained):
    tiktoken = require("tiktoken")
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    from .conftest import TIKTOKEN_GPT2_PATTERN

    tok, path = trained
    ranks = data_gym_to_mergeable_bpe_ranks(str(path / "vocab.bpe"), str(path / "encoder.json"))
    enc = tiktoken.Encoding(name="trained", pat_str=TIKTOKEN_GPT2_PATTERN, mergeable_ranks=ranks,
                            special_tokens={"<|endoftext|>": tok.eot_id})
    for text in [TRAIN_TEXT, "unseen words 🙂 and ümlauts"]:
        assert enc.encode_ordinary(text) == tok.encode(text)


@pytest.mark.reference
def test_trained_files_load_in_transformers(trained):
    transformers = require("transformers")
    tok, path = trained
    vocab = json.loads((path / "encoder.json").read_text(encoding="utf-8"))
    merges = [tuple(line.split(" ")) for line in (path / "vocab.bpe").read_text(encoding="utf-8").split("\n")[1:]
              if line]
    hf = transformers.GPT2Tokenizer(vocab=vocab, merges=merges)
    assert len(hf.get_vocab()) == tok.n_vocab, "transformers built the full vocabulary"
    for text in [TRAIN_TEXT, "unseen words 🙂 and ümlauts"]:
        assert hf.encode(text) == tok.encode(text)


# --- the fast pre-tokenizer -----------------------------------------------------------------------

TRICKY = st.sampled_from(list("ab Z09'sdtlmrve \t\n\r\x0b\x0c\x1c\x1f!?.,") +
                         ["\xa0", "\u3000", "\x85", "\x80", "é", "日", "🤗", "\u2028", "'s", "'ll", "٣", "½", " \n"])


@settings(max_examples=1000, deadline=None)
@given(st.lists(TRICKY, max_size=60).map("".join))
def test_pretokenize_equals_the_regex(text):
    import regex

    from minigpt2.tokenizer_fast import pretokenize
    from minigpt2.vocab import GPT2_SPLIT_PATTERN

    assert pretokenize(text) == regex.findall(GPT2_SPLIT_PATTERN, text)


def test_unicode_whitespace_is_what_regex_calls_whitespace():
    import regex

    from minigpt2.tokenizer_fast import UNICODE_WS

    assert {chr(c) for c in range(0x110000) if regex.match(r"\s", chr(c))} == set(UNICODE_WS)


# --- training against a brute-force reference -----------------------------------------------------


def brute_force_merges(text: str, n_merges: int) -> list[tuple[bytes, bytes]]:
    """BPE training by its definition, recounting every pair of every word from scratch at each step: the
    most frequent pair (a word's pairs count as often as the word occurs; ties: the smaller pair), never one
    that makes an existing token."""
    from collections import Counter

    import regex

    from minigpt2.vocab import GPT2_SPLIT_PATTERN

    def merge_everywhere(parts, pair):  # left to right, as encoding does
        out, i = [], 0
        while i < len(parts):
            if tuple(parts[i : i + 2]) == pair:
                out.append(parts[i] + parts[i + 1])
                i += 2
            else:
                out.append(parts[i])
                i += 1
        return out

    words = Counter(p.encode() for p in regex.findall(GPT2_SPLIT_PATTERN, text))
    split = {w: [w[i : i + 1] for i in range(len(w))] for w in words}
    tokens = {bytes([b]) for b in range(256)}
    merges = []
    while len(merges) < n_merges:
        counts = Counter()
        for w, parts in split.items():
            for pair in zip(parts, parts[1:]):
                counts[pair] += words[w]
        candidates = [(-c, pair) for pair, c in counts.items() if pair[0] + pair[1] not in tokens]
        if not candidates:
            break
        _, best = min(candidates)
        merges.append(best)
        tokens.add(best[0] + best[1])
        split = {w: merge_everywhere(parts, best) for w, parts in split.items()}
    return merges


def test_training_counts_each_pair_as_often_as_its_words_occur():
    # "ab" is in two words that occur 5 and 1 times; "cd" in one word that occurs 4 times. After merging
    # a+b, the pair counts must drop by the words' frequencies, not by one per word.
    text = "abx " * 5 + "aby " + "cdz " * 4 + "bx " * 3
    trained = Tokenizer.train(text, vocab_size=257 + 6, progress=False)
    assert trained.merges == brute_force_merges(text, 6)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(["ab", "abc", "bca", "cab", "aab", "ba", " ", "c"]), min_size=1, max_size=60))
def test_training_equals_the_definition_on_random_corpora(pieces):
    text = "".join(pieces)
    assert train_all_it_allows(text, vocab_size=257 + 12).merges == brute_force_merges(text, 12)


@pytest.mark.parametrize("text, size, pattern", [
    ("hello world", 257, None),  # no merges at all
    ("a<|>b " * 50, 300, None),  # a learned token that looks like a special token
    ("x=1;y=22;" * 30, 280, r"\d+|[a-z]+|."),  # a pattern of its own
])
def test_a_saved_tokenizer_reads_back_identical(tmp_path, text, size, pattern):
    kwargs = {"pattern": pattern} if pattern else {}
    tok = train_all_it_allows(text, size, **kwargs)
    tok.save(tmp_path)
    again = Tokenizer.from_dir(tmp_path)
    assert again.merges == tok.merges and again.special_tokens == tok.special_tokens
    assert again.pattern == tok.pattern
    for sample in (text, "a<|>b hello x=17; world", "<|endoftext|> x"):
        assert again.encode(sample) == tok.encode(sample)
        assert again.encode(sample, allowed_special="all") == tok.encode(sample, allowed_special="all")


@pytest.mark.parametrize("ids", [iter([15496, 10**9]), (i for i in [-1]), [15496.0, True], [True],
                                 np.array([15496.0]), [None]])
def test_decode_has_one_rule_for_every_way_of_passing_ids(tok, ids):
    with pytest.raises(ValueError, match="is not in the vocabulary"):
        tok.decode(ids)


def test_stream_decoder_rejects_bad_ids_the_same_way(tok):
    decoder = tok.stream_decoder()
    for bad in (10**9, 1.0, True, [5, -3]):
        with pytest.raises(ValueError, match="is not in the vocabulary"):
            decoder.push(bad)
    assert decoder.push(np.int64(15496)) + decoder.push(np.array([995])) == "Hello world"


def test_decode_accepts_every_integer_container(tok):
    for ids in ([15496, 995], (15496, 995), np.array([15496, 995], dtype=np.int32), iter([15496, 995])):
        assert tok.decode(ids) == "Hello world"


def test_the_lone_surrogate_error_names_its_index_in_the_whole_text(tok):
    with pytest.raises(ValueError, match="U\\+DC80 at index 15"):
        tok.encode("ab<|endoftext|>\udc80", allowed_special="all")


def test_explain_of_a_long_word_lists_its_merges_without_a_snapshot_each(tok):
    word = "".join(np.random.default_rng(0).choice(list("abcdefghij"), 8000))
    explanation = tok.explain(word)
    (piece,) = explanation.pieces
    assert explanation.ids == tok.encode(word)
    assert len(piece.merges) == len(word) - len(piece.tokens), "one entry per merge"
    assert all(parts is None for _, _, parts in piece.merges), "no O(n^2) snapshots"
    assert "..." in str(explanation)
    short = tok.explain("Hello world").pieces[1]
    assert short.merges[-1][2] == [b" world"], "short words still show every step"


def test_allowed_special_is_all_or_a_collection_of_special_tokens(tok):
    with pytest.raises(ValueError, match=r"allowed_special must be 'all' or a collection of special tokens such as "
                                         r"\{'<\|endoftext\|>'\}, got 'everything'"):
        tok.encode("hi", allowed_special="everything")
    assert tok.encode("a<|endoftext|>", allowed_special="<|endoftext|>") == tok.encode("a") + [50256]


@pytest.mark.reference
def test_a_saved_tokenizer_loads_in_hugging_face_s_tokenizer_too(tmp_path):
    transformers = require("transformers")
    text = "the quick brown fox jumps over the lazy dog; 快速的棕色狐狸 " * 20
    tok = Tokenizer.train(text, 300, progress=False)
    tok.save(tmp_path)
    fast = transformers.GPT2TokenizerFast.from_pretrained(tmp_path)
    for sample in ("the lazy fox", "狐狸 jumps!", "unseen words 12345"):
        assert fast(sample)["input_ids"] == tok.encode(sample), sample
    assert len(fast) == tok.n_vocab
