"""torchtune 0.6.1 tokenizer arguments: vocab.json + merges.txt for Qwen, special_tokens_path,
max_seq_len / truncation_type, prompt_template, and the 0.6.1 configs' tokenizer nodes.

The vocab.json + merges.txt files are extracted from a tokenizer.json: from the tiny one the
Qwen tokenizer tests build (always runs) and from the real Qwen 2.5 file in shared/data
(skips without it). Either way, both loading paths must give identical ids.
"""

import copy
import json
import lzma
import pickle
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from torchtune import UserFileNotFoundError, UserValueError
from torchtune.config import instantiate
from torchtune.data import Message
from torchtune.models.llama2 import llama2_tokenizer
from torchtune.models.llama3 import llama3_tokenizer
from torchtune.models.qwen2 import qwen2_tokenizer
from torchtune.models.qwen2_5 import qwen2_5_tokenizer
from torchtune.models.qwen3 import qwen3_tokenizer
from torchtune.tokenizers import resolve_prompt_template, RoleTagTemplate

REPO = Path(__file__).parents[3]
ASSETS = REPO / "tests" / "assets"
sys.path.insert(0, str(REPO / "tests" / "torchtune" / "models" / "qwen_tokenizer"))
from qwen_tokenizer_helpers import shared_dir, tiny_tokenizer_json  # noqa: E402

TEXTS = [
    "Hello world",
    "  leading spaces and trailing   ",
    "Ünïcödé: 日本語のテキスト, 中文, emoji 🤖🎉, Ελληνικά, עברית",
    "def f(x):\n    return x ** 2  # square\n\n\tprint(f'{x!r}')\r\n",
    "numbers 1234567 3.14159 and contractions: don't, I'll, we've",
    "special text <|im_start|>user\nhi<|im_end|> <|endoftext|> stays text",
    "tool <tool_call>{\"a\": 1}</tool_call> and <|fim_prefix|>x<|fim_suffix|>",
    "e\u0301 (combining) NFC",
    "",
]

CONVERSATION = [
    Message("system", "You are terse."),
    Message("user", "What is 2 + 2?\n"),
    Message("assistant", "4"),
    Message("user", "And <|im_end|> in text?"),
    Message("assistant", "Still text. 日本"),
]


