"""torchtune 0.6.1's dataset builder signatures and arguments, on small local files.

Each test calls a builder the way a 0.6.1 config or script does (keyword arguments,
``source="json", data_files=...`` in place of the Hub id, the limit set as
``tokenizer.max_seq_len``) and checks the ids and labels it produces.
"""

import inspect
import json
import lzma
from pathlib import Path

import pytest

from torchtune import config
from torchtune._errors import UserError, UserValueError
from torchtune.data import AlpacaInstructTemplate
from torchtune.datasets import (
    alpaca_cleaned_dataset,
    alpaca_dataset,
    chat_dataset,
    cnn_dailymail_articles_dataset,
    grammar_dataset,
    instruct_dataset,
    PackedDataset,
    samsum_dataset,
    slimorca_dataset,
    text_completion_dataset,
    wikitext_dataset,
)
from torchtune.models.llama2 import llama2_tokenizer

ASSETS = Path(__file__).parents[2] / "assets"
ALPACA = str(ASSETS / "alpaca_1000.json")
IGN = -100
BOS, EOS = 1, 2

QA = [
    {"question": "What is the capital of France?", "answer": "Paris.", "n": 0},
    {"question": "Name a prime number.", "answer": "Seven.", "n": 1},
    {"question": "What colour is the sky?", "answer": "Blue.", "n": 2},
]


def _tok(max_seq_len=None):
    """The Llama 2 tokenizer with ``max_seq_len`` set as 0.6.1's builder sets it."""
    if "max_seq_len" in inspect.signature(llama2_tokenizer).parameters:
        return llama2_tokenizer(str(ASSETS / "llama2_tokenizer.model"), max_seq_len=max_seq_len)
    tok = llama2_tokenizer(str(ASSETS / "llama2_tokenizer.model"))
    tok.max_seq_len = max_seq_len
    return tok


@pytest.fixture(scope="module")
def tok():
    return _tok()


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("hf_cache"))


def _json(tmp_path, name, records):
    path = tmp_path / name
    path.write_text(json.dumps(records))
    return str(path)


def _inst(tok, user, answer):
    """Llama2ChatFormat ids and labels of one user/assistant exchange (prompt ignored)."""
    prompt = tok.encode(f"[INST] {user} [/INST]", add_bos=True, add_eos=False)
    response = tok.encode(f"{answer} ", add_bos=False, add_eos=True)
    return prompt + response, [IGN] * len(prompt) + response


def _items(ds):
    return [ds[i] for i in range(len(ds))]


# ---- instruct_dataset ---------------------------------------------------------------


def test_instruct_dataset_061_signature(tok, cache, tmp_path):
    data = _json(tmp_path, "qa.json", QA)
    ds = instruct_dataset(
        tokenizer=tok, source="json", data_files=data, split="train", cache_dir=cache,
        column_map={"input": "question", "output": "answer"}, packed=False,
    )
    # train_on_input defaults to False, as in 0.6.1: only the answer and EOS are learned
    assert _items(ds) == [
        dict(zip(("tokens", "labels"), _inst(tok, r["question"], r["answer"]))) for r in QA
    ]
    learned = instruct_dataset(
        tok, source="json", data_files=data, cache_dir=cache, train_on_input=True,
        column_map={"input": "question", "output": "answer"},
    )
    assert learned[1]["labels"] == learned[1]["tokens"] == _inst(tok, QA[1]["question"],
                                                                   QA[1]["answer"])[0]


def test_instruct_dataset_new_system_prompt_filter_fn_and_split(tok, cache, tmp_path):
    data = _json(tmp_path, "qa.json", [{"input": r["question"], "output": r["answer"],
                                        "n": r["n"]} for r in QA])
    ds = instruct_dataset(
        tok, source="json", data_files=data, cache_dir=cache, new_system_prompt="Be brief.",
        filter_fn=lambda r: r["n"] != 1, split="train[:2]",
    )
    # split keeps rows 0 and 1, filter_fn drops row 1; the system prompt is folded into
    # the first [INST] by Llama2ChatFormat and never learned
    user = f"<<SYS>>\nBe brief.\n<</SYS>>\n\n{QA[0]['question']}"
    assert _items(ds) == [dict(zip(("tokens", "labels"), _inst(tok, user, QA[0]["answer"])))]


