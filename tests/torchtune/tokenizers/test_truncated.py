"""encode_truncated: the first ids of the whole text's encoding, from a prefix of the text."""

import io
import random
from pathlib import Path

import pytest
import sentencepiece

from torchtune.tokenizers import encode_truncated, SentencePieceTokenizer

ASSETS = Path(__file__).parents[2] / "assets"
MODELS = ["llama2_tokenizer.model", "tok512.model"]
BYTE_FALLBACK_IDS = range(3, 259)  # <0x00> .. <0xFF> in both models

# Pieces of text that stress the cut: runs and kinds of whitespace, SentencePiece's own
# space symbol, digits (split one by one), characters only byte fallback can encode
# (emoji, a rare CJK character, a mathematical letter), and long runs without whitespace.
WORDS = [
    "the", "cat", "naïve", "Köln", "日本語", "龘", "😀", "🧬🧬", "𝔘𝔫𝔦", "ǅ",
    "\u2581", "x\u2581y", "2024", "3.14159", "don't", "end.", "(", "“quoted”",
    "a" * 80, "supercalifragilistic" * 20,
]
SEPARATORS = [" ", " ", " ", "  ", "    ", " " * 17, "\n", "\n\n", " \n ", "\t", "\t ",
              "\u00a0", "\r\n", "", " \u2581 "]


def synthetic_text(rng: random.Random, n_words: int) -> str:
    return "".join(rng.choice(WORDS) + rng.choice(SEPARATORS) for _ in range(n_words))


class RecordingTokenizer:
    """A real tokenizer that also records the length of every text it encodes."""

    def __init__(self, tok):
        self.tok = tok
        self.splits_at_spaces = tok.splits_at_spaces
        self.encoded_lengths = []

    def encode(self, text, add_bos=True, add_eos=True, trim_leading_whitespace=False):
        self.encoded_lengths.append(len(text))
        return self.tok.encode(text, add_bos, add_eos, trim_leading_whitespace)


@pytest.fixture(scope="module", params=MODELS)
def tok(request):
    return SentencePieceTokenizer(ASSETS / request.param)


FLAGS = [
    {"add_bos": True, "add_eos": True},
    {"add_bos": True, "add_eos": False},
    {"add_bos": False, "add_eos": True, "trim_leading_whitespace": True},
]


@pytest.mark.parametrize("flags", FLAGS)
def test_first_ids_of_the_whole_encoding(tok, flags):
    rng = random.Random(0)
    texts = [synthetic_text(rng, n) for n in (3, 40, 400, 2000) for _ in range(6)]
    texts += [
        "no_whitespace_at_all_" * 400,
        "word" + " " * 5000 + "after a long run of spaces",
        " leading space, trailing space ",
        "\u2581" * 50 + " x " * 300,
    ]
    used_byte_fallback = False
    for text in texts:
        whole = tok.encode(text, **flags)
        used_byte_fallback |= any(i in BYTE_FALLBACK_IDS for i in whole)
        for n in {0, 1, 2, 5, 16, 17, 100, 511, 512, 513, len(whole) - 1, len(whole), None}:
            expected = whole if n is None else whole[:n]
            assert encode_truncated(tok, text, n, **flags) == expected, (n, text[:80])
    assert used_byte_fallback


def test_encodes_only_a_prefix_of_a_long_text(tok):
    text = synthetic_text(random.Random(1), 20_000)  # ~250k characters
    recorder = RecordingTokenizer(tok)
    ids = encode_truncated(recorder, text, 513)
    assert ids == tok.encode(text)[:513]
    assert max(recorder.encoded_lengths) < 20_000


def test_text_without_spaces_is_encoded_in_checked_prefixes(tok):
    text = "x" * 50_000  # no space anywhere: no exact cut, so every cut is checked
    recorder = RecordingTokenizer(tok)
    assert encode_truncated(recorder, text, 10) == tok.encode(text)[:10]
    # Two prefixes, the second twice the first, had to agree; the whole was never encoded.
    lengths = recorder.encoded_lengths
    assert len(lengths) >= 2 and lengths[-1] >= 2 * lengths[-2]
    assert max(lengths) < len(text) // 10


def test_both_test_models_split_at_spaces(tok):
    assert tok.splits_at_spaces


def test_tokenizer_with_pieces_across_spaces_checks_every_cut(tmp_path):
    # A model trained with split_by_whitespace=False learns pieces such as "▁of▁the":
    # cutting "one of the" before " the" would change the ids before the cut.
    lines = ["one of the best of the day", "in the end of the story"] * 200
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, vocab_size=40, model_type="bpe",
        split_by_whitespace=False, minloglevel=2,
    )
    path = tmp_path / "spans_spaces.model"
    path.write_bytes(model.getvalue())
    tok = SentencePieceTokenizer(path)
    assert not tok.splits_at_spaces
    text = "one of the best of the day " * 3000
    cut_ids = tok.encode("one of", add_eos=False)
    assert tok.encode(text)[: len(cut_ids)] != cut_ids  # a naive cut would be wrong
    for n in (1, 8, 100, 1000):
        recorder = RecordingTokenizer(tok)
        assert encode_truncated(recorder, text, n) == tok.encode(text)[:n]
        # no cut is trusted: each answer came from two agreeing prefixes
        assert len(recorder.encoded_lengths) >= 2
        assert max(recorder.encoded_lengths) < len(text)