def write_vocab_and_merges(tokenizer_json: str, folder: Path):
    """vocab.json and merges.txt (transformers' format) from a tokenizer.json text."""
    model = json.loads(tokenizer_json)["model"]
    vocab = folder / "vocab.json"
    merges = folder / "merges.txt"
    vocab.write_text(json.dumps(model["vocab"], ensure_ascii=False), encoding="utf-8")
    lines = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    merges.write_text("#version: 0.2\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return vocab, merges


@pytest.fixture(scope="module")
def llama3_model(tmp_path_factory) -> str:
    """Meta's Llama 3 tokenizer.model (tests/assets keeps it xz-compressed)."""
    path = tmp_path_factory.mktemp("llama3") / "tokenizer.model"
    path.write_bytes(lzma.decompress((ASSETS / "llama3_tokenizer.model.xz").read_bytes()))
    return str(path)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_qwen_files")
    text = tiny_tokenizer_json()
    (folder / "tokenizer.json").write_text(text, encoding="utf-8")
    vocab, merges = write_vocab_and_merges(text, folder)
    # 0.6.1's special_tokens_path format, without the 151k-token model
    special = folder / "special_tokens.json"
    special.write_text(json.dumps({"added_tokens": json.loads(text)["added_tokens"]}))
    return folder / "tokenizer.json", vocab, merges, special


def with_attrs(tok, **attrs):
    """A copy of ``tok`` with some settings changed (cheaper than building another)."""
    tok = copy.copy(tok)
    tok.__dict__.update(attrs)
    return tok


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    src = shared_dir("qwen2.5") / "tokenizer.json"
    folder = tmp_path_factory.mktemp("real_qwen_files")
    vocab, merges = write_vocab_and_merges(src.read_text(encoding="utf-8"), folder)
    return src, vocab, merges


def assert_same_tokenizer(a, b):
    assert (a.vocab_size, a.bos_id, a.eos_id, a.pad_id) == (
        b.vocab_size, b.bos_id, b.eos_id, b.pad_id
    )  # fmt: skip
    assert a.added_tokens == b.added_tokens and a.special_tokens == b.special_tokens
    for text in TEXTS:
        ids = a.encode(text, add_eos=False)
        assert ids == b.encode(text, add_eos=False), text
        assert a.encode_with_special(text) == b.encode_with_special(text), text
        assert a.decode(ids) == b.decode(ids)
    for add_end_tokens in (True, False):
        assert a.tokenize_messages(CONVERSATION, add_end_tokens) == b.tokenize_messages(
            CONVERSATION, add_end_tokens
        )


@pytest.mark.parametrize("builder", [qwen2_tokenizer, qwen2_5_tokenizer, qwen3_tokenizer])
def test_tiny_vocab_merges_equals_tokenizer_json(tiny, builder):
    tokenizer_json, vocab, merges, special = tiny
    a = builder(str(tokenizer_json))
    # the tiny file has Qwen 3's 26 added tokens: Qwen 2 and 2.5 take them from the file
    special = None if builder is qwen3_tokenizer else str(special)
    assert_same_tokenizer(a, builder(str(vocab), str(merges), special_tokens_path=special))


def test_real_qwen2_5_vocab_merges_equals_tokenizer_json(real):
    tokenizer_json, vocab, merges = real
    a = qwen2_5_tokenizer(str(tokenizer_json))
    b = qwen2_5_tokenizer(path=str(vocab), merges_file=str(merges), max_seq_len=None)
    assert b.vocab_size == 151665
    assert_same_tokenizer(a, b)
    text = " ".join(TEXTS * 50)
    assert a.encode(text) == b.encode(text)


def test_qwen2_tokenizer_defaults(tiny):
    tokenizer_json, vocab, merges, _ = tiny
    tok = qwen2_tokenizer(str(vocab), str(merges))
    assert tok.vocab_size == 151646  # Qwen 2: 151,643 BPE tokens + 3 special
    assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.stop_tokens) == (
        None, 151645, 151643, [151645, 151643]
    )  # fmt: skip
    tokens, _ = tok.tokenize_messages([Message("user", "hi")])
    assert tok.decode(tokens, skip_special_tokens=False).startswith(
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nhi"
    )
    none = with_attrs(tok, default_system_prompt=None)
    assert none.tokenize_messages([Message("user", "hi")])[0][0:1] == [151644]
    assert tok.decode(none.tokenize_messages([Message("user", "hi")])[0], False) == (
        "<|im_start|>user\nhi<|im_end|>\n"
    )


