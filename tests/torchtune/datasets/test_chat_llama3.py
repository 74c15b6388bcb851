"""chat_dataset and alpaca_dataset with the Llama 3 tokenizer, end to end on JSON files."""

import json
import lzma
from pathlib import Path

import pytest

from torchtune import UserValueError
from torchtune.data import AlpacaInstructTemplate, Llama2ChatFormat
from torchtune.datasets import alpaca_dataset, chat_dataset, PackedDataset
from torchtune.models.llama3._tokenizer import llama3_tokenizer

ASSETS = Path(__file__).parents[2] / "assets"
IGN = -100
DIALOGS = [
    [("system", "You are a terse assistant."), ("user", "What is the capital of France?"),
     ("assistant", "Paris."), ("user", "And of Italy? <|eot_id|>"), ("assistant", "Rome.")],
    [("user", "Write a haiku about rain."),
     ("assistant", "Soft rain on the roof\nwhispers to the sleeping town\nmorning smells")],
]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    # stored xz-compressed: tests/assets keeps each file under 1 MB
    path = tmp_path_factory.mktemp("llama3") / "tokenizer.model"
    path.write_bytes(lzma.decompress((ASSETS / "llama3_tokenizer.model.xz").read_bytes()))
    # the 0.6.1 chat format, whose ids these tests write out (no dated system turn)
    return llama3_tokenizer(path, chat_format="torchtune_061")


def reference(tok, dialog, train_on_input=False):
    """The official format spelled out from encode() and the special ids."""
    tokens, labels = [128000], [IGN]
    for role, content in dialog:
        ids = ([128006] + tok.encode(role, False, False) + [128007]
               + tok.encode("\n\n" + content.strip(), False, False) + [128009])
        tokens += ids
        labels += ids if role == "assistant" or train_on_input else [IGN] * len(ids)
    return tokens + [128001], labels + [IGN]


def write(tmp_path, style="openai"):
    if style == "openai":
        rows = [{"messages": [{"role": r, "content": c} for r, c in d]} for d in DIALOGS]
    else:
        names = {"system": "system", "user": "human", "assistant": "gpt"}
        rows = [{"conversations": [{"from": names[r], "value": c} for r, c in d]}
                for d in DIALOGS]
    path = tmp_path / f"{style}.json"
    path.write_text(json.dumps(rows))
    return str(path)


@pytest.mark.parametrize("train_on_input", [False, True])
@pytest.mark.parametrize("style", ["openai", "sharegpt"])
def test_llama3_format_and_labels(tok, tmp_path, style, train_on_input):
    ds = chat_dataset(
        tok, "json", conversation_column="messages" if style == "openai" else "conversations",
        conversation_style=style, train_on_input=train_on_input, max_seq_len=512,
        data_files=write(tmp_path, style), cache_dir=str(tmp_path / "cache"),
    )
    assert len(ds) == 2
    for i, dialog in enumerate(DIALOGS):
        tokens, labels = reference(tok, dialog, train_on_input)
        assert ds[i]["tokens"] == tokens
        assert ds[i]["labels"] == labels
    text = tok.decode(ds[0]["tokens"], skip_special_tokens=False)
    assert text.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
                           "You are a terse assistant.<|eot_id|>")
    assert ds[0]["tokens"].count(128009) == 5  # the "<|eot_id|>" a user typed is text
    if not train_on_input:
        learned = [t for t in ds[0]["labels"] if t != IGN]
        assert tok.decode(learned, skip_special_tokens=False) == (
            "<|start_header_id|>assistant<|end_header_id|>\n\nParis.<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\nRome.<|eot_id|>")


def test_truncation_and_packing(tok, tmp_path):
    path = write(tmp_path)
    full = [reference(tok, d)[0] for d in DIALOGS]
    ds = chat_dataset(tok, "json", conversation_column="messages", conversation_style="openai",
                      max_seq_len=20, data_files=path, cache_dir=str(tmp_path / "c1"))
    assert ds[1]["tokens"] == full[1][:19] + [128001]  # EOS kept last, as for Llama 2
    packed = chat_dataset(tok, "json", conversation_column="messages",
                          conversation_style="openai", max_seq_len=128, packed=True,
                          data_files=path, cache_dir=str(tmp_path / "c2"))
    assert isinstance(packed, PackedDataset)
    row = packed[0]["tokens"]
    assert row[: len(full[0])] == full[0] and row[-1] == tok.pad_id == 128004


def test_explicit_text_format_still_used(tok, tmp_path):
    ds = chat_dataset(tok, "json", conversation_column="messages", conversation_style="openai",
                      chat_format=Llama2ChatFormat, data_files=write(tmp_path),
                      cache_dir=str(tmp_path / "cache"))
    assert 128006 not in ds[1]["tokens"]
    assert tok.decode(ds[1]["tokens"]).startswith("[INST] Write a haiku")


def test_bad_turn_names_the_row(tok, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([{"messages": [{"role": "bot", "content": "x"}]}]))
    with pytest.raises(UserValueError, match=r"^row 0: column 'messages': turn 0 has role='bot'"):
        chat_dataset(tok, "json", conversation_column="messages", conversation_style="openai",
                     data_files=str(path), cache_dir=str(tmp_path / "cache"))


def test_alpaca_with_llama3(tok, tmp_path):
    records = json.loads((ASSETS / "alpaca_1000.json").read_text())[:50]
    path = tmp_path / "alpaca.json"
    path.write_text(json.dumps(records))
    ds = alpaca_dataset(tok, "json", train_on_input=False, max_seq_len=4096,
                        data_files=str(path), cache_dir=str(tmp_path / "cache"))
    assert len(ds) == 50
    for i in (0, 17, 49):
        r = records[i]
        prompt = AlpacaInstructTemplate.format(r)
        whole = tok.encode(prompt + r["output"])
        n = len(tok.encode(prompt, add_eos=False))
        assert ds[i]["tokens"] == whole
        assert ds[i]["labels"] == [IGN] * n + whole[n:]
