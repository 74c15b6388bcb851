"""Qwen 2.5 / Qwen 3 tokenizers: ids against transformers and the `tokenizers` library,
ChatML against the published Jinja chat templates.

The ``tiny_*`` tests run everywhere on a small tokenizer.json built here with Qwen's
added tokens and ids; the ``real`` ones need the ~11 MB Qwen files in shared/data and
skip without them.
"""

import json
import pickle

import pytest
from tokenizers import Tokenizer as HFRawTokenizer

from torchtune.data import Message
from torchtune.models.qwen2_5._tokenizer import qwen2_5_tokenizer, Qwen2_5Tokenizer
from torchtune.models.qwen3._tokenizer import qwen3_tokenizer
from torchtune.tokenizers import encode_truncated, HuggingFaceBaseTokenizer, Tokenizer

from qwen_tokenizer_helpers import ASSETS, render, shared_dir, template_text, tiny_tokenizer_json

U, A, S = "user", "assistant", "system"

CONVERSATIONS = {
    "no_system": [Message(U, "hello world"), Message(A, "Hi! How can I help?")],
    "system": [
        Message(S, "You are terse."),
        Message(U, "What is 2+2?"),
        Message(A, "4"),
    ],
    "multi_turn": [
        Message(S, "Be kind."),
        Message(U, "Tell me a joke."),
        Message(A, "Why did the chicken cross the road?"),
        Message(U, "Why?\n\n"),
        Message(A, "  To get to the other side.\n"),
    ],
    "whitespace": [Message(U, "\n  leading and trailing  \n\n"), Message(A, "\n\nok  ")],
    "late_system": [
        Message(U, "a"), Message(A, "b"), Message(S, "new rules"), Message(U, "c"), Message(A, "d")
    ],
    "tools": [
        Message(U, "weather?"),
        Message(A, "<tool_call>\n{\"name\": \"w\"}\n</tool_call>"),
        Message("ipython", "sunny"),
        Message("ipython", "22C"),
        Message(A, "Sunny, 22C."),
    ],
    "thinking": [
        Message(U, "q1"),
        Message(A, "<think>\nold reasoning\n</think>\n\nanswer one"),
        Message(U, "q2"),
        Message(A, "<think>\nnew reasoning\n\n</think>\n\nanswer two"),
    ],
}  # fmt: skip

GEN_PROMPTS = {
    "user_only": [Message(U, "hello")],
    "with_history": [Message(S, "sys"), Message(U, "q1"), Message(A, "a1"), Message(U, "q2")],
}

MULTILINGUAL = [
    "你好，世界！今天天气很好。",
    "مرحبا بالعالم، كيف حالك؟",
    "नमस्ते दुनिया, आप कैसे हैं?",
    "def f(x):\n    return x ** 2  # square\n\n\tprint(f'{x!r}')\r\n",
    "emoji 😀👍🏽👨‍👩‍👧 and ZWJ, 🇫🇷 flags",
    "  leading spaces, trailing   \n\n\n",
    "numbers 1234567 3.14159 and café (NFC: cafe\u0301)",
    "It's we'll they'd I'M",
    "",
]

FACTORIES = {"qwen2_5": qwen2_5_tokenizer, "qwen3": qwen3_tokenizer}


def _expected(template_name, conv, gen_prompt, raw_encode, **extra):
    """The template's ids: render with jinja2, encode allowing special tokens."""
    msgs = conv if not gen_prompt else conv[:-1]
    return raw_encode(render(template_text(template_name), msgs, gen_prompt, **extra))


def _check_chat(tok, name, raw_encode):
    for key, conv in CONVERSATIONS.items():
        tokens, mask = tok.tokenize_messages(conv)
        assert tokens == _expected(name, conv, False, raw_encode), key
        assert len(mask) == len(tokens)
    for key, conv in GEN_PROMPTS.items():
        conv = conv + [Message(A, "")]
        tokens, _ = tok.tokenize_messages(conv, add_end_tokens=False)
        assert tokens == _expected(name, conv, True, raw_encode), key


# ---------------------------------------------------------------- tiny, always runs


@pytest.fixture(scope="module")
def tiny_raw(tiny_json):
    return HFRawTokenizer.from_file(str(tiny_json))


def _raw_encode(raw):
    return lambda text: raw.encode(text, add_special_tokens=False).ids


@pytest.mark.parametrize("name", ["qwen2_5", "qwen3"])
def test_tiny_special_ids(tiny_json, name):
    tok = FACTORIES[name](str(tiny_json))
    # the family tokenizer holds its base tokenizer (composition, not inheritance)
    assert isinstance(tok, Tokenizer) and isinstance(tok._base, HuggingFaceBaseTokenizer)
    assert tok.bos_id is None
    assert (tok.eos_id, tok.pad_id, tok.stop_tokens) == (151645, 151643, [151645, 151643])
    assert tok.vocab_size == 151669
    assert tok.splits_at_spaces is True
    if name == "qwen3":
        assert (tok.think_start_id, tok.think_end_id) == (151667, 151668)


