import pickle
from pathlib import Path

import pytest

from torchtune import UserFileNotFoundError, UserValueError
from torchtune.tokenizers import SentencePieceTokenizer, Tokenizer

ASSETS = Path(__file__).parents[2] / "assets"


@pytest.fixture(scope="module")
def llama2_tok():
    return SentencePieceTokenizer(ASSETS / "llama2_tokenizer.model")


@pytest.fixture(scope="module")
def tok512():
    return SentencePieceTokenizer(ASSETS / "tok512.model")


def test_llama2_ids_and_special_tokens(llama2_tok):
    # Expected ids: shared/data/PROVENANCE.md, checked there with sentencepiece 0.2.3.
    text = "Hello world! TorchTune fine-tunes Llama 2 models."
    ids = [15043, 3186, 29991, 4794, 305, 29911, 1540, 2691, 29899, 29873, 7844, 365,
           29880, 3304, 29871, 29906, 4733, 29889]
    assert llama2_tok.encode(text, add_bos=False, add_eos=False) == ids
    assert llama2_tok.encode(text) == [1] + ids + [2]
    assert llama2_tok.encode(text, add_eos=False) == [1] + ids
    assert llama2_tok.decode([1] + ids + [2]) == text
    assert (llama2_tok.bos_id, llama2_tok.eos_id, llama2_tok.pad_id) == (1, 2, 0)
    assert llama2_tok.vocab_size == 32000
    assert isinstance(llama2_tok, Tokenizer)


def test_tok512(tok512):
    # Expected ids: shared/data/PROVENANCE.md (tok512.model).
    assert tok512.encode("Once upon a time", add_eos=False) == [1, 403, 407, 261, 378]
    assert (tok512.vocab_size, tok512.bos_id, tok512.eos_id, tok512.pad_id) == (512, 1, 2, 0)
    assert tok512.decode(tok512.encode("Once upon a time")) == "Once upon a time"


@pytest.mark.parametrize("name", ["llama2_tokenizer.model", "tok512.model"])
def test_trim_leading_whitespace(name):
    tok = SentencePieceTokenizer(ASSETS / name)
    for text in ["The cat.", "  two spaces", "\nnewline first", "x", ""]:
        whole = tok.encode("Prompt:\n" + text, add_bos=False, add_eos=False)
        prompt = tok.encode("Prompt:\n", add_bos=False, add_eos=False)
        trimmed = tok.encode(text, add_bos=False, add_eos=False, trim_leading_whitespace=True)
        assert prompt + trimmed == whole, text
    # Without trimming, SentencePiece's dummy prefix makes "The" into "▁The" (450, not 1576).
    if name == "llama2_tokenizer.model":
        assert tok.encode("The", add_bos=False, add_eos=False) == [450]
        trimmed = tok.encode("The", add_bos=False, add_eos=False, trim_leading_whitespace=True)
        assert trimmed == [1576]
        assert tok.encode("The", trim_leading_whitespace=True) == [1, 1576, 2]


def test_pickle_carries_the_model(llama2_tok, tmp_path):
    clone = pickle.loads(pickle.dumps(llama2_tok))
    assert clone.encode("pickled tokenizer") == llama2_tok.encode("pickled tokenizer")
    assert clone.path == llama2_tok.path
    # The pickle holds the model's bytes, so equal models pickle equally wherever they live
    # (HF datasets fingerprints its map cache from this).
    copy = tmp_path / "copy.model"
    copy.write_bytes((ASSETS / "llama2_tokenizer.model").read_bytes())
    state = SentencePieceTokenizer(copy).__getstate__()
    assert state["proto"] == llama2_tok.__getstate__()["proto"]


def test_missing_file(tmp_path):
    path = tmp_path / "nope.model"
    with pytest.raises(UserFileNotFoundError, match="nope.model"):
        SentencePieceTokenizer(path)


def test_not_a_model(tmp_path):
    path = tmp_path / "bad.model"
    path.write_text("this is not a sentencepiece model")
    with pytest.raises(UserValueError, match=r"bad.model is not a SentencePiece model"):
        SentencePieceTokenizer(path)


def test_decode_rejects_ids_outside_vocab(llama2_tok):
    with pytest.raises(ValueError, match=r"id -100 at position 1"):
        llama2_tok.decode([1, -100])
    with pytest.raises(ValueError, match=r"id 32000 at position 0"):
        llama2_tok.decode([32000])