def test_instruct_dataset_with_llama3_tokenizer(cache, tmp_path):
    from torchtune.models.llama3 import llama3_tokenizer

    path = tmp_path / "tokenizer.model"
    path.write_bytes(lzma.decompress((ASSETS / "llama3_tokenizer.model.xz").read_bytes()))
    tok3 = llama3_tokenizer(str(path), max_seq_len=24, chat_format="torchtune_061")
    data = _json(tmp_path, "qa.json", QA)

    def turn(role, text):
        return ([128006] + tok3.encode(role, False, False) + [128007]
                + tok3.encode("\n\n" + text, False, False) + [128009])

    system, user = turn("system", "Be brief."), turn("user", QA[0]["question"])
    answer = turn("assistant", QA[0]["answer"])
    ds = instruct_dataset(
        tok3, source="json", data_files=data, cache_dir=cache, train_on_input=True,
        column_map={"input": "question", "output": "answer"}, new_system_prompt="Be brief.",
        split="train[:1]",
    )
    full = [128000] + system + user + answer + [128001]
    assert len(full) > 24  # the tokenizer's max_seq_len cuts it: 24 ids, EOS last
    assert ds[0]["tokens"] == full[:23] + [128001]
    # train_on_input learns the user turn, never the new system prompt
    n_sys = 1 + len(system)
    assert ds[0]["labels"][:n_sys] == [IGN] * n_sys
    assert ds[0]["labels"][n_sys:23] == full[n_sys:23]


def test_instruct_dataset_user_errors(tok, cache, tmp_path):
    data = _json(tmp_path, "qa.json", QA)
    with pytest.raises(UserValueError, match=r"column_map key 'prompt' is not a column"):
        instruct_dataset(tok, source="json", data_files=data, column_map={"prompt": "question"})
    with pytest.raises(UserValueError, match=r"has no column 'input' \(its columns"):
        instruct_dataset(tok, source="json", data_files=data, cache_dir=cache,
                         column_map={"output": "answer"})
    with pytest.raises(UserValueError, match=r"^dataset: source is required"):
        instruct_dataset(tok, data_files=data)
    with pytest.raises(UserValueError, match=r"Unknown split \"validation\""):
        instruct_dataset(tok, source="json", data_files=data, cache_dir=cache,
                         split="validation", column_map={"input": "question", "output": "answer"})
    with pytest.raises(UserValueError, match=r"filter_fn kept none of its rows"):
        instruct_dataset(tok, source="json", data_files=data, cache_dir=cache,
                         filter_fn=lambda r: False)
    with pytest.raises(UserValueError, match=r"packed=True needs max_seq_len"):
        instruct_dataset(tok, source="json", data_files=data, packed=True)
    with pytest.raises(UserValueError, match=r"new_system_prompt needs template=None"):
        instruct_dataset(tok, "json", AlpacaInstructTemplate, new_system_prompt="x",
                         data_files=data)
    for err in (UserValueError,):
        assert issubclass(err, UserError)


# ---- alpaca_dataset / alpaca_cleaned_dataset ------------------------------------------


