import json
from pathlib import Path

import pytest
import sentencepiece

from torchtune import UserValueError
from torchtune.datasets import chat_dataset, PackedDataset
from torchtune.tokenizers import SentencePieceTokenizer

ASSETS = Path(__file__).parents[2] / "assets"
IGN = -100
B_INST, E_INST = "[INST]", "[/INST]"
B_SYS, E_SYS = "<<SYS>>\n", "\n<</SYS>>\n\n"

DIALOGS = [
    [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And of Italy?"},
        {"role": "assistant", "content": "Rome."},
    ],
    [
        {"role": "user", "content": "Write a haiku about rain."},
        {
            "role": "assistant",
            "content": (
                "Soft rain on the roof\nwhispers to the sleeping town\nmorning smells of earth"
            ),
        },
    ],
]
SHAREGPT_ROLES = {"system": "system", "user": "human", "assistant": "gpt"}


def meta_reference(sp, dialog):
    """Token ids and labels for one dialog, following meta-llama/llama's
    ``Llama.chat_completion`` (llama/generation.py): one encode per [INST] turn with BOS
    and EOS. Labels mask each turn's "[INST] ... [/INST]" part."""
    if dialog[0]["role"] == "system":
        first = B_SYS + dialog[0]["content"] + E_SYS + dialog[1]["content"]
        dialog = [{"role": "user", "content": first}] + dialog[2:]
    tokens, labels = [], []
    for prompt, answer in zip(dialog[::2], dialog[1::2]):
        user = f"{B_INST} {prompt['content'].strip()} {E_INST}"
        turn = [1] + sp.encode(f"{user} {answer['content'].strip()} ") + [2]
        n_user = 1 + len(sp.encode(user))
        assert turn[:n_user] == [1] + sp.encode(user)
        tokens += turn
        labels += [IGN] * n_user + turn[n_user:]
    return tokens, labels


@pytest.fixture(scope="module")
def tok():
    return SentencePieceTokenizer(ASSETS / "llama2_tokenizer.model")


@pytest.fixture(scope="module")
def sp():
    return sentencepiece.SentencePieceProcessor(model_file=str(ASSETS / "llama2_tokenizer.model"))


def _write(tmp_path, style):
    if style == "openai":
        rows = [{"messages": d} for d in DIALOGS]
    else:
        to_sharegpt = lambda m: {"from": SHAREGPT_ROLES[m["role"]], "value": m["content"]}  # noqa
        rows = [{"conversations": [to_sharegpt(m) for m in d]} for d in DIALOGS]
    path = tmp_path / f"{style}.json"
    path.write_text(json.dumps(rows))
    return str(path)


@pytest.mark.parametrize("style", ["sharegpt", "openai"])
@pytest.mark.parametrize("train_on_input", [False, True])
def test_matches_meta_chat_encoding(tok, sp, tmp_path, style, train_on_input):
    column = "messages" if style == "openai" else "conversations"
    ds = chat_dataset(
        tok, "json", conversation_column=column, conversation_style=style,
        train_on_input=train_on_input, max_seq_len=512,
        data_files=_write(tmp_path, style), cache_dir=str(tmp_path / "cache"),
    )
    assert len(ds) == 2
    for i, dialog in enumerate(DIALOGS):
        tokens, labels = meta_reference(sp, dialog)
        assert ds[i]["tokens"] == tokens
        assert ds[i]["labels"] == (tokens if train_on_input else labels)
    # sanity: the reference really has a system block and two BOS-started turns
    assert tok.decode(ds[0]["tokens"]).startswith("[INST] <<SYS>>\nYou are a terse assistant.")
    assert ds[0]["tokens"].count(1) == 2 and ds[0]["tokens"].count(2) == 2


def test_packed(tok, sp, tmp_path):
    ds = chat_dataset(
        tok, "json", max_seq_len=256, packed=True,
        data_files=_write(tmp_path, "sharegpt"), cache_dir=str(tmp_path / "cache"),
    )
    assert isinstance(ds, PackedDataset) and len(ds) == 1
    (t0, l0), (t1, l1) = (meta_reference(sp, d) for d in DIALOGS)
    pad = 256 - len(t0) - len(t1)
    assert ds[0]["tokens"] == t0 + t1 + [0] * pad
    assert ds[0]["labels"] == l0 + l1 + [IGN] * pad
    assert ds[0]["seq_lens"] == [len(t0), len(t1), pad]


def test_bad_role_names_the_row(tok, tmp_path):
    path = tmp_path / "bad.json"
    rows = [
        {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]},
        {"conversations": [{"from": "human", "value": "hi"}, {"from": "bot", "value": "hello"}]},
    ]
    path.write_text(json.dumps(rows))
    msg = r"^row 1: column 'conversations': turn 1 has from='bot'"
    with pytest.raises(UserValueError, match=msg):
        chat_dataset(tok, "json", data_files=str(path), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(UserValueError, match="conversation_style 'xml' is not one of sharegpt"):
        chat_dataset(tok, "json", conversation_style="xml", data_files=str(path))
