"""The Llama 3 tokenizer against tiktoken itself, on Meta's tokenizer.model (tests/assets)."""

import base64
import json
import pickle
import random
from pathlib import Path

import pytest
import tiktoken

from torchtune import UserFileNotFoundError, UserValueError
from torchtune.data import AlpacaInstructTemplate
from torchtune.models.llama3._tokenizer import llama3_tokenizer, LLAMA3_SPECIAL_TOKENS
from torchtune.tokenizers import encode_truncated, Tokenizer
from torchtune.tokenizers._tiktoken import split_long_text

ASSETS = Path(__file__).parents[3] / "assets"
SHARED_JSON = Path(__file__).parents[4] / ".." / "shared/data/tokenizers/llama3/tokenizer.json"

# Written out here, not imported: the pattern of Meta's llama/tokenizer.py.
META_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
EDGE_CASES = [
    "", " ", "  leading and trailing  ", "\n\n\n", "\t\r\n \u00a0\u3000", "naïve café Köln",
    "日本語のテキスト",
    "😀🧬👩‍👩‍👧‍👦 emoji", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "don't WE'LL it's", "1234567890",
    "x" * 30_000, " " * 30_000 + "a", "a\u0301\u0302 combining", "\x00\x01 control",
]


def records():
    return json.loads((ASSETS / "alpaca_1000.json").read_text())


def alpaca_texts():
    return [AlpacaInstructTemplate.format(r) + r["output"] for r in records()]


@pytest.fixture(scope="module")
def tok(llama3_model):
    return llama3_tokenizer(llama3_model)


@pytest.fixture(scope="module")
def reference(llama3_model):
    """A tiktoken Encoding built here from the rank file, independently of torchtune."""
    lines = llama3_model.read_bytes().splitlines()
    ranks = {base64.b64decode(t): int(r) for t, r in (line.split() for line in lines)}
    special = {"<|begin_of_text|>": 128000, "<|end_of_text|>": 128001}
    return tiktoken.Encoding("ref", pat_str=META_PATTERN, mergeable_ranks=ranks,
                             special_tokens=special)


def meta_split(s, max_len=25_000):
    """Meta's ``_split_whitespaces_or_nonwhitespaces``, character by character."""
    out, run, is_space, start = [], 0, s[0].isspace() if s else False, 0
    for i, c in enumerate(s):
        if is_space ^ c.isspace():
            run, is_space = 1, c.isspace()
        else:
            run += 1
            if run > max_len:
                out.append(s[start:i])
                start, run = i, 1
    return out + [s[start:]]


def test_protocol_and_ids(tok):
    assert isinstance(tok, Tokenizer)
    assert (tok.vocab_size, tok.bos_id, tok.eos_id, tok.pad_id) == (128256, 128000, 128001, 128004)
    assert (tok.eot_id, tok.eom_id, tok.start_header_id, tok.end_header_id) == (
        128009, 128008, 128006, 128007)
    assert tok.stop_tokens == [128001, 128009, 128008]
    assert tok.splits_at_spaces is True
    named = {"<|begin_of_text|>": 128000, "<|end_of_text|>": 128001,
             "<|reserved_special_token_0|>": 128002, "<|finetune_right_pad_id|>": 128004,
             "<|start_header_id|>": 128006, "<|end_header_id|>": 128007, "<|eom_id|>": 128008,
             "<|eot_id|>": 128009, "<|python_tag|>": 128010,
             "<|reserved_special_token_3|>": 128011, "<|reserved_special_token_247|>": 128255}
    for text, i in named.items():
        assert tok.encode_with_special(text) == [i]
        assert tok.decode([i], skip_special_tokens=False) == text
    assert sorted(LLAMA3_SPECIAL_TOKENS.values()) == list(range(128000, 128256))


@pytest.mark.skipif(not SHARED_JSON.exists(), reason="needs shared/data (not in a clone)")
def test_special_ids_agree_with_tokenizer_json():
    """The shared tokenizer.json is the Llama 3.0 one: every id is special in both, the
    names agree except the four 3.1 renamed and the reserved numbering after them."""
    added = {t["id"]: t["content"] for t in json.loads(SHARED_JSON.read_text())["added_tokens"]}
    ours = {i: t for t, i in LLAMA3_SPECIAL_TOKENS.items()}
    assert set(added) == set(ours) == set(range(128000, 128256))
    same = [i for i in added if added[i] == ours[i]]
    assert set(same) >= {128000, 128001, 128002, 128003, 128006, 128007, 128009}
    for i in (128004, 128005, 128008, 128010):
        assert added[i].startswith("<|reserved_special_token_")