def test_alpaca_column_map_filter_fn_and_split(tok, cache, tmp_path):
    records = json.loads(Path(ALPACA).read_text())[:20]
    renamed = _json(tmp_path, "renamed.json", [
        {"q": r["instruction"], "ctx": r["input"], "a": r["output"]} for r in records
    ])
    plain = alpaca_dataset(tok, source="json", data_files=ALPACA, cache_dir=cache,
                           split="train[:20]")
    assert len(plain) == 20
    mapped = alpaca_dataset(
        tokenizer=tok, source="json", data_files=renamed, cache_dir=cache,
        column_map={"instruction": "q", "input": "ctx", "output": "a"},
        filter_fn=lambda r: r["ctx"] == "", split="train",
    )
    keep = [i for i, r in enumerate(records) if r["input"] == ""]
    assert 0 < len(keep) < 20
    assert _items(mapped) == [plain[i] for i in keep]
    # alpaca_cleaned_dataset is alpaca_dataset with another default source
    cleaned = alpaca_cleaned_dataset(tok, source="json", data_files=ALPACA, cache_dir=cache,
                                     split="train[5:8]", train_on_input=False)
    assert len(cleaned) == 3
    assert cleaned[0]["tokens"] == plain[5]["tokens"]
    assert cleaned[0]["labels"][0] == IGN and plain[5]["labels"][0] == BOS


def test_alpaca_truncates_to_tokenizer_max_seq_len(cache):
    ds = alpaca_dataset(_tok(max_seq_len=40), source="json", data_files=ALPACA,
                        cache_dir=cache, split="train[:30]")
    lengths = [len(x["tokens"]) for x in _items(ds)]
    assert max(lengths) == 40  # exactly max_seq_len tokens, as 0.6.1 keeps
    cut = _items(ds)[lengths.index(40)]
    assert cut["tokens"][-1] == EOS and cut["labels"][-1] == IGN
    # the builder's own max_seq_len wins over the tokenizer's
    longer = alpaca_dataset(_tok(max_seq_len=40), source="json", data_files=ALPACA,
                            cache_dir=cache, split="train[:30]", max_seq_len=60)
    assert max(len(x["tokens"]) for x in _items(longer)) == 60
    # no limit anywhere: nothing is cut (0.6.1 with tokenizer max_seq_len: null)
    full = alpaca_dataset(_tok(), source="json", data_files=ALPACA, cache_dir=cache,
                          split="train[:30]")
    assert max(len(x["tokens"]) for x in _items(full)) > 100


def test_alpaca_packed_to_tokenizer_max_seq_len(cache):
    ds = alpaca_dataset(_tok(max_seq_len=256), source="json", data_files=ALPACA,
                        cache_dir=cache, split="train[:20]", packed=True)
    assert isinstance(ds, PackedDataset) and ds.max_seq_len == 256
    rows = _items(ds)
    assert all(len(r["tokens"]) == len(r["labels"]) == 256 for r in rows)
    unpacked = alpaca_dataset(_tok(max_seq_len=256), source="json", data_files=ALPACA,
                              cache_dir=cache, split="train[:20]")
    assert sum(len(x["tokens"]) for x in _items(unpacked)) == sum(
        n for r in rows for n in r["seq_lens"][:-1]) + sum(
        r["seq_lens"][-1] for r in rows if r["tokens"][-1] != 0)


def test_061_config_instantiates(tok, cache):
    cfg = {
        "_component_": "torchtune.datasets.alpaca_cleaned_dataset",
        "packed": False, "train_on_input": True, "source": "json", "data_files": ALPACA,
        "split": "train[:4]", "cache_dir": cache,
    }
    ds = config.instantiate(cfg, tok)
    assert len(ds) == 4 and ds[0]["tokens"][:3] == [1, 13866, 338]


# ---- chat_dataset and slimorca_dataset ------------------------------------------------

CONVERSATIONS = [
    {"dialog": [{"role": "system", "content": "Old prompt."},
                {"role": "user", "content": "Hi there"},
                {"role": "assistant", "content": "Hello!"}], "keep": True},
    {"dialog": [{"role": "user", "content": "Bye"},
                {"role": "assistant", "content": "Goodbye."}], "keep": False},
    {"dialog": [{"role": "user", "content": "Two plus two?"},
                {"role": "assistant", "content": "Four."}], "keep": True},
]