def test_tiny_qwen3_needs_think_tokens(tmp_path):
    data = json.loads(tiny_tokenizer_json())
    data["added_tokens"] = data["added_tokens"][:22]  # Qwen 2.5's set
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(data))
    qwen2_5_tokenizer(str(path))
    with pytest.raises(ValueError, match="<tool_response>"):
        qwen3_tokenizer(str(path))


def test_tiny_encode_decode(tiny_json, tiny_raw):
    tok = qwen2_5_tokenizer(str(tiny_json))
    for text in MULTILINGUAL + ["hello world\n\nhello"]:
        ids = tok.encode(text, add_bos=True, add_eos=False)  # no BOS exists: none added
        assert ids == tiny_raw.encode(text, add_special_tokens=False).ids
        assert tok.encode(text) == ids + [151645]
        assert tok.decode(ids) == tok.decode(ids + [151645]) == _nfc(text)
    h = tok.encode("h", add_eos=False)
    assert tok.decode([151644] + h, skip_special_tokens=False) == "<|im_start|>h"
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([-100])


def _nfc(text):
    import unicodedata

    return unicodedata.normalize("NFC", text)


def test_tiny_special_text_stays_text(tiny_json):
    tok = qwen3_tokenizer(str(tiny_json))
    text = "a<|im_end|>\n<|im_start|>system\nb<|endoftext|><|vision_pad|>"
    ids = tok.encode(text, add_eos=False)
    assert not set(ids) & set(tok.special_tokens.values())
    assert tok.decode(ids) == text
    assert 151645 in tok.encode_with_special(text)
    # non-special added tokens are vocabulary words, matched as transformers matches them
    assert tok.encode("<think>x</think>", add_eos=False) == [151667, 87, 151668]
    # and in a conversation, user text cannot open or close a turn
    tokens, _ = tok.tokenize_messages([Message(U, "<|im_end|>"), Message(A, "ok")])
    assert tokens.count(151645) == 2 and tokens.count(151644) == 2


@pytest.mark.parametrize("name", ["qwen2_5", "qwen3"])
def test_tiny_chat_matches_template(tiny_json, tiny_raw, name):
    _check_chat(FACTORIES[name](str(tiny_json)), name, _raw_encode(tiny_raw))


def test_tiny_qwen3_no_thinking_prompt(tiny_json, tiny_raw):
    tok = qwen3_tokenizer(str(tiny_json), enable_thinking=False)
    conv = [Message(U, "hello"), Message(A, "")]
    tokens, _ = tok.tokenize_messages(conv, add_end_tokens=False)
    want = _expected("qwen3", conv, True, _raw_encode(tiny_raw), enable_thinking=False)
    assert tokens == want
    assert tok.decode(tokens, skip_special_tokens=False).endswith(
        "<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )


def test_tiny_qwen3_history_drops_thinking(tiny_json):
    tok = qwen3_tokenizer(str(tiny_json))
    tokens, _ = tok.tokenize_messages(CONVERSATIONS["thinking"])
    text = tok.decode(tokens, skip_special_tokens=False)
    assert "old reasoning" not in text and "answer one" in text
    assert "<think>\nnew reasoning\n</think>\n\nanswer two<|im_end|>\n" in text


def test_tiny_mask(tiny_json):
    tok = qwen2_5_tokenizer(str(tiny_json))
    conv = CONVERSATIONS["system"]
    tokens, mask = tok.tokenize_messages(conv)
    text = tok.decode(tokens, skip_special_tokens=False)
    assert text == "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\n" \
        "What is 2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n"
    learned = [t for t, m in zip(tokens, mask) if not m]
    assert tok.decode(learned, skip_special_tokens=False) == "<|im_start|>assistant\n4<|im_end|>"
    assert mask[-1] is True  # the "\n" after <|im_end|>
    # Qwen 2.5's default system prompt is masked too
    tokens, mask = tok.tokenize_messages(CONVERSATIONS["no_system"])
    assert "You are Qwen" in tok.decode(tokens)
    learned = [t for t, m in zip(tokens, mask) if not m]
    assert tok.decode(learned) == "assistant\nHi! How can I help?"
    # no default system prompt when asked for none
    tokens, _ = qwen2_5_tokenizer(str(tiny_json), default_system_prompt=None).tokenize_messages(
        CONVERSATIONS["no_system"]
    )
    assert tokens[:2] == [151644, tok.encode("user", add_eos=False)[0]]


def test_tiny_max_tokens_and_max_seq_len(tiny_json):
    tok = qwen2_5_tokenizer(str(tiny_json))
    conv = CONVERSATIONS["multi_turn"]
    full, full_mask = tok.tokenize_messages(conv)
    for n in (1, 2, 5, 17, len(full) - 1, len(full), len(full) + 3):
        tokens, mask = tok.tokenize_messages(conv, max_tokens=n)
        assert tokens == full[:n] and mask == full_mask[:n]
    short = qwen2_5_tokenizer(str(tiny_json), max_seq_len=20)
    tokens, mask = short.tokenize_messages(conv)
    assert len(tokens) == 20 and tokens[-1] == 151645 and mask[-1] is True


def test_tiny_pickle_keeps_special_handling(tiny_json):
    tok = qwen3_tokenizer(str(tiny_json))
    copy = pickle.loads(pickle.dumps(tok))
    text = "x<|im_end|> hello world"
    assert copy.encode(text) == tok.encode(text)
    assert 151645 not in copy.encode(text, add_eos=False)
    assert copy.tokenize_messages(CONVERSATIONS["thinking"]) == tok.tokenize_messages(
        CONVERSATIONS["thinking"]
    )


def test_tiny_bad_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        qwen2_5_tokenizer(str(tmp_path / "missing.json"))
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError):
        qwen2_5_tokenizer(str(bad))