def test_qwen_file_errors(tiny, tmp_path):
    tokenizer_json, vocab, merges, _ = tiny
    with pytest.raises(UserValueError, match="vocab.json is not a tokenizer.json; .* merges_file"):
        qwen2_5_tokenizer(str(vocab))
    with pytest.raises(UserFileNotFoundError, match="merges.txt not found: .*nope.txt"):
        qwen2_5_tokenizer(str(vocab), str(tmp_path / "nope.txt"))
    with pytest.raises(UserFileNotFoundError, match="missing.json"):
        qwen2_5_tokenizer(str(tmp_path / "missing.json"), str(merges))
    with pytest.raises(UserFileNotFoundError, match="special_tokens.json"):
        qwen2_5_tokenizer(str(vocab), str(merges), str(tmp_path / "special_tokens.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(UserValueError, match="bad.json"):
        qwen2_5_tokenizer(str(bad), str(merges))
    with pytest.raises(UserValueError, match="special_tokens_path"):
        qwen2_5_tokenizer(str(vocab), str(merges), special_tokens_path=str(bad))
    garbage = tmp_path / "merges.txt"
    garbage.write_text("#version: 0.2\nthis line has three\n")
    with pytest.raises(UserValueError, match="merges.txt"):
        qwen2_5_tokenizer(str(vocab), str(garbage))
    with pytest.raises(UserValueError, match="truncation_type"):
        qwen2_5_tokenizer(str(tokenizer_json), truncation_type="middle")
    for err in (UserValueError, UserFileNotFoundError):
        assert issubclass(err, ValueError if err is UserValueError else FileNotFoundError)


def test_max_seq_len_and_truncation_type(tiny):
    tokenizer_json = tiny[0]
    n = 12
    right = qwen2_5_tokenizer(str(tokenizer_json), max_seq_len=n)
    assert right.max_seq_len == n and right.truncation_type == "right"
    full, full_mask = with_attrs(right, max_seq_len=None).tokenize_messages(CONVERSATION)
    tokens, mask = right.tokenize_messages(CONVERSATION)
    assert tokens == full[: n - 1] + [right.eos_id] and mask == full_mask[: n - 1] + [True]
    # without end tokens nothing is replaced
    assert right.tokenize_messages(CONVERSATION, False)[0] == full[:n]
    left = qwen2_5_tokenizer(str(tokenizer_json), max_seq_len=n, truncation_type="left")
    assert left.tokenize_messages(CONVERSATION) == (full[-n:], full_mask[-n:])
    # a conversation that fits is unchanged
    fits = with_attrs(right, max_seq_len=len(full))
    assert fits.tokenize_messages(CONVERSATION) == (full, full_mask)


def test_prompt_template_resolution():
    assert resolve_prompt_template(None) is None
    qa = resolve_prompt_template("torchtune.data.QuestionAnswerTemplate")
    out = qa([Message("user", "Why?"), Message("assistant", "Because.")])
    assert [m.content for m in out] == ["Question: Why?\n\nAnswer: ", "Because."]
    assert out[1].masked is False and out[0].masked is True
    custom = resolve_prompt_template(
        OmegaConf.create({"user": ["U: ", "\n"], "assistant": ["A: ", ""]})
    )
    assert isinstance(custom, RoleTagTemplate)
    assert [m.content for m in custom([Message("user", "x"), Message("assistant", "y")])] == [
        "U: x\n", "A: y"
    ]  # fmt: skip
    llama2 = resolve_prompt_template("torchtune.models.llama2.Llama2ChatTemplate")
    assert llama2([Message("user", "hi")])[0].content == "[INST] hi [/INST]"
    for value, match in [
        ("torchtune.data.NoSuchTemplate", "prompt_template: 'torchtune.data.NoSuchTemplate'"),
        ("torchtune.data.ChatMLTemplate", "prompt_template: 'torchtune.data.ChatMLTemplate'"),
        ({"robot": ["a", "b"]}, "prompt_template: role 'robot'"),
        ({"user": "a"}, "prompt_template: 'user'"),
        (3, "prompt_template must be"),
    ]:
        with pytest.raises(UserValueError, match=match) as info:
            resolve_prompt_template(value)
        assert "\n" not in str(info.value)


def test_prompt_template_in_tokenize_messages(tiny):
    tags = {"user": ("Question: ", "\n\nAnswer: ")}
    tok = qwen2_5_tokenizer(str(tiny[0]), prompt_template=tags, default_system_prompt=None)
    plain = with_attrs(tok, prompt_template=None)
    msgs = [Message("user", "Why?"), Message("assistant", "Because.")]
    want = plain.tokenize_messages([Message("user", "Question: Why?\n\nAnswer: "), msgs[1]])
    assert tok.tokenize_messages(msgs) == want
    assert pickle.loads(pickle.dumps(tok)).tokenize_messages(msgs) == want


def test_llama2_tokenizer_061_arguments():
    path = str(ASSETS / "llama2_tokenizer.model")
    tok = llama2_tokenizer(path)
    assert tok.max_seq_len is None and tok.prompt_template is not None
    tok = llama2_tokenizer(path, max_seq_len=128, prompt_template=None)
    assert (tok.max_seq_len, tok.prompt_template) == (128, None)
    back = pickle.loads(pickle.dumps(tok))
    assert (back.max_seq_len, back.prompt_template) == (128, None)
    assert back.encode("Hello world") == tok.encode("Hello world")


def test_llama3_tokenizer_061_arguments(llama3_model, tmp_path):
    tok = llama3_tokenizer(llama3_model, max_seq_len=8, prompt_template=None)
    assert tok.max_seq_len == 8
    tokens, mask = tok.tokenize_messages(CONVERSATION)
    assert len(tokens) == 8 and tokens[-1] == tok.eos_id and mask[-1] is True
    plain = with_attrs(tok, max_seq_len=None)
    full = plain.tokenize_messages(CONVERSATION)
    left = with_attrs(tok, truncation_type="left")
    assert left.tokenize_messages(CONVERSATION) == (full[0][-8:], full[1][-8:])
    qa = llama3_tokenizer(llama3_model, prompt_template="torchtune.data.QuestionAnswerTemplate")
    msgs = [Message("user", "Why?"), Message("assistant", "Because.")]
    want = plain.tokenize_messages(
        [Message("user", "Question: Why?\n\nAnswer: "), msgs[1]]
    )
    assert qa.tokenize_messages(msgs) == want
    # special_tokens_path: a tokenizer.json's added tokens name the 256 special ids
    names = {f"<|name_{i}|>": 128000 + i for i in range(256)}
    special = tmp_path / "tokenizer.json"
    special.write_text(
        json.dumps({"added_tokens": [{"content": t, "id": i} for t, i in names.items()]})
    )
    renamed = llama3_tokenizer(llama3_model, special_tokens_path=str(special))
    assert renamed.special_tokens == names
    assert renamed.encode_with_special("<|name_9|>") == [128009]
    assert renamed.tokenize_messages(CONVERSATION) == full
    special.write_text(json.dumps({"added_tokens": [{"content": "<|x|>", "id": 5}]}))
    with pytest.raises(UserValueError, match="128000..128255"):
        llama3_tokenizer(llama3_model, special_tokens_path=str(special))
    with pytest.raises(UserFileNotFoundError, match="nope.json"):
        llama3_tokenizer(llama3_model, special_tokens_path=str(tmp_path / "nope.json"))


@pytest.mark.parametrize("builder", [llama3_tokenizer, qwen2_5_tokenizer])
def test_special_tokens_path_nested_too_deep_is_one_line(builder, tmp_path):
    # json's parser recursed past Python's limit: a RecursionError traceback, no file named.
    # Read before the tokenizer model, so that file need not exist.
    deep = tmp_path / "special_tokens.json"
    deep.write_text('{"added_tokens": ' + "[" * 100_000 + "]" * 100_000 + "}")
    args = ["unused.model"] if builder is llama3_tokenizer else ["vocab.json", "merges.txt"]
    with pytest.raises(UserValueError) as err:
        builder(*args, special_tokens_path=str(deep))
    assert str(err.value) == (
        f"{deep} is not a tokenizer.json (special_tokens_path): its JSON nests arrays or "
        "objects too deeply to read"
    )


def test_real_llama3_special_tokens_path(llama3_model):
    hf = shared_dir("llama3") / "tokenizer.json"
    tok = llama3_tokenizer(llama3_model, special_tokens_path=str(hf))
    assert tok.special_tokens["<|eot_id|>"] == 128009
    assert tok.tokenize_messages(CONVERSATION) == llama3_tokenizer(
        llama3_model
    ).tokenize_messages(CONVERSATION)


# The tokenizer nodes of torchtune 0.6.1's configs, with the paths pointed at our files.
CONFIG_NODES = [
    ("torchtune.models.llama2.llama2_tokenizer", {"max_seq_len": None}),
    ("torchtune.models.llama3.llama3_tokenizer", {"max_seq_len": None}),
    ("torchtune.models.llama3.llama3_tokenizer", {"prompt_template": None, "max_seq_len": 8192}),
    ("torchtune.models.qwen2.qwen2_tokenizer", {"max_seq_len": None}),
    ("torchtune.models.qwen2_5.qwen2_5_tokenizer", {"max_seq_len": 1024}),
]


@pytest.mark.parametrize("component,extra", CONFIG_NODES)
def test_061_config_nodes_instantiate(component, extra, tiny, llama3_model):
    _, vocab, merges, _ = tiny
    if "llama2" in component:
        files = {"path": str(ASSETS / "llama2_tokenizer.model")}
    elif "llama3" in component:
        files = {"path": llama3_model}
    else:
        files = {"path": str(vocab), "merges_file": str(merges)}
    node = OmegaConf.create({"_component_": component, **files, **extra})
    tok = instantiate(node)
    assert tok.max_seq_len == extra["max_seq_len"]
