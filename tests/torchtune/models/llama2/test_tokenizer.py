"""The Llama 2 tokenizer on 1,000 real Alpaca records (tests/assets/alpaca_1000.json)."""

import json
from pathlib import Path

import pytest

from torchtune.data import AlpacaInstructTemplate
from torchtune.models.llama2 import llama2_tokenizer
from torchtune.tokenizers import SentencePieceTokenizer

ASSETS = Path(__file__).parents[3] / "assets"
TOKENIZER = ASSETS / "llama2_tokenizer.model"


@pytest.fixture(scope="module")
def tok():
    return llama2_tokenizer(str(TOKENIZER))


@pytest.fixture(scope="module")
def records():
    return json.loads((ASSETS / "alpaca_1000.json").read_text())


@pytest.fixture(scope="module")
def texts(records):
    return [r[k] for r in records for k in ("instruction", "input", "output")]


def _hf_llama_tokenizer(path: Path):
    """transformers' Llama tokenizer built from the same tokenizer.model, offline.

    In transformers 5.x ``LlamaTokenizer`` (``LlamaTokenizerFast`` is an alias) is backed
    by the Rust ``tokenizers`` BPE; there is no sentencepiece-backed Llama class any more.
    ``LlamaTokenizer.from_pretrained(dir_with_tokenizer_model)`` converts the file with
    merges ranked by piece *id*; that differs from SentencePiece on runs of spaces (pieces
    "▁▁", "▁▁▁▁"... have score -1e9 and id 259, 268...): 32 of these 3,000 texts get
    other ids. Ranking the merges by SentencePiece *score*, as SentencePiece itself does,
    reproduces its ids exactly on all 3,000. (It still differs on a text that starts with
    a space: its Metaspace pre-tokenizer adds no dummy prefix then; no Alpaca field does.)
    """
    transformers = pytest.importorskip("transformers")
    from transformers.convert_slow_tokenizer import import_protobuf
    from transformers.tokenization_utils_base import generate_merges

    proto = import_protobuf().ModelProto()
    proto.ParseFromString(path.read_bytes())
    vocab = {p.piece: i for i, p in enumerate(proto.pieces)}
    scores = {p.piece: p.score for p in proto.pieces}
    return transformers.LlamaTokenizer(vocab=vocab, merges=generate_merges(vocab, scores))


def test_builder_returns_sentencepiece_tokenizer(tok):
    # it holds the SentencePiece model (composition, not inheritance)
    assert isinstance(tok._base, SentencePieceTokenizer)
    assert (tok.vocab_size, tok.bos_id, tok.eos_id, tok.pad_id) == (32000, 1, 2, 0)


def test_same_ids_as_transformers_on_alpaca(tok, texts):
    hf = _hf_llama_tokenizer(TOKENIZER)
    assert len(texts) == 3000
    for text in texts:
        ours = tok.encode(text)
        assert ours[1:-1] == hf.encode(text, add_special_tokens=False), text[:60]
        assert (ours[0], ours[-1]) == (hf.bos_token_id, hf.eos_token_id)


def test_decode_encode_round_trip_on_alpaca(tok, texts):
    for text in texts:
        assert tok.decode(tok.encode(text)) == text


def test_prompt_and_response_encoded_separately_equal_the_whole_text(tok, records):
    """For every record, BOS + prompt + response + EOS encoded in two parts equals the
    whole text encoded at once, which is how the model sees it at inference.

    It holds for all 1,000 because the Alpaca prompt ends with "\\n": no Llama 2 piece
    contains a newline (it is the byte-fallback piece <0x0A>), so no merge crosses the
    boundary, and ``trim_leading_whitespace`` removes the dummy-prefix space that
    SentencePiece would otherwise put before the response. It would not hold for a
    template ending mid-word or in a space, where a merge can span the boundary.
    """
    spurious = 0
    for r in records:
        prompt = AlpacaInstructTemplate.format(r)
        whole = tok.encode(prompt + r["output"])
        p = tok.encode(prompt, add_eos=False)
        resp = tok.encode(r["output"], add_bos=False, trim_leading_whitespace=True)
        assert p + resp == whole, r["instruction"][:60]
        naive = tok.encode(r["output"], add_bos=False)
        spurious += p + naive != whole
    # Encoding the response naively (with the dummy prefix) gives a spurious space token on
    # every one of these records (all outputs start with a non-space character).
    assert spurious == len(records)
