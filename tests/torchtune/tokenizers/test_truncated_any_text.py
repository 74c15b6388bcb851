"""encode_truncated on texts without spaces, with every backend: the ids of a full encode,
at a cost that follows max_tokens, not the text.

Backends: Llama 2's and tok512's SentencePiece models and Llama 3's tiktoken ranks
(tests/assets), a byte-level BPE ``tokenizer.json`` with Qwen's pre-tokenizer trained here
with the ``tokenizers`` library, and Qwen 2.5's and Qwen 3's real ``tokenizer.json``
(shared/data, skipped when absent).
"""

import json
import lzma
import random
from pathlib import Path

import pytest
import sentencepiece
from tokenizers import decoders, models, normalizers, pre_tokenizers, Regex, trainers
from tokenizers import Tokenizer as HFTokenizer

from torchtune.models.llama3 import llama3_tokenizer
from torchtune.models.qwen2._tokenizer import QWEN_SPLIT_PATTERN
from torchtune.models.qwen2_5 import qwen2_5_tokenizer
from torchtune.models.qwen3 import qwen3_tokenizer
from torchtune.tokenizers import encode_truncated, HuggingFaceBaseTokenizer, SentencePieceTokenizer
from torchtune.tokenizers._tiktoken import load_tiktoken_ranks
from torchtune.tokenizers._truncated import _MARGIN_IDS

REPO = Path(__file__).parents[3]
ASSETS = REPO / "tests" / "assets"
SHARED_TOKENIZERS = REPO.parent / "shared" / "data" / "tokenizers"
QWEN_FACTORIES = {"qwen2.5": qwen2_5_tokenizer, "qwen3": qwen3_tokenizer}
BACKENDS = ["llama2", "tok512", "llama3", "trained_json", "qwen2.5", "qwen3"]

LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
STORY = (ASSETS / "tinystories_sample_eot.txt").read_text(encoding="utf-8")


def _alpaca_texts():
    records = json.loads((ASSETS / "alpaca_1000.json").read_text(encoding="utf-8"))
    return [r[k] for r in records for k in ("instruction", "input", "output") if r[k]]


def _trained_tokenizer_json() -> str:
    """A byte-level BPE with Qwen's normalizer and pre-tokenizer, trained on the alpaca
    records plus lines of CJK, digits and letter runs, so that merges inside long runs
    exist to be cut."""
    rng = random.Random(0)
    corpus = _alpaca_texts() + [
        "".join(chr(rng.randint(0x4E00, 0x4FFF)) for _ in range(40)) for _ in range(300)
    ] + ["a" * n for n in range(1, 33)] + [str(rng.randint(0, 10**12)) for _ in range(300)]
    tok = HFTokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_SPLIT_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])  # fmt: skip
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=3000, special_tokens=["<|endoftext|>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )  # fmt: skip
    tok.train_from_iterator(corpus, trainer)
    return tok.to_str()


class Backend:
    """A tokenizer, and the texts of its vocabulary's tokens (to bound characters per id)."""

    def __init__(self, name, tok, token_texts):
        self.name, self.tok, self.token_texts = name, tok, token_texts

    def max_chars_per_id(self, alphabet: str) -> int:
        """The most characters of a text over ``alphabet`` that one id can spell: every id
        of its encoding spells a substring of it, so the id is a token over the alphabet
        (SentencePiece's dummy-prefix "▁" spells no character of the text)."""
        chars = set(alphabet)
        # A character without a token of its own is byte-fallback ids: one character.
        return max(
            (len(t) for t in (t.removeprefix("\u2581") for t in self.token_texts)
             if t and set(t) <= chars),
            default=1,
        )


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request, tmp_path_factory) -> Backend:
    name = request.param
    if name in ("llama2", "tok512"):
        path = ASSETS / ("llama2_tokenizer.model" if name == "llama2" else "tok512.model")
        spm = sentencepiece.SentencePieceProcessor(model_file=str(path))
        pieces = [spm.id_to_piece(i) for i in range(spm.vocab_size())]
        return Backend(name, SentencePieceTokenizer(path), pieces)
    if name == "llama3":
        path = tmp_path_factory.mktemp("llama3") / "tokenizer.model"
        path.write_bytes(lzma.decompress((ASSETS / "llama3_tokenizer.model.xz").read_bytes()))
        texts = [b.decode("utf-8", "ignore") for b in load_tiktoken_ranks(str(path))]
        return Backend(name, llama3_tokenizer(str(path)), texts)
    if name == "trained_json":
        text = _trained_tokenizer_json()
        hf = HFTokenizer.from_str(text)
        tok = HuggingFaceBaseTokenizer(
            "trained tokenizer.json", bos_id=None, eos_id=hf.token_to_id("<|endoftext|>"),
            splits_at_spaces=True,  # Qwen's pattern: torchtune/models/qwen2/_tokenizer.py
            tokenizer_json=text,
        )
    else:
        path = SHARED_TOKENIZERS / name / "tokenizer.json"
        if not path.is_file():
            pytest.skip(f"needs shared/data/tokenizers/{name} (not in a user's clone)")
        tok = QWEN_FACTORIES[name](str(path))
        hf = HFTokenizer.from_file(str(path))
    # Byte-level BPE writes printable ASCII as itself, which is all max_chars_per_id asks.
    return Backend(name, tok, list(hf.get_vocab()))