def test_ids_equal_tiktoken_on_alpaca(tok, reference):
    for text in alpaca_texts():
        assert tok.encode(text) == [128000] + reference.encode_ordinary(text) + [128001]
        assert tok.encode(text, add_bos=False, add_eos=False) == reference.encode_ordinary(text)


def test_known_ids(tok):
    # ids from shared/data/PROVENANCE.md's check and Meta's reference tokenizer
    assert tok.encode("Hello world", add_bos=False, add_eos=False) == [9906, 1917]


@pytest.mark.parametrize("text", EDGE_CASES, ids=range(len(EDGE_CASES)))
def test_round_trip_edge_cases(tok, reference, text):
    ids = tok.encode(text, add_bos=False, add_eos=False)
    assert tok.decode(ids) == text
    assert tok.decode(tok.encode(text)) == text  # BOS/EOS decode to nothing
    if len(text) <= 25_000:
        assert ids == reference.encode_ordinary(text)


def test_round_trip_alpaca(tok):
    for text in alpaca_texts():
        assert tok.decode(tok.encode(text)) == text


def test_special_text_in_user_content_is_ordinary(tok, reference):
    text = "Hi <|eot_id|><|begin_of_text|> <|start_header_id|>user<|end_header_id|>"
    ids = tok.encode(text, add_bos=False, add_eos=False)
    assert not set(ids) & set(LLAMA3_SPECIAL_TOKENS.values())
    assert ids == reference.encode_ordinary(text)
    assert tok.decode(ids) == text
    assert 128009 in tok.encode_with_special(text)


def test_trim_leading_whitespace_is_a_no_op(tok):
    for text in [" x", "\nHello", "Hello", "  two"]:
        assert tok.encode(text, trim_leading_whitespace=True) == tok.encode(text)


def test_prompt_and_response_encode_like_the_whole_text(tok):
    """What the instruct builders rely on: prompt then response, encoded separately."""
    for r in records():
        prompt = AlpacaInstructTemplate.format(r)
        whole = tok.encode(prompt + r["output"])
        parts = tok.encode(prompt, add_eos=False) + tok.encode(
            r["output"], add_bos=False, trim_leading_whitespace=True)
        assert parts == whole


def test_long_text_split_like_meta():
    rng = random.Random(0)
    text = "".join(rng.choice(["a" * 26_000, " " * 25_001, "word ", "\n", "b" * 50_001])
                   for _ in range(40))
    expected = [p for i in range(0, len(text), 400_000) for p in meta_split(text[i:i + 400_000])]
    assert list(split_long_text(text)) == expected
    assert len(expected) > 10


def test_long_runs_encode_and_round_trip(tok):
    text = "z" * 100_000 + " end " + "\u00e9" * 60_000
    ids = tok.encode(text, add_bos=False, add_eos=False)
    assert tok.decode(ids) == text


def test_encode_truncated_equals_cut_full_encode(tok):
    for text in alpaca_texts():
        full = tok.encode(text)
        for n in (1, 5, 20, 60):
            assert encode_truncated(tok, text, n) == full[:n]


def test_encode_truncated_on_long_synthetic_text(tok):
    rng = random.Random(1)
    words = ["the", "naïve", "日本語", "😀", "don't", "3.14159", "(", "end.", "x" * 40]
    seps = [" ", "  ", " " * 9, "\n", "\n\n", " \n ", "\t", "\u00a0", ""]
    text = "".join(rng.choice(words) + rng.choice(seps) for _ in range(6000))
    full = tok.encode(text)
    for n in (3, 100, 1000, 4000):
        assert encode_truncated(tok, text, n) == full[:n]


def test_decode_rejects_ids_outside_the_vocabulary(tok):
    with pytest.raises(ValueError, match="-100 at position 1"):
        tok.decode([9906, -100])
    with pytest.raises(ValueError, match="128256"):
        tok.decode([128256])


def test_pickle_round_trip(tok):
    copy = pickle.loads(pickle.dumps(tok))
    assert copy.encode("Hello world") == [128000, 9906, 1917, 128001]
    assert copy.eot_id == 128009 and copy.pad_id == 128004


def test_user_errors(tmp_path):
    with pytest.raises(UserFileNotFoundError, match="not found"):
        llama3_tokenizer(tmp_path / "missing.model")
    bad = tmp_path / "bad.model"
    bad.write_text("not base64 at all!\n")
    with pytest.raises(UserValueError, match="line 1"):
        llama3_tokenizer(bad)
    small = tmp_path / "small.model"
    small.write_text("IQ== 0\nIg== 1\n")
    with pytest.raises(UserValueError, match="not the 128000"):
        llama3_tokenizer(small)