def test_chat_dataset_061_signature(tok, cache, tmp_path):
    data = _json(tmp_path, "chat.json", CONVERSATIONS)
    ds = chat_dataset(
        tokenizer=tok, source="json", data_files=data, cache_dir=cache,
        conversation_column="dialog", conversation_style="openai",
        new_system_prompt="New prompt.", filter_fn=lambda r: r["keep"], split="train",
        packed=False, train_on_input=False,
    )
    # the record's own system turn is replaced by new_system_prompt
    first = _inst(tok, "<<SYS>>\nNew prompt.\n<</SYS>>\n\nHi there", "Hello!")
    third = _inst(tok, "<<SYS>>\nNew prompt.\n<</SYS>>\n\nTwo plus two?", "Four.")
    assert _items(ds) == [dict(zip(("tokens", "labels"), x)) for x in (first, third)]


def test_chat_dataset_tokenizer_max_seq_len_and_packing(cache, tmp_path):
    data = _json(tmp_path, "chat.json", CONVERSATIONS)
    ds = chat_dataset(_tok(max_seq_len=8), source="json", data_files=data, cache_dir=cache,
                      conversation_column="dialog", conversation_style="openai",
                      split="train[1:]", train_on_input=True)
    full = _inst(_tok(), "Bye", "Goodbye.")[0]
    assert len(full) > 8 and ds[0]["tokens"] == full[:7] + [EOS]
    packed = chat_dataset(_tok(max_seq_len=64), source="json", data_files=data,
                          cache_dir=cache, conversation_column="dialog",
                          conversation_style="openai", packed=True)
    assert isinstance(packed, PackedDataset) and len(packed[0]["tokens"]) == 64


def test_slimorca_dataset(tok, cache, tmp_path):
    records = [{"conv": [{"from": "system", "value": "Sys."},
                         {"from": "human", "value": "Hi there"},
                         {"from": "gpt", "value": "Hello!"}], "n": i} for i in range(3)]
    data = _json(tmp_path, "orca.json", records)
    ds = slimorca_dataset(tok, source="json", data_files=data, cache_dir=cache,
                          column_map={"conversations": "conv"}, split="train[:2]",
                          new_system_prompt="New.", train_on_input=True)
    tokens, _ = _inst(tok, "<<SYS>>\nNew.\n<</SYS>>\n\nHi there", "Hello!")
    assert _items(ds) == [{"tokens": tokens, "labels": tokens}] * 2
    with pytest.raises(UserValueError, match=r"column_map key 'messages' is not one of"):
        slimorca_dataset(tok, source="json", data_files=data, column_map={"messages": "conv"})


# ---- samsum_dataset and grammar_dataset -----------------------------------------------


def test_samsum_and_grammar_datasets(tok, cache, tmp_path):
    samsum = _json(tmp_path, "samsum.json", [
        {"dialogue": "A: hi\nB: hello", "summary": "They greet."},
        {"dialogue": "A: bye", "summary": "A leaves."},
    ])
    ds = samsum_dataset(tok, source="json", data_files=samsum, cache_dir=cache,
                        filter_fn=lambda r: r["summary"] != "A leaves.")
    assert _items(ds) == [dict(zip(("tokens", "labels"),
                                   _inst(tok, "A: hi\nB: hello", "They greet.")))]
    grammar = _json(tmp_path, "grammar.json", [{"input": "He go home.", "output": "He goes home."}])
    ds = grammar_dataset(tok, source="json", data_files=grammar, cache_dir=cache,
                         train_on_input=True)
    tokens = _inst(tok, "He go home.", "He goes home.")[0]
    assert _items(ds) == [{"tokens": tokens, "labels": tokens}]
    renamed = _json(tmp_path, "renamed.json", [{"bad": "He go home.", "good": "He goes home."}])
    ds = grammar_dataset(tok, source="json", data_files=renamed, cache_dir=cache,
                         column_map={"input": "bad", "output": "good"})
    assert ds[0]["tokens"] == tokens