class CountingTokenizer:
    """A real tokenizer that also counts the characters of every text it encodes."""

    def __init__(self, tok):
        self.tok = tok
        self.splits_at_spaces = getattr(tok, "splits_at_spaces", True)
        self.lengths = []

    def encode(self, text, add_bos=True, add_eos=True, trim_leading_whitespace=False):
        self.lengths.append(len(text))
        return self.tok.encode(text, add_bos, add_eos, trim_leading_whitespace)


def _random(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choices(alphabet, k=n))


def _cjk(rng: random.Random, n: int, punctuation: bool) -> str:
    chars = [chr(rng.randint(0x4E00, 0x9FFF)) for _ in range(n)]
    if punctuation:
        for i in range(rng.randint(5, 40), n, rng.randint(5, 40)):
            chars[i] = rng.choice("，。、；：")
    return "".join(chars)


def _mixed(rng: random.Random, n: int) -> str:
    """Runs that stress other boundaries: letters, digits, punctuation, emoji, combining
    marks, SentencePiece's "▁", no-break space, CR LF, and no U+0020 anywhere."""
    parts = [
        lambda: _random(rng, LETTERS, rng.randint(1, 30)), lambda: str(rng.randint(0, 10**9)),
        lambda: rng.choice([".", ",", "--", "...", "!?", "'s", "()", "==>"]),
        lambda: rng.choice(["😀", "🧬🧬", "日本語", "e\u0301", "ñ", "\u2581", "\u00a0", "\r\n"]),
    ]  # fmt: skip
    out, size = [], 0
    while size < n:
        out.append(rng.choice(parts)())
        size += len(out[-1])
    return "".join(out)


def _code(rng: random.Random, n: int) -> str:
    """Python-like lines indented with tabs, words separated by tabs and newlines only."""
    out, size = [], 0
    while size < n:
        i = rng.randint(0, 999)
        out.append(
            f"def\tf{i}(x,y={i}):\n\tif\tx>y:\n\t\treturn\tx*{i}+y\n\treturn\t[x]*y\n\n"
        )
        size += len(out[-1])
    return "".join(out)