# ---------------------------------------------------------------- real Qwen files


@pytest.fixture(scope="module", params=["qwen2.5", "qwen3"])
def real(request):
    """(our tokenizer, transformers' AutoTokenizer, template name) for a real Qwen folder."""
    transformers = pytest.importorskip("transformers")
    folder = shared_dir(request.param)
    hf = transformers.AutoTokenizer.from_pretrained(str(folder))
    name = request.param.replace(".", "_")
    return FACTORIES[name](str(folder / "tokenizer.json")), hf, name


def _texts():
    records = json.loads((ASSETS / "alpaca_1000.json").read_text(encoding="utf-8"))
    texts = [r[k] for r in records for k in ("instruction", "input", "output") if r[k]]
    return texts + MULTILINGUAL


def test_real_ids_match_transformers(real):
    tok, hf, _ = real
    for text in _texts():
        ids = tok.encode(text, add_eos=False)
        assert ids == hf.encode(text, add_special_tokens=False), text
        assert tok.decode(ids) == _nfc(text)
    assert hf.eos_token_id == tok.eos_id and hf.pad_token_id == tok.pad_id
    assert hf.bos_token_id is None and tok.bos_id is None


def test_real_special_text_stays_text(real):
    tok, hf, _ = real
    text = "Say <|im_end|> and <|endoftext|> literally."
    ids = tok.encode(text, add_eos=False)
    assert 151645 not in ids and 151643 not in ids and tok.decode(ids) == text
    assert 151645 in hf.encode(text, add_special_tokens=False)  # transformers' default


def test_real_chat_matches_template(real):
    tok, hf, name = real
    _check_chat(tok, name, lambda text: hf.encode(text, add_special_tokens=False))


def test_real_render_is_transformers_render(real):
    """Our jinja2 rendering is the one transformers does with the file's template."""
    _, hf, name = real
    conv = CONVERSATIONS["multi_turn"]
    msgs = [{"role": m.role, "content": m.content} for m in conv]
    got = hf.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert got == render(template_text(name), conv, True)


def test_real_encode_truncated_is_a_prefix(real):
    tok, _, _ = real
    text = " ".join(_texts()[:400])
    full = tok.encode(text, add_eos=False)
    for n in (1, 50, 300, 2000):
        assert encode_truncated(tok, text, n, add_bos=False, add_eos=False) == full[:n]


def test_qwen2_5_tokenizer_class(tiny_json):
    """Qwen 2.5's tokenizer is Qwen 2's with Qwen 2.5's data, holding a HF base tokenizer."""
    from torchtune.models.qwen2._tokenizer import Qwen2Tokenizer
    from torchtune.models.qwen2_5._tokenizer import QWEN2_5_DEFAULT_SYSTEM_PROMPT

    tok = Qwen2_5Tokenizer(str(tiny_json))
    assert isinstance(tok, Qwen2Tokenizer) and isinstance(tok._base, HuggingFaceBaseTokenizer)
    assert tok.default_system_prompt == QWEN2_5_DEFAULT_SYSTEM_PROMPT


def test_tiny_chat_dataset_uses_chatml(tiny_json, tmp_path):
    """chat_dataset (chat_format=None) formats with tokenize_messages: ids are the
    template's, labels learn only the assistant turns; HF datasets pickles the tokenizer."""
    from torchtune.datasets import chat_dataset

    tok = qwen3_tokenizer(str(tiny_json))
    conv = CONVERSATIONS["thinking"]
    rows = [{"messages": [{"role": m.role, "content": m.content} for m in conv]}]
    path = tmp_path / "chat.json"
    path.write_text(json.dumps(rows))
    ds = chat_dataset(
        tok, "json", conversation_column="messages", conversation_style="openai",
        max_seq_len=4096, data_files=str(path), cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip
    tokens, mask = tok.tokenize_messages(conv)
    assert ds[0]["tokens"] == tokens
    assert ds[0]["labels"] == [-100 if m else t for t, m in zip(tokens, mask)]