# ---- text completion: text_completion_dataset, wikitext, cnn_dailymail ----------------

TEXTS = ["The quick brown fox jumps over the lazy dog. " * 3, "Short one.", "Another text."]


def test_text_completion_061_arguments(cache, tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(TEXTS) + "\n")
    tok = _tok(max_seq_len=16)
    ds = text_completion_dataset(tok, source="text", data_files=str(path), cache_dir=cache,
                                 column="text", add_eos=True, split="train[:2]",
                                 filter_fn=lambda r: True)
    full = _tok().encode(TEXTS[0], add_bos=True, add_eos=True)
    # 16 ids, EOS last (not learned: the text was cut); 0.6.1 kept 15 (max_seq_len - 1)
    assert ds[0]["tokens"] == full[:15] + [EOS]
    assert ds[0]["labels"] == full[:15] + [IGN]
    assert ds[1]["tokens"] == _tok().encode("Short one.", add_bos=True, add_eos=True)
    assert len(ds) == 2
    dropped = text_completion_dataset(tok, source="text", data_files=str(path),
                                      cache_dir=cache, filter_fn=lambda r: "fox" not in r["text"])
    assert len(dropped) == 2
    # packed: rows of tokenizer.max_seq_len; documents split across rows by default
    packed = text_completion_dataset(tok, source="text", data_files=str(path),
                                     cache_dir=cache, packed=True)
    total = sum(len(_tok().encode(line)) for line in path.read_text().splitlines())
    assert len(packed) == -(-total // 16)
    whole = text_completion_dataset(tok, source="text", data_files=str(path), cache_dir=cache,
                                    packed=True, split_across_pack=False)
    assert whole[0]["seq_lens"][0] == 16  # cut to the row, not split
    with pytest.raises(UserValueError, match=r"packed=True needs max_seq_len"):
        text_completion_dataset(_tok(), source="text", data_files=str(path), packed=True)


def test_wikitext_and_cnn_dailymail(cache, tmp_path):
    tok = _tok()
    pages = _json(tmp_path, "wiki.json", [{"page": t} for t in TEXTS])
    ds = wikitext_dataset(tok, source="json", subset=None, data_files=pages, cache_dir=cache,
                          split="train[1:]", max_seq_len=4)
    assert ds[0]["tokens"] == tok.encode(TEXTS[1], add_bos=True, add_eos=True)[:3] + [EOS]
    assert len(ds) == 2
    articles = _json(tmp_path, "cnn.json", [{"article": t, "id": i} for i, t in enumerate(TEXTS)])
    ds = cnn_dailymail_articles_dataset(tok, source="json", data_files=articles,
                                        cache_dir=cache, filter_fn=lambda r: r["id"] == 2)
    assert _items(ds) == [{"tokens": tok.encode(TEXTS[2]), "labels": tok.encode(TEXTS[2])}]


def test_packed_dataset_max_packs(tok):
    samples = [{"tokens": [1, 5, 6, 2], "labels": [1, 5, 6, 2]}] * 5
    ds = PackedDataset(samples, max_seq_len=8, max_packs=2)
    assert len(ds) == 2
    assert len(PackedDataset(samples, max_seq_len=8)) == 3


def test_concat_dataset():
    from torchtune.datasets import ConcatDataset

    a = [{"tokens": [1, i], "labels": [1, i]} for i in range(3)]
    b = [{"tokens": [1, 10 + i], "labels": [1, 10 + i]} for i in range(2)]
    ds = ConcatDataset([a, b])
    assert len(ds) == 5 and not ds.packed
    assert [ds[i]["tokens"][1] for i in range(5)] == [0, 1, 2, 10, 11]
    assert ds[-1]["tokens"] == [1, 11]
    with pytest.raises(UserValueError, match=r"datasets 1 are packed and the others are not"):
        ConcatDataset([a, PackedDataset(a, max_seq_len=4)])