N = 50_000  # long enough that a cut for 513 ids falls well inside it
_rng = random.Random(0)
_words = " ".join(_alpaca_texts()).split()
# Texts with no U+0020 space before their end, so no exact cut helps: every cut is checked.
NO_SPACE_TEXTS = {
    "one_letter": "a" * N,
    "random_letters": _random(_rng, LETTERS, N),
    "digits": _random(_rng, "0123456789", N),
    "newline_words": "\n".join(_words)[:N],
    "tab_newline_code": _code(_rng, N),
    "cjk": _cjk(_rng, N // 3, punctuation=False),
    "cjk_punctuated": _cjk(_rng, N // 3, punctuation=True),
    "mixed": _mixed(_rng, N),
    "story_without_spaces": (STORY.replace(" ", "") * (N // len(STORY) + 1))[:N],
    "letters_then_space_at_end": _random(_rng, LETTERS, N) + " and the end.",
    "one_letter_then_newline_at_end": "a" * N + "\n",
    "digits_then_spaces_at_end": _random(_rng, "0123456789", N) + "  1 2",
}
# Long runs of whitespace, where checked cuts fall inside the run. tok512 collapses a run
# of spaces (remove_extra_whitespaces), so no prefix of "spaces" yields enough ids.
WHITESPACE_RUNS = {
    "newlines": "\n" * 60_000 + "x",
    "tabs": "word" + "\t" * 60_000 + "y",
    "spaces": " " * 60_000 + "z",
    "mixed_whitespace": "a" + "\t \n\r\n  " * 10_000 + "b",
}
MAX_TOKENS = [1, 2, 17, 100, 513, 2048]


@pytest.mark.parametrize("name", sorted(NO_SPACE_TEXTS))
def test_text_without_spaces_gives_the_first_ids_of_the_whole(backend, name):
    text = NO_SPACE_TEXTS[name]
    whole = backend.tok.encode(text)
    for n in MAX_TOKENS + [len(whole) - 1, len(whole)]:
        counter = CountingTokenizer(backend.tok)
        assert encode_truncated(counter, text, n) == whole[:n], (name, n)
        if n <= 513:
            # the ids came from prefixes (the check), not from encoding the whole text
            assert max(counter.lengths) < len(text), (name, n)


@pytest.mark.parametrize("flags", [
    {"add_bos": True, "add_eos": False},
    {"add_bos": False, "add_eos": True, "trim_leading_whitespace": True},
])  # fmt: skip
@pytest.mark.parametrize("name", ["random_letters", "mixed", "tab_newline_code"])
def test_flags_are_passed_to_every_prefix(backend, name, flags):
    text = NO_SPACE_TEXTS[name]
    whole = backend.tok.encode(text, **flags)
    for n in (1, 100, 2048):
        counter = CountingTokenizer(backend.tok)
        assert encode_truncated(counter, text, n, **flags) == whole[:n], (name, n)
        if n <= 100:  # from prefixes, which got the flags, not from the whole text
            assert max(counter.lengths) < len(text), (name, n)


@pytest.mark.parametrize("name", sorted(WHITESPACE_RUNS))
def test_runs_of_whitespace_give_the_first_ids_of_the_whole(backend, name):
    text = WHITESPACE_RUNS[name]
    whole = backend.tok.encode(text)
    collapsed = backend.name == "tok512" and name == "spaces"  # one "▁" for the whole run
    for n in MAX_TOKENS + [len(whole)]:
        counter = CountingTokenizer(backend.tok)
        assert encode_truncated(counter, text, n) == whole[:n], (name, n)
        if n <= 100 and not collapsed:  # settled by prefixes of a few hundred characters
            assert max(counter.lengths) < len(text), (name, n)


def test_a_cut_can_change_ids_before_it_but_never_more_than_the_margin(backend):
    """Why the cuts are checked, and the measurement the module docstring cites: cutting
    a run without whitespace changes the last ids of the prefix's encoding (so a prefix
    alone is not enough), and in these texts never more than ``_MARGIN_IDS`` of them,
    which the cost bound of the test below assumes."""
    rng = random.Random(1)
    texts = ["a" * 20_000, "ab" * 10_000, "aab" * 7_000, _random(rng, LETTERS, 20_000),
             _random(rng, "0123456789", 20_000), _cjk(rng, 8_000, punctuation=False),
             _mixed(rng, 20_000), (STORY.replace(" ", "") * 6)[:20_000]]  # fmt: skip
    changed = []
    for text in texts:
        whole = backend.tok.encode(text, add_eos=False)
        for cut in range(700, len(text), 701):
            ids = backend.tok.encode(text[:cut], add_eos=False)
            same = next((i for i, (a, b) in enumerate(zip(ids, whole)) if a != b), len(ids))
            changed.append(len(ids) - same)
    assert max(changed) > 0
    assert max(changed) < _MARGIN_IDS


@pytest.fixture(scope="module")
def huge_texts():
    """20-million-character texts without whitespace, each a block repeated."""
    rng = random.Random(2)
    size = 20_000_000

    def repeat(block):
        return (block * (size // len(block) + 1))[:size]

    return {
        "one_letter": ("a" * size, "a"),
        "random_letters": (repeat(_random(rng, LETTERS, 1_000_003)), LETTERS),
        "digits": (repeat(_random(rng, "0123456789", 1_000_003)), "0123456789"),
        # ASCII only, so that byte-level tokens over the alphabet are its characters
        "story_without_spaces": (
            repeat(STORY.replace(" ", "").replace("\n", "").encode("ascii", "ignore").decode()),
            None,
        ),
    }


@pytest.mark.parametrize(
    "name", ["one_letter", "random_letters", "digits", "story_without_spaces"]
)
def test_huge_text_without_whitespace_costs_work_in_proportion_to_max_tokens(
    backend, huge_texts, name
):
    """A 20-million-character record at max_tokens 2048: the characters passed to
    ``encode``, over all calls, stay under a bound that follows max_tokens.

    Bound: with ``w = max_tokens + _MARGIN_IDS`` and at most ``K`` characters per id,
    the cuts of a text without whitespace are ``6w * 2**i``. The first cut ``c`` with
    ``c >= K * (w + 16)`` yields at least ``w + 16`` ids, whose first ``w`` a cut leaves
    alone (it changes fewer than 16 ids: the test above), and so does the next cut: the
    check passes there. The cuts sum to less than twice the last, four times ``c``, and
    ``c < 2 * K * (w + 16)``, unless ``c`` is the first cut ``6w`` and the cuts sum to
    ``18w``: so at most ``max(8 * K, 18) * (w + 16)`` characters in all.
    """
    text, alphabet = huge_texts[name]
    alphabet = alphabet or "".join(sorted(set(text[:10_000])))
    k = backend.max_chars_per_id(alphabet)
    max_tokens = 2048
    w = max_tokens + _MARGIN_IDS
    counter = CountingTokenizer(backend.tok)
    ids = encode_truncated(counter, text, max_tokens)
    assert len(ids) == max_tokens
    bound = max(8 * k, 18) * (w + 16)
    assert sum(counter.lengths) <= bound, (k, counter.lengths)
    assert bound < len(text) // 10  # the bound is far below the text: not vacuous
    if backend.name == "llama3":
        # Exact here: Llama 3's tokenizer encodes runs in 25,000-character pieces counted
        # from the run's start, so a prefix of whole pieces gives a prefix of the ids.
        assert ids == backend.tok.encode(text[:200_000], add_eos=False)[:max_tokens]
